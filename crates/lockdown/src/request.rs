//! Requests (host → device): `{Label, Request, ...}` dictionaries, as types.

use plist::{Dictionary, Value};

use crate::fields::{Builder, Fields};
use crate::CodecError;

/// Wire names of the requests this crate types.
pub mod names {
    /// `QueryType`
    pub const QUERY_TYPE: &str = "QueryType";
    /// `GetValue`
    pub const GET_VALUE: &str = "GetValue";
    /// `SetValue`
    pub const SET_VALUE: &str = "SetValue";
    /// `RemoveValue`
    pub const REMOVE_VALUE: &str = "RemoveValue";
    /// `StartSession`
    pub const START_SESSION: &str = "StartSession";
    /// `StopSession`
    pub const STOP_SESSION: &str = "StopSession";
    /// `StartService`
    pub const START_SERVICE: &str = "StartService";
    /// `EnterRecovery`
    pub const ENTER_RECOVERY: &str = "EnterRecovery";
    /// `Goodbye`
    pub const GOODBYE: &str = "Goodbye";
    /// `Pair`
    pub const PAIR: &str = "Pair";
    /// `ValidatePair`
    pub const VALIDATE_PAIR: &str = "ValidatePair";
    /// `Unpair`
    pub const UNPAIR: &str = "Unpair";
    /// `QueryValue` (restored)
    pub const QUERY_VALUE: &str = "QueryValue";
    /// `StartRestore` (restored)
    pub const START_RESTORE: &str = "StartRestore";
    /// `Reboot` (restored)
    pub const REBOOT: &str = "Reboot";
}

/// The certificates and identities a host presents when pairing. Only the message shape: the
/// crypto that fills it is another module's job. Keys this type does not name are kept in
/// `extra`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PairRecord {
    /// `DeviceCertificate` (PEM bytes).
    pub device_certificate: Option<Vec<u8>>,
    /// `HostCertificate` (PEM bytes).
    pub host_certificate: Option<Vec<u8>>,
    /// `RootCertificate` (PEM bytes).
    pub root_certificate: Option<Vec<u8>>,
    /// `DevicePublicKey` (PEM bytes).
    pub device_public_key: Option<Vec<u8>>,
    /// `HostID`, a UUID string.
    pub host_id: Option<String>,
    /// `SystemBUID`, the host's identity as usbmuxd knows it.
    pub system_buid: Option<String>,
    /// `WiFiMACAddress`.
    pub wifi_mac_address: Option<String>,
    /// `EscrowBag`.
    pub escrow_bag: Option<Vec<u8>>,
    /// Any other key, verbatim.
    pub extra: Dictionary,
}

impl PairRecord {
    const MESSAGE: &'static str = "PairRecord";

    /// The record as a plist dictionary.
    pub fn to_dictionary(&self) -> Dictionary {
        Builder::default()
            .data("DeviceCertificate", self.device_certificate.as_deref())
            .data("HostCertificate", self.host_certificate.as_deref())
            .data("RootCertificate", self.root_certificate.as_deref())
            .data("DevicePublicKey", self.device_public_key.as_deref())
            .opt("HostID", self.host_id.clone())
            .opt("SystemBUID", self.system_buid.clone())
            .opt("WiFiMACAddress", self.wifi_mac_address.clone())
            .data("EscrowBag", self.escrow_bag.as_deref())
            .extend(&self.extra)
            .finish()
    }

    /// Reads a record; typed keys must have their protocol types.
    pub fn from_dictionary(dict: Dictionary) -> Result<Self, CodecError> {
        let mut f = Fields::new(dict, Self::MESSAGE);
        Ok(PairRecord {
            device_certificate: f.data("DeviceCertificate")?,
            host_certificate: f.data("HostCertificate")?,
            root_certificate: f.data("RootCertificate")?,
            device_public_key: f.data("DevicePublicKey")?,
            host_id: f.string("HostID")?,
            system_buid: f.string("SystemBUID")?,
            wifi_mac_address: f.string("WiFiMACAddress")?,
            escrow_bag: f.data("EscrowBag")?,
            extra: f.rest(),
        })
    }
}

/// The body shared by `Pair`, `ValidatePair` and `Unpair`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PairRequest {
    /// `PairRecord`.
    pub pair_record: Option<PairRecord>,
    /// `ProtocolVersion` (hosts send `"2"`).
    pub protocol_version: Option<String>,
    /// `PairingOptions` (e.g. `ExtendedPairingErrors`).
    pub pairing_options: Option<Dictionary>,
}

/// A request body. [`Envelope`] adds the `Label`.
///
/// A name this crate does not type decodes to [`Request::Other`] with its fields verbatim, so
/// nothing a peer sends is lost. (Encoding `Other` with a typed name decodes as the typed
/// variant.) Unknown extra keys in typed requests are ignored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// `QueryType`: which daemon is listening (lockdownd or restored).
    QueryType,
    /// `GetValue`: one key, or a whole domain when `key` is `None`.
    GetValue {
        /// `Domain`; `None` is the global domain.
        domain: Option<String>,
        /// `Key`; `None` asks for every key of the domain.
        key: Option<String>,
    },
    /// `SetValue`.
    SetValue {
        /// `Domain`.
        domain: Option<String>,
        /// `Key`; `None` sets a whole domain from a dictionary `value`.
        key: Option<String>,
        /// `Value`.
        value: Value,
    },
    /// `RemoveValue`.
    RemoveValue {
        /// `Domain`.
        domain: Option<String>,
        /// `Key`.
        key: Option<String>,
    },
    /// `StartSession`: needs a pairing; the reply may switch the socket to TLS.
    StartSession {
        /// `HostID` from the pair record.
        host_id: String,
        /// `SystemBUID` from the pair record.
        system_buid: Option<String>,
    },
    /// `StopSession`.
    StopSession {
        /// `SessionID` from the StartSession reply.
        session_id: String,
    },
    /// `StartService`: asks lockdownd to open a service port.
    StartService {
        /// `Service`, e.g. `com.apple.mobile.diagnostics_relay`.
        service: String,
        /// `EscrowBag` from the pair record, for services that need the device unlocked.
        escrow_bag: Option<Vec<u8>>,
    },
    /// `EnterRecovery`: reboot into iBoot recovery (needs a session on recent iOS).
    EnterRecovery,
    /// `Goodbye`: polite close.
    Goodbye,
    /// `Pair`.
    Pair(PairRequest),
    /// `ValidatePair`.
    ValidatePair(PairRequest),
    /// `Unpair`.
    Unpair(PairRequest),
    /// `QueryValue` (restored): e.g. `HardwareInfo`, `SavedDebugInfo`.
    QueryValue {
        /// `QueryKey`.
        query_key: Option<String>,
    },
    /// `StartRestore` (restored): no reply; the restore message loop starts.
    StartRestore {
        /// `RestoreProtocolVersion` from the QueryType reply.
        restore_protocol_version: Option<u64>,
        /// `RestoreOptions`.
        restore_options: Option<Dictionary>,
    },
    /// `Reboot` (restored).
    Reboot,
    /// Any other request, fields verbatim (without `Label` and `Request`).
    Other {
        /// The `Request` string.
        name: String,
        /// The remaining fields.
        fields: Dictionary,
    },
}

impl Request {
    /// The `Request` string.
    pub fn name(&self) -> &str {
        use names::*;
        match self {
            Request::QueryType => QUERY_TYPE,
            Request::GetValue { .. } => GET_VALUE,
            Request::SetValue { .. } => SET_VALUE,
            Request::RemoveValue { .. } => REMOVE_VALUE,
            Request::StartSession { .. } => START_SESSION,
            Request::StopSession { .. } => STOP_SESSION,
            Request::StartService { .. } => START_SERVICE,
            Request::EnterRecovery => ENTER_RECOVERY,
            Request::Goodbye => GOODBYE,
            Request::Pair(_) => PAIR,
            Request::ValidatePair(_) => VALIDATE_PAIR,
            Request::Unpair(_) => UNPAIR,
            Request::QueryValue { .. } => QUERY_VALUE,
            Request::StartRestore { .. } => START_RESTORE,
            Request::Reboot => REBOOT,
            Request::Other { name, .. } => name,
        }
    }

    /// Whether the device answers this request (`StartRestore` is answered by the restore
    /// message loop instead).
    pub fn expects_reply(&self) -> bool {
        !matches!(self, Request::StartRestore { .. })
    }

    fn fields(&self) -> Dictionary {
        let mut b = Builder::default();
        match self {
            Request::QueryType | Request::EnterRecovery | Request::Goodbye | Request::Reboot => {}
            Request::GetValue { domain, key } | Request::RemoveValue { domain, key } => {
                b.opt("Domain", domain.clone()).opt("Key", key.clone());
            }
            Request::SetValue { domain, key, value } => {
                b.opt("Domain", domain.clone())
                    .opt("Key", key.clone())
                    .put("Value", value.clone());
            }
            Request::StartSession {
                host_id,
                system_buid,
            } => {
                b.put("HostID", host_id.clone())
                    .opt("SystemBUID", system_buid.clone());
            }
            Request::StopSession { session_id } => {
                b.put("SessionID", session_id.clone());
            }
            Request::StartService {
                service,
                escrow_bag,
            } => {
                b.put("Service", service.clone())
                    .data("EscrowBag", escrow_bag.as_deref());
            }
            Request::Pair(pair) | Request::ValidatePair(pair) | Request::Unpair(pair) => {
                b.opt(
                    "PairRecord",
                    pair.pair_record.as_ref().map(PairRecord::to_dictionary),
                )
                .opt("ProtocolVersion", pair.protocol_version.clone())
                .opt("PairingOptions", pair.pairing_options.clone());
            }
            Request::QueryValue { query_key } => {
                b.opt("QueryKey", query_key.clone());
            }
            Request::StartRestore {
                restore_protocol_version,
                restore_options,
            } => {
                b.opt("RestoreOptions", restore_options.clone())
                    .opt("RestoreProtocolVersion", *restore_protocol_version);
            }
            Request::Other { fields, .. } => {
                b.extend(fields);
            }
        }
        b.finish()
    }
}

/// A request with its `Label` (the client's name, shown in the device's logs).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `Label`.
    pub label: Option<String>,
    /// The request.
    pub request: Request,
}

impl Envelope {
    /// A request with a label.
    pub fn new(label: Option<String>, request: Request) -> Self {
        Envelope { label, request }
    }

    /// The wire dictionary: `Label`, `Request`, then the request's fields.
    pub fn to_dictionary(&self) -> Dictionary {
        let mut b = Builder::default();
        b.opt("Label", self.label.clone())
            .put("Request", self.request.name().to_owned());
        b.extend(&self.request.fields());
        b.finish()
    }

    /// Reads a request dictionary (device side).
    pub fn from_dictionary(dict: Dictionary) -> Result<Self, CodecError> {
        let mut f = Fields::new(dict, "request");
        let label = f.string("Label")?;
        let name = f.required_string("Request")?;
        f.message = format!("{name} request");
        let request = decode_body(&name, &mut f)?;
        let request = match request {
            Some(request) => request,
            None => Request::Other {
                name,
                fields: f.rest(),
            },
        };
        Ok(Envelope { label, request })
    }
}

fn pair_request(f: &mut Fields) -> Result<PairRequest, CodecError> {
    Ok(PairRequest {
        pair_record: f
            .dictionary("PairRecord")?
            .map(PairRecord::from_dictionary)
            .transpose()?,
        protocol_version: f.string("ProtocolVersion")?,
        pairing_options: f.dictionary("PairingOptions")?,
    })
}

fn decode_body(name: &str, f: &mut Fields) -> Result<Option<Request>, CodecError> {
    use names::*;
    let request = match name {
        QUERY_TYPE => Request::QueryType,
        GET_VALUE => Request::GetValue {
            domain: f.string("Domain")?,
            key: f.string("Key")?,
        },
        SET_VALUE => Request::SetValue {
            domain: f.string("Domain")?,
            key: f.string("Key")?,
            value: f.value("Value").ok_or_else(|| f.missing("Value"))?,
        },
        REMOVE_VALUE => Request::RemoveValue {
            domain: f.string("Domain")?,
            key: f.string("Key")?,
        },
        START_SESSION => Request::StartSession {
            host_id: f.required_string("HostID")?,
            system_buid: f.string("SystemBUID")?,
        },
        STOP_SESSION => Request::StopSession {
            session_id: f.required_string("SessionID")?,
        },
        START_SERVICE => Request::StartService {
            service: f.required_string("Service")?,
            escrow_bag: f.data("EscrowBag")?,
        },
        ENTER_RECOVERY => Request::EnterRecovery,
        GOODBYE => Request::Goodbye,
        PAIR => Request::Pair(pair_request(f)?),
        VALIDATE_PAIR => Request::ValidatePair(pair_request(f)?),
        UNPAIR => Request::Unpair(pair_request(f)?),
        QUERY_VALUE => Request::QueryValue {
            query_key: f.string("QueryKey")?,
        },
        START_RESTORE => Request::StartRestore {
            restore_protocol_version: f.unsigned("RestoreProtocolVersion")?,
            restore_options: f.dictionary("RestoreOptions")?,
        },
        REBOOT => Request::Reboot,
        _ => return Ok(None),
    };
    Ok(Some(request))
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
    fn get_value_shape() {
        let env = Envelope::new(
            Some("restation".into()),
            Request::GetValue {
                domain: None,
                key: Some("UniqueChipID".into()),
            },
        );
        let d = env.to_dictionary();
        assert_eq!(d.get("Label").and_then(Value::as_string), Some("restation"));
        assert_eq!(
            d.get("Request").and_then(Value::as_string),
            Some("GetValue")
        );
        assert_eq!(
            d.get("Key").and_then(Value::as_string),
            Some("UniqueChipID")
        );
        assert!(!d.contains_key("Domain"));
        assert_eq!(Envelope::from_dictionary(d).unwrap(), env);
    }

    #[test]
    fn request_not_a_string() {
        let err = Envelope::from_dictionary(dict(&[("Request", Value::from(7u64))])).unwrap_err();
        assert!(matches!(
            err,
            CodecError::WrongType {
                field: "Request",
                expected: "string",
                found: "integer",
                ..
            }
        ));
        let err = Envelope::from_dictionary(Dictionary::new()).unwrap_err();
        assert!(matches!(
            err,
            CodecError::MissingField {
                field: "Request",
                ..
            }
        ));
    }

    #[test]
    fn start_service_needs_a_service_string() {
        let err =
            Envelope::from_dictionary(dict(&[("Request", "StartService".into())])).unwrap_err();
        assert!(
            matches!(&err, CodecError::MissingField { message, field: "Service" } if message == "StartService request"),
            "{err}"
        );
        let err = Envelope::from_dictionary(dict(&[
            ("Request", "StartService".into()),
            ("Service", Value::Boolean(true)),
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            CodecError::WrongType {
                field: "Service",
                found: "boolean",
                ..
            }
        ));
    }

    #[test]
    fn unknown_request_is_kept() {
        let d = dict(&[
            ("Label", "x".into()),
            ("Request", "Activate".into()),
            ("ActivationRecord", Value::Dictionary(Dictionary::new())),
        ]);
        let env = Envelope::from_dictionary(d.clone()).unwrap();
        match &env.request {
            Request::Other { name, fields } => {
                assert_eq!(name, "Activate");
                assert!(fields.contains_key("ActivationRecord"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(env.to_dictionary(), d);
    }

    #[test]
    fn pair_record_keeps_unknown_keys() {
        let mut extra = Dictionary::new();
        extra.insert("HostPrivateKey".into(), Value::Data(vec![1, 2]));
        let record = PairRecord {
            host_id: Some("H".into()),
            system_buid: Some("B".into()),
            root_certificate: Some(b"pem".to_vec()),
            extra,
            ..PairRecord::default()
        };
        let back = PairRecord::from_dictionary(record.to_dictionary()).unwrap();
        assert_eq!(back, record);
    }
}
