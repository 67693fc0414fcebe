//! Replies (device → host), as types.

use std::fmt;

use plist::{Dictionary, Value};

use crate::fields::{Builder, Fields};
use crate::request::names;
use crate::{CodecError, ErrorKind};

/// Which daemon answered `QueryType`: the `Type` field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DaemonType {
    /// `com.apple.mobile.lockdown`: a phone booted into iOS.
    Lockdown,
    /// `com.apple.mobile.restored`: the restore ramdisk.
    Restored,
    /// Anything else, verbatim.
    Other(String),
}

impl DaemonType {
    /// Wire string of [`DaemonType::Lockdown`].
    pub const LOCKDOWN: &'static str = "com.apple.mobile.lockdown";
    /// Wire string of [`DaemonType::Restored`].
    pub const RESTORED: &'static str = "com.apple.mobile.restored";

    /// The `Type` string.
    pub fn as_str(&self) -> &str {
        match self {
            DaemonType::Lockdown => Self::LOCKDOWN,
            DaemonType::Restored => Self::RESTORED,
            DaemonType::Other(text) => text,
        }
    }

    /// Maps a `Type` string.
    pub fn from_wire(text: &str) -> Self {
        match text {
            Self::LOCKDOWN => DaemonType::Lockdown,
            Self::RESTORED => DaemonType::Restored,
            other => DaemonType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for DaemonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The old-style `Result` field (`Success`/`Failure`), still sent by some daemons.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `Success`
    Success,
    /// `Failure`
    Failure,
    /// Anything else, verbatim.
    Other(String),
}

impl Outcome {
    /// The `Result` string.
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Success => "Success",
            Outcome::Failure => "Failure",
            Outcome::Other(text) => text,
        }
    }

    /// Maps a `Result` string.
    pub fn from_wire(text: &str) -> Self {
        match text {
            "Success" => Outcome::Success,
            "Failure" => Outcome::Failure,
            other => Outcome::Other(other.to_owned()),
        }
    }
}

/// A reply dictionary, typed by the `Request` it echoes.
///
/// Decoding order: an `Error` field makes [`Reply::Error`]; `Result = Failure` makes
/// [`Reply::Generic`]; then the echoed name picks the typed variant. A reply without a
/// `Request` echo but with a `Type` is a `QueryType` reply (restored does not always echo).
/// Everything else is [`Reply::Generic`] with its fields verbatim.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// Answer to `QueryType`.
    QueryType {
        /// `Type`.
        daemon: DaemonType,
        /// `RestoreProtocolVersion` (restored only).
        restore_protocol_version: Option<u64>,
    },
    /// Answer to `GetValue`.
    GetValue {
        /// `Domain` echoed.
        domain: Option<String>,
        /// `Key` echoed.
        key: Option<String>,
        /// `Value`: any plist (a dictionary when a whole domain was asked for).
        value: Option<Value>,
    },
    /// Answer to `StartSession`.
    StartSession {
        /// `SessionID`, needed for `StopSession`.
        session_id: String,
        /// `EnableSessionSSL`: the host must start TLS on this same stream now.
        enable_session_ssl: bool,
    },
    /// Answer to `StartService`.
    StartService {
        /// `Service` echoed.
        service: Option<String>,
        /// `Port` to connect to through the mux.
        port: u16,
        /// `EnableServiceSSL`: the service connection starts with TLS.
        enable_service_ssl: bool,
    },
    /// The device refused: `Error` string plus whatever else it sent (e.g. `ExtendedResponse`).
    Error {
        /// `Request` echoed, if any.
        request: Option<String>,
        /// `Error`, typed.
        error: ErrorKind,
        /// Remaining fields.
        fields: Dictionary,
    },
    /// Any other reply (SetValue, RemoveValue, StopSession, EnterRecovery, Goodbye, Pair,
    /// restored QueryValue, ...): the echo, the optional `Result`, the rest verbatim.
    Generic {
        /// `Request` echoed, if any.
        request: Option<String>,
        /// `Result`, if present.
        result: Option<Outcome>,
        /// Remaining fields (e.g. `EscrowBag` after `Pair`, `HardwareInfo` from restored).
        fields: Dictionary,
    },
}

impl Reply {
    /// A success reply to `request` with no payload: `{Request: name}`.
    pub fn ack(request: &str) -> Self {
        Reply::Generic {
            request: Some(request.to_owned()),
            result: None,
            fields: Dictionary::new(),
        }
    }

    /// An error reply to `request`.
    pub fn error(request: &str, error: ErrorKind) -> Self {
        Reply::Error {
            request: Some(request.to_owned()),
            error,
            fields: Dictionary::new(),
        }
    }

    /// The `Request` this reply echoes.
    pub fn request(&self) -> Option<&str> {
        match self {
            Reply::QueryType { .. } => Some(names::QUERY_TYPE),
            Reply::GetValue { .. } => Some(names::GET_VALUE),
            Reply::StartSession { .. } => Some(names::START_SESSION),
            Reply::StartService { .. } => Some(names::START_SERVICE),
            Reply::Error { request, .. } | Reply::Generic { request, .. } => request.as_deref(),
        }
    }

    /// The wire dictionary.
    pub fn to_dictionary(&self) -> Dictionary {
        let mut b = Builder::default();
        b.opt("Request", self.request().map(str::to_owned));
        match self {
            Reply::QueryType {
                daemon,
                restore_protocol_version,
            } => {
                b.put("Type", daemon.as_str().to_owned())
                    .opt("RestoreProtocolVersion", *restore_protocol_version);
            }
            Reply::GetValue { domain, key, value } => {
                b.opt("Domain", domain.clone())
                    .opt("Key", key.clone())
                    .opt("Value", value.clone());
            }
            Reply::StartSession {
                session_id,
                enable_session_ssl,
            } => {
                b.put("SessionID", session_id.clone())
                    .put("EnableSessionSSL", *enable_session_ssl);
            }
            Reply::StartService {
                service,
                port,
                enable_service_ssl,
            } => {
                b.opt("Service", service.clone())
                    .put("Port", u64::from(*port))
                    .put("EnableServiceSSL", *enable_service_ssl);
            }
            Reply::Error { error, fields, .. } => {
                b.put("Error", error.as_str().to_owned()).extend(fields);
            }
            Reply::Generic { result, fields, .. } => {
                b.opt("Result", result.as_ref().map(|r| r.as_str().to_owned()))
                    .extend(fields);
            }
        }
        b.finish()
    }

    /// Reads a reply dictionary (host side).
    pub fn from_dictionary(dict: Dictionary) -> Result<Self, CodecError> {
        let mut f = Fields::new(dict, "reply");
        let request = f.string("Request")?;
        if let Some(name) = &request {
            f.message = format!("{name} reply");
        }
        if let Some(error) = f.string("Error")? {
            return Ok(Reply::Error {
                request,
                error: ErrorKind::from_wire(&error),
                fields: f.rest(),
            });
        }
        let result = f.string("Result")?.map(|text| Outcome::from_wire(&text));
        let is_query_type = match request.as_deref() {
            Some(name) => name == names::QUERY_TYPE,
            None => f.contains("Type"),
        };
        if result == Some(Outcome::Failure) {
            return Ok(Reply::Generic {
                request,
                result,
                fields: f.rest(),
            });
        }
        let reply = if is_query_type {
            if request.is_none() {
                f.message = "QueryType reply".into();
            }
            Reply::QueryType {
                daemon: DaemonType::from_wire(&f.required_string("Type")?),
                restore_protocol_version: f.unsigned("RestoreProtocolVersion")?,
            }
        } else {
            match request.as_deref() {
                Some(names::GET_VALUE) => Reply::GetValue {
                    domain: f.string("Domain")?,
                    key: f.string("Key")?,
                    value: f.value("Value"),
                },
                Some(names::START_SESSION) => Reply::StartSession {
                    session_id: f.required_string("SessionID")?,
                    enable_session_ssl: f.boolean("EnableSessionSSL")?.unwrap_or(false),
                },
                Some(names::START_SERVICE) => {
                    let service = f.string("Service")?;
                    let port = f.unsigned("Port")?.ok_or_else(|| f.missing("Port"))?;
                    let port = u16::try_from(port).map_err(|_| CodecError::OutOfRange {
                        message: f.message.clone(),
                        field: "Port",
                        value: port.to_string(),
                        range: "1..=65535",
                    })?;
                    Reply::StartService {
                        service,
                        port,
                        enable_service_ssl: f.boolean("EnableServiceSSL")?.unwrap_or(false),
                    }
                }
                _ => Reply::Generic {
                    request,
                    result,
                    fields: f.rest(),
                },
            }
        };
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: &[(&str, Value)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn restored_query_type_without_echo() {
        let reply = Reply::from_dictionary(dict(&[
            ("Type", DaemonType::RESTORED.into()),
            ("RestoreProtocolVersion", Value::from(15u64)),
        ]))
        .unwrap();
        assert_eq!(
            reply,
            Reply::QueryType {
                daemon: DaemonType::Restored,
                restore_protocol_version: Some(15)
            }
        );
    }

    #[test]
    fn port_must_be_an_integer_in_range() {
        let base = [
            ("Request", Value::from("StartService")),
            ("Service", Value::from("com.apple.afc")),
        ];
        let mut d = dict(&base);
        d.insert("Port".into(), "62078".into());
        assert!(matches!(
            Reply::from_dictionary(d),
            Err(CodecError::WrongType {
                field: "Port",
                expected: "integer",
                found: "string",
                ..
            })
        ));
        let mut d = dict(&base);
        d.insert("Port".into(), Value::from(70_000u64));
        assert!(matches!(
            Reply::from_dictionary(d),
            Err(CodecError::OutOfRange { field: "Port", .. })
        ));
        let mut d = dict(&base);
        d.insert("Port".into(), Value::from(-1i64));
        assert!(matches!(
            Reply::from_dictionary(d),
            Err(CodecError::OutOfRange { field: "Port", .. })
        ));
        let d = dict(&base);
        assert!(matches!(
            Reply::from_dictionary(d),
            Err(CodecError::MissingField { field: "Port", .. })
        ));
    }

    #[test]
    fn error_wins_over_everything() {
        let reply = Reply::from_dictionary(dict(&[
            ("Request", "StartSession".into()),
            ("Error", "InvalidHostID".into()),
        ]))
        .unwrap();
        assert_eq!(
            reply,
            Reply::error("StartSession", ErrorKind::InvalidHostID)
        );
        let err = Reply::from_dictionary(dict(&[
            ("Request", "StartSession".into()),
            ("Error", Value::from(3u64)),
        ]))
        .unwrap_err();
        assert!(matches!(err, CodecError::WrongType { field: "Error", .. }));
    }

    #[test]
    fn old_style_failure() {
        let reply = Reply::from_dictionary(dict(&[
            ("Request", "StartSession".into()),
            ("Result", "Failure".into()),
        ]))
        .unwrap();
        assert!(matches!(
            reply,
            Reply::Generic {
                result: Some(Outcome::Failure),
                ..
            }
        ));
    }
}
