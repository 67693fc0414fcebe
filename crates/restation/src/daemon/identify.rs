//! Who a phone is, asked over USB once it has been opened (blocking; the daemon runs it on a
//! `spawn_blocking` thread, never inside the hotplug callback).
//!
//! - Recovery, DFU, WTF, Port DFU: the iBoot/SecureROM serial string descriptor
//!   (`CPID:8110 ... ECID:...`) carries the ECID, the chip and board ids.
//! - Normal and restore mode (usbmux): the USB serial is the UDID; then, over the phone's mux
//!   session ([`super::session::Pump`], kept afterwards for the usbmuxd socket), `QueryType`
//!   on port 62078 tells lockdownd from restored (the restore ramdisk enumerates with a
//!   normal-mode product id). lockdownd answers `GetValue` with `UniqueChipID` (the ECID),
//!   `ProductType`, `SerialNumber`; restored answers `QueryValue HardwareInfo` with
//!   `UniqueChipID`, `ChipID`, `BoardID`. When neither can be reached the phone is still known
//!   by its UDID, with the ECID pending.

use std::time::{Duration, Instant};

use irecv::mode::Mode;
use irecv::serial::SerialInfo;
use lockdown::{DaemonType, HostCodec, Reply, Request};
use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};
use usb::{ErrorKind, UsbError};
use usbmux::ConnId;

use super::session::{Pump, SessionError};

/// Everything restation knows about who a phone is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The chip's unique id; `None` while pending (a normal-mode phone lockdown did not answer).
    pub ecid: Option<u64>,
    /// The UDID (USB serial in normal/restore mode).
    pub udid: Option<String>,
    /// Hardware serial number (`SRNM` in recovery, lockdown `SerialNumber` in normal mode).
    pub serial_number: Option<String>,
    /// `iPhone14,3`.
    pub product_type: Option<String>,
    /// `d64ap`.
    pub board_config: Option<String>,
    /// Marketing name from the device table.
    pub name: Option<String>,
    /// `CPID`.
    pub chip_id: Option<u32>,
    /// `BDID`.
    pub board_id: Option<u32>,
    /// Installed iOS version (normal mode).
    pub product_version: Option<String>,
    /// Why the ECID is pending, when it is.
    pub ecid_pending: Option<String>,
    /// restored answered on port 62078: the phone runs the restore ramdisk (which enumerates
    /// with a normal-mode product id).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_os: bool,
}

/// Why a phone could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    /// A USB transfer failed (the phone may have left while being identified).
    #[error("USB: {0}")]
    Usb(#[from] UsbError),
    /// The device descriptor names no serial string.
    #[error("{mode} device has no serial string descriptor (iSerialNumber is 0)")]
    NoSerial {
        /// The mode it is in.
        mode: Mode,
    },
    /// The iBoot serial string is not one.
    #[error("serial string {text:?} is not an iBoot serial: {source}")]
    Serial {
        /// What came (first 64 characters).
        text: String,
        /// Why.
        source: irecv::serial::SerialError,
    },
    /// The iBoot serial string has no readable ECID.
    #[error("serial string {text:?} has no readable ECID")]
    NoEcid {
        /// What came (first 64 characters).
        text: String,
    },
}

impl IdentifyError {
    /// True when the phone left the bus while being identified.
    pub fn vanished(&self) -> bool {
        matches!(self, IdentifyError::Usb(e) if e.kind() == ErrorKind::NoDevice)
    }
}

/// How long each USB request may take while identifying.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What identification found, and the phone's mux session when it has one (normal and
/// restore mode): the daemon keeps it for the usbmuxd socket's connections.
#[derive(Debug)]
pub struct Found {
    /// Who the phone is.
    pub identity: Identity,
    /// The running mux link (identification's connection closed).
    pub pump: Option<Pump>,
}

/// How many times identification opens a usbmux phone's mux interface before it settles for
/// the UDID. Another process may switch a phone's configuration just after it enumerates: the
/// udev rule Debian's usbmuxd installs writes `bConfigurationValue=0` on every arrival, which
/// takes the mux interface away from whoever claimed it first. It does so once per arrival, so
/// the second attempt finds the configuration settled.
pub const MUX_ATTEMPTS: usize = 3;

/// Identifies the phone `id` of `backend`, in `mode` (it opens the device itself, again for
/// each mux attempt).
pub fn identify(
    backend: &dyn usb::UsbBackend,
    id: usb::DeviceId,
    mode: Mode,
) -> Result<Found, IdentifyError> {
    let mut dev = backend.open(id)?;
    let index = dev.device_descriptor().serial_number_index;
    if index == 0 {
        return Err(IdentifyError::NoSerial { mode });
    }
    let text = dev.string_descriptor(index, REQUEST_TIMEOUT)?;
    if mode.has_iboot_serial() {
        return Ok(Found {
            identity: from_iboot_serial(&text)?,
            pump: None,
        });
    }
    let mut identity = Identity {
        udid: Some(text.clone()),
        ..Identity::default()
    };
    let mut pump = None;
    if mode.is_usbmux() {
        let mut dev = Some(dev);
        for attempt in 1..=MUX_ATTEMPTS {
            let last = attempt == MUX_ATTEMPTS;
            // A fresh handle after a failed attempt; failing to open it is the phone gone.
            let d = match dev.take() {
                Some(d) => d,
                None => backend.open(id)?,
            };
            let why = match Pump::open(d) {
                Ok(mut p) => match ask_lockdown(&mut p) {
                    Ok(told) => {
                        let (values, restore_os) = match told {
                            Told::Lockdown(values) => (values, false),
                            Told::Restored(info) => (info, true),
                        };
                        apply_lockdown(&mut identity, &values);
                        identity.restore_os = restore_os;
                        identity.ecid_pending = None;
                        pump = Some(p);
                        break;
                    }
                    Err(e) if e.vanished() && last => return Err(vanished()),
                    Err(e) => {
                        // The link stays for the usbmuxd socket when lockdown said no.
                        let retry = e.usb_failed() && !last;
                        if !retry {
                            identity.ecid_pending = Some(e.to_string());
                            pump = Some(p);
                            break;
                        }
                        e.to_string()
                    }
                },
                Err(e) if e.usb_failed() && !last => e.to_string(),
                Err(e) if e.vanished() => return Err(vanished()),
                Err(e) => {
                    identity.ecid_pending = Some(e.to_string());
                    break;
                }
            };
            tracing::debug!(attempt, error = %why, "the mux interface failed; opening it again");
            identity.ecid_pending = Some(why);
        }
    }
    if identity.ecid.is_none() && identity.ecid_pending.is_none() {
        identity.ecid_pending = Some("lockdown gave no UniqueChipID".into());
    }
    Ok(Found { identity, pump })
}

fn vanished() -> IdentifyError {
    IdentifyError::Usb(UsbError::new(ErrorKind::NoDevice, usb::Operation::Open))
}

/// The identity an iBoot/SecureROM serial string gives.
pub fn from_iboot_serial(text: &str) -> Result<Identity, IdentifyError> {
    let short = || text.chars().take(64).collect::<String>();
    let info = SerialInfo::parse(text).map_err(|source| IdentifyError::Serial {
        text: short(),
        source,
    })?;
    let ecid = info
        .ecid
        .ok_or_else(|| IdentifyError::NoEcid { text: short() })?;
    let device = info.device();
    Ok(Identity {
        ecid: Some(ecid),
        udid: None,
        serial_number: info.srnm.clone(),
        product_type: device.map(|d| d.product_type.to_string()),
        board_config: device.map(|d| d.board_config.to_string()),
        name: device.map(|d| d.name.to_string()),
        chip_id: info.cpid,
        board_id: info.bdid,
        product_version: None,
        ecid_pending: None,
        restore_os: false,
    })
}

fn apply_lockdown(identity: &mut Identity, values: &plist::Dictionary) {
    let text = |k: &str| values.get(k).and_then(Value::as_string).map(str::to_string);
    let number = |k: &str| values.get(k).and_then(Value::as_unsigned_integer);
    identity.ecid = number("UniqueChipID");
    identity.serial_number = text("SerialNumber");
    identity.product_type = text("ProductType");
    identity.product_version = text("ProductVersion");
    identity.chip_id = number("ChipID").and_then(|n| u32::try_from(n).ok());
    identity.board_id = number("BoardId")
        .or_else(|| number("BoardID"))
        .and_then(|n| u32::try_from(n).ok());
    if let Some(udid) = text("UniqueDeviceID") {
        identity.udid = Some(udid);
    }
    let row = match (identity.chip_id, identity.board_id) {
        (Some(c), Some(b)) => irecv::devices::by_chip_board(c, b),
        _ => None,
    }
    .or_else(|| {
        identity
            .product_type
            .as_deref()
            .and_then(|p| irecv::devices::by_product_type(p).next())
    });
    if let Some(row) = row {
        identity.board_config = Some(row.board_config.to_string());
        identity.name = Some(row.name.to_string());
        identity
            .product_type
            .get_or_insert_with(|| row.product_type.to_string());
    }
}

/// Why lockdown (or restored) could not be asked. Only a phone that left the bus makes
/// identification fail; the rest leave the ECID pending.
#[derive(Debug, thiserror::Error)]
pub enum LockdownError {
    /// The mux session (USB, the link, the connection).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Lockdown's framing/plist.
    #[error("lockdown codec: {0}")]
    Codec(#[from] lockdown::CodecError),
    /// Lockdown said no.
    #[error("lockdown: {0}")]
    Lockdown(#[from] lockdown::Error),
    /// The phone closed the connection before answering.
    #[error("the phone closed the lockdown connection before answering {request}")]
    Closed {
        /// What was asked.
        request: String,
    },
    /// A value came in another shape than asked.
    #[error("{request} answered {what}, expected a dictionary")]
    NotADictionary {
        /// What was asked.
        request: &'static str,
        /// What came.
        what: &'static str,
    },
}

impl LockdownError {
    fn vanished(&self) -> bool {
        matches!(self, LockdownError::Session(e) if e.vanished())
    }

    fn usb_failed(&self) -> bool {
        matches!(self, LockdownError::Session(e) if e.usb_failed())
    }
}

/// How long each lockdown step may take while identifying.
const LOCKDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// One request, one reply (checked), on an open lockdown or restored connection, within
/// `timeout` for each of the send and the answer.
pub fn ask(
    pump: &mut Pump,
    conn: ConnId,
    codec: &mut HostCodec,
    request: Request,
    timeout: Duration,
) -> Result<Reply, LockdownError> {
    let name = request.name().to_string();
    let mut wire = Vec::new();
    codec.encode_request(&request, &mut wire)?;
    pump.send_all(conn, &wire, timeout)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(reply) = codec.poll_reply()? {
            return Ok(lockdown::check_reply(&name, reply)?);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match pump.read(conn, left)? {
            Some(bytes) => codec.receive(&bytes),
            None => return Err(LockdownError::Closed { request: name }),
        }
    }
}

fn dictionary(request: &'static str, value: Option<&Value>) -> Result<Dictionary, LockdownError> {
    match value {
        Some(Value::Dictionary(d)) => Ok(d.clone()),
        other => Err(LockdownError::NotADictionary {
            request,
            what: match other {
                None => "nothing",
                Some(Value::String(_)) => "a string",
                Some(Value::Integer(_)) => "an integer",
                Some(_) => "another plist value",
            },
        }),
    }
}

/// What the daemon on port 62078 told about the phone.
#[derive(Debug, Clone, PartialEq)]
pub enum Told {
    /// lockdownd (iOS is running): all of its values.
    Lockdown(Dictionary),
    /// restored (the restore ramdisk): its `HardwareInfo`.
    Restored(Dictionary),
}

/// Asks the daemon on port 62078 who the phone is: `QueryType` tells lockdownd from
/// restored, then `GetValue` (lockdownd) or `QueryValue HardwareInfo` (restored).
pub fn ask_lockdown(pump: &mut Pump) -> Result<Told, LockdownError> {
    let conn = pump.connect(lockdown::PORT, LOCKDOWN_TIMEOUT)?;
    let mut codec = HostCodec::new().with_label("restation");
    let result = (|| {
        let daemon = match ask(pump, conn, &mut codec, Request::QueryType, LOCKDOWN_TIMEOUT)? {
            Reply::QueryType { daemon, .. } => daemon,
            _ => DaemonType::Lockdown,
        };
        if daemon == DaemonType::Restored {
            let reply = ask(
                pump,
                conn,
                &mut codec,
                Request::QueryValue {
                    query_key: Some("HardwareInfo".into()),
                },
                LOCKDOWN_TIMEOUT,
            )?;
            let fields = match &reply {
                Reply::Generic { fields, .. } => fields.get("HardwareInfo"),
                _ => None,
            };
            return Ok(Told::Restored(dictionary(
                "QueryValue HardwareInfo",
                fields,
            )?));
        }
        let reply = ask(
            pump,
            conn,
            &mut codec,
            Request::GetValue {
                domain: None,
                key: None,
            },
            LOCKDOWN_TIMEOUT,
        )?;
        let value = match &reply {
            Reply::GetValue { value, .. } => value.as_ref(),
            _ => None,
        };
        let values = dictionary("GetValue", value)?;
        // A courtesy; a phone that drops the connection first is fine.
        let _ = ask(pump, conn, &mut codec, Request::Goodbye, LOCKDOWN_TIMEOUT);
        Ok(Told::Lockdown(values))
    })();
    pump.close(conn);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iboot_serial_gives_ecid_and_model() {
        let id = from_iboot_serial(
            "CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:0E ECID:001A2B3C4D5E6F70 IBFL:3C SRNM:[ABCDEFGHJK]",
        )
        .unwrap();
        assert_eq!(id.ecid, Some(0x001A_2B3C_4D5E_6F70));
        assert_eq!(id.board_config.as_deref(), Some("d64ap"));
        assert_eq!(id.serial_number.as_deref(), Some("ABCDEFGHJK"));
    }

    #[test]
    fn garbage_and_masked_serials_are_typed_errors() {
        assert!(matches!(
            from_iboot_serial("\u{1}\u{2}"),
            Err(IdentifyError::Serial { .. })
        ));
        assert!(matches!(
            from_iboot_serial("CPID:8110 BDID:0E ECID:****"),
            Err(IdentifyError::NoEcid { .. })
        ));
    }
}
