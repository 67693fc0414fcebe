//! Who a phone is, asked over USB once it has been opened (blocking; the daemon runs it on a
//! `spawn_blocking` thread, never inside the hotplug callback).
//!
//! - Recovery, DFU, WTF, Port DFU: the iBoot/SecureROM serial string descriptor
//!   (`CPID:8110 ... ECID:...`) carries the ECID, the chip and board ids.
//! - Normal and restore mode (usbmux): the USB serial is the UDID; then lockdownd on port 62078,
//!   reached through a small blocking usbmux pump, answers `GetValue` with `UniqueChipID` (the
//!   ECID), `ProductType`, `SerialNumber`. When lockdown cannot be reached the phone is still
//!   known by its UDID, with the ECID pending.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use irecv::mode::Mode;
use irecv::serial::SerialInfo;
use lockdown::{HostCodec, Reply, Request};
use plist::Value;
use serde::{Deserialize, Serialize};
use usb::{ErrorKind, UsbDevice, UsbError};
use usbmux::{ConnId, Event, Link};

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

/// Identifies an opened phone in `mode`.
pub fn identify(dev: &mut dyn UsbDevice, mode: Mode) -> Result<Identity, IdentifyError> {
    let index = dev.device_descriptor().serial_number_index;
    if index == 0 {
        return Err(IdentifyError::NoSerial { mode });
    }
    let text = dev.string_descriptor(index, REQUEST_TIMEOUT)?;
    if mode.has_iboot_serial() {
        return from_iboot_serial(&text);
    }
    let mut identity = Identity {
        udid: Some(text.clone()),
        ..Identity::default()
    };
    if mode.is_usbmux() {
        match lockdown_values(dev) {
            Ok(values) => apply_lockdown(&mut identity, &values),
            Err(e) if e.vanished() => return Err(IdentifyError::Usb(e.into_usb())),
            Err(e) => identity.ecid_pending = Some(e.to_string()),
        }
    }
    if identity.ecid.is_none() && identity.ecid_pending.is_none() {
        identity.ecid_pending = Some("lockdown gave no UniqueChipID".into());
    }
    Ok(identity)
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
    identity.board_id = number("BoardId").and_then(|n| u32::try_from(n).ok());
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

/// Why lockdown could not be asked (normal mode). Only [`LockdownError::Usb`] with NO_DEVICE
/// makes identification fail; the rest leave the ECID pending.
#[derive(Debug, thiserror::Error)]
pub enum LockdownError {
    /// USB.
    #[error("USB: {0}")]
    Usb(#[from] UsbError),
    /// The phone has no usbmux interface in any configuration.
    #[error("no usbmux interface (class ff/fe/02) in any configuration")]
    NoMuxInterface,
    /// The mux link failed.
    #[error("usbmux: {0}")]
    Link(#[from] usbmux::LinkError),
    /// A mux stream operation failed.
    #[error("usbmux stream: {0}")]
    Stream(#[from] usbmux::StreamError),
    /// The phone refused the connection to lockdownd.
    #[error("lockdownd (port {port}) refused: {reason}")]
    Refused {
        /// The port.
        port: u16,
        /// Its reason.
        reason: String,
    },
    /// Lockdown's framing/plist.
    #[error("lockdown codec: {0}")]
    Codec(#[from] lockdown::CodecError),
    /// Lockdown said no.
    #[error("lockdown: {0}")]
    Lockdown(#[from] lockdown::Error),
    /// GetValue answered something else than a dictionary.
    #[error("GetValue answered {what}, expected a dictionary")]
    NotADictionary {
        /// What came.
        what: &'static str,
    },
    /// Nothing happened within the step budget.
    #[error("no answer while waiting for {during} (after {steps} bulk reads)")]
    Stalled {
        /// What was awaited.
        during: &'static str,
        /// How many reads.
        steps: usize,
    },
}

impl LockdownError {
    fn vanished(&self) -> bool {
        matches!(self, LockdownError::Usb(e) if e.kind() == ErrorKind::NoDevice)
    }

    fn into_usb(self) -> UsbError {
        match self {
            LockdownError::Usb(e) => e,
            _ => UsbError::new(ErrorKind::Other, usb::Operation::Open),
        }
    }
}

const READ_SIZE: usize = 16 * 1024;
const POLL: Duration = Duration::from_millis(50);
/// Bulk reads any one wait may take (× [`POLL`] when the phone is silent).
const MAX_STEPS: usize = 200;

/// A blocking usbmux pump over one device's mux endpoints: just enough for one lockdown
/// conversation. The link's clock moves with the reads that time out.
struct MuxPump<'a> {
    dev: &'a mut dyn UsbDevice,
    link: Link,
    ep_out: u8,
    ep_in: u8,
    now: Instant,
    events: VecDeque<Event>,
}

impl<'a> MuxPump<'a> {
    fn open(dev: &'a mut dyn UsbDevice) -> Result<Self, LockdownError> {
        let Some(mux) = usb::mux_configuration(dev.configurations()) else {
            return Err(LockdownError::NoMuxInterface);
        };
        let (config, interface) = (mux.configuration, mux.interface);
        let (ep_out, ep_in) = (mux.endpoint_out, mux.endpoint_in);
        if dev.active_configuration()? != config {
            dev.set_configuration(config)?;
        }
        dev.claim_interface(interface)?;
        let now = Instant::now();
        let mut pump = MuxPump {
            dev,
            link: Link::new(now),
            ep_out,
            ep_in,
            now,
            events: VecDeque::new(),
        };
        for _ in 0..MAX_STEPS {
            pump.step()?;
            if pump.link.header_version().is_some() {
                return Ok(pump);
            }
        }
        Err(LockdownError::Stalled {
            during: "the mux VERSION handshake",
            steps: MAX_STEPS,
        })
    }

    fn flush(&mut self) -> Result<(), LockdownError> {
        while let Some(packet) = self.link.poll_transmit() {
            self.dev.bulk_out(self.ep_out, &packet, REQUEST_TIMEOUT)?;
            if usbmux::needs_zlp(packet.len(), 512) {
                self.dev.bulk_out(self.ep_out, &[], REQUEST_TIMEOUT)?;
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), LockdownError> {
        self.flush()?;
        match self.dev.bulk_in(self.ep_in, READ_SIZE, POLL) {
            Ok(bytes) => self.link.handle_input(&bytes, self.now)?,
            Err(e) if e.kind() == ErrorKind::Timeout => self.now += POLL,
            Err(e) => return Err(e.into()),
        }
        if self.link.poll_timeout().is_some_and(|t| t <= self.now) {
            self.link.handle_timeout(self.now);
        }
        while let Some(e) = self.link.poll_event() {
            self.events.push_back(e);
        }
        Ok(())
    }

    fn connect(&mut self, port: u16) -> Result<ConnId, LockdownError> {
        let conn = self.link.connect(port, self.now)?;
        for _ in 0..MAX_STEPS {
            self.step()?;
            while let Some(e) = self.events.pop_front() {
                match e {
                    Event::Connected { conn: c } if c == conn => return Ok(conn),
                    Event::Refused {
                        conn: c,
                        port,
                        reason,
                    } if c == conn => return Err(LockdownError::Refused { port, reason }),
                    _ => {}
                }
            }
        }
        Err(LockdownError::Stalled {
            during: "the lockdownd connection",
            steps: MAX_STEPS,
        })
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), LockdownError> {
        let mut rest = data;
        for _ in 0..MAX_STEPS {
            let n = self.link.send(conn, rest)?;
            rest = rest.get(n..).unwrap_or_default();
            if rest.is_empty() {
                return self.flush();
            }
            self.step()?;
        }
        Err(LockdownError::Stalled {
            during: "room to send",
            steps: MAX_STEPS,
        })
    }

    fn request(
        &mut self,
        conn: ConnId,
        codec: &mut HostCodec,
        request: Request,
    ) -> Result<Reply, LockdownError> {
        let name = request.name().to_string();
        let mut wire = Vec::new();
        codec.encode_request(&request, &mut wire)?;
        self.send(conn, &wire)?;
        for _ in 0..MAX_STEPS {
            if let Some(reply) = codec.poll_reply()? {
                return Ok(lockdown::check_reply(&name, reply)?);
            }
            match self.link.read(conn, 1 << 20)? {
                Some(bytes) => codec.receive(&bytes),
                None => self.step()?,
            }
        }
        Err(LockdownError::Stalled {
            during: "a lockdown reply",
            steps: MAX_STEPS,
        })
    }
}

/// Asks lockdownd for all of its values (GetValue without domain or key).
fn lockdown_values(dev: &mut dyn UsbDevice) -> Result<plist::Dictionary, LockdownError> {
    let mut pump = MuxPump::open(dev)?;
    let conn = pump.connect(lockdown::PORT)?;
    let mut codec = HostCodec::new().with_label("restation");
    let reply = pump.request(
        conn,
        &mut codec,
        Request::GetValue {
            domain: None,
            key: None,
        },
    )?;
    // Closing is a courtesy; a phone that drops the connection first is fine.
    let _ = pump.request(conn, &mut codec, Request::Goodbye);
    let _ = pump.link.close(conn).map(|()| pump.flush());
    match reply {
        Reply::GetValue {
            value: Some(Value::Dictionary(d)),
            ..
        } => Ok(d),
        Reply::GetValue { value, .. } => Err(LockdownError::NotADictionary {
            what: match value {
                None => "nothing",
                Some(Value::String(_)) => "a string",
                Some(Value::Integer(_)) => "an integer",
                Some(_) => "another plist value",
            },
        }),
        _ => Err(LockdownError::NotADictionary {
            what: "another reply",
        }),
    }
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
