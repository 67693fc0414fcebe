//! Errors of the sans-IO codec (framing and message decoding) and of the async client.

use crate::{ErrorKind, Format};

/// Something a peer sent (or we were asked to send) that the codec cannot carry.
///
/// Every variant says what was expected and what came, so a log line is enough to tell a
/// truncated cable pull from a device that speaks a dialect we do not know.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The 4-byte length prefix announces more than the decoder accepts. Nothing was allocated.
    #[error("frame length prefix announces {len} bytes, more than the limit of {max} bytes")]
    FrameTooLong {
        /// Announced payload length.
        len: u64,
        /// The decoder's limit.
        max: u32,
    },
    /// The input ended inside a frame (peer closed mid-frame).
    #[error("input ended inside a frame: {buffered} bytes buffered, {needed} bytes needed")]
    Truncated {
        /// Bytes received of the unfinished frame (prefix included).
        buffered: usize,
        /// Bytes the frame needs in total (prefix included); 4 while the prefix is incomplete.
        needed: usize,
    },
    /// The payload is neither a valid XML nor a valid binary plist (this includes non-UTF-8 XML).
    #[error("frame payload ({len} bytes) is not a valid plist: {source}")]
    InvalidPlist {
        /// Payload length.
        len: usize,
        /// What the hardened plist decoder said (format, and the parser's error with its
        /// position).
        #[source]
        source: plist_limits::Error,
    },
    /// The plist nests containers deeper than the codec accepts.
    #[error("plist nests containers deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A plist that decodes to more values, or more bytes of values, than the codec accepts
    /// (e.g. a binary plist whose shared references expand a small frame into a huge value).
    #[error("plist decodes to more than {max} {measure} (counted at least {found})")]
    TooLarge {
        /// Which budget ran out.
        measure: plist_limits::Measure,
        /// The budget.
        max: u64,
        /// How much was counted when decoding stopped.
        found: u64,
    },
    /// The top-level plist of a lockdown message must be a dictionary.
    #[error("lockdown message is a plist {found}, expected a dictionary")]
    NotADictionary {
        /// The plist type that came.
        found: &'static str,
    },
    /// A field the message needs is absent.
    #[error("{message}: missing field `{field}`")]
    MissingField {
        /// Which message (e.g. `StartService reply`).
        message: String,
        /// The wire key.
        field: &'static str,
    },
    /// A field has the wrong plist type.
    #[error("{message}: field `{field}` is a plist {found}, expected {expected}")]
    WrongType {
        /// Which message.
        message: String,
        /// The wire key.
        field: &'static str,
        /// The plist type the protocol uses.
        expected: &'static str,
        /// The plist type that came.
        found: &'static str,
    },
    /// A field has the right type but a value outside its range (e.g. `Port` 70000).
    #[error("{message}: field `{field}` = {value} is outside {range}")]
    OutOfRange {
        /// Which message.
        message: String,
        /// The wire key.
        field: &'static str,
        /// The value, as text.
        value: String,
        /// The accepted range.
        range: &'static str,
    },
    /// Serialising a message failed (e.g. a `Uid` cannot be written as XML).
    #[error("cannot encode {message} as {format:?} plist: {source}")]
    Encode {
        /// Which message.
        message: String,
        /// The format asked for.
        format: Format,
        /// What the plist writer said.
        #[source]
        source: plist::Error,
    },
    /// An encoded message is larger than a 32-bit length prefix (or the configured limit) allows.
    #[error("{message} encodes to {len} bytes, more than the limit of {max} bytes")]
    EncodeTooLong {
        /// Which message.
        message: String,
        /// Encoded payload length.
        len: usize,
        /// The limit.
        max: u64,
    },
}

/// Why a request made through [`crate::Client`] (or checked with [`crate::check_reply`]) failed.
///
/// Each variant names the request it belongs to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device answered with an `Error` string.
    #[error("lockdown {request} failed on the device: {kind}")]
    Device {
        /// The request we sent.
        request: String,
        /// The `Error` string, typed.
        kind: ErrorKind,
    },
    /// The device answered `Result = Failure` without an `Error` string (iOS before 5).
    #[error("lockdown {request} failed on the device (Result = Failure, no Error given)")]
    Failed {
        /// The request we sent.
        request: String,
    },
    /// The reply echoes a different `Request` (or none).
    #[error(
        "lockdown {expected} got a reply echoing {}",
        .found.as_deref().unwrap_or("no Request")
    )]
    Mismatch {
        /// The request we sent.
        expected: String,
        /// The `Request` the reply echoed, if any.
        found: Option<String>,
    },
    /// The reply echoes the right request but lacks what the request is for.
    #[error("lockdown {request} reply is unusable: {source}")]
    Reply {
        /// The request we sent.
        request: String,
        /// What was wrong with the reply.
        #[source]
        source: CodecError,
    },
    /// Encoding the request or decoding the reply failed.
    #[error("lockdown {request}: {source}")]
    Codec {
        /// The request in flight.
        request: String,
        /// The codec error.
        #[source]
        source: CodecError,
    },
    /// The transport failed.
    #[error("lockdown {request}: i/o error while {phase}: {source}")]
    Io {
        /// The request in flight.
        request: String,
        /// `sending` or `receiving`.
        phase: &'static str,
        /// The transport error.
        #[source]
        source: std::io::Error,
    },
    /// The peer closed the connection before the reply was complete.
    #[error("lockdown {request}: connection closed with {buffered} bytes of an unfinished reply")]
    Closed {
        /// The request in flight.
        request: String,
        /// Bytes of the partial reply frame that had arrived (0: closed between frames).
        buffered: usize,
    },
    /// `StartSession` succeeded but the phone did not ask for TLS (`EnableSessionSSL` false), so
    /// a TLS session cannot start.
    #[error("lockdown StartSession {session_id}: the phone did not enable session SSL")]
    NoSessionSsl {
        /// The session that did start.
        session_id: String,
    },
    /// The pair record cannot make a TLS configuration.
    #[error("lockdown TLS: {0}")]
    TlsConfig(#[from] crate::tls::TlsError),
    /// The TLS handshake failed (e.g. the phone's certificate is not the pinned one).
    #[error("lockdown TLS handshake failed: {source}")]
    Tls {
        /// The transport or TLS error (rustls errors are wrapped in it).
        #[source]
        source: std::io::Error,
    },
    /// Bytes arrived after the StartSession reply before TLS started: the stream is out of step.
    #[error("lockdown: {buffered} unexpected bytes before the TLS handshake")]
    BytesBeforeTls {
        /// How many.
        buffered: usize,
    },
}

impl Error {
    /// The device-side error kind, when the device said no.
    pub fn device_kind(&self) -> Option<&ErrorKind> {
        match self {
            Error::Device { kind, .. } => Some(kind),
            _ => None,
        }
    }
}
