//! The real USB backend: libusb through `rusb` (cargo feature `libusb`).
//!
//! - [`RusbBackend`] lists Apple devices only (vendor 0x05AC; no other device is ever opened),
//!   each with its bus/address, sysfs port path ([`port_path_from`]), link speed and device
//!   descriptor, and opens them: retrying while libusb answers Busy ([`BusyRetry`]), setting
//!   kernel drivers to auto-detach, and reading the device and configuration descriptors once
//!   with GET_DESCRIPTOR, parsed by this crate's parsers ([`read_descriptors`]) so that garbage
//!   is a typed [`crate::ErrorKind::Malformed`] error. Every libusb failure keeps its kind, its
//!   raw code ([`crate::RawCode::Libusb`]) and the operation.
//! - [`RusbDevice`] is the opened device behind [`crate::UsbDevice`].
//! - Hotplug: libusb's callback only enqueues (it never opens a device); an event thread runs
//!   `handle_events` with a timeout, [`Presence`] removes duplicates and keeps one `Left` per
//!   `Arrived`, and the thread ends when the [`crate::Watch`] is dropped. Without hotplug
//!   support, a [`Poller`] diffs device lists taken on an interval.
//! - [`mux_configuration`] finds the configuration, interface and endpoints of usbmux, and
//!   [`BulkReader`] keeps a 16 KiB bulk IN read outstanding back to back for the mux driver.
//!
//! Everything that decides something (error mapping, port paths, speeds, descriptor reading,
//! the Busy schedule, hotplug dedupe, the poll diff, the mux configuration, the reader loop)
//! is plain code tested without hardware; what is left is thin calls into libusb.
//!
//! ```
//! use usb::libusb::RusbBackend;
//! use usb::UsbBackend;
//!
//! // Where libusb cannot start (a sandbox without usbfs), the error is typed, not a panic.
//! match RusbBackend::new() {
//!     Ok(backend) => {
//!         for phone in backend.devices()? {
//!             assert_eq!(phone.vendor_id(), usb::APPLE_VENDOR_ID);
//!             println!("{} {:04x} {}", phone.id, phone.product_id(), phone.speed);
//!         }
//!     }
//!     Err(e) => println!("no USB: {e}"),
//! }
//! # Ok::<(), usb::UsbError>(())
//! ```

mod convert;
mod device;
mod hotplug;
mod open;
mod queue;
mod reader;
mod watch;

use rusb::UsbContext;

pub use crate::mux::{mux_configuration, MuxConfiguration, MUX_INTERFACE_CLASS};
pub use convert::{
    bcd_from, device_descriptor_from, libusb_code, libusb_timeout, port_path_from, speed_from,
    usb_error,
};
pub use device::RusbDevice;
pub use hotplug::{Poller, Presence};
pub use open::{read_descriptors, BusyRetry, OpenPolicy};
pub use reader::{
    BulkCompletion, BulkReader, BulkSource, CHANNEL_CAPACITY, READ_SIZE, READ_TIMEOUT,
};

use crate::backend::{DeviceId, DeviceInfo, HotplugSink, UsbBackend, Watch};
use crate::device::UsbDevice;
use crate::error::{ErrorKind, Operation, UsbError};

/// What libusb already holds about a device, without I/O: `None` unless it is Apple's.
fn device_info(device: &rusb::Device<rusb::Context>) -> Option<DeviceInfo> {
    let descriptor = device.device_descriptor().ok()?;
    if descriptor.vendor_id() != crate::APPLE_VENDOR_ID {
        return None;
    }
    let bus = device.bus_number();
    Some(DeviceInfo {
        id: DeviceId {
            bus,
            address: device.address(),
        },
        port_path: device
            .port_numbers()
            .ok()
            .and_then(|ports| port_path_from(bus, &ports)),
        speed: speed_from(device.speed()),
        descriptor: device_descriptor_from(&descriptor),
    })
}

/// The real USB backend: a private libusb context, Apple devices only.
#[derive(Debug)]
pub struct RusbBackend {
    context: rusb::Context,
    policy: OpenPolicy,
    hotplug: bool,
}

impl RusbBackend {
    /// A backend with the default [`OpenPolicy`]. Fails (operation `Enumerate`, with the
    /// libusb code, typically −99 "other") where libusb cannot start, e.g. without usbfs in a
    /// sandbox; on a machine with no USB bus libusb 1.0.26 starts and simply lists nothing.
    pub fn new() -> Result<Self, UsbError> {
        Self::with_policy(OpenPolicy::default())
    }

    /// A backend with this timing policy.
    pub fn with_policy(policy: OpenPolicy) -> Result<Self, UsbError> {
        let context = rusb::Context::new().map_err(|e| usb_error(e, Operation::Enumerate))?;
        Ok(Self {
            context,
            policy,
            hotplug: rusb::has_hotplug(),
        })
    }

    /// Uses the polling fallback even where libusb has hotplug (to exercise it on a bench).
    pub fn without_hotplug(mut self) -> Self {
        self.hotplug = false;
        self
    }

    /// Whether [`UsbBackend::watch`] uses libusb hotplug (else it polls).
    pub fn uses_hotplug(&self) -> bool {
        self.hotplug
    }

    /// The timing policy.
    pub fn policy(&self) -> &OpenPolicy {
        &self.policy
    }

    /// Opens a device as the concrete [`RusbDevice`] (for [`RusbDevice::bulk_reader`]);
    /// [`UsbBackend::open`] boxes the same thing.
    ///
    /// No device at `id` (it left) gives [`ErrorKind::NoDevice`]; a device that is not
    /// Apple's is never opened ([`ErrorKind::NotFound`]). A device that vanishes during the
    /// open gives NoDevice (or the transfer error libusb saw), never a panic.
    pub fn open_device(&self, id: DeviceId) -> Result<RusbDevice, UsbError> {
        let op = || Operation::Open;
        let list = self
            .context
            .devices()
            .map_err(|e| usb_error(e, Operation::Enumerate))?;
        let device = list
            .iter()
            .find(|d| d.bus_number() == id.bus && d.address() == id.address)
            .ok_or_else(|| UsbError::new(ErrorKind::NoDevice, op()))?;
        let info = device_info(&device).ok_or_else(|| UsbError::new(ErrorKind::NotFound, op()))?;
        drop(list);
        let handle =
            open::retry_busy(&self.policy, || device.open()).map_err(|e| usb_error(e, op()))?;
        // NotSupported (not Linux) and the rest are fine: claiming will say if a driver is in
        // the way. Only a vanished device stops here.
        if handle.set_auto_detach_kernel_driver(true) == Err(rusb::Error::NoDevice) {
            return Err(usb_error(rusb::Error::NoDevice, op()));
        }
        let timeout = self.policy.descriptor_timeout;
        let (descriptor, configurations) =
            read_descriptors(|setup, length| device::control_in(&handle, setup, length, timeout))?;
        Ok(RusbDevice {
            handle: std::sync::Arc::new(handle),
            id,
            descriptor,
            configurations,
            speed: info.speed,
            port_path: info.port_path,
            policy: self.policy,
        })
    }
}

impl UsbBackend for RusbBackend {
    fn devices(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        list_devices(&self.context)
    }

    fn open(&self, id: DeviceId) -> Result<Box<dyn UsbDevice>, UsbError> {
        Ok(Box::new(self.open_device(id)?))
    }

    fn watch(&self, sink: HotplugSink) -> Result<Watch, UsbError> {
        let sink = if self.hotplug {
            match watch::hotplug(&self.context, &self.policy, sink) {
                Ok(watch) => return Ok(watch),
                // libusb claimed hotplug but refuses it here: poll instead.
                Err((e, sink)) if e.raw() == Some(crate::RawCode::Libusb(-12)) => sink,
                Err((e, _)) => return Err(e),
            }
        } else {
            sink
        };
        let context = self.context.clone();
        watch::polling(move || list_devices(&context), &self.policy, sink)
    }
}

fn list_devices(context: &rusb::Context) -> Result<Vec<DeviceInfo>, UsbError> {
    let list = context
        .devices()
        .map_err(|e| usb_error(e, Operation::Enumerate))?;
    let mut devices: Vec<DeviceInfo> = list.iter().filter_map(|d| device_info(&d)).collect();
    devices.sort_by_key(|d| d.id);
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs wherever the tests run: with a USB bus it lists Apple devices only; without one
    /// (CI containers, this project's build machine) libusb's refusal is a typed error.
    #[test]
    fn backend_starts_or_says_why_not() {
        match RusbBackend::new() {
            Ok(backend) => {
                let devices = backend.devices().unwrap();
                assert!(devices
                    .iter()
                    .all(|d| d.vendor_id() == crate::APPLE_VENDOR_ID));
                // Bus 0 address 0 is never a device: opening it says NoDevice, no panic.
                let e = backend
                    .open(DeviceId { bus: 0, address: 0 })
                    .err()
                    .map(|e| e.kind());
                assert_eq!(e, Some(ErrorKind::NoDevice));
            }
            Err(e) => {
                assert_eq!(e.operation(), &Operation::Enumerate);
                assert!(e.raw().is_some(), "{e}");
            }
        }
    }

    /// Starts and stops both kinds of watch on whatever bus this machine has (none in CI):
    /// only Apple arrivals come, and dropping the watch ends its thread promptly.
    #[test]
    fn real_watches_start_and_stop() {
        use std::sync::mpsc;
        use std::time::{Duration, Instant};
        let Ok(backend) = RusbBackend::new() else {
            eprintln!("SKIP real_watches_start_and_stop: libusb cannot start here");
            return;
        };
        let present = backend.devices().unwrap().len();
        for backend in [backend, RusbBackend::new().unwrap().without_hotplug()] {
            let hotplug = backend.uses_hotplug();
            let (tx, rx) = mpsc::channel();
            let watch = backend
                .watch(Box::new(move |e| {
                    let _ = tx.send(e);
                }))
                .unwrap();
            let mut arrived = 0;
            while let Ok(event) = rx.recv_timeout(Duration::from_millis(300)) {
                if let crate::HotplugEvent::Arrived { device } = event {
                    assert_eq!(device.vendor_id(), crate::APPLE_VENDOR_ID);
                    arrived += 1;
                }
            }
            assert!(arrived >= present);
            let start = Instant::now();
            drop(watch);
            let stopped_in = start.elapsed();
            eprintln!("watch (libusb hotplug: {hotplug}) stopped in {stopped_in:?}");
            assert!(stopped_in < Duration::from_secs(2));
            assert!(matches!(
                rx.recv_timeout(Duration::from_secs(1)),
                Err(mpsc::RecvTimeoutError::Disconnected)
            ));
        }
    }
}
