//! [`RusbDevice`]: an opened libusb device handle behind the [`UsbDevice`] trait.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use rusb::{Context, DeviceHandle};

use super::convert::{libusb_timeout, usb_error};
use super::open::{retry_busy, OpenPolicy};
use super::reader::{BulkCompletion, BulkReader};
use crate::backend::DeviceId;
use crate::control::Control;
use crate::descriptor::{ConfigurationDescriptor, DeviceDescriptor};
use crate::device::{BulkInPipe, Speed, UsbDevice};
use crate::error::{Operation, UsbError};
use crate::port::PortPath;

/// An Apple device opened through libusb: descriptors read once at open, transfers blocking
/// with a timeout. Made by [`super::RusbBackend::open_device`].
///
/// The libusb handle is shared (`Arc`): a [`BulkReader`] keeps reading the mux's IN endpoint
/// on its own thread while this value writes and does control transfers.
#[derive(Debug)]
pub struct RusbDevice {
    pub(crate) handle: Arc<DeviceHandle<Context>>,
    pub(crate) id: DeviceId,
    pub(crate) descriptor: DeviceDescriptor,
    pub(crate) configurations: Vec<ConfigurationDescriptor>,
    pub(crate) speed: Speed,
    pub(crate) port_path: Option<PortPath>,
    pub(crate) policy: OpenPolicy,
}

/// A bulk IN endpoint read on the shared libusb handle from another thread.
struct RusbPipe {
    handle: Arc<DeviceHandle<Context>>,
    endpoint: u8,
}

impl BulkInPipe for RusbPipe {
    fn endpoint(&self) -> u8 {
        self.endpoint
    }

    fn read(&mut self, length: usize, timeout: Duration) -> Result<Vec<u8>, UsbError> {
        bulk_read(&self.handle, self.endpoint, length, timeout)
    }
}

/// A bulk IN read on a libusb handle; bytes that came before a timeout are returned.
fn bulk_read(
    handle: &DeviceHandle<Context>,
    endpoint: u8,
    length: usize,
    timeout: Duration,
) -> Result<Vec<u8>, UsbError> {
    if i32::try_from(length).is_err() {
        let op = Operation::BulkIn { endpoint, length };
        return Err(UsbError::new(crate::ErrorKind::InvalidParam, op));
    }
    let mut buf = vec![0; length];
    let n = handle
        .read_bulk(endpoint, &mut buf, libusb_timeout(timeout))
        .map_err(|e| usb_error(e, Operation::BulkIn { endpoint, length }))?;
    buf.truncate(n);
    Ok(buf)
}

/// A control IN transfer on a libusb handle, as [`UsbDevice::control_in`] does it.
pub(crate) fn control_in(
    handle: &DeviceHandle<Context>,
    setup: Control,
    length: u16,
    timeout: Duration,
) -> Result<Vec<u8>, UsbError> {
    let mut buf = vec![0; usize::from(length)];
    let n = handle
        .read_control(
            setup.request_type,
            setup.request,
            setup.value,
            setup.index,
            &mut buf,
            libusb_timeout(timeout),
        )
        .map_err(|e| usb_error(e, Operation::ControlIn { setup, length }))?;
    buf.truncate(n);
    Ok(buf)
}

impl RusbDevice {
    /// Bus and address of this enumeration.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Starts a [`BulkReader`] on `endpoint` (the mux's bulk IN, e.g. 0x85) sharing this
    /// handle; completions arrive on the receiver. Claim the interface first.
    pub fn bulk_reader(
        &self,
        endpoint: u8,
    ) -> Result<(BulkReader, Receiver<BulkCompletion>), UsbError> {
        BulkReader::spawn(Arc::clone(&self.handle), endpoint)
    }

    /// CLEAR_FEATURE(ENDPOINT_HALT) after a stall.
    pub fn clear_halt(&mut self, endpoint: u8) -> Result<(), UsbError> {
        self.handle.clear_halt(endpoint).map_err(|e| {
            usb_error(
                e,
                Operation::ControlOut {
                    setup: Control::new(0x02, 1, 0, u16::from(endpoint)),
                    length: 0,
                },
            )
        })
    }
}

impl UsbDevice for RusbDevice {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        &self.descriptor
    }

    fn configurations(&self) -> &[ConfigurationDescriptor] {
        &self.configurations
    }

    fn speed(&self) -> Speed {
        self.speed
    }

    fn port_path(&self) -> Option<&PortPath> {
        self.port_path.as_ref()
    }

    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        self.handle
            .active_configuration()
            .map_err(|e| usb_error(e, Operation::GetConfiguration))
    }

    /// Linux refuses SET_CONFIGURATION while a kernel driver is bound to an interface of the
    /// current configuration (e.g. `ipheth` in a phone's configuration 4), so those drivers
    /// are detached first, as usbmuxd does; Busy is retried until the policy's deadline.
    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError> {
        let op = Operation::SetConfiguration { value };
        if let Ok(active) = self.handle.active_configuration() {
            let bound = self
                .configurations
                .iter()
                .filter(|c| c.value == active)
                .flat_map(|c| &c.interfaces)
                .map(|i| i.number);
            for interface in bound {
                // Not found / not supported means nothing to detach; a driver that stays
                // bound shows as Busy below. Only a vanished device stops here.
                if self.handle.kernel_driver_active(interface) == Ok(true)
                    && self.handle.detach_kernel_driver(interface) == Err(rusb::Error::NoDevice)
                {
                    return Err(usb_error(rusb::Error::NoDevice, op));
                }
            }
        }
        retry_busy(&self.policy, || self.handle.set_active_configuration(value))
            .map_err(|e| usb_error(e, op))
    }

    /// Kernel drivers were set to auto-detach at open (where libusb supports it); Busy (the
    /// kernel still binding, or another process) is retried until the policy's deadline.
    fn claim_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        retry_busy(&self.policy, || self.handle.claim_interface(interface))
            .map_err(|e| usb_error(e, Operation::ClaimInterface { interface }))
    }

    fn release_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.handle
            .release_interface(interface)
            .map_err(|e| usb_error(e, Operation::ReleaseInterface { interface }))
    }

    fn set_alternate_setting(
        &mut self,
        interface: u8,
        alternate_setting: u8,
    ) -> Result<(), UsbError> {
        self.handle
            .set_alternate_setting(interface, alternate_setting)
            .map_err(|e| {
                usb_error(
                    e,
                    Operation::SetAlternateSetting {
                        interface,
                        alternate_setting,
                    },
                )
            })
    }

    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        control_in(&self.handle, setup, length, timeout)
    }

    fn control_out(
        &mut self,
        setup: Control,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        let op = Operation::ControlOut {
            setup,
            length: data.len(),
        };
        // wLength is 16 bits: a longer data stage cannot be said.
        if u16::try_from(data.len()).is_err() {
            return Err(UsbError::new(crate::ErrorKind::InvalidParam, op));
        }
        self.handle
            .write_control(
                setup.request_type,
                setup.request,
                setup.value,
                setup.index,
                data,
                libusb_timeout(timeout),
            )
            .map_err(|e| usb_error(e, op))
    }

    fn bulk_in_pipe(&mut self, endpoint: u8) -> Option<Box<dyn BulkInPipe>> {
        Some(Box::new(RusbPipe {
            handle: Arc::clone(&self.handle),
            endpoint,
        }))
    }

    fn bulk_out_queue(&mut self, endpoint: u8) -> Option<Box<dyn crate::BulkOutQueue>> {
        Some(Box::new(super::queue::RusbOutQueue::new(
            Arc::clone(&self.handle),
            endpoint,
        )))
    }

    fn bulk_in(
        &mut self,
        endpoint: u8,
        length: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        bulk_read(&self.handle, endpoint, length, timeout)
    }

    fn bulk_out(
        &mut self,
        endpoint: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        if i32::try_from(data.len()).is_err() {
            let op = Operation::BulkOut {
                endpoint,
                length: data.len(),
            };
            return Err(UsbError::new(crate::ErrorKind::InvalidParam, op));
        }
        self.handle
            .write_bulk(endpoint, data, libusb_timeout(timeout))
            .map_err(|e| {
                usb_error(
                    e,
                    Operation::BulkOut {
                        endpoint,
                        length: data.len(),
                    },
                )
            })
    }

    fn reset(&mut self) -> Result<(), UsbError> {
        self.handle
            .reset()
            .map_err(|e| usb_error(e, Operation::Reset))
    }
}
