//! The web console: a single page that signs in with a token, asks, and
//! shows the answer forming (route, tool calls with their SQL, result
//! table, chart, answer text, citations, usage), talking to this node's
//! `AssistantService` over grpc-web ([`crate::web`]).
//!
//! Its built bundle (`console/dist`, from the sources in `console/src` by
//! `dev/console.sh build`) is embedded in the binary; nothing is read from
//! disk and no Node.js runs at run time. Served at `/` (the page) and under
//! `/console/` (its scripts and styles) with:
//! - the content type of the file's extension;
//! - a Content-Security-Policy ([`CONTENT_SECURITY_POLICY`]) that allows
//!   only this origin's scripts, styles, images and fetches (no inline
//!   script, no `eval`, no frames);
//! - `Cache-Control: no-cache` with a strong `ETag` (the file's SHA-256), so
//!   a browser revalidates each load and gets `304 Not Modified` when the
//!   binary did not change.
//!
//! The page holds no secret and needs no auth: every call it makes is a
//! grpc-web call that meets the gRPC auth, rate limit and policy layers.

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use rust_embed::Embed;

/// The built console (`console/dist`), embedded at compile time.
#[derive(Embed)]
#[folder = "../console/dist"]
struct Assets;

/// The page's Content-Security-Policy (CSP Level 3,
/// <https://www.w3.org/TR/CSP3/>): scripts and styles from this origin
/// only, no inline script and no `eval` (Vega expressions run through
/// `vega-interpreter`, not `new Function`); inline `style` attributes are
/// allowed because Vega sets them on the chart's elements; images also
/// from `data:` (Vega's PNG export); fetches to this origin only (grpc-web);
/// not framed by other pages; no `<base>`, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
     font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes: `GET /` and `GET /console` (the page),
/// `GET /console/{file}` (its assets); `HEAD` alike.
pub fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/{*file}", get(asset))
}

async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

/// `name` from the bundle, or `404` when there is no such file.
fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(file) = Assets::get(name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()));
    let mut response = if request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, file.metadata.mimetype().to_owned())],
            file.data.into_owned(),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = http::Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router()
            .oneshot(request.body(axum::body::Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn the_page_and_its_assets_have_their_types_a_strict_policy_and_revalidate() {
        let page = get("/", None).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html");
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = page.headers()[header::ETAG]
            .to_str()
            .expect("ascii")
            .to_owned();
        let again = get("/", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let script = get("/console/app.js", None).await;
        assert_eq!(script.status(), StatusCode::OK);
        assert_eq!(script.headers()[header::CONTENT_TYPE], "text/javascript");
        let style = get("/console/app.css", None).await;
        assert_eq!(style.headers()[header::CONTENT_TYPE], "text/css");
        assert_eq!(
            get("/console/nope.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
