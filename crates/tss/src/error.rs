//! Errors of asking for a ticket.

use thiserror::Error;

/// A transport failure of one attempt (the only kind the client retries).
#[derive(Debug, Error)]
pub enum TransportError {
    /// TCP connect failed (refused, unreachable).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate not trusted, name mismatch, protocol).
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        /// host:port.
        addr: String,
        /// Why (rustls' error inside).
        #[source]
        source: std::io::Error,
    },
    /// The attempt took longer than its timeout.
    #[error("no answer within {ms} ms")]
    Timeout {
        /// The per-attempt timeout.
        ms: u128,
    },
    /// The connection broke (reset, closed before a full answer).
    #[error("HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
}

/// Why no ticket came.
#[derive(Debug, Error)]
pub enum TssError {
    /// The server answered STATUS ≠ 0; never retried.
    #[error("TSS refused (STATUS {status}): {message}")]
    Refused {
        /// `STATUS`.
        status: u32,
        /// `MESSAGE`.
        message: String,
    },
    /// The answer is not `STATUS=…&MESSAGE=…`.
    #[error("TSS answer malformed ({reason}); it starts {start:?}")]
    Malformed {
        /// What was wrong.
        reason: &'static str,
        /// The first bytes, for the log.
        start: String,
    },
    /// STATUS 0 but no usable ticket.
    #[error("TSS answer has no ticket: {reason}")]
    NoTicket {
        /// What was missing.
        reason: &'static str,
    },
    /// The REQUEST_STRING plist does not parse.
    #[error("TSS answer's REQUEST_STRING is not a plist: {0}")]
    Plist(#[source] plist::Error),
    /// Something is larger than its limit.
    #[error("TSS {what} of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The server answered with an HTTP status other than 200.
    #[error("TSS server answered HTTP {status}")]
    Http {
        /// The HTTP status.
        status: u16,
    },
    /// The URL is not one the client can use.
    #[error("TSS URL {url:?} not usable: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// Every attempt failed in transport.
    #[error("TSS server unreachable after {attempts} attempt(s): {last}")]
    Transport {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: TransportError,
    },
}

impl TssError {
    /// STATUS 94: the build is not signed for this device (what iTunes shows as error 3194).
    pub fn is_unsigned_build(&self) -> bool {
        matches!(self, TssError::Refused { status: 94, .. })
    }

    /// The server's status, for a refusal.
    pub fn status(&self) -> Option<u32> {
        match self {
            TssError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}
