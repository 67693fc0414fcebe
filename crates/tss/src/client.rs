//! The thin async driver: POST a [`Request`] to a TSS server over HTTP/1.1 (hyper 1 on tokio)
//! and parse the answer. Each attempt has its own timeout; only transport failures (connect
//! refused, connection reset or closed early, timeout) are retried, a bounded number of
//! times; any answer with STATUS ≠ 0 (or an HTTP error status) ends the call at once.
//!
//! TLS is a seam: [`Connector`] hands the client a byte stream for an [`Endpoint`];
//! [`TcpConnector`] does plain `http://`, [`crate::tls::TlsConnector`] `https://` (rustls over
//! the same TCP stream), given with [`Client::with_connector`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{TransportError, TssError};
use crate::request::Request;
use crate::response::{parse, Ticket, MAX_RESPONSE};

/// Apple's signing server.
pub const DEFAULT_URL: &str = "http://gs.apple.com/TSS/controller?action=2";
/// `Content-Type` as Apple's clients send it.
pub const CONTENT_TYPE_VALUE: &str = "text/xml; charset=\"utf-8\"";
/// `User-Agent` as Apple's clients send it.
pub const USER_AGENT_VALUE: &str = "InetURL/1.0";

/// Where and how to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The server URL (`http://host[:port]/path?query`).
    pub url: String,
    /// Time one attempt (connect, send, whole answer) may take.
    pub attempt_timeout: Duration,
    /// Attempts in all (at least 1).
    pub max_attempts: u32,
    /// Pause between transport failures.
    pub retry_delay: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            url: DEFAULT_URL.to_owned(),
            attempt_timeout: Duration::from_secs(30),
            max_attempts: 5,
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// The parts of a TSS URL the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or address.
    pub host: String,
    /// Port (80/443 by default).
    pub port: u16,
    /// Path and query, e.g. `/TSS/controller?action=2`.
    pub path_and_query: String,
}

impl Endpoint {
    /// Parses `scheme://host[:port][/path][?query]`.
    pub fn parse(url: &str) -> Result<Endpoint, TssError> {
        let bad = |reason| TssError::Url {
            url: url.chars().take(200).collect(),
            reason,
        };
        let (scheme, rest) = url.split_once("://").ok_or(bad("no scheme"))?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("scheme is neither http nor https")),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, p.parse().map_err(|_| bad("port is not a number"))?)
            }
            _ => (authority, default_port),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path_and_query = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Endpoint {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            port,
            path_and_query,
        })
    }

    fn host_header(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Opens the byte stream an HTTP exchange runs over.
pub trait Connector: Send + Sync {
    /// The stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Whether this connector can reach `scheme` URLs.
    fn supports(&self, scheme: &str) -> bool;
    /// Connects to the endpoint.
    fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<Self::Io, TransportError>> + Send;
}

/// Plain TCP for `http://` URLs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Io = TcpStream;

    fn supports(&self, scheme: &str) -> bool {
        scheme == "http"
    }

    fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<TcpStream, TransportError>> + Send {
        let addr = format!("{}:{}", endpoint.host, endpoint.port);
        async move {
            let host = addr.clone();
            TcpStream::connect(host)
                .await
                .map_err(|source| TransportError::Connect { addr, source })
        }
    }
}

/// The retry rule, in one place: transport failures are retried until `max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// After attempt number `attempt` (1-based) failed in transport: try again?
    pub fn retry_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts.max(1)
    }
}

/// A TSS client.
#[derive(Debug, Clone)]
pub struct Client<C = TcpConnector> {
    config: Config,
    endpoint: Endpoint,
    connector: C,
}

impl Client<TcpConnector> {
    /// A plain-HTTP client.
    pub fn new(config: Config) -> Result<Client<TcpConnector>, TssError> {
        Client::with_connector(config, TcpConnector)
    }
}

/// What one attempt ended with.
enum Attempt {
    Answer(Result<Ticket, TssError>),
    Transport(TransportError),
}

impl<C: Connector> Client<C> {
    /// A client over any connector (e.g. TLS).
    pub fn with_connector(config: Config, connector: C) -> Result<Client<C>, TssError> {
        let endpoint = Endpoint::parse(&config.url)?;
        if !connector.supports(&endpoint.scheme) {
            return Err(TssError::Url {
                url: config.url.clone(),
                reason: "this connector cannot reach that scheme (https needs a TLS connector)",
            });
        }
        Ok(Client {
            config,
            endpoint,
            connector,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Asks for a ticket.
    pub async fn request(&self, request: &Request) -> Result<Ticket, TssError> {
        let body = Bytes::from(request.to_xml());
        let policy = RetryPolicy {
            max_attempts: self.config.max_attempts,
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let timed = tokio::time::timeout(self.config.attempt_timeout, self.once(body.clone()));
            let outcome = match timed.await {
                Ok(a) => a,
                Err(_) => Attempt::Transport(TransportError::Timeout {
                    ms: self.config.attempt_timeout.as_millis(),
                }),
            };
            match outcome {
                Attempt::Answer(r) => return r,
                Attempt::Transport(e) => {
                    tracing::debug!(attempt, error = %e, "TSS attempt failed in transport");
                    if !policy.retry_after(attempt) {
                        return Err(TssError::Transport {
                            attempts: attempt,
                            last: e,
                        });
                    }
                    if !self.config.retry_delay.is_zero() {
                        tokio::time::sleep(self.config.retry_delay).await;
                    }
                }
            }
        }
    }

    async fn once(&self, body: Bytes) -> Attempt {
        let io = match self.connector.connect(&self.endpoint).await {
            Ok(io) => io,
            Err(e) => return Attempt::Transport(e),
        };
        let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await
        {
            Ok(x) => x,
            Err(e) => return Attempt::Transport(TransportError::Http(e)),
        };
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let outcome = self.exchange(&mut sender, body).await;
        driver.abort();
        outcome
    }

    async fn exchange(
        &self,
        sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        body: Bytes,
    ) -> Attempt {
        let mut req = hyper::Request::new(Full::new(body));
        *req.method_mut() = hyper::Method::POST;
        match self.endpoint.path_and_query.parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => {
                return Attempt::Answer(Err(TssError::Url {
                    url: self.config.url.clone(),
                    reason: "path is not a valid URI",
                }))
            }
        }
        let Ok(host) = HeaderValue::from_str(&self.endpoint.host_header()) else {
            return Attempt::Answer(Err(TssError::Url {
                url: self.config.url.clone(),
                reason: "host is not a valid header value",
            }));
        };
        let h = req.headers_mut();
        h.insert(HOST, host);
        h.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_VALUE));
        h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Attempt::Transport(TransportError::Http(e)),
        };
        let status = resp.status();
        let collected = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await;
        let bytes = match collected {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                return match e.downcast::<hyper::Error>() {
                    Ok(h) => Attempt::Transport(TransportError::Http(*h)),
                    Err(_) => Attempt::Answer(Err(TssError::TooLarge {
                        what: "answer",
                        len: MAX_RESPONSE + 1,
                        limit: MAX_RESPONSE,
                    })),
                }
            }
        };
        if !status.is_success() {
            return Attempt::Answer(Err(TssError::Http {
                status: status.as_u16(),
            }));
        }
        Attempt::Answer(parse(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse(DEFAULT_URL).unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.host.as_str(), e.port),
            ("http", "gs.apple.com", 80)
        );
        assert_eq!(e.path_and_query, "/TSS/controller?action=2");
        assert_eq!(e.host_header(), "gs.apple.com");
        let e = Endpoint::parse("http://127.0.0.1:8080?action=2").unwrap();
        assert_eq!((e.port, e.path_and_query.as_str()), (8080, "/?action=2"));
        assert_eq!(e.host_header(), "127.0.0.1:8080");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://:80/").is_err());
        assert!(Endpoint::parse("http://h:x/").is_err());
        assert!(matches!(
            Client::new(Config {
                url: "https://gs.apple.com/TSS/controller?action=2".into(),
                ..Config::default()
            }),
            Err(TssError::Url { .. })
        ));
    }

    #[test]
    fn retry_rule() {
        let p = RetryPolicy { max_attempts: 3 };
        assert!(p.retry_after(1) && p.retry_after(2) && !p.retry_after(3));
        assert!(!RetryPolicy { max_attempts: 0 }.retry_after(1));
    }
}
