//! The booking pages served by `relay book serve` itself (issue 16): the student page at
//! `/`, the admin page at `/admin`, and their scripts and styles under `/pages/…`. Every
//! file is compiled into the binary, so a lab needs nothing else and there is no build step.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// Scripts, styles and connections only from this server. Images may also come from
/// `https:` because manifest descriptions point `thumb` and `image` at the lab's own site.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' https:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// One served file: its path, content type and body.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// One [`Asset`], in a line.
const fn asset(path: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        path,
        content_type,
        body,
    }
}

/// Every page and asset, by the path it is served at.
const ASSETS: &[Asset] = &[
    asset("/", HTML, include_str!("../pages/index.html")),
    asset("/admin", HTML, include_str!("../pages/admin.html")),
    asset("/pages/book.css", CSS, include_str!("../pages/book.css")),
    asset("/pages/api.js", JAVASCRIPT, include_str!("../pages/api.js")),
    asset(
        "/pages/student.js",
        JAVASCRIPT,
        include_str!("../pages/student.js"),
    ),
    asset(
        "/pages/admin.js",
        JAVASCRIPT,
        include_str!("../pages/admin.js"),
    ),
    asset(
        "/pages/vendor/js-yaml.mjs",
        JAVASCRIPT,
        include_str!("../pages/vendor/js-yaml.mjs"),
    ),
];

/// The paths [`routes`] serves, for tests and logs.
pub fn paths() -> impl Iterator<Item = (&'static str, &'static str)> {
    ASSETS.iter().map(|asset| (asset.path, asset.content_type))
}

/// The pages' routes; merge them into the server's router (any state).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let (content_type, body) = (asset.content_type, asset.body);
        router.route(
            asset.path,
            get(move || async move { serve(content_type, body) }),
        )
    })
}

fn serve(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The admin link may carry a token in its query: never pass it on.
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
