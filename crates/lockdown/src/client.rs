//! A thin async driver of [`HostCodec`] over any byte stream (a usbmux connection to port
//! 62078, a TCP socket, a `tokio::io::duplex` in tests).

use std::sync::Arc;

use bytes::Bytes;
use plist::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

use crate::codec::check_reply;
use crate::pairing::{pair_outcome, pair_request, validate_pair_request, PairOutcome};
use crate::{CodecError, DaemonType, Error, HostCodec, PairRecordFile, Reply, Request};

/// Lockdown's TCP port on the phone (reached through usbmux).
pub const PORT: u16 = 62078;

/// What `QueryType` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryType {
    /// `Type`.
    pub daemon: DaemonType,
    /// `RestoreProtocolVersion` (restored only).
    pub restore_protocol_version: Option<u64>,
}

/// What `StartSession` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `SessionID`, for [`Client::stop_session`].
    pub session_id: String,
    /// `EnableSessionSSL`: start TLS on this stream now (see [`Client::into_parts`]).
    pub enable_session_ssl: bool,
}

/// What `StartService` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `Service` echoed (or the name asked for, when the device does not echo it).
    pub service: String,
    /// `Port` to connect to through the mux.
    pub port: u16,
    /// `EnableServiceSSL`.
    pub enable_service_ssl: bool,
}

/// An async lockdown client: one request, one reply, in order.
///
/// TLS comes later: when `StartSession` answers `enable_session_ssl`, take the stream back with
/// [`Client::into_parts`], wrap it, and build a new client on the TLS stream.
#[derive(Debug)]
pub struct Client<S> {
    stream: S,
    codec: HostCodec,
    read_buf: Vec<u8>,
}

const READ_CHUNK: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client with the default codec (XML, no label).
    pub fn new(stream: S) -> Self {
        Self::with_codec(stream, HostCodec::new())
    }

    /// A client with a configured codec (label, format, frame limit).
    pub fn with_codec(stream: S, codec: HostCodec) -> Self {
        Client {
            stream,
            codec,
            read_buf: vec![0; READ_CHUNK],
        }
    }

    /// The stream, e.g. to read its peer address.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Gives the stream back (for a TLS upgrade or a service connection).
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Gives the stream back with any bytes already read past the last reply (normally none:
    /// lockdownd does not speak first).
    pub fn into_parts(self) -> (S, Bytes) {
        let mut codec = self.codec;
        let leftover = drain(&mut codec);
        (self.stream, leftover)
    }

    /// Sends a request without waiting for a reply (`StartRestore`).
    pub async fn send(&mut self, request: &Request) -> Result<(), Error> {
        let mut out = Vec::new();
        self.codec
            .encode_request(request, &mut out)
            .map_err(|source| Error::Codec {
                request: request.name().to_owned(),
                source,
            })?;
        let io = |source| Error::Io {
            request: request.name().to_owned(),
            phase: "sending",
            source,
        };
        self.stream.write_all(&out).await.map_err(io)?;
        self.stream.flush().await.map_err(io)
    }

    /// Reads the next reply frame, unchecked.
    pub async fn receive(&mut self) -> Result<Reply, Error> {
        let request = self.codec.pending().unwrap_or("(none)").to_owned();
        loop {
            match self.codec.poll_reply() {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(source) => return Err(Error::Codec { request, source }),
            }
            let n = self
                .stream
                .read(&mut self.read_buf)
                .await
                .map_err(|source| Error::Io {
                    request: request.clone(),
                    phase: "receiving",
                    source,
                })?;
            if n == 0 {
                return Err(Error::Closed {
                    request,
                    buffered: self.codec.buffered(),
                });
            }
            self.codec
                .receive(self.read_buf.get(..n).unwrap_or_default());
        }
    }

    /// Sends `request`, waits for its reply and checks it with [`check_reply`].
    pub async fn request(&mut self, request: Request) -> Result<Reply, Error> {
        self.send(&request).await?;
        let reply = self.receive().await?;
        check_reply(request.name(), reply)
    }

    /// `QueryType`: lockdownd (normal iOS) or restored (restore ramdisk)?
    pub async fn query_type(&mut self) -> Result<QueryType, Error> {
        match self.request(Request::QueryType).await? {
            Reply::QueryType {
                daemon,
                restore_protocol_version,
            } => Ok(QueryType {
                daemon,
                restore_protocol_version,
            }),
            other => Err(unexpected("QueryType", &other)),
        }
    }

    /// `GetValue`: one key (or a whole domain when `key` is `None`).
    pub async fn get_value(
        &mut self,
        domain: Option<&str>,
        key: Option<&str>,
    ) -> Result<Value, Error> {
        let request = Request::GetValue {
            domain: domain.map(str::to_owned),
            key: key.map(str::to_owned),
        };
        match self.request(request).await? {
            Reply::GetValue {
                value: Some(value), ..
            } => Ok(value),
            Reply::GetValue { value: None, .. } => Err(Error::Reply {
                request: "GetValue".into(),
                source: CodecError::MissingField {
                    message: "GetValue reply".into(),
                    field: "Value",
                },
            }),
            other => Err(unexpected("GetValue", &other)),
        }
    }

    /// `SetValue`.
    pub async fn set_value(
        &mut self,
        domain: Option<&str>,
        key: Option<&str>,
        value: Value,
    ) -> Result<(), Error> {
        self.request(Request::SetValue {
            domain: domain.map(str::to_owned),
            key: key.map(str::to_owned),
            value,
        })
        .await
        .map(drop)
    }

    /// `RemoveValue`.
    pub async fn remove_value(
        &mut self,
        domain: Option<&str>,
        key: Option<&str>,
    ) -> Result<(), Error> {
        self.request(Request::RemoveValue {
            domain: domain.map(str::to_owned),
            key: key.map(str::to_owned),
        })
        .await
        .map(drop)
    }

    /// `StartSession` with the pair record's HostID and SystemBUID.
    pub async fn start_session(
        &mut self,
        host_id: &str,
        system_buid: &str,
    ) -> Result<Session, Error> {
        let request = Request::StartSession {
            host_id: host_id.to_owned(),
            system_buid: Some(system_buid.to_owned()),
        };
        match self.request(request).await? {
            Reply::StartSession {
                session_id,
                enable_session_ssl,
            } => Ok(Session {
                session_id,
                enable_session_ssl,
            }),
            other => Err(unexpected("StartSession", &other)),
        }
    }

    /// `StopSession`.
    pub async fn stop_session(&mut self, session_id: &str) -> Result<(), Error> {
        self.request(Request::StopSession {
            session_id: session_id.to_owned(),
        })
        .await
        .map(drop)
    }

    /// `StartService` without an escrow bag.
    pub async fn start_service(&mut self, name: &str) -> Result<Service, Error> {
        self.start_service_with(name, None).await
    }

    /// `StartService`, optionally with the pair record's `EscrowBag`.
    pub async fn start_service_with(
        &mut self,
        name: &str,
        escrow_bag: Option<Vec<u8>>,
    ) -> Result<Service, Error> {
        let request = Request::StartService {
            service: name.to_owned(),
            escrow_bag,
        };
        match self.request(request).await? {
            Reply::StartService {
                service,
                port,
                enable_service_ssl,
            } => Ok(Service {
                service: service.unwrap_or_else(|| name.to_owned()),
                port,
                enable_service_ssl,
            }),
            other => Err(unexpected("StartService", &other)),
        }
    }

    /// `EnterRecovery`: the phone reboots into recovery mode; expect a disconnect.
    pub async fn enter_recovery(&mut self) -> Result<(), Error> {
        self.request(Request::EnterRecovery).await.map(drop)
    }

    /// `Goodbye`.
    pub async fn goodbye(&mut self) -> Result<(), Error> {
        self.request(Request::Goodbye).await.map(drop)
    }

    /// `GetValue DevicePublicKey`: the phone's PEM `RSA PUBLIC KEY`, input of
    /// [`crate::pairing::generate_pair_record`].
    pub async fn device_public_key(&mut self) -> Result<Vec<u8>, Error> {
        match self.get_value(None, Some("DevicePublicKey")).await? {
            Value::Data(pem) => Ok(pem),
            _ => Err(Error::Reply {
                request: "GetValue".into(),
                source: CodecError::WrongType {
                    message: "GetValue DevicePublicKey reply".into(),
                    field: "Value",
                    expected: "data",
                    found: "other",
                },
            }),
        }
    }

    /// `Pair` with `record`. [`PairOutcome::TrustDialogPending`] means "tap Trust on the phone,
    /// then call again"; on [`PairOutcome::Paired`] save the `EscrowBag` in the record.
    pub async fn pair(&mut self, record: &PairRecordFile) -> Result<PairOutcome, Error> {
        let request = pair_request(record);
        self.send(&request).await?;
        let reply = self.receive().await?;
        pair_outcome(request.name(), reply)
    }

    /// `ValidatePair` with `record`.
    pub async fn validate_pair(&mut self, record: &PairRecordFile) -> Result<PairOutcome, Error> {
        let request = validate_pair_request(record);
        self.send(&request).await?;
        let reply = self.receive().await?;
        pair_outcome(request.name(), reply)
    }

    /// Starts TLS on this stream (after a `StartSession` that enabled session SSL) with a
    /// configuration from [`crate::tls::client_config`]; lockdown requests continue inside.
    pub async fn start_tls(
        self,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Client<TlsStream<S>>, Error> {
        let Client {
            stream,
            mut codec,
            read_buf,
        } = self;
        let leftover = codec.take_buffered();
        if !leftover.is_empty() {
            return Err(Error::BytesBeforeTls {
                buffered: leftover.len(),
            });
        }
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(crate::tls::server_name(), stream)
            .await
            .map_err(|source| Error::Tls { source })?;
        Ok(Client {
            stream: tls,
            codec,
            read_buf,
        })
    }

    /// `StartSession` with the record's HostID and SystemBUID, then TLS pinned to the record:
    /// the session and a client speaking inside it.
    pub async fn start_tls_session(
        mut self,
        record: &PairRecordFile,
    ) -> Result<(Session, Client<TlsStream<S>>), Error> {
        let config = crate::tls::client_config(record)?;
        let session = self
            .start_session(&record.host_id, &record.system_buid)
            .await?;
        if !session.enable_session_ssl {
            return Err(Error::NoSessionSsl {
                session_id: session.session_id,
            });
        }
        let client = self.start_tls(config).await?;
        Ok((session, client))
    }
}

fn drain(codec: &mut HostCodec) -> Bytes {
    // The codec keeps partial input in its frame decoder; hand back whatever is there.
    codec.take_buffered()
}

fn unexpected(request: &str, reply: &Reply) -> Error {
    // check_reply already matched the echo, so this is a typed reply of another shape: e.g. a
    // Generic `Result = Success` reply with the right echo to a request we type.
    Error::Mismatch {
        expected: request.to_owned(),
        found: reply.request().map(str::to_owned),
    }
}
