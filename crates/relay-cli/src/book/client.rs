//! The admin client commands of `relay book`: one HTTP call each to the booking server's
//! admin routes, the reply printed as YAML or JSON (`BOOK_CLIENT_FORMAT`).

use super::{check_report, fail, read_manifest};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// The default server address of every client command.
pub(super) const DEFAULT_HOST: &str = "localhost:4000";

/// Output format of the client commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(super) enum Format {
    Yaml,
    Yml,
    Json,
}

/// Where the server is and how to authenticate (the admin client commands).
#[derive(Args, Debug, Clone)]
pub(super) struct ClientArgs {
    /// Admin token (see `relay book token`), sent raw in Authorization.
    #[arg(long, env = "BOOK_CLIENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// `http` or `https`.
    #[arg(long, env = "BOOK_CLIENT_SCHEME", default_value = "http")]
    scheme: String,
    /// Server host and port (a full URL is accepted too).
    #[arg(long, env = "BOOK_CLIENT_HOST", default_value = DEFAULT_HOST)]
    host: String,
    /// API base path.
    #[arg(long, env = "BOOK_CLIENT_BASE_PATH", default_value = "/api/v1")]
    base_path: String,
    /// Output format.
    #[arg(
        long,
        env = "BOOK_CLIENT_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "yaml"
    )]
    format: Format,
}

impl ClientArgs {
    fn url(&self, route: &str) -> String {
        let host = self.host.trim_end_matches('/');
        let base = if host.contains("://") {
            host.to_owned()
        } else {
            format!("{}://{host}", self.scheme)
        };
        format!("{base}/{}{route}", self.base_path.trim_matches('/')).replace(":///", "://")
    }
}

pub(super) fn manifest_replace(file: &PathBuf, client: &ClientArgs) -> ExitCode {
    let manifest = match read_manifest(file) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    if let Err(e) = manifest.check() {
        println!("{}", check_report(&e));
        return ExitCode::FAILURE;
    }
    let body = match serde_json::to_string(&manifest) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    match request(client, "PUT", "/admin/manifest", Some(body)) {
        Ok(status) => {
            if let Some(cancelled) = status.get("cancelled_bookings") {
                eprintln!("relay book: bookings cancelled because their slot left the manifest: {cancelled}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

// ---- bookings ----

pub(super) fn bookings_replace(file: &PathBuf, client: &ClientArgs) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
    };
    let bookings: serde_json::Value = match serde_yaml::from_str(&text) {
        Ok(serde_json::Value::Array(list)) => serde_json::Value::Array(list),
        Ok(_) => return fail(format!("{} is not a list of bookings", file.display())),
        Err(e) => return fail(format!("cannot parse {}: {e}", file.display())),
    };
    client_call(client, "PUT", "/admin/bookings", Some(bookings.to_string()))
}

// ---- the HTTP client ----

pub(super) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Make one call and return the JSON reply (`null` for an empty one), or a message.
fn request(
    client: &ClientArgs,
    method: &str,
    route: &str,
    body: Option<String>,
) -> Result<serde_json::Value, String> {
    let token = client
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or("You must set BOOK_CLIENT_TOKEN (or --token); see `relay book token`")?;
    let url = client.url(route);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut call = reqwest::Client::new()
            .request(method.clone(), &url)
            .header("Authorization", token);
        if let Some(body) = body {
            call = call.header("Content-Type", "application/json").body(body);
        }
        let response = call
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {url}: {status}: {}", text.trim()));
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {url}: reply is not JSON: {e}"))
    })
}

/// Make one call and print the reply in the chosen format.
pub(super) fn client_call(
    client: &ClientArgs,
    method: &str,
    route: &str,
    body: Option<String>,
) -> ExitCode {
    let reply = match request(client, method, route, body) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if reply.is_null() {
        return ExitCode::SUCCESS;
    }
    let text = match client.format {
        Format::Json => serde_json::to_string_pretty(&reply).map_err(|e| e.to_string()),
        Format::Yaml | Format::Yml => serde_yaml::to_string(&reply).map_err(|e| e.to_string()),
    };
    match text {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_urls_join_scheme_host_and_base_path() {
        let client = ClientArgs {
            token: None,
            scheme: "http".into(),
            host: DEFAULT_HOST.into(),
            base_path: "/api/v1".into(),
            format: Format::Yaml,
        };
        assert_eq!(
            client.url("/admin/status"),
            "http://localhost:4000/api/v1/admin/status"
        );
        let client = ClientArgs {
            host: "https://book.example.org/".into(),
            base_path: "api/v1/".into(),
            ..client
        };
        assert_eq!(
            client.url("/admin/status"),
            "https://book.example.org/api/v1/admin/status"
        );
        assert_eq!(percent_encode("back at 10:00"), "back%20at%2010%3A00");
    }
}
