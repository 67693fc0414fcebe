//! A minimal device for examples and tests of the trace module: it echoes what is written to
//! bulk OUT back on bulk IN, and answers control transfers with empty success.

use std::collections::VecDeque;
use std::time::Duration;

use crate::control::Control;
use crate::descriptor::{ConfigurationDescriptor, DeviceDescriptor};
use crate::device::{Speed, UsbDevice};
use crate::error::{ErrorKind, Operation, UsbError};
use crate::port::PortPath;

/// Echoes bulk OUT data back on bulk IN.
#[derive(Debug)]
pub struct Echo {
    descriptor: DeviceDescriptor,
    pending: VecDeque<Vec<u8>>,
}

impl Default for Echo {
    fn default() -> Self {
        Echo {
            descriptor: DeviceDescriptor {
                usb_version: 0x0200,
                class: 0,
                subclass: 0,
                protocol: 0,
                max_packet_size_0: 64,
                vendor_id: crate::APPLE_VENDOR_ID,
                product_id: 0x1281,
                device_version: 0,
                manufacturer_index: 2,
                product_index: 3,
                serial_number_index: 4,
                num_configurations: 0,
            },
            pending: VecDeque::new(),
        }
    }
}

impl UsbDevice for Echo {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        &self.descriptor
    }
    fn configurations(&self) -> &[ConfigurationDescriptor] {
        &[]
    }
    fn speed(&self) -> Speed {
        Speed::High
    }
    fn port_path(&self) -> Option<&PortPath> {
        None
    }
    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        Ok(1)
    }
    fn set_configuration(&mut self, _value: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn claim_interface(&mut self, _interface: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn release_interface(&mut self, _interface: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn set_alternate_setting(&mut self, _interface: u8, _alt: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn control_in(&mut self, _s: Control, _l: u16, _t: Duration) -> Result<Vec<u8>, UsbError> {
        Ok(Vec::new())
    }
    fn control_out(&mut self, _s: Control, data: &[u8], _t: Duration) -> Result<usize, UsbError> {
        Ok(data.len())
    }
    fn bulk_in(&mut self, endpoint: u8, length: usize, _t: Duration) -> Result<Vec<u8>, UsbError> {
        let mut data = self.pending.pop_front().ok_or_else(|| {
            UsbError::new(ErrorKind::Timeout, Operation::BulkIn { endpoint, length })
        })?;
        data.truncate(length);
        Ok(data)
    }
    fn bulk_out(&mut self, _endpoint: u8, data: &[u8], _t: Duration) -> Result<usize, UsbError> {
        self.pending.push_back(data.to_vec());
        Ok(data.len())
    }
    fn reset(&mut self) -> Result<(), UsbError> {
        Ok(())
    }
}
