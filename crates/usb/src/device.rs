//! The [`UsbDevice`] trait: an opened device, as every protocol above sees it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::descriptor::{descriptor_type, ConfigurationDescriptor, DeviceDescriptor};
use crate::error::{ErrorKind, Operation, UsbError};
use crate::port::PortPath;
use crate::string::{self, LanguageId};

/// The link speed a device enumerated at.
///
/// An iPhone is a high-speed device or faster; one that enumerates at full speed has damaged
/// data lines in the cable or port (see `ERROR-CODES.md`, "Link speed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Speed {
    /// The backend could not tell.
    Unknown,
    /// 1.5 Mb/s.
    Low,
    /// 12 Mb/s.
    Full,
    /// 480 Mb/s.
    High,
    /// 5 Gb/s.
    Super,
    /// 10 Gb/s or more.
    SuperPlus,
}

impl Speed {
    /// Nominal signalling rate in bits per second, `None` when unknown.
    pub fn bits_per_second(self) -> Option<u64> {
        match self {
            Self::Unknown => None,
            Self::Low => Some(1_500_000),
            Self::Full => Some(12_000_000),
            Self::High => Some(480_000_000),
            Self::Super => Some(5_000_000_000),
            Self::SuperPlus => Some(10_000_000_000),
        }
    }

    /// Whether this is below the high speed every iPhone is capable of: a cable/port signal.
    pub fn below_high_speed(self) -> bool {
        matches!(self, Self::Low | Self::Full)
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::Low => "low (1.5 Mb/s)",
            Self::Full => "full (12 Mb/s)",
            Self::High => "high (480 Mb/s)",
            Self::Super => "super (5 Gb/s)",
            Self::SuperPlus => "super+ (10 Gb/s)",
        })
    }
}

/// One bulk IN endpoint of an opened device, read from a thread of its own (see
/// [`UsbDevice::bulk_in_pipe`]).
pub trait BulkInPipe: Send {
    /// The endpoint read.
    fn endpoint(&self) -> u8;

    /// One blocking read of up to `length` bytes; [`ErrorKind::Timeout`] when nothing came
    /// within `timeout` (bytes that came before the timeout are returned, not lost).
    fn read(&mut self, length: usize, timeout: Duration) -> Result<Vec<u8>, UsbError>;
}

/// A queued transfer that failed: which one (counted from 0 in the order submitted on its
/// queue) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("queued transfer {index}: {error}")]
pub struct QueuedFailure {
    /// Its place in the queue's submissions.
    pub index: u64,
    /// What went wrong.
    #[source]
    pub error: UsbError,
}

/// Bulk OUT transfers queued on one endpoint (see [`UsbDevice::bulk_out_queue`]): the host
/// controller runs them back to back in the order submitted, so the link does not wait for
/// software between two of them, as it does between two blocking [`UsbDevice::bulk_out`]
/// calls. This is how usbmuxd keeps a phone's link busy (asynchronous URBs).
///
/// A failed transfer is reported by the next [`BulkOutQueue::submit`] or
/// [`BulkOutQueue::flush`] (once, as a [`QueuedFailure`] naming it); the transfers queued
/// behind it may still have run, so the caller treats the link as broken. Dropping the
/// queue cancels what has not completed and waits for the cancellations.
pub trait BulkOutQueue: Send {
    /// The endpoint written.
    fn endpoint(&self) -> u8;

    /// Queues `data` as one transfer behind those already queued and returns as soon as it
    /// is queued (waiting only while the backend's limit of transfers is in flight). Empty
    /// `data` queues a zero-length packet. `timeout` counts from when the transfer starts.
    fn submit(&mut self, data: Vec<u8>, timeout: Duration) -> Result<(), QueuedFailure>;

    /// Waits until every queued transfer has completed.
    fn flush(&mut self) -> Result<(), QueuedFailure>;

    /// Reaps the transfers that have completed, without waiting, and reports a failure
    /// among them: a driver waiting for something else (the phone's answer) calls it to
    /// learn that its data never went out.
    fn check(&mut self) -> Result<(), QueuedFailure>;

    /// Transfers submitted that have not completed yet.
    fn in_flight(&mut self) -> usize;
}

/// An opened USB device.
///
/// Calls are **blocking** and take a timeout, like libusb's synchronous API: a driver runs one
/// device on one blocking thread (`tokio::task::spawn_blocking` or a plain thread) and the
/// protocol engines above are sans-IO, so nothing here needs to be async. Methods take
/// `&mut self`: one owner talks to a device at a time.
///
/// Descriptors are read once when the device is opened and served from memory
/// ([`UsbDevice::device_descriptor`], [`UsbDevice::configurations`]); string descriptors are
/// asked of the device each time.
///
/// The trait is object safe: engines take `&mut dyn UsbDevice`.
pub trait UsbDevice: Send {
    /// The device descriptor read at open.
    fn device_descriptor(&self) -> &DeviceDescriptor;

    /// All configuration descriptors read at open, in index order.
    fn configurations(&self) -> &[ConfigurationDescriptor];

    /// The speed the device enumerated at.
    fn speed(&self) -> Speed;

    /// The physical port, if the backend knows it.
    fn port_path(&self) -> Option<&PortPath>;

    /// `bConfigurationValue` of the active configuration (0 when unconfigured).
    fn active_configuration(&mut self) -> Result<u8, UsbError>;

    /// SET_CONFIGURATION.
    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError>;

    /// Claims an interface for this process (detaching a kernel driver if needed).
    fn claim_interface(&mut self, interface: u8) -> Result<(), UsbError>;

    /// Releases a claimed interface.
    fn release_interface(&mut self, interface: u8) -> Result<(), UsbError>;

    /// SET_INTERFACE: selects an alternate setting of a claimed interface.
    fn set_alternate_setting(
        &mut self,
        interface: u8,
        alternate_setting: u8,
    ) -> Result<(), UsbError>;

    /// Control transfer device-to-host; returns the bytes that came (at most `length`).
    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError>;

    /// Control transfer host-to-device; returns how many bytes the device took.
    fn control_out(
        &mut self,
        setup: Control,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError>;

    /// Bulk read of up to `length` bytes from `endpoint` (address with bit 7 set).
    fn bulk_in(
        &mut self,
        endpoint: u8,
        length: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError>;

    /// Bulk write to `endpoint`; empty `data` sends a zero-length packet. Returns bytes taken.
    fn bulk_out(&mut self, endpoint: u8, data: &[u8], timeout: Duration)
        -> Result<usize, UsbError>;

    /// A second handle on bulk IN `endpoint`, for a thread that keeps reads in flight while
    /// this handle goes on writing (libusb handles are thread safe). `None` when the backend
    /// cannot read from another thread; the caller then reads with [`UsbDevice::bulk_in`]
    /// between its writes.
    fn bulk_in_pipe(&mut self, endpoint: u8) -> Option<Box<dyn BulkInPipe>> {
        let _ = endpoint;
        None
    }

    /// A queue of bulk OUT transfers on `endpoint` that the host controller runs back to back
    /// (see [`BulkOutQueue`]), usable from another thread while this handle goes on with
    /// other requests. `None` when the backend has no such queue; the caller then writes with
    /// [`UsbDevice::bulk_out`].
    fn bulk_out_queue(&mut self, endpoint: u8) -> Option<Box<dyn BulkOutQueue>> {
        let _ = endpoint;
        None
    }

    /// USB port reset. The device may re-enumerate (and this handle then reports
    /// [`ErrorKind::NoDevice`] or [`ErrorKind::NotFound`]).
    fn reset(&mut self) -> Result<(), UsbError>;

    /// `idVendor`.
    fn vendor_id(&self) -> u16 {
        self.device_descriptor().vendor_id
    }

    /// `idProduct`.
    fn product_id(&self) -> u16 {
        self.device_descriptor().product_id
    }

    /// The descriptor of the active configuration, `None` when unconfigured.
    fn active_configuration_descriptor(
        &mut self,
    ) -> Result<Option<&ConfigurationDescriptor>, UsbError> {
        let value = self.active_configuration()?;
        Ok(self.configurations().iter().find(|c| c.value == value))
    }

    /// String descriptor 0: the languages the device offers.
    fn languages(&mut self, timeout: Duration) -> Result<Vec<LanguageId>, UsbError> {
        let op = Operation::GetDescriptor {
            descriptor_type: descriptor_type::STRING,
            index: 0,
        };
        let raw = self.control_in(
            Control::get_descriptor(descriptor_type::STRING, 0, 0),
            255,
            timeout,
        )?;
        string::decode_languages(&raw).map_err(|e| UsbError::malformed(op, e))
    }

    /// String descriptor `index` (≥ 1) in the device's first language (English for Apple).
    fn string_descriptor(&mut self, index: u8, timeout: Duration) -> Result<String, UsbError> {
        let op = Operation::GetDescriptor {
            descriptor_type: descriptor_type::STRING,
            index,
        };
        if index == 0 {
            return Err(UsbError::new(ErrorKind::InvalidParam, op));
        }
        let language = self
            .languages(timeout)?
            .first()
            .copied()
            .unwrap_or(LanguageId::EN_US);
        let raw = self.control_in(
            Control::get_descriptor(descriptor_type::STRING, index, language.0),
            255,
            timeout,
        )?;
        string::decode(&raw).map_err(|e| UsbError::malformed(op, e))
    }
}
