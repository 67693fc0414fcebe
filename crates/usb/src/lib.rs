//! `usb`: the bottom of every conversation with a phone — control and bulk transfers,
//! descriptors, link speed, the physical port, and what went wrong on the wire.
//!
//! Everything above (usbmux, the recovery and DFU engines in `irecv`, the restore orchestrator)
//! sees a device only through the small [`UsbDevice`] trait and finds devices through
//! [`UsbBackend`]; backends are real USB (libusb), the in-process simulator, and trace replay.
//! The real one, `usb::libusb::RusbBackend` (cargo feature `libusb`), lists and opens Apple
//! devices only, delivers deduplicated hotplug events from a callback that only enqueues (or
//! polls where libusb has no hotplug), and keeps the mux's bulk IN read in flight.
//! The vocabulary follows the USB specification and nusb: [`Control`] requests,
//! [`DeviceDescriptor`] / [`ConfigurationDescriptor`] / [`Interface`] / [`AltSetting`] /
//! [`EndpointDescriptor`], string descriptors in [`string`], [`Speed`], [`PortPath`].
//!
//! **Blocking, by choice.** [`UsbDevice`] calls block with a timeout, like libusb's synchronous
//! API. The protocol engines above are sans-IO state machines that say which [`Transfer`] to do
//! next and take its [`Completion`] back, with time passed in; a driver runs one device on a
//! blocking thread (or `spawn_blocking`) and loops `transfer.perform(device, timeout)`. An async
//! trait would buy nothing there and would cost every backend and test double an executor.
//!
//! **Error kinds are kept.** A [`UsbError`] carries an [`ErrorKind`] (`NoDevice`, `Pipe`,
//! `Timeout`, `Io` for EPROTO, `Overflow`, ...) and the [`Operation`] it happened in, because
//! restore failures are classified from them: a stall after `go` is expected, an EPROTO in the
//! middle of an upload points at the cable.
//!
//! ```
//! use usb::{ConfigurationDescriptor, DeviceDescriptor, ErrorKind, PortPath, Speed, UsbError};
//!
//! // What a phone in DFU mode says about itself (PROTOCOLS.md §12), as raw descriptor bytes.
//! let device = DeviceDescriptor::parse(&[
//!     18, 1, 0x00, 0x02, 0, 0, 0, 64, 0xAC, 0x05, 0x27, 0x12, 0, 0, 2, 3, 4, 1,
//! ])?;
//! assert_eq!((device.vendor_id, device.product_id), (0x05AC, 0x1227));
//! assert_eq!(device.serial_number_index, 4); // where SecureROM puts "CPID:... ECID:..."
//!
//! let config = ConfigurationDescriptor::parse(&[
//!     9, 2, 25, 0, 1, 1, 0, 0x80, 250, // one configuration, 500 mA
//!     9, 4, 0, 0, 0, 0xFE, 0x01, 0x00, 0, // interface 0: DFU, no endpoints
//!     7, 0x21, 0x01, 10, 0, 0x00, 0x08, // DFU functional: download, 2048-byte transfers
//! ])?;
//! assert!(config.interface(0).is_some_and(|i| i.alt_settings[0].endpoints.is_empty()));
//!
//! // The slot on the bench, stable across re-enumeration.
//! let slot: PortPath = "1-1.3.2".parse()?;
//! assert_eq!(slot.parent().map(|h| h.to_string()).as_deref(), Some("1-1.3"));
//! assert!(Speed::Full.below_high_speed()); // a phone at 12 Mb/s has a bad cable
//!
//! // Restore classification matches on kinds, not on text.
//! fn after_go(result: Result<usize, UsbError>) -> &'static str {
//!     match result {
//!         Ok(_) => "accepted",
//!         Err(e) if matches!(e.kind(), ErrorKind::Pipe | ErrorKind::NoDevice) => "left the bus",
//!         Err(_) => "failed",
//!     }
//! }
//! let stall = UsbError::new(ErrorKind::Pipe, usb::Operation::Reset);
//! assert_eq!(after_go(Err(stall)), "left the bus");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod control;
mod descriptor;
mod device;
mod error;
#[cfg(feature = "libusb")]
pub mod libusb;
mod mux;
mod port;
pub mod string;
pub mod trace;
mod transfer;

#[doc(hidden)]
pub mod fuzzing;

pub use backend::{DeviceId, DeviceInfo, HotplugEvent, HotplugSink, UsbBackend, Watch};
pub use control::{
    standard_request, Control, ControlSetup, ControlType, Direction, Recipient, SetupPacketError,
};
pub use descriptor::{
    descriptor_type, AltSetting, ConfigurationDescriptor, DescriptorError, DescriptorKind,
    DeviceDescriptor, EndpointDescriptor, Interface, RawDescriptors, TransferType,
};
pub use device::{BulkInPipe, BulkOutQueue, QueuedFailure, Speed, UsbDevice};
pub use error::{ErrorKind, Operation, RawCode, UsbError};
pub use mux::{mux_configuration, MuxConfiguration, MUX_INTERFACE_CLASS};
pub use port::{PortPath, PortPathError, PortPathProblem};
pub use string::LanguageId;
pub use transfer::{Completion, Transfer};

/// Apple's USB vendor id.
pub const APPLE_VENDOR_ID: u16 = 0x05AC;
