//! The Model Context Protocol surface: Quarry's tools for agent hosts
//! (Claude Desktop, IDE agents, any MCP client) over the streamable HTTP
//! transport (MCP specification, "Transports"), served at [`ENDPOINT`] on
//! the gRPC port beside gRPC ([`crate::surfaces`]), with the `rmcp` crate.
//!
//! Tools: `ask` (the whole orchestrator; progress notifications as the
//! answer forms), `query_database`, `search_documents`, `get_summaries`,
//! `explain_sql` — the orchestrator's own
//! [`ModelTool`](quarry_orchestrator::ModelTool)s, so their input
//! schemas and descriptions are the ones written for models, and their
//! argument errors name the field at fault ([`handler`]).
//!
//! Auth is an OAuth 2.1 resource server (MCP specification,
//! "Authorization"): every request to [`ENDPOINT`] needs `authorization:
//! Bearer <jwt>`, verified by the same [`JwtVerifier`] as gRPC; without
//! one, or with one that does not verify, the answer is HTTP 401 with
//! `WWW-Authenticate: Bearer resource_metadata="…"` (RFC 9728 §5.1; plus
//! `error="invalid_token"` when a token was sent, RFC 6750 §3.1), and the
//! protected-resource metadata (RFC 9728 §2) is served at
//! [`METADATA`] and `METADATA` + [`ENDPOINT`] (RFC 9728 §3.1).
//!
//! Policy and limits are gRPC's by construction: each tool call is made as
//! gRPC calls through the node's whole gRPC layer stack (trace, metrics,
//! auth, rate limit, policy), in process, carrying the caller's own
//! `authorization` header ([`McpChannels`]) — a token without a tool's scope
//! is refused by the policy layer (and the refusal audited) exactly as over
//! gRPC, and each call spends the tenant's rate limit. Such a refusal is an
//! MCP tool error (`isError: true`) whose text says which scope is missing;
//! HTTP 401 is only for a missing or invalid token.

mod handler;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use quarry_auth::{AuthError, JwtVerifier, PolicyStore, bearer_token, scopes};
use quarry_orchestrator::{OrchestratorConfig, ToolChannel};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use handler::{ASK, QuarryMcp, ask_spec};

/// Path of the MCP endpoint (streamable HTTP: `POST` JSON-RPC messages,
/// answered as JSON or as a server-sent event stream).
pub const ENDPOINT: &str = "/mcp";

/// Path of the OAuth 2.0 protected-resource metadata (RFC 9728 §3).
pub const METADATA: &str = "/.well-known/oauth-protected-resource";

/// The path prefixes [`router`] answers, for [`crate::surfaces::Surfaces::mount`].
pub const PATHS: &[&str] = &[ENDPOINT, METADATA];

/// Scopes a token may carry that MCP tools need (`scopes_supported` in the
/// metadata): `ask` for `ask`, `sql:query` for `query_database`, `search`
/// for `search_documents`, `summaries` for `get_summaries`, `sql:explain`
/// for `explain_sql` (the scopes of the RPCs each tool calls,
/// [`crate::rpc_scope`]).
pub const TOOL_SCOPES: &[&str] = &[
    scopes::ASK,
    scopes::SQL_QUERY,
    scopes::SEARCH,
    scopes::SUMMARIES,
    scopes::SQL_EXPLAIN,
];

/// `[mcp]`: the MCP endpoint of a node that runs the assistant role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Serve MCP at `/mcp` (and its metadata) where the assistant role
    /// runs. Default true.
    pub enabled: bool,
    /// The public base URL clients reach this server at, e.g.
    /// `https://quarry.example.com` (the metadata's `resource` is this plus
    /// `/mcp`). Default: `http://` plus the request's `Host`.
    pub public_url: Option<String>,
    /// `authorization_servers` of the metadata (RFC 9728 §2): the issuers
    /// clients get tokens from. Default: `[auth.issuer]` when that is set,
    /// else the member is omitted.
    pub authorization_servers: Vec<String>,
    /// `Host` header values accepted at `/mcp` (DNS rebinding protection,
    /// MCP specification "Security Warning"), e.g. `["quarry.example.com"]`;
    /// a value without a port matches any port. Default: loopback names
    /// (`localhost`, `127.0.0.1`, `::1`) plus `public_url`'s host.
    pub allowed_hosts: Vec<String>,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            public_url: None,
            authorization_servers: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// How MCP tools reach the gRPC services: each a [`ToolChannel`] whose
/// requests pass the node's whole gRPC layer stack (or another node's, for
/// a tool served elsewhere); `None` for a service this node cannot reach
/// (its tool is then not offered).
#[derive(Clone)]
pub struct McpChannels {
    /// `AssistantService` (the `ask` tool).
    pub assistant: ToolChannel,
    /// `SqlService` (`query_database`, `explain_sql`).
    pub sql: Option<ToolChannel>,
    /// `SearchService` (`search_documents`).
    pub search: Option<ToolChannel>,
    /// `SummaryService` (`get_summaries`).
    pub summaries: Option<ToolChannel>,
}

/// What the HTTP side needs: the verifier and the metadata settings.
#[derive(Clone)]
struct Guard {
    verifier: Arc<JwtVerifier>,
    public_url: Option<String>,
    authorization_servers: Vec<String>,
}

/// The MCP surface: [`ENDPOINT`] behind bearer authentication, and the
/// protected-resource metadata at [`METADATA`] (and under it). `issuer` is
/// `auth.issuer`, the default authorization server; `stop` ends open MCP
/// streams at shutdown.
pub fn router(
    config: &McpConfig,
    issuer: Option<&str>,
    verifier: JwtVerifier,
    policy: Arc<PolicyStore>,
    orchestrator: &OrchestratorConfig,
    channels: McpChannels,
    stop: CancellationToken,
) -> Router {
    let guard = Guard {
        verifier: Arc::new(verifier),
        public_url: config
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned()),
        authorization_servers: if config.authorization_servers.is_empty() {
            issuer.map(str::to_owned).into_iter().collect()
        } else {
            config.authorization_servers.clone()
        },
    };
    let handler = QuarryMcp::new(channels, policy, orchestrator);
    let mut allowed_hosts = config.allowed_hosts.clone();
    if allowed_hosts.is_empty() {
        allowed_hosts = StreamableHttpServerConfig::default().allowed_hosts;
        if let Some(host) = guard
            .public_url
            .as_deref()
            .and_then(|u| u.parse::<http::Uri>().ok())
            .and_then(|u| u.host().map(str::to_owned))
        {
            allowed_hosts.push(host);
        }
    }
    // Stateless: every POST is answered on its own (its progress
    // notifications on its own event stream), so any replica can serve any
    // request and nothing is kept between them.
    let transport = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_allowed_hosts(allowed_hosts)
        .with_cancellation_token(stop);
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        transport,
    );
    Router::new()
        .route_service(ENDPOINT, service)
        .route_layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            require_bearer,
        ))
        .route(METADATA, get(metadata))
        .route(&format!("{METADATA}{ENDPOINT}"), get(metadata))
        .with_state(guard)
}

/// The verified [`quarry_auth::Principal`] goes into the request
/// extensions (which rmcp hands to the handler with the request's
/// `http::request::Parts`); a request without a usable bearer token is
/// answered 401 here, its body read (up to [`crate::web::REFUSED_BODY_LIMIT`])
/// and dropped, never parsed.
async fn require_bearer(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let token = match bearer_token(request.headers()) {
        Ok(token) => token.to_owned(),
        Err(error) => {
            let response = unauthorized(&guard, request.headers(), &error);
            return drained(request, response).await;
        }
    };
    match guard.verifier.verify(&token).await {
        Ok(principal) => {
            // the gRPC calls made for this request take the principal from
            // here instead of verifying the token again
            request
                .extensions_mut()
                .insert(quarry_auth::VerifiedToken::new(&token, principal.clone()));
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(AuthError::KeySetUnavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
            "the identity provider's key set is unavailable; retry later",
        )
            .into_response(),
        Err(error) => {
            let response = unauthorized(&guard, request.headers(), &error);
            drained(request, response).await
        }
    }
}

/// `response`, once `request`'s body is read to its end and dropped
/// ([`crate::web::drain_refused`]: at most [`crate::web::REFUSED_BODY_LIMIT`]
/// bytes, for at most [`crate::web::REFUSED_BODY_WAIT`]).
async fn drained(request: Request, response: Response) -> Response {
    crate::web::drain_refused(request.into_body()).await;
    response
}

/// HTTP 401 with the `WWW-Authenticate` challenge of RFC 6750 §3 naming the
/// metadata (RFC 9728 §5.1); `error="invalid_token"` unless no token was
/// sent at all (RFC 6750 §3.1: a request without credentials gets no error
/// code).
fn unauthorized(guard: &Guard, headers: &HeaderMap, error: &AuthError) -> Response {
    let metadata = format!("{}{METADATA}{ENDPOINT}", base_url(guard, headers));
    let mut challenge = format!("Bearer resource_metadata=\"{metadata}\"");
    let sent = !matches!(error, AuthError::MissingToken);
    if sent {
        // the description is ours (AuthError's text): no quotes to escape
        let description = error.to_string().replace(['"', '\\'], "'");
        challenge.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{description}\""
        ));
    }
    tracing::debug!(error = %error, "mcp request not authenticated");
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({
            "error": if sent { "invalid_token" } else { "unauthorized" },
            "error_description": error.to_string(),
        })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The OAuth 2.0 protected-resource metadata of the MCP endpoint (RFC 9728
/// §2): `resource`, `authorization_servers` (omitted when none is known),
/// `bearer_methods_supported` (`header` only: RFC 6750 §2.1),
/// `scopes_supported` ([`TOOL_SCOPES`]), `resource_name`.
async fn metadata(State(guard): State<Guard>, headers: HeaderMap) -> Response {
    let mut document = serde_json::json!({
        "resource": format!("{}{ENDPOINT}", base_url(&guard, &headers)),
        "bearer_methods_supported": ["header"],
        "scopes_supported": TOOL_SCOPES,
        "resource_name": "Quarry",
    });
    if !guard.authorization_servers.is_empty() {
        document["authorization_servers"] = serde_json::json!(guard.authorization_servers);
    }
    Json(document).into_response()
}

/// `mcp.public_url`, else `http://` plus the request's `Host` (HTTP/1.1;
/// hyper puts HTTP/2's `:authority` there too).
fn base_url(guard: &Guard, headers: &HeaderMap) -> String {
    if let Some(url) = &guard.public_url {
        return url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['"', '\\', ' ']))
        .unwrap_or("localhost");
    format!("http://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(public_url: Option<&str>) -> Guard {
        Guard {
            verifier: Arc::new(JwtVerifier::hs256(b"secret")),
            public_url: public_url.map(str::to_owned),
            authorization_servers: Vec::new(),
        }
    }

    fn challenge(response: &Response) -> String {
        response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn no_token_is_challenged_without_an_error_code() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7000"));
        let response = unauthorized(&guard(None), &headers, &AuthError::MissingToken);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge(&response),
            "Bearer resource_metadata=\"http://127.0.0.1:7000/.well-known/oauth-protected-resource/mcp\""
        );
    }

    /// Sends `head`, then (after a pause, so the server has the head
    /// alone) `body`; returns the status line of the answer, or `None`
    /// when the connection closed first.
    async fn exchange(
        stream: &mut tokio::net::TcpStream,
        head: &str,
        body: &str,
    ) -> Option<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream.write_all(head.as_bytes()).await.ok()?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stream.write_all(body.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = stream.read(&mut buffer).await.ok()?;
            if read == 0 {
                return None;
            }
            answer.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&answer);
            // the whole answer: its head and a body of its content-length
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length {
                    return text.lines().next().map(str::to_owned);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_refused_request_leaves_the_connection_usable_for_the_next() {
        let app = Router::new()
            .route("/mcp", axum::routing::post(|| async { "reached" }))
            .route_layer(axum::middleware::from_fn_with_state(
                guard(None),
                require_bearer,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let body = r#"{"jsonrpc":"2.0","id":1}"#;
        for authorization in ["", "authorization: Bearer not.a.jwt\r\n"] {
            let head = format!(
                "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 {authorization}content-length: {}\r\n\r\n",
                body.len()
            );
            // twice on one connection: the body of the first is read, so
            // the second is answered too
            for _ in 0..2 {
                let status = exchange(&mut stream, &head, body).await;
                assert_eq!(
                    status.as_deref(),
                    Some("HTTP/1.1 401 Unauthorized"),
                    "{authorization:?}"
                );
            }
        }
    }

    #[test]
    fn a_bad_token_is_challenged_as_invalid_token() {
        let response = unauthorized(
            &guard(Some("https://quarry.example.com")),
            &HeaderMap::new(),
            &AuthError::Expired,
        );
        assert_eq!(
            challenge(&response),
            "Bearer resource_metadata=\"https://quarry.example.com/.well-known/oauth-protected-resource/mcp\", \
             error=\"invalid_token\", error_description=\"token expired\""
        );
    }
}
