//! The web dashboard at `/ui`: one page, its script and its style, compiled into the binary
//! (no build step, no files to deploy). The page signs in with an API key, kept in the tab's
//! `sessionStorage`, and reads and acts through the same admin API and `/ws` stream as every
//! other client, so it can do exactly what its key may: a read key sees, an admin key acts.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page: a shell the script fills in.
const PAGE: &str = include_str!("ui/index.html");
/// The script: sign-in, the views, the live tail.
const SCRIPT: &str = include_str!("ui/app.js");
/// The style.
const STYLE: &str = include_str!("ui/app.css");

/// Only this page's own script, style and API; no inline code, nothing from elsewhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui`.
#[utoipa::path(get, path = "/ui", tag = "operations", security(()),
    summary = "The web dashboard (sign in with an API key)",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/app.js`.
#[utoipa::path(get, path = "/ui/app.js", tag = "operations", security(()),
    summary = "The dashboard's script",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/app.css`.
#[utoipa::path(get, path = "/ui/app.css", tag = "operations", security(()),
    summary = "The dashboard's style",
    responses((status = 200, description = "The style", content_type = "text/css", body = String)))]
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
