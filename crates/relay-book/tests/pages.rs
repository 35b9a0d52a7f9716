//! The booking pages are served by `routes()`: every page and asset answers 200 with its
//! content type and a Content-Security-Policy that allows only this server (images also
//! from `https:`), and the HTML pages load only assets that are served.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use relay_book::pages;

async fn serve_pages() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, pages::routes::<()>()).await.unwrap();
    });
    format!("http://{address}")
}

/// The body of a GET of `url`.
async fn text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn every_page_and_asset_answers_with_its_content_type_and_policy() {
    let base = serve_pages().await;
    let client = reqwest::Client::new();
    let expected = [
        ("/", "text/html; charset=utf-8"),
        ("/admin", "text/html; charset=utf-8"),
        ("/pages/book.css", "text/css; charset=utf-8"),
        ("/pages/api.js", "text/javascript; charset=utf-8"),
        ("/pages/student.js", "text/javascript; charset=utf-8"),
        ("/pages/admin.js", "text/javascript; charset=utf-8"),
        (
            "/pages/vendor/js-yaml.mjs",
            "text/javascript; charset=utf-8",
        ),
    ];
    let served: Vec<_> = pages::paths().collect();
    assert_eq!(served, expected);
    for (path, content_type) in expected {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'self'; img-src 'self' https:; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert!(!response.text().await.unwrap().is_empty(), "{path}");
    }
    let missing = client
        .get(format!("{base}/pages/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn pages_load_only_served_assets_and_no_inline_code() {
    let base = serve_pages().await;
    let client = reqwest::Client::new();
    let served: Vec<&str> = pages::paths().map(|(path, _)| path).collect();
    for (page, script) in [("/", "/pages/student.js"), ("/admin", "/pages/admin.js")] {
        let html = text(&client, &format!("{base}{page}")).await;
        assert!(html.starts_with("<!doctype html>"), "{page}");
        assert!(html.contains(r#"<meta name="viewport""#), "{page}");
        assert!(
            html.contains(&format!(
                r#"<script type="module" src="{script}"></script>"#
            )),
            "{page}"
        );
        assert!(
            html.contains(r#"<link rel="stylesheet" href="/pages/book.css">"#),
            "{page}"
        );
        // The CSP forbids inline code: every script and style comes from a served file.
        assert!(
            !html.contains("<script>") && !html.contains("<style"),
            "{page}"
        );
        assert!(
            !html.contains(" style=") && !html.contains(" onclick="),
            "{page}"
        );
        for reference in html.split(['"', '\'']).filter(|s| s.starts_with("/pages/")) {
            assert!(served.contains(&reference), "{page} loads {reference}");
        }
    }
    // The modules import each other by served paths too.
    for module in ["/pages/student.js", "/pages/admin.js"] {
        let code = text(&client, &format!("{base}{module}")).await;
        let imports: Vec<&str> = code
            .split("from \"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        assert!(imports.contains(&"/pages/api.js"), "{module}");
        for from in imports {
            assert!(served.contains(&from), "{module} imports {from}");
        }
    }
}
