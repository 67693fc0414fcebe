//! The usbmuxd client-socket protocol (`/var/run/usbmuxd`), both directions.
//!
//! This is what libimobiledevice tools speak to a usbmux daemon: a 16-byte header in
//! little-endian (`length` including the header, `version` 0 binary / 1 plist, `message`,
//! `tag`) and a payload. Version 1 payloads are XML plists with a `MessageType`
//! (message 8, PLIST); version 0 is the legacy binary form of RESULT, CONNECT, LISTEN,
//! DEVICE_ADD, DEVICE_REMOVE and DEVICE_PAIRED. After a successful `Connect` the socket
//! becomes a raw byte pipe to the device port ([`RequestDecoder::into_remaining`]).
//!
//! Clients encode [`ClientRequest`]s and decode [`DaemonResponse`]s; a daemon does the
//! reverse. Decoders take partial reads and enforce a maximum message size; plist payloads
//! are parsed by [`plist_limits::decode`] within [`Limits`] (nesting depth, value count,
//! decoded bytes), so a hostile peer gets [`SocketError::PlistPayload`], not a crash.

use bytes::{Bytes, BytesMut};
use plist::{Dictionary, Value};
pub use plist_limits::Limits;
use thiserror::Error;

/// Size of the socket header.
pub const HEADER_LEN: usize = 16;
/// Default largest message a decoder accepts (header included).
pub const DEFAULT_MAX_MESSAGE: usize = 4 << 20;
/// Size of the binary DEVICE_ADD record (`device_id u32, product_id u16, serial[256],
/// padding u16, location u32`).
pub const DEVICE_RECORD_LEN: usize = 268;
/// The `kLibUSBMuxVersion` libusbmuxd sends.
pub const LIBUSBMUX_VERSION: u64 = 3;

/// Payload encoding, the header's `version` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// 0: legacy binary structs.
    Binary,
    /// 1: XML plist (binary plist is accepted on input).
    Plist,
}

impl Format {
    /// Wire value.
    pub fn number(self) -> u32 {
        match self {
            Format::Binary => 0,
            Format::Plist => 1,
        }
    }
}

/// The header's `message` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 1
    Result,
    /// 2
    Connect,
    /// 3
    Listen,
    /// 4
    DeviceAdd,
    /// 5
    DeviceRemove,
    /// 6
    DevicePaired,
    /// 8
    Plist,
}

impl MessageType {
    /// Wire value.
    pub fn number(self) -> u32 {
        match self {
            MessageType::Result => 1,
            MessageType::Connect => 2,
            MessageType::Listen => 3,
            MessageType::DeviceAdd => 4,
            MessageType::DeviceRemove => 5,
            MessageType::DevicePaired => 6,
            MessageType::Plist => 8,
        }
    }

    /// From the wire value.
    pub fn from_number(n: u32) -> Option<MessageType> {
        Some(match n {
            1 => MessageType::Result,
            2 => MessageType::Connect,
            3 => MessageType::Listen,
            4 => MessageType::DeviceAdd,
            5 => MessageType::DeviceRemove,
            6 => MessageType::DevicePaired,
            8 => MessageType::Plist,
            _ => return None,
        })
    }
}

/// The 16-byte header, fields as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Message length including this header.
    pub length: u32,
    /// 0 binary, 1 plist.
    pub version: u32,
    /// Message type number.
    pub message: u32,
    /// Echoed in replies.
    pub tag: u32,
}

impl Header {
    /// The 16 bytes (little-endian).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.length.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.message.to_le_bytes());
        b[12..16].copy_from_slice(&self.tag.to_le_bytes());
        b
    }

    /// Decodes the first 16 bytes of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Header, SocketError> {
        if buf.len() < HEADER_LEN {
            return Err(SocketError::Truncated {
                what: "socket header",
                needed: HEADER_LEN,
                got: buf.len(),
            });
        }
        Ok(Header {
            length: le_u32(buf, 0),
            version: le_u32(buf, 4),
            message: le_u32(buf, 8),
            tag: le_u32(buf, 12),
        })
    }
}

/// Result numbers of a `Result` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// 0
    Ok,
    /// 1
    BadCommand,
    /// 2
    BadDevice,
    /// 3
    ConnectionRefused,
    /// 6
    BadVersion,
    /// Anything else (usbmuxd also sends errno values, e.g. for pair records).
    Other(u32),
}

impl ResultCode {
    /// Wire value.
    pub fn number(self) -> u32 {
        match self {
            ResultCode::Ok => 0,
            ResultCode::BadCommand => 1,
            ResultCode::BadDevice => 2,
            ResultCode::ConnectionRefused => 3,
            ResultCode::BadVersion => 6,
            ResultCode::Other(n) => n,
        }
    }

    /// From the wire value.
    pub fn from_number(n: u32) -> ResultCode {
        match n {
            0 => ResultCode::Ok,
            1 => ResultCode::BadCommand,
            2 => ResultCode::BadDevice,
            3 => ResultCode::ConnectionRefused,
            6 => ResultCode::BadVersion,
            n => ResultCode::Other(n),
        }
    }
}

/// Who is asking: the informational keys libusbmuxd puts in every plist request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ClientInfo {
    /// `BundleID`.
    pub bundle_id: Option<String>,
    /// `ClientVersionString`.
    pub client_version_string: Option<String>,
    /// `ProgName`.
    pub prog_name: Option<String>,
    /// `kLibUSBMuxVersion` (3 for current libusbmuxd).
    pub lib_usbmux_version: Option<u64>,
}

impl ClientInfo {
    /// The keys as restation sends them (the shape libusbmuxd uses).
    pub fn new(prog_name: &str) -> ClientInfo {
        ClientInfo {
            bundle_id: Some("org.restation.usbmux".into()),
            client_version_string: Some(
                concat!("restation usbmux ", env!("CARGO_PKG_VERSION")).into(),
            ),
            prog_name: Some(prog_name.into()),
            lib_usbmux_version: Some(LIBUSBMUX_VERSION),
        }
    }
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// Subscribe to Attached/Detached notifications.
    Listen,
    /// Open a pipe to `port` on device `device_id` (port in host order here; the wire
    /// carries it byte-swapped, as `htons` leaves it).
    Connect {
        /// `DeviceID`.
        device_id: u32,
        /// Device TCP port.
        port: u16,
    },
    /// `ListDevices`.
    ListDevices,
    /// `ListListeners`.
    ListListeners,
    /// `ReadBUID`.
    ReadBuid,
    /// `ReadPairRecord`.
    ReadPairRecord {
        /// `PairRecordID` (the UDID).
        pair_record_id: String,
    },
    /// `SavePairRecord`.
    SavePairRecord {
        /// `PairRecordID`.
        pair_record_id: String,
        /// `PairRecordData` (a plist, as bytes).
        data: Vec<u8>,
        /// `DeviceID`, sent by newer clients.
        device_id: Option<u32>,
    },
    /// `DeletePairRecord`.
    DeletePairRecord {
        /// `PairRecordID`.
        pair_record_id: String,
    },
}

impl Request {
    /// The `MessageType` string.
    pub fn message_type(&self) -> &'static str {
        match self {
            Request::Listen => "Listen",
            Request::Connect { .. } => "Connect",
            Request::ListDevices => "ListDevices",
            Request::ListListeners => "ListListeners",
            Request::ReadBuid => "ReadBUID",
            Request::ReadPairRecord { .. } => "ReadPairRecord",
            Request::SavePairRecord { .. } => "SavePairRecord",
            Request::DeletePairRecord { .. } => "DeletePairRecord",
        }
    }
}

/// A request as framed on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientRequest {
    /// Tag echoed by the reply.
    pub tag: u32,
    /// Binary (Listen and Connect only) or plist.
    pub format: Format,
    /// Client keys (plist only; empty in binary).
    pub client: ClientInfo,
    /// The request.
    pub request: Request,
}

/// `Properties` of an attached device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceProperties {
    /// `ConnectionType`: "USB" (or "Network").
    pub connection_type: String,
    /// `DeviceID`.
    pub device_id: u32,
    /// `LocationID` (`bus << 16 | address` in usbmuxd).
    pub location_id: Option<u32>,
    /// `ProductID`.
    pub product_id: Option<u16>,
    /// `SerialNumber` (the UDID).
    pub serial_number: String,
    /// `ConnectionSpeed` in bit/s.
    pub connection_speed: Option<u64>,
    /// `USBSerialNumber` (newer usbmuxd: the raw USB serial string).
    pub usb_serial_number: Option<String>,
}

/// One `Attached` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceRecord {
    /// Top-level `DeviceID`.
    pub device_id: u32,
    /// `Properties`.
    pub properties: DeviceProperties,
}

/// One `ListenerList` entry (keys as usbmuxd and netmuxd send them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Listener {
    /// `Blacklisted`.
    pub blacklisted: bool,
    /// `BundleID`.
    pub bundle_id: Option<String>,
    /// `ConnType`.
    pub conn_type: u64,
    /// `ID String`.
    pub id_string: Option<String>,
    /// `ProgName`.
    pub prog_name: Option<String>,
    /// `ClientVersionString`.
    pub client_version_string: Option<String>,
    /// `kLibUSBMuxVersion`.
    pub lib_usbmux_version: Option<u64>,
}

/// What a daemon sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    /// `Result` with `Number`.
    Result(ResultCode),
    /// `Attached` notification (DEVICE_ADD in binary).
    Attached(DeviceRecord),
    /// `Detached` notification (DEVICE_REMOVE in binary).
    Detached {
        /// `DeviceID`.
        device_id: u32,
    },
    /// `Paired` notification (DEVICE_PAIRED in binary).
    Paired {
        /// `DeviceID`.
        device_id: u32,
    },
    /// Reply to `ListDevices`.
    DeviceList(Vec<DeviceRecord>),
    /// Reply to `ReadBUID`.
    Buid(String),
    /// Reply to `ReadPairRecord`.
    PairRecordData(Vec<u8>),
    /// Reply to `ListListeners`.
    ListenerList(Vec<Listener>),
}

/// A response as framed on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DaemonResponse {
    /// Tag of the request answered (0 for notifications).
    pub tag: u32,
    /// Binary (Result/Attached/Detached/Paired only) or plist.
    pub format: Format,
    /// The response.
    pub response: Response,
}

/// Errors of the socket protocol. [`SocketError::is_fatal`] tells whether the byte stream
/// is lost; the others concern one message, which has been consumed.
#[derive(Debug, Error)]
pub enum SocketError {
    /// Not enough bytes.
    #[error("truncated {what}: need {needed} bytes, have {got}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Needed.
        needed: usize,
        /// Present.
        got: usize,
    },
    /// Header length below 16.
    #[error("message length {length} is shorter than the 16-byte header")]
    LengthTooShort {
        /// Length field.
        length: u32,
    },
    /// Header length beyond the decoder's maximum.
    #[error("message length {length} exceeds the maximum of {max}")]
    LengthTooLong {
        /// Length field.
        length: u32,
        /// Limit.
        max: usize,
    },
    /// `version` neither 0 nor 1.
    #[error("unsupported payload version {version} (0 binary, 1 plist)")]
    BadVersion {
        /// Version field.
        version: u32,
    },
    /// A message number that is not known or not valid in this direction/format.
    #[error("unexpected message type {message} with payload version {version}")]
    UnexpectedMessage {
        /// Message field.
        message: u32,
        /// Version field.
        version: u32,
    },
    /// A binary payload of the wrong size.
    #[error("binary {what} payload must be {expected} bytes, got {got}")]
    BinarySize {
        /// Which message.
        what: &'static str,
        /// Expected size.
        expected: usize,
        /// Actual size.
        got: usize,
    },
    /// A binary serial number that is not UTF-8.
    #[error("serial number in binary DEVICE_ADD is not UTF-8")]
    SerialNotUtf8,
    /// Writing a plist payload failed.
    #[error("cannot write plist payload: {0}")]
    Plist(#[from] plist::Error),
    /// A received plist payload is malformed, or nests deeper or decodes larger than the
    /// decoder's [`Limits`] ([`plist_limits::Error::is_limit`] tells which). Only this message
    /// is lost.
    #[error("plist payload ({len} bytes) refused: {source}")]
    PlistPayload {
        /// Payload length.
        len: usize,
        /// Why the hardened plist decoder refused it.
        #[source]
        source: plist_limits::Error,
    },
    /// The plist is not a dictionary.
    #[error("plist payload is a {found}, expected a dictionary")]
    NotADictionary {
        /// Kind found.
        found: &'static str,
    },
    /// A required key is absent.
    #[error("{message}: missing key {key}")]
    MissingKey {
        /// Message being decoded.
        message: &'static str,
        /// Key.
        key: &'static str,
    },
    /// A key has the wrong type or an out-of-range value.
    #[error("{message}: key {key} should be {expected}")]
    BadValue {
        /// Message being decoded.
        message: &'static str,
        /// Key.
        key: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// A request `MessageType` this crate does not know.
    #[error("unknown request MessageType {0:?}")]
    UnknownRequest(String),
    /// A plist response that matches no known shape.
    #[error("plist response matches no known reply (MessageType {message_type:?})")]
    UnknownResponse {
        /// Its MessageType, if any.
        message_type: Option<String>,
    },
    /// The message has no binary form.
    #[error("{0} has no binary (version 0) form")]
    NoBinaryForm(&'static str),
    /// A serial number longer than the 255 bytes of the binary record, or holding NUL.
    #[error("serial number of {len} bytes does not fit the binary record")]
    SerialTooLong {
        /// Its length.
        len: usize,
    },
}

impl SocketError {
    /// Whether the stream cannot be read further.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SocketError::LengthTooShort { .. } | SocketError::LengthTooLong { .. }
        )
    }
}

fn le_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn frame(format: Format, message: MessageType, tag: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(HEADER_LEN + payload.len()).unwrap_or(u32::MAX);
    let header = Header {
        length,
        version: format.number(),
        message: message.number(),
        tag,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    out
}

fn plist_frame(tag: u32, dict: Dictionary) -> Result<Vec<u8>, SocketError> {
    let mut xml = Vec::new();
    Value::Dictionary(dict).to_writer_xml(&mut xml)?;
    Ok(frame(Format::Plist, MessageType::Plist, tag, &xml))
}

fn parse_dict(payload: &[u8], limits: &Limits) -> Result<Dictionary, SocketError> {
    let value =
        plist_limits::decode(payload, limits).map_err(|source| SocketError::PlistPayload {
            len: payload.len(),
            source,
        })?;
    match value {
        Value::Dictionary(d) => Ok(d),
        other => Err(SocketError::NotADictionary {
            found: kind(&other),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    plist_limits::kind(v)
}

struct Keys<'a> {
    dict: &'a Dictionary,
    message: &'static str,
}

impl<'a> Keys<'a> {
    fn opt_u64(&self, key: &'static str) -> Result<Option<u64>, SocketError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) => i.as_unsigned().map(Some).ok_or(SocketError::BadValue {
                message: self.message,
                key,
                expected: "an unsigned integer",
            }),
            Some(_) => Err(SocketError::BadValue {
                message: self.message,
                key,
                expected: "an unsigned integer",
            }),
        }
    }

    fn u64(&self, key: &'static str) -> Result<u64, SocketError> {
        self.opt_u64(key)?.ok_or(SocketError::MissingKey {
            message: self.message,
            key,
        })
    }

    fn opt_u32(&self, key: &'static str) -> Result<Option<u32>, SocketError> {
        self.opt_u64(key)?
            .map(|v| {
                u32::try_from(v).map_err(|_| SocketError::BadValue {
                    message: self.message,
                    key,
                    expected: "a 32-bit unsigned integer",
                })
            })
            .transpose()
    }

    fn u32(&self, key: &'static str) -> Result<u32, SocketError> {
        self.opt_u32(key)?.ok_or(SocketError::MissingKey {
            message: self.message,
            key,
        })
    }

    fn opt_string(&self, key: &'static str) -> Result<Option<String>, SocketError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(SocketError::BadValue {
                message: self.message,
                key,
                expected: "a string",
            }),
        }
    }

    fn string(&self, key: &'static str) -> Result<String, SocketError> {
        self.opt_string(key)?.ok_or(SocketError::MissingKey {
            message: self.message,
            key,
        })
    }

    fn data(&self, key: &'static str) -> Result<Vec<u8>, SocketError> {
        match self.dict.get(key) {
            None => Err(SocketError::MissingKey {
                message: self.message,
                key,
            }),
            Some(Value::Data(d)) => Ok(d.clone()),
            Some(_) => Err(SocketError::BadValue {
                message: self.message,
                key,
                expected: "data",
            }),
        }
    }

    /// Informational keys: a wrong type reads as absent.
    fn lenient_string(&self, key: &'static str) -> Option<String> {
        self.dict
            .get(key)
            .and_then(Value::as_string)
            .map(str::to_owned)
    }

    fn lenient_u64(&self, key: &'static str) -> Option<u64> {
        self.dict.get(key).and_then(Value::as_unsigned_integer)
    }
}

fn put_opt_string(d: &mut Dictionary, key: &str, v: &Option<String>) {
    if let Some(s) = v {
        d.insert(key.into(), Value::String(s.clone()));
    }
}

fn put_u64(d: &mut Dictionary, key: &str, v: u64) {
    d.insert(key.into(), Value::Integer(v.into()));
}

// ---- requests -------------------------------------------------------------------------------

impl ClientRequest {
    /// The whole message (header + payload).
    pub fn encode(&self) -> Result<Vec<u8>, SocketError> {
        match self.format {
            Format::Binary => match &self.request {
                Request::Listen => Ok(frame(Format::Binary, MessageType::Listen, self.tag, &[])),
                Request::Connect { device_id, port } => {
                    let mut p = Vec::with_capacity(8);
                    p.extend_from_slice(&device_id.to_le_bytes());
                    p.extend_from_slice(&port.to_be_bytes());
                    p.extend_from_slice(&[0, 0]);
                    Ok(frame(Format::Binary, MessageType::Connect, self.tag, &p))
                }
                other => Err(SocketError::NoBinaryForm(other.message_type())),
            },
            Format::Plist => {
                let mut d = Dictionary::new();
                put_opt_string(&mut d, "BundleID", &self.client.bundle_id);
                put_opt_string(
                    &mut d,
                    "ClientVersionString",
                    &self.client.client_version_string,
                );
                d.insert(
                    "MessageType".into(),
                    Value::String(self.request.message_type().into()),
                );
                put_opt_string(&mut d, "ProgName", &self.client.prog_name);
                if let Some(v) = self.client.lib_usbmux_version {
                    put_u64(&mut d, "kLibUSBMuxVersion", v);
                }
                match &self.request {
                    Request::Connect { device_id, port } => {
                        put_u64(&mut d, "DeviceID", u64::from(*device_id));
                        put_u64(&mut d, "PortNumber", u64::from(port.swap_bytes()));
                    }
                    Request::ReadPairRecord { pair_record_id }
                    | Request::DeletePairRecord { pair_record_id } => {
                        d.insert("PairRecordID".into(), Value::String(pair_record_id.clone()));
                    }
                    Request::SavePairRecord {
                        pair_record_id,
                        data,
                        device_id,
                    } => {
                        d.insert("PairRecordID".into(), Value::String(pair_record_id.clone()));
                        d.insert("PairRecordData".into(), Value::Data(data.clone()));
                        if let Some(id) = device_id {
                            put_u64(&mut d, "DeviceID", u64::from(*id));
                        }
                    }
                    Request::Listen
                    | Request::ListDevices
                    | Request::ListListeners
                    | Request::ReadBuid => {}
                }
                plist_frame(self.tag, d)
            }
        }
    }

    /// Decodes one message whose header has been read (plist payloads within the default
    /// [`Limits`]).
    pub fn decode(header: &Header, payload: &[u8]) -> Result<ClientRequest, SocketError> {
        Self::decode_with_limits(header, payload, &Limits::default())
    }

    /// Decodes one message whose header has been read, plist payloads within `limits`.
    pub fn decode_with_limits(
        header: &Header,
        payload: &[u8],
        limits: &Limits,
    ) -> Result<ClientRequest, SocketError> {
        let unexpected = || SocketError::UnexpectedMessage {
            message: header.message,
            version: header.version,
        };
        let kind = MessageType::from_number(header.message).ok_or_else(unexpected)?;
        match kind {
            MessageType::Plist => {
                let dict = parse_dict(payload, limits)?;
                let keys = Keys {
                    dict: &dict,
                    message: "request",
                };
                let message_type = keys.string("MessageType")?;
                let client = ClientInfo {
                    bundle_id: keys.lenient_string("BundleID"),
                    client_version_string: keys.lenient_string("ClientVersionString"),
                    prog_name: keys.lenient_string("ProgName"),
                    lib_usbmux_version: keys.lenient_u64("kLibUSBMuxVersion"),
                };
                let request = Self::decode_plist(&message_type, &dict)?;
                Ok(ClientRequest {
                    tag: header.tag,
                    format: Format::Plist,
                    client,
                    request,
                })
            }
            MessageType::Listen => {
                if !payload.is_empty() {
                    return Err(SocketError::BinarySize {
                        what: "LISTEN",
                        expected: 0,
                        got: payload.len(),
                    });
                }
                Ok(ClientRequest {
                    tag: header.tag,
                    format: Format::Binary,
                    client: ClientInfo::default(),
                    request: Request::Listen,
                })
            }
            MessageType::Connect => {
                if payload.len() != 8 {
                    return Err(SocketError::BinarySize {
                        what: "CONNECT",
                        expected: 8,
                        got: payload.len(),
                    });
                }
                let device_id = le_u32(payload, 0);
                let port = payload
                    .get(4..6)
                    .and_then(|s| <[u8; 2]>::try_from(s).ok())
                    .map(u16::from_be_bytes)
                    .unwrap_or(0);
                Ok(ClientRequest {
                    tag: header.tag,
                    format: Format::Binary,
                    client: ClientInfo::default(),
                    request: Request::Connect { device_id, port },
                })
            }
            _ => Err(unexpected()),
        }
    }

    fn decode_plist(message_type: &str, dict: &Dictionary) -> Result<Request, SocketError> {
        let keys = |message| Keys { dict, message };
        Ok(match message_type {
            "Listen" => Request::Listen,
            "ListDevices" => Request::ListDevices,
            "ListListeners" => Request::ListListeners,
            "ReadBUID" => Request::ReadBuid,
            "Connect" => {
                let k = keys("Connect");
                let device_id = k.u32("DeviceID")?;
                let raw = k.u64("PortNumber")?;
                let raw = u16::try_from(raw).map_err(|_| SocketError::BadValue {
                    message: "Connect",
                    key: "PortNumber",
                    expected: "a 16-bit port in network byte order",
                })?;
                Request::Connect {
                    device_id,
                    port: raw.swap_bytes(),
                }
            }
            "ReadPairRecord" => Request::ReadPairRecord {
                pair_record_id: keys("ReadPairRecord").string("PairRecordID")?,
            },
            "DeletePairRecord" => Request::DeletePairRecord {
                pair_record_id: keys("DeletePairRecord").string("PairRecordID")?,
            },
            "SavePairRecord" => {
                let k = keys("SavePairRecord");
                Request::SavePairRecord {
                    pair_record_id: k.string("PairRecordID")?,
                    data: k.data("PairRecordData")?,
                    device_id: k.opt_u32("DeviceID")?,
                }
            }
            other => return Err(SocketError::UnknownRequest(other.to_owned())),
        })
    }
}

// ---- responses ------------------------------------------------------------------------------

fn record_dict(r: &DeviceRecord) -> Dictionary {
    let p = &r.properties;
    let mut props = Dictionary::new();
    if let Some(s) = p.connection_speed {
        put_u64(&mut props, "ConnectionSpeed", s);
    }
    props.insert(
        "ConnectionType".into(),
        Value::String(p.connection_type.clone()),
    );
    put_u64(&mut props, "DeviceID", u64::from(p.device_id));
    if let Some(l) = p.location_id {
        put_u64(&mut props, "LocationID", u64::from(l));
    }
    if let Some(pid) = p.product_id {
        put_u64(&mut props, "ProductID", u64::from(pid));
    }
    props.insert(
        "SerialNumber".into(),
        Value::String(p.serial_number.clone()),
    );
    put_opt_string(&mut props, "USBSerialNumber", &p.usb_serial_number);
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), Value::String("Attached".into()));
    put_u64(&mut d, "DeviceID", u64::from(r.device_id));
    d.insert("Properties".into(), Value::Dictionary(props));
    d
}

fn record_from_dict(d: &Dictionary) -> Result<DeviceRecord, SocketError> {
    let k = Keys {
        dict: d,
        message: "Attached",
    };
    let device_id = k.u32("DeviceID")?;
    let props = match d.get("Properties") {
        Some(Value::Dictionary(p)) => p,
        Some(_) => {
            return Err(SocketError::BadValue {
                message: "Attached",
                key: "Properties",
                expected: "a dictionary",
            })
        }
        None => {
            return Err(SocketError::MissingKey {
                message: "Attached",
                key: "Properties",
            })
        }
    };
    let p = Keys {
        dict: props,
        message: "Attached Properties",
    };
    let product_id = p
        .opt_u64("ProductID")?
        .map(|v| {
            u16::try_from(v).map_err(|_| SocketError::BadValue {
                message: "Attached Properties",
                key: "ProductID",
                expected: "a 16-bit USB product id",
            })
        })
        .transpose()?;
    Ok(DeviceRecord {
        device_id,
        properties: DeviceProperties {
            connection_type: p.string("ConnectionType")?,
            device_id: p.u32("DeviceID")?,
            location_id: p.opt_u32("LocationID")?,
            product_id,
            serial_number: p.string("SerialNumber")?,
            connection_speed: p.opt_u64("ConnectionSpeed")?,
            usb_serial_number: p.opt_string("USBSerialNumber")?,
        },
    })
}

fn listener_dict(l: &Listener) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("Blacklisted".into(), Value::Boolean(l.blacklisted));
    put_opt_string(&mut d, "BundleID", &l.bundle_id);
    put_opt_string(&mut d, "ClientVersionString", &l.client_version_string);
    put_u64(&mut d, "ConnType", l.conn_type);
    put_opt_string(&mut d, "ID String", &l.id_string);
    put_opt_string(&mut d, "ProgName", &l.prog_name);
    if let Some(v) = l.lib_usbmux_version {
        put_u64(&mut d, "kLibUSBMuxVersion", v);
    }
    d
}

fn listener_from_dict(d: &Dictionary) -> Listener {
    let k = Keys {
        dict: d,
        message: "ListenerList",
    };
    Listener {
        blacklisted: d
            .get("Blacklisted")
            .and_then(Value::as_boolean)
            .unwrap_or(false),
        bundle_id: k.lenient_string("BundleID"),
        conn_type: k.lenient_u64("ConnType").unwrap_or(0),
        id_string: k.lenient_string("ID String"),
        prog_name: k.lenient_string("ProgName"),
        client_version_string: k.lenient_string("ClientVersionString"),
        lib_usbmux_version: k.lenient_u64("kLibUSBMuxVersion"),
    }
}

fn single_u32(what: &'static str, payload: &[u8]) -> Result<u32, SocketError> {
    if payload.len() != 4 {
        return Err(SocketError::BinarySize {
            what,
            expected: 4,
            got: payload.len(),
        });
    }
    Ok(le_u32(payload, 0))
}

impl DaemonResponse {
    /// The whole message (header + payload).
    pub fn encode(&self) -> Result<Vec<u8>, SocketError> {
        match self.format {
            Format::Binary => {
                let (kind, payload) = match &self.response {
                    Response::Result(code) => {
                        (MessageType::Result, code.number().to_le_bytes().to_vec())
                    }
                    Response::Detached { device_id } => {
                        (MessageType::DeviceRemove, device_id.to_le_bytes().to_vec())
                    }
                    Response::Paired { device_id } => {
                        (MessageType::DevicePaired, device_id.to_le_bytes().to_vec())
                    }
                    Response::Attached(r) => (MessageType::DeviceAdd, binary_record(r)?),
                    Response::DeviceList(_) => return Err(SocketError::NoBinaryForm("DeviceList")),
                    Response::Buid(_) => return Err(SocketError::NoBinaryForm("BUID")),
                    Response::PairRecordData(_) => {
                        return Err(SocketError::NoBinaryForm("PairRecordData"))
                    }
                    Response::ListenerList(_) => {
                        return Err(SocketError::NoBinaryForm("ListenerList"))
                    }
                };
                Ok(frame(Format::Binary, kind, self.tag, &payload))
            }
            Format::Plist => {
                let d = match &self.response {
                    Response::Result(code) => {
                        let mut d = Dictionary::new();
                        d.insert("MessageType".into(), Value::String("Result".into()));
                        put_u64(&mut d, "Number", u64::from(code.number()));
                        d
                    }
                    Response::Attached(r) => record_dict(r),
                    Response::Detached { device_id } | Response::Paired { device_id } => {
                        let name = if matches!(self.response, Response::Paired { .. }) {
                            "Paired"
                        } else {
                            "Detached"
                        };
                        let mut d = Dictionary::new();
                        d.insert("MessageType".into(), Value::String(name.into()));
                        put_u64(&mut d, "DeviceID", u64::from(*device_id));
                        d
                    }
                    Response::DeviceList(list) => {
                        let mut d = Dictionary::new();
                        d.insert(
                            "DeviceList".into(),
                            Value::Array(
                                list.iter()
                                    .map(|r| Value::Dictionary(record_dict(r)))
                                    .collect(),
                            ),
                        );
                        d
                    }
                    Response::Buid(b) => {
                        let mut d = Dictionary::new();
                        d.insert("BUID".into(), Value::String(b.clone()));
                        d
                    }
                    Response::PairRecordData(data) => {
                        let mut d = Dictionary::new();
                        d.insert("PairRecordData".into(), Value::Data(data.clone()));
                        d
                    }
                    Response::ListenerList(list) => {
                        let mut d = Dictionary::new();
                        d.insert(
                            "ListenerList".into(),
                            Value::Array(
                                list.iter()
                                    .map(|l| Value::Dictionary(listener_dict(l)))
                                    .collect(),
                            ),
                        );
                        d
                    }
                };
                plist_frame(self.tag, d)
            }
        }
    }

    /// Decodes one message whose header has been read (plist payloads within the default
    /// [`Limits`]).
    pub fn decode(header: &Header, payload: &[u8]) -> Result<DaemonResponse, SocketError> {
        Self::decode_with_limits(header, payload, &Limits::default())
    }

    /// Decodes one message whose header has been read, plist payloads within `limits`.
    pub fn decode_with_limits(
        header: &Header,
        payload: &[u8],
        limits: &Limits,
    ) -> Result<DaemonResponse, SocketError> {
        let unexpected = || SocketError::UnexpectedMessage {
            message: header.message,
            version: header.version,
        };
        let kind = MessageType::from_number(header.message).ok_or_else(unexpected)?;
        let binary = |response| {
            Ok(DaemonResponse {
                tag: header.tag,
                format: Format::Binary,
                response,
            })
        };
        match kind {
            MessageType::Result => binary(Response::Result(ResultCode::from_number(single_u32(
                "RESULT", payload,
            )?))),
            MessageType::DeviceRemove => binary(Response::Detached {
                device_id: single_u32("DEVICE_REMOVE", payload)?,
            }),
            MessageType::DevicePaired => binary(Response::Paired {
                device_id: single_u32("DEVICE_PAIRED", payload)?,
            }),
            MessageType::DeviceAdd => binary(Response::Attached(record_from_binary(payload)?)),
            MessageType::Plist => Ok(DaemonResponse {
                tag: header.tag,
                format: Format::Plist,
                response: Self::decode_plist(&parse_dict(payload, limits)?)?,
            }),
            MessageType::Connect | MessageType::Listen => Err(unexpected()),
        }
    }

    fn decode_plist(d: &Dictionary) -> Result<Response, SocketError> {
        let k = Keys {
            dict: d,
            message: "response",
        };
        let message_type = k.opt_string("MessageType")?;
        match message_type.as_deref() {
            Some("Result") => {
                let k = Keys {
                    dict: d,
                    message: "Result",
                };
                return Ok(Response::Result(ResultCode::from_number(k.u32("Number")?)));
            }
            Some("Attached") => return Ok(Response::Attached(record_from_dict(d)?)),
            Some("Detached") => {
                let k = Keys {
                    dict: d,
                    message: "Detached",
                };
                return Ok(Response::Detached {
                    device_id: k.u32("DeviceID")?,
                });
            }
            Some("Paired") => {
                let k = Keys {
                    dict: d,
                    message: "Paired",
                };
                return Ok(Response::Paired {
                    device_id: k.u32("DeviceID")?,
                });
            }
            _ => {}
        }
        if let Some(v) = d.get("DeviceList") {
            let Value::Array(items) = v else {
                return Err(SocketError::BadValue {
                    message: "DeviceList",
                    key: "DeviceList",
                    expected: "an array",
                });
            };
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                let Value::Dictionary(rd) = item else {
                    return Err(SocketError::BadValue {
                        message: "DeviceList",
                        key: "DeviceList",
                        expected: "an array of dictionaries",
                    });
                };
                list.push(record_from_dict(rd)?);
            }
            return Ok(Response::DeviceList(list));
        }
        if d.contains_key("BUID") {
            let k = Keys {
                dict: d,
                message: "ReadBUID reply",
            };
            return Ok(Response::Buid(k.string("BUID")?));
        }
        if d.contains_key("PairRecordData") {
            let k = Keys {
                dict: d,
                message: "ReadPairRecord reply",
            };
            return Ok(Response::PairRecordData(k.data("PairRecordData")?));
        }
        if let Some(v) = d.get("ListenerList") {
            let Value::Array(items) = v else {
                return Err(SocketError::BadValue {
                    message: "ListenerList",
                    key: "ListenerList",
                    expected: "an array",
                });
            };
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                let Value::Dictionary(ld) = item else {
                    return Err(SocketError::BadValue {
                        message: "ListenerList",
                        key: "ListenerList",
                        expected: "an array of dictionaries",
                    });
                };
                list.push(listener_from_dict(ld));
            }
            return Ok(Response::ListenerList(list));
        }
        Err(SocketError::UnknownResponse { message_type })
    }
}

fn binary_record(r: &DeviceRecord) -> Result<Vec<u8>, SocketError> {
    let serial = r.properties.serial_number.as_bytes();
    if serial.len() > 255 || serial.contains(&0) {
        return Err(SocketError::SerialTooLong { len: serial.len() });
    }
    let mut p = Vec::with_capacity(DEVICE_RECORD_LEN);
    p.extend_from_slice(&r.device_id.to_le_bytes());
    p.extend_from_slice(&r.properties.product_id.unwrap_or(0).to_le_bytes());
    let mut s = [0u8; 256];
    if let Some(dst) = s.get_mut(..serial.len()) {
        dst.copy_from_slice(serial);
    }
    p.extend_from_slice(&s);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&r.properties.location_id.unwrap_or(0).to_le_bytes());
    Ok(p)
}

fn record_from_binary(payload: &[u8]) -> Result<DeviceRecord, SocketError> {
    if payload.len() != DEVICE_RECORD_LEN {
        return Err(SocketError::BinarySize {
            what: "DEVICE_ADD",
            expected: DEVICE_RECORD_LEN,
            got: payload.len(),
        });
    }
    let device_id = le_u32(payload, 0);
    let product_id = payload
        .get(4..6)
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map(u16::from_le_bytes)
        .unwrap_or(0);
    let serial_field = payload.get(6..262).unwrap_or(&[]);
    let end = serial_field
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(serial_field.len())
        .min(255);
    let serial = std::str::from_utf8(serial_field.get(..end).unwrap_or(&[]))
        .map_err(|_| SocketError::SerialNotUtf8)?
        .to_owned();
    let location = le_u32(payload, 264);
    Ok(DeviceRecord {
        device_id,
        properties: DeviceProperties {
            connection_type: "USB".into(),
            device_id,
            location_id: Some(location),
            product_id: Some(product_id),
            serial_number: serial,
            connection_speed: None,
            usb_serial_number: None,
        },
    })
}

// ---- stream decoders -----------------------------------------------------------------------

#[derive(Debug)]
struct RawDecoder {
    buf: BytesMut,
    max: usize,
}

impl RawDecoder {
    fn new(max: usize) -> RawDecoder {
        RawDecoder {
            buf: BytesMut::new(),
            max: max.max(HEADER_LEN),
        }
    }

    fn next(&mut self) -> Result<Option<(Header, Bytes)>, SocketError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = Header::decode(&self.buf)?;
        let len = header.length as usize;
        if len < HEADER_LEN {
            return Err(SocketError::LengthTooShort {
                length: header.length,
            });
        }
        if len > self.max {
            return Err(SocketError::LengthTooLong {
                length: header.length,
                max: self.max,
            });
        }
        if self.buf.len() < len {
            return Ok(None);
        }
        let mut msg = self.buf.split_to(len).freeze();
        let payload = msg.split_off(HEADER_LEN);
        if header.version > 1 {
            return Err(SocketError::BadVersion {
                version: header.version,
            });
        }
        Ok(Some((header, payload)))
    }
}

/// Daemon side: cuts the client's byte stream into [`ClientRequest`]s.
///
/// ```
/// use usbmux::socket::{ClientInfo, ClientRequest, Format, Request, RequestDecoder};
/// let req = ClientRequest {
///     tag: 1,
///     format: Format::Plist,
///     client: ClientInfo::new("ideviceinfo"),
///     request: Request::Connect { device_id: 3, port: 62078 },
/// };
/// let bytes = req.encode()?;
/// let mut decoder = RequestDecoder::new();
/// decoder.push(&bytes[..10]);
/// assert!(decoder.next_request()?.is_none());
/// decoder.push(&bytes[10..]);
/// assert_eq!(decoder.next_request()?, Some(req));
/// # Ok::<(), usbmux::socket::SocketError>(())
/// ```
#[derive(Debug)]
pub struct RequestDecoder {
    raw: RawDecoder,
    limits: Limits,
}

impl Default for RequestDecoder {
    fn default() -> Self {
        RequestDecoder::new()
    }
}

impl RequestDecoder {
    /// A decoder accepting messages up to [`DEFAULT_MAX_MESSAGE`].
    pub fn new() -> RequestDecoder {
        RequestDecoder::with_max_len(DEFAULT_MAX_MESSAGE)
    }

    /// A decoder accepting messages up to `max` bytes (header included).
    pub fn with_max_len(max: usize) -> RequestDecoder {
        RequestDecoder {
            raw: RawDecoder::new(max),
            limits: Limits::default(),
        }
    }

    /// Sets how deep and how large a decoded plist payload may be.
    pub fn with_plist_limits(mut self, limits: Limits) -> RequestDecoder {
        self.limits = limits;
        self
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.raw.buf.extend_from_slice(bytes);
    }

    /// The next whole request. A non-fatal error consumed its message; a fatal one
    /// ([`SocketError::is_fatal`]) means the connection should be dropped.
    pub fn next_request(&mut self) -> Result<Option<ClientRequest>, SocketError> {
        match self.raw.next()? {
            None => Ok(None),
            Some((h, p)) => ClientRequest::decode_with_limits(&h, &p, &self.limits).map(Some),
        }
    }

    /// Bytes buffered past the last message: after a successful `Connect` they belong
    /// to the device pipe.
    pub fn into_remaining(self) -> Bytes {
        self.raw.buf.freeze()
    }
}

/// Client side: cuts the daemon's byte stream into [`DaemonResponse`]s.
#[derive(Debug)]
pub struct ResponseDecoder {
    raw: RawDecoder,
    limits: Limits,
}

impl Default for ResponseDecoder {
    fn default() -> Self {
        ResponseDecoder::new()
    }
}

impl ResponseDecoder {
    /// A decoder accepting messages up to [`DEFAULT_MAX_MESSAGE`].
    pub fn new() -> ResponseDecoder {
        ResponseDecoder::with_max_len(DEFAULT_MAX_MESSAGE)
    }

    /// A decoder accepting messages up to `max` bytes (header included).
    pub fn with_max_len(max: usize) -> ResponseDecoder {
        ResponseDecoder {
            raw: RawDecoder::new(max),
            limits: Limits::default(),
        }
    }

    /// Sets how deep and how large a decoded plist payload may be.
    pub fn with_plist_limits(mut self, limits: Limits) -> ResponseDecoder {
        self.limits = limits;
        self
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.raw.buf.extend_from_slice(bytes);
    }

    /// The next whole response (see [`RequestDecoder::next_request`] for errors).
    pub fn next_response(&mut self) -> Result<Option<DaemonResponse>, SocketError> {
        match self.raw.next()? {
            None => Ok(None),
            Some((h, p)) => DaemonResponse::decode_with_limits(&h, &p, &self.limits).map(Some),
        }
    }

    /// Bytes buffered past the last message: after the `Result` of a `Connect` they are
    /// the first bytes from the device.
    pub fn into_remaining(self) -> Bytes {
        self.raw.buf.freeze()
    }

    /// Takes the bytes buffered beyond the last response, leaving the decoder empty (after
    /// `Connect`, they are the device port's first bytes).
    pub fn take_remaining(&mut self) -> Bytes {
        self.raw.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_port_is_byte_swapped_in_plist() {
        let req = ClientRequest {
            tag: 7,
            format: Format::Plist,
            client: ClientInfo::new("t"),
            request: Request::Connect {
                device_id: 1,
                port: 62078,
            },
        };
        let bytes = req.encode().unwrap();
        let text = String::from_utf8_lossy(&bytes[16..]).into_owned();
        // htons(62078) on a little-endian host is 32498.
        assert!(text.contains("<integer>32498</integer>"), "{text}");
        assert_eq!(&bytes[4..8], &[1, 0, 0, 0]);
        assert_eq!(&bytes[8..12], &[8, 0, 0, 0]);
    }

    #[test]
    fn binary_connect_layout() {
        let req = ClientRequest {
            tag: 2,
            format: Format::Binary,
            client: ClientInfo::default(),
            request: Request::Connect {
                device_id: 5,
                port: 62078,
            },
        };
        let b = req.encode().unwrap();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[0..4], &[24, 0, 0, 0]);
        assert_eq!(&b[16..24], &[5, 0, 0, 0, 0xF2, 0x7E, 0, 0]);
    }

    #[test]
    fn non_dictionary_plist_is_typed() {
        let xml = b"<?xml version=\"1.0\"?><plist version=\"1.0\"><array/></plist>";
        let h = Header {
            length: (16 + xml.len()) as u32,
            version: 1,
            message: 8,
            tag: 0,
        };
        let err = ClientRequest::decode(&h, xml).unwrap_err();
        assert!(matches!(
            err,
            SocketError::NotADictionary { found: "array" }
        ));
    }

    #[test]
    fn four_gib_length_is_refused_without_allocating() {
        let mut d = ResponseDecoder::new();
        d.push(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
        let e = d.next_response().unwrap_err();
        assert!(e.is_fatal());
        assert!(matches!(e, SocketError::LengthTooLong { .. }));
        let mut d = RequestDecoder::new();
        d.push(&[3, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            d.next_request(),
            Err(SocketError::LengthTooShort { length: 3 })
        ));
    }

    #[test]
    fn plist_limits_are_configurable_and_malformed_plists_typed() {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), Value::String("ListDevices".into()));
        d.insert(
            "Nested".into(),
            Value::Array(vec![Value::Array(vec![Value::Boolean(true)])]),
        );
        let mut xml = Vec::new();
        Value::Dictionary(d).to_writer_xml(&mut xml).unwrap();
        let bytes = frame(Format::Plist, MessageType::Plist, 1, &xml);
        let mut decoder = RequestDecoder::new();
        decoder.push(&bytes);
        assert_eq!(
            decoder.next_request().unwrap().unwrap().request,
            Request::ListDevices
        );
        let mut decoder = RequestDecoder::new().with_plist_limits(Limits::new().with_max_depth(2));
        decoder.push(&bytes);
        let err = decoder.next_request().unwrap_err();
        assert!(!err.is_fatal());
        assert!(matches!(
            err,
            SocketError::PlistPayload {
                source: plist_limits::Error::TooDeep { max: 2, .. },
                ..
            }
        ));
        let bad = frame(Format::Plist, MessageType::Plist, 1, b"<plist><dict><key>");
        let mut decoder = ResponseDecoder::new();
        decoder.push(&bad);
        match decoder.next_response() {
            Err(SocketError::PlistPayload { len: 18, source }) => assert!(!source.is_limit()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_plist_is_accepted() {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), Value::String("ListDevices".into()));
        let mut bin = Vec::new();
        Value::Dictionary(d).to_writer_binary(&mut bin).unwrap();
        let h = Header {
            length: (16 + bin.len()) as u32,
            version: 1,
            message: 8,
            tag: 4,
        };
        let r = ClientRequest::decode(&h, &bin).unwrap();
        assert_eq!(r.request, Request::ListDevices);
    }
}
