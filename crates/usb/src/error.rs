//! [`UsbError`]: what went wrong on the wire, keeping the USB error *kind*.
//!
//! Restore failures are classified from these kinds (`ERROR-CODES.md`): NO_DEVICE in a transfer
//! means the phone left the bus (Apple's 9), a stall or EPROTO during an upload is a link fault
//! (4005), a PIPE right after `go`/`bootx`/`reset` is expected. So the kind is a plain `Copy`
//! enum, reachable with [`UsbError::kind`], and never flattened into text.

use std::fmt;

use crate::control::Control;
use crate::descriptor::DescriptorError;

/// The kind of a USB failure, as libusb and Linux usbfs distinguish them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorKind {
    /// The device is gone (unplugged, re-enumerated, crashed): `ENODEV`, `ESHUTDOWN`,
    /// `LIBUSB_ERROR_NO_DEVICE`.
    NoDevice,
    /// The endpoint stalled: `EPIPE`, `LIBUSB_ERROR_PIPE`. Also what a phone answers to a
    /// command it refuses, and what `go`/`bootx`/`reset` cause while the phone resets.
    Pipe,
    /// No answer before the timeout: `ETIMEDOUT`, `LIBUSB_ERROR_TIMEOUT`.
    Timeout,
    /// Low-level I/O or protocol error on the link (bad CRC, bit stuffing, no handshake):
    /// `EPROTO` (−71), `EILSEQ`, `EIO`, `LIBUSB_ERROR_IO`. A strong cable/port signal.
    Io,
    /// The device sent more than was asked for (babble): `EOVERFLOW`, `LIBUSB_ERROR_OVERFLOW`.
    Overflow,
    /// Permission denied (udev rules missing): `EACCES`, `EPERM`, `LIBUSB_ERROR_ACCESS`.
    Access,
    /// Someone else holds the device or interface (a kernel driver, another process, or an
    /// open inside a hotplug callback): `EBUSY`, `LIBUSB_ERROR_BUSY`.
    Busy,
    /// No such device, interface, endpoint or descriptor: `ENOENT`,
    /// `LIBUSB_ERROR_NOT_FOUND` (also what libusb reports when a reset re-enumerated the
    /// device).
    NotFound,
    /// The request itself was invalid (bad endpoint, length too big): `EINVAL`,
    /// `LIBUSB_ERROR_INVALID_PARAM`.
    InvalidParam,
    /// The call was interrupted (`EINTR`, `LIBUSB_ERROR_INTERRUPTED`); retrying is fine.
    Interrupted,
    /// The device answered, but the bytes are not what USB says they must be (a garbled
    /// descriptor). The cause is kept in [`UsbError::descriptor_error`].
    Malformed,
    /// Anything else (`LIBUSB_ERROR_NO_MEM`, `LIBUSB_ERROR_NOT_SUPPORTED`, ...).
    Other,
}

impl ErrorKind {
    /// The kind for a Linux errno (positive or negative, as usbfs returns it).
    pub fn from_errno(errno: i32) -> Self {
        match errno.unsigned_abs() {
            1 | 13 => Self::Access,     // EPERM, EACCES
            2 => Self::NotFound,        // ENOENT
            4 => Self::Interrupted,     // EINTR
            5 | 71 | 84 => Self::Io,    // EIO, EPROTO, EILSEQ
            16 => Self::Busy,           // EBUSY
            19 | 108 => Self::NoDevice, // ENODEV, ESHUTDOWN
            22 => Self::InvalidParam,   // EINVAL
            32 => Self::Pipe,           // EPIPE
            75 => Self::Overflow,       // EOVERFLOW
            110 => Self::Timeout,       // ETIMEDOUT
            _ => Self::Other,
        }
    }

    /// The kind for a `libusb_error` code (negative).
    pub fn from_libusb(code: i32) -> Self {
        match code {
            -1 => Self::Io,
            -2 => Self::InvalidParam,
            -3 => Self::Access,
            -4 => Self::NoDevice,
            -5 => Self::NotFound,
            -6 => Self::Busy,
            -7 => Self::Timeout,
            -8 => Self::Overflow,
            -9 => Self::Pipe,
            -10 => Self::Interrupted,
            _ => Self::Other,
        }
    }

    /// Whether this kind says the device left the bus.
    pub fn is_disconnect(self) -> bool {
        self == Self::NoDevice
    }

    /// Short lower-case name (`"pipe"`, `"no-device"`), stable for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoDevice => "no-device",
            Self::Pipe => "pipe",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::Overflow => "overflow",
            Self::Access => "access",
            Self::Busy => "busy",
            Self::NotFound => "not-found",
            Self::InvalidParam => "invalid-param",
            Self::Interrupted => "interrupted",
            Self::Malformed => "malformed",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was being done when a [`UsbError`] happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Operation {
    /// Listing devices.
    Enumerate,
    /// Opening a device.
    Open,
    /// Watching for hotplug events.
    Hotplug,
    /// A control transfer device-to-host asking for `length` bytes.
    ControlIn {
        /// The request.
        setup: Control,
        /// `wLength`.
        length: u16,
    },
    /// A control transfer host-to-device with `length` bytes of data.
    ControlOut {
        /// The request.
        setup: Control,
        /// Bytes in the data stage.
        length: usize,
    },
    /// A bulk read.
    BulkIn {
        /// Endpoint address (with bit 7 set).
        endpoint: u8,
        /// Bytes asked for.
        length: usize,
    },
    /// A bulk write.
    BulkOut {
        /// Endpoint address.
        endpoint: u8,
        /// Bytes handed over.
        length: usize,
    },
    /// A USB port reset.
    Reset,
    /// GET_CONFIGURATION.
    GetConfiguration,
    /// SET_CONFIGURATION.
    SetConfiguration {
        /// `bConfigurationValue`.
        value: u8,
    },
    /// Claiming an interface.
    ClaimInterface {
        /// `bInterfaceNumber`.
        interface: u8,
    },
    /// Releasing an interface.
    ReleaseInterface {
        /// `bInterfaceNumber`.
        interface: u8,
    },
    /// SET_INTERFACE.
    SetAlternateSetting {
        /// `bInterfaceNumber`.
        interface: u8,
        /// `bAlternateSetting`.
        alternate_setting: u8,
    },
    /// GET_DESCRIPTOR (or reading one from a backend's cache).
    GetDescriptor {
        /// `bDescriptorType`.
        descriptor_type: u8,
        /// Descriptor index.
        index: u8,
    },
}

impl Operation {
    /// The endpoint the operation used: 0 for control transfers, the address for bulk.
    pub fn endpoint(&self) -> Option<u8> {
        match self {
            Self::ControlIn { .. } | Self::ControlOut { .. } | Self::GetDescriptor { .. } => {
                Some(0)
            }
            Self::BulkIn { endpoint, .. } | Self::BulkOut { endpoint, .. } => Some(*endpoint),
            _ => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Enumerate => f.write_str("enumerate"),
            Self::Open => f.write_str("open"),
            Self::Hotplug => f.write_str("hotplug watch"),
            Self::ControlIn { setup, length } => write!(f, "control IN {setup} wLength={length}"),
            Self::ControlOut { setup, length } => write!(f, "control OUT {setup} ({length} bytes)"),
            Self::BulkIn { endpoint, length } => {
                write!(f, "bulk IN {endpoint:#04x} ({length} bytes)")
            }
            Self::BulkOut { endpoint, length } => {
                write!(f, "bulk OUT {endpoint:#04x} ({length} bytes)")
            }
            Self::Reset => f.write_str("reset"),
            Self::GetConfiguration => f.write_str("get configuration"),
            Self::SetConfiguration { value } => write!(f, "set configuration {value}"),
            Self::ClaimInterface { interface } => write!(f, "claim interface {interface}"),
            Self::ReleaseInterface { interface } => write!(f, "release interface {interface}"),
            Self::SetAlternateSetting {
                interface,
                alternate_setting,
            } => write!(f, "set interface {interface} alt {alternate_setting}"),
            Self::GetDescriptor {
                descriptor_type,
                index,
            } => write!(
                f,
                "get descriptor type {descriptor_type:#04x} index {index}"
            ),
        }
    }
}

/// The raw code a backend got, kept as evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RawCode {
    /// A Linux errno from usbfs (e.g. 71 for EPROTO).
    Errno(i32),
    /// A `libusb_error` value (e.g. −9 for PIPE).
    Libusb(i32),
}

/// A failed USB operation: its [`ErrorKind`], what was being done, and the raw evidence.
///
/// ```
/// use usb::{Control, ErrorKind, Operation, UsbError};
///
/// let e = UsbError::new(ErrorKind::Pipe, Operation::ControlOut { setup: Control::new(0x40, 1, 0, 0), length: 3 })
///     .with_raw(usb::RawCode::Errno(32));
/// match e.kind() {
///     ErrorKind::Pipe | ErrorKind::NoDevice => { /* the phone went away: expected after `go` */ }
///     other => panic!("unexpected {other}"),
/// }
/// assert_eq!(e.endpoint(), Some(0));
/// assert_eq!(e.to_string(), "USB control OUT 0x40/1 wValue=0x0000 wIndex=0x0000 (3 bytes) failed: pipe (errno 32)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UsbError {
    kind: ErrorKind,
    operation: Operation,
    raw: Option<RawCode>,
    #[source]
    descriptor: Option<DescriptorError>,
}

impl UsbError {
    /// An error of `kind` during `operation`.
    pub fn new(kind: ErrorKind, operation: Operation) -> Self {
        Self {
            kind,
            operation,
            raw: None,
            descriptor: None,
        }
    }

    /// A [`ErrorKind::Malformed`] error: the device sent bytes that are not a valid descriptor.
    pub fn malformed(operation: Operation, cause: DescriptorError) -> Self {
        Self {
            kind: ErrorKind::Malformed,
            operation,
            raw: None,
            descriptor: Some(cause),
        }
    }

    /// Attaches the backend's raw code.
    pub fn with_raw(mut self, raw: RawCode) -> Self {
        self.raw = Some(raw);
        self
    }

    /// The kind: what restore classification matches on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What was being done.
    pub fn operation(&self) -> &Operation {
        &self.operation
    }

    /// The endpoint involved, if the operation had one (0 for control transfers).
    pub fn endpoint(&self) -> Option<u8> {
        self.operation.endpoint()
    }

    /// The backend's raw code, if it gave one.
    pub fn raw(&self) -> Option<RawCode> {
        self.raw
    }

    /// For [`ErrorKind::Malformed`]: why the bytes were rejected.
    pub fn descriptor_error(&self) -> Option<&DescriptorError> {
        self.descriptor.as_ref()
    }
}

impl fmt::Display for UsbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "USB {} failed: {}", self.operation, self.kind)?;
        match self.raw {
            Some(RawCode::Errno(e)) => write!(f, " (errno {e})"),
            Some(RawCode::Libusb(e)) => write!(f, " (libusb {e})"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_and_libusb_codes_map_to_kinds() {
        assert_eq!(ErrorKind::from_errno(-71), ErrorKind::Io);
        assert_eq!(ErrorKind::from_errno(32), ErrorKind::Pipe);
        assert_eq!(ErrorKind::from_errno(-19), ErrorKind::NoDevice);
        assert_eq!(ErrorKind::from_errno(108), ErrorKind::NoDevice);
        assert_eq!(ErrorKind::from_errno(-110), ErrorKind::Timeout);
        assert_eq!(ErrorKind::from_errno(75), ErrorKind::Overflow);
        assert_eq!(ErrorKind::from_errno(16), ErrorKind::Busy);
        assert_eq!(ErrorKind::from_errno(i32::MIN), ErrorKind::Other);
        assert_eq!(ErrorKind::from_libusb(-4), ErrorKind::NoDevice);
        assert_eq!(ErrorKind::from_libusb(-9), ErrorKind::Pipe);
        assert_eq!(ErrorKind::from_libusb(-99), ErrorKind::Other);
        assert!(ErrorKind::NoDevice.is_disconnect());
        assert!(!ErrorKind::Pipe.is_disconnect());
    }

    #[test]
    fn keeps_context_and_source() {
        let cause = DescriptorError::OddStringLength { length: 5 };
        let e = UsbError::malformed(
            Operation::GetDescriptor {
                descriptor_type: 3,
                index: 4,
            },
            cause.clone(),
        );
        assert_eq!(e.kind(), ErrorKind::Malformed);
        assert_eq!(e.descriptor_error(), Some(&cause));
        assert!(std::error::Error::source(&e).is_some());
        let e = UsbError::new(
            ErrorKind::Timeout,
            Operation::BulkIn {
                endpoint: 0x81,
                length: 512,
            },
        );
        assert_eq!(e.endpoint(), Some(0x81));
        assert_eq!(
            e.to_string(),
            "USB bulk IN 0x81 (512 bytes) failed: timeout"
        );
    }
}
