//! The optional TCP listener (`restation serve --http ADDR`) for browsers, which cannot open
//! unix sockets: the same API and dashboard as the socket.
//!
//! Who may use it ([`Access`]):
//! - On a loopback address (`127.0.0.1`, `::1`) no token is needed; requests whose `Host` is
//!   not a loopback name are refused (a web page that rebinds its DNS name to 127.0.0.1 must
//!   not reach the API), as are `POST`s from a page of another origin.
//! - On any other address a token is required (`--http-token` or `http_token` in the
//!   configuration); without one the daemon refuses to start. Each request must carry it, as
//!   `Authorization: Bearer TOKEN` or as `?token=TOKEN` (the dashboard page and its event
//!   streams, which a browser opens without headers). A token given for a loopback address
//!   is required too.
//!
//! `/app.js` and `/style.css` are the dashboard's static code, the same bytes for everyone,
//! and are served without the token so that the page can load them; they hold no data.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

use super::{api, Shared};

/// Who may use the TCP listener.
#[derive(Clone, PartialEq, Eq)]
pub enum Access {
    /// Loopback, no token: anyone on this machine (with the `Host`/`Origin` checks).
    Loopback,
    /// Requests must carry this token.
    Token(Arc<str>),
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Loopback => f.write_str("Loopback"),
            // Never in a log line.
            Access::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// Why the TCP listener cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// Not loopback and no token.
    #[error(
        "--http {addr} is not a loopback address: a token is required (--http-token TOKEN or \
         http_token in the configuration), or listen on 127.0.0.1"
    )]
    TokenRequired {
        /// The address.
        addr: SocketAddr,
    },
    /// An empty or unusable token.
    #[error("the HTTP token must be 16 to 256 URL-safe characters (A-Z a-z 0-9 - . _ ~)")]
    BadToken,
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The shortest token accepted.
pub const MIN_TOKEN: usize = 16;
const MAX_TOKEN: usize = 256;

/// Who may use a listener on `addr` with `token`; refuses a non-loopback address without one.
pub fn access(addr: SocketAddr, token: Option<&str>) -> Result<Access, TcpError> {
    match token {
        Some(t) => {
            let usable = (MIN_TOKEN..=MAX_TOKEN).contains(&t.len())
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if usable {
                Ok(Access::Token(Arc::from(t)))
            } else {
                Err(TcpError::BadToken)
            }
        }
        None if addr.ip().is_loopback() => Ok(Access::Loopback),
        None => Err(TcpError::TokenRequired { addr }),
    }
}

/// Checks the access rule, then binds `addr`.
pub async fn bind(
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<(TcpListener, Access), TcpError> {
    let access = access(addr, token)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| TcpError::Bind { addr, source })?;
    Ok((listener, access))
}

/// The API's routes behind the access rule.
pub fn router(shared: Arc<Shared>, access: Access) -> Router {
    let guard = Guard {
        access,
        shared: Arc::clone(&shared),
    };
    api::router(shared).layer(axum::middleware::from_fn_with_state(guard, check))
}

/// Serves the API and dashboard on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    access: Access,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let app = router(Arc::clone(&shared), access);
    api::serve_on(listener, app, shared, shutdown).await;
}

#[derive(Clone)]
struct Guard {
    access: Access,
    shared: Arc<Shared>,
}

/// Equal without telling how much of it was equal by how long it took.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn token_in(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    bearer.or_else(|| {
        query?
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(str::to_string)
    })
}

/// Whether `host` (a `Host` header or an origin's authority, maybe with a port) names this
/// machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn refuse(guard: &Guard, status: StatusCode, error: &str) -> Response {
    guard.shared.api_refused.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%status, error, "HTTP request refused");
    let mut response = (status, axum::Json(serde_json::json!({ "error": error }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let public = matches!(path, "/app.js" | "/style.css");
    match &guard.access {
        Access::Token(token) => {
            let given = token_in(request.headers(), request.uri().query());
            let ok = given.is_some_and(|g| same(g.as_bytes(), token.as_bytes()));
            if !ok && !public {
                return refuse(
                    &guard,
                    StatusCode::UNAUTHORIZED,
                    "a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN",
                );
            }
        }
        Access::Loopback => {
            let header_of = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
            if let Some(host) = header_of(header::HOST) {
                if !loopback_host(host) {
                    return refuse(
                        &guard,
                        StatusCode::FORBIDDEN,
                        "this listener answers only to a loopback Host (localhost, 127.0.0.1, [::1])",
                    );
                }
            }
            if request.method() != Method::GET && request.method() != Method::HEAD {
                let foreign = header_of(header::ORIGIN).is_some_and(|origin| {
                    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
                    !loopback_host(authority)
                });
                if foreign {
                    return refuse(
                        &guard,
                        StatusCode::FORBIDDEN,
                        "requests from pages of other origins are refused",
                    );
                }
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn another_address_than_loopback_needs_a_usable_token() {
        assert_eq!(
            access(addr("127.0.0.1:8080"), None).unwrap(),
            Access::Loopback
        );
        assert_eq!(access(addr("[::1]:8080"), None).unwrap(), Access::Loopback);
        assert!(matches!(
            access(addr("0.0.0.0:8080"), None),
            Err(TcpError::TokenRequired { .. })
        ));
        assert!(matches!(
            access(addr("192.168.1.10:8080"), None),
            Err(TcpError::TokenRequired { .. })
        ));
        assert!(matches!(
            access(addr("0.0.0.0:8080"), Some("")),
            Err(TcpError::BadToken)
        ));
        assert!(matches!(
            access(addr("0.0.0.0:8080"), Some("short")),
            Err(TcpError::BadToken)
        ));
        assert!(matches!(
            access(addr("0.0.0.0:8080"), Some("has spaces in it, sixteen+")),
            Err(TcpError::BadToken)
        ));
        assert!(matches!(
            access(addr("0.0.0.0:8080"), Some("bench-token-0123456789")),
            Ok(Access::Token(_))
        ));
    }

    #[test]
    fn tokens_come_from_the_bearer_header_or_the_query() {
        let mut h = HeaderMap::new();
        assert_eq!(token_in(&h, Some("a=1&token=xyz")), Some("xyz".into()));
        assert_eq!(token_in(&h, Some("a=1")), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(token_in(&h, None), Some("abc".into()));
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:9",
            "127.1.2.3",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:80",
            "[fe80::1]:1",
            "",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
