//! The [`UsbBackend`] trait (list, open, watch devices) and hotplug events.
//!
//! Backends: real USB through libusb (a later issue), the in-process simulator, and replay of a
//! recorded trace. The hotplug rule from the field: a backend's hotplug callback only *enqueues*
//! an event; devices are opened outside the callback (libusb answers Busy otherwise).

use serde::{Deserialize, Serialize};

use crate::descriptor::DeviceDescriptor;
use crate::device::{Speed, UsbDevice};
use crate::error::UsbError;
use crate::port::PortPath;

/// A device's address on its bus *for this enumeration*: it changes every time the phone
/// re-enumerates (mode change), so never key a phone by it (use the ECID, and the
/// [`PortPath`] for the slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId {
    /// Bus number.
    pub bus: u8,
    /// Device address on the bus (1..=127).
    pub address: u8,
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:03}:{:03}", self.bus, self.address)
    }
}

/// What a backend knows about a device without opening it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Bus and address, valid until the device leaves.
    pub id: DeviceId,
    /// The physical port, if known.
    pub port_path: Option<PortPath>,
    /// Link speed.
    pub speed: Speed,
    /// The device descriptor (vendor, product = mode, string indices).
    pub descriptor: DeviceDescriptor,
}

impl DeviceInfo {
    /// `idVendor`.
    pub fn vendor_id(&self) -> u16 {
        self.descriptor.vendor_id
    }

    /// `idProduct`.
    pub fn product_id(&self) -> u16 {
        self.descriptor.product_id
    }
}

/// A device arrived on or left the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HotplugEvent {
    /// A device enumerated (also sent once for every device present when a watch starts).
    Arrived {
        /// What the backend knows about it.
        device: DeviceInfo,
    },
    /// A device left the bus.
    Left {
        /// The id it had.
        id: DeviceId,
        /// The port it was on, if known.
        port_path: Option<PortPath>,
    },
}

/// Where a backend delivers hotplug events. It is called on the backend's event thread and
/// must only enqueue (e.g. send on a channel), never open or talk to a device.
pub type HotplugSink = Box<dyn FnMut(HotplugEvent) + Send>;

/// A running hotplug watch; events stop when it is dropped.
pub struct Watch {
    _guard: Box<dyn Send>,
}

impl Watch {
    /// A watch whose `guard` unregisters the backend's callback when dropped.
    pub fn new(guard: impl Send + 'static) -> Self {
        Self {
            _guard: Box::new(guard),
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

/// A source of USB devices: real hardware, the simulator, or a recorded trace.
pub trait UsbBackend: Send + Sync {
    /// The devices present now.
    fn devices(&self) -> Result<Vec<DeviceInfo>, UsbError>;

    /// Opens a device listed by [`UsbBackend::devices`] or announced by a hotplug event.
    /// A device that left in the meantime gives [`crate::ErrorKind::NoDevice`].
    fn open(&self, id: DeviceId) -> Result<Box<dyn UsbDevice>, UsbError>;

    /// Starts delivering hotplug events to `sink`: first an `Arrived` for every device present,
    /// then changes as they happen, until the returned [`Watch`] is dropped.
    fn watch(&self, sink: HotplugSink) -> Result<Watch, UsbError>;
}
