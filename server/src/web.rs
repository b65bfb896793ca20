//! gRPC for browsers: grpc-web ([`tonic_web`]) and CORS
//! ([`tower_http::cors`]) in front of the gRPC layers, so that a browser
//! call meets the same auth, rate limits and policy as any gRPC call.
//!
//! Layer order in [`crate::serve`]: surfaces (console, MCP) → CORS (a
//! preflight `OPTIONS` is answered here and never meets auth) → grpc-web
//! (translates `application/grpc-web[+proto|-text]` to gRPC and back) →
//! trace, metrics, auth, rate limit, policy.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// `[server.web]`: what browsers may reach.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Origins (`scheme://host[:port]`, e.g. `"https://app.example"`) whose
    /// pages may call the gRPC services over grpc-web (CORS,
    /// <https://fetch.spec.whatwg.org/#http-cors-protocol>). Default: none,
    /// so only pages served by this node (the console, same origin) can;
    /// a page from any other origin is refused by the browser. No wildcard.
    pub cors_origins: Vec<String>,
}

/// A `[server.web]` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// An entry of `cors_origins` is not `scheme://host[:port]`.
    #[error(
        "server.web.cors_origins: {origin:?} is not an origin (http or https scheme, host, optional port, nothing after)"
    )]
    NotAnOrigin {
        /// The entry as written.
        origin: String,
    },
}

/// Request headers a grpc-web client sends (connect-web, grpc-web's
/// generated clients) plus W3C trace context, allowed in CORS preflights.
pub const ALLOWED_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "traceparent",
];

/// Response headers a grpc-web client must read (the status of a call
/// that fails before its body, and its details: `RetryInfo`, `BadRequest`).
pub const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// How long a browser may cache a preflight answer: 10 minutes, Chromium's
/// cap (<https://fetch.spec.whatwg.org/#http-access-control-max-age>).
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

impl WebConfig {
    /// The CORS layer for these origins: `POST` only, [`ALLOWED_HEADERS`],
    /// [`EXPOSED_HEADERS`], no credentials (the token travels in
    /// `authorization`, not in cookies). With no origins it answers no
    /// cross-origin request, preflight included.
    ///
    /// # Errors
    /// [`WebConfigError::NotAnOrigin`] for an entry that is not an origin.
    pub fn cors_layer(&self) -> Result<CorsLayer, WebConfigError> {
        let origins = self
            .cors_origins
            .iter()
            .map(|origin| parse_origin(origin))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE))
    }
}

/// `origin` as the exact `Origin` header value a browser sends for it
/// (RFC 6454 §6.1: scheme, host, port only; lowercase, no trailing slash).
fn parse_origin(origin: &str) -> Result<HeaderValue, WebConfigError> {
    let bad = || WebConfigError::NotAnOrigin {
        origin: origin.to_owned(),
    };
    let uri: http::Uri = origin.parse().map_err(|_| bad())?;
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|scheme| scheme == "http" || scheme == "https");
    let authority = uri.authority().ok_or_else(bad)?;
    // `http::Uri` adds "/" as the path of `https://host`; any other path,
    // a query or user info is not part of an origin
    let bare = uri.path() == "/" && !origin.ends_with('/') && uri.query().is_none();
    if !scheme_ok || !bare || authority.as_str().contains('@') || origin != origin.to_lowercase() {
        return Err(bad());
    }
    HeaderValue::from_str(origin).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "https://app.example",
            "http://127.0.0.1:8080",
            "https://a.b.example:8443",
        ] {
            assert!(parse_origin(good).is_ok(), "{good}");
        }
        for bad in [
            "*",
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://app.example?x=1",
            "ftp://app.example",
            "https://user@app.example",
            "https://App.example",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
