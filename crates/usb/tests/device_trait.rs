//! The provided methods of `UsbDevice` (string descriptors, active configuration, transfers
//! described as data) against a minimal device that answers GET_DESCRIPTOR from a table.

use std::time::Duration;

use usb::{
    descriptor_type, string, Completion, ConfigurationDescriptor, Control, DeviceDescriptor,
    ErrorKind, LanguageId, Operation, PortPath, Speed, Transfer, UsbDevice, UsbError,
};

const T: Duration = Duration::from_millis(100);

struct TableDevice {
    descriptor: DeviceDescriptor,
    configs: Vec<ConfigurationDescriptor>,
    port: PortPath,
    strings: Vec<(u8, Vec<u8>)>,
    asked: Vec<Control>,
    active: u8,
}

impl TableDevice {
    fn new(strings: Vec<(u8, Vec<u8>)>) -> Self {
        Self {
            descriptor: DeviceDescriptor::parse(&[
                18, 1, 0, 2, 0, 0, 0, 64, 0xAC, 0x05, 0x81, 0x12, 0, 0, 2, 3, 4, 1,
            ])
            .unwrap(),
            configs: vec![ConfigurationDescriptor::parse(&[
                9, 2, 18, 0, 1, 1, 0, 0x80, 250, 9, 4, 0, 0, 0, 0xFE, 1, 2, 0,
            ])
            .unwrap()],
            port: "1-4".parse().unwrap(),
            strings,
            asked: Vec::new(),
            active: 1,
        }
    }
}

fn unsupported(op: Operation) -> UsbError {
    UsbError::new(ErrorKind::Other, op)
}

impl UsbDevice for TableDevice {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        &self.descriptor
    }
    fn configurations(&self) -> &[ConfigurationDescriptor] {
        &self.configs
    }
    fn speed(&self) -> Speed {
        Speed::High
    }
    fn port_path(&self) -> Option<&PortPath> {
        Some(&self.port)
    }
    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        Ok(self.active)
    }
    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError> {
        self.active = value;
        Ok(())
    }
    fn claim_interface(&mut self, _: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn release_interface(&mut self, _: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn set_alternate_setting(&mut self, _: u8, _: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        _: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        self.asked.push(setup);
        let op = Operation::ControlIn { setup, length };
        let index = (setup.value & 0xff) as u8;
        if setup.request != 6 || (setup.value >> 8) as u8 != descriptor_type::STRING {
            return Err(UsbError::new(ErrorKind::Pipe, op));
        }
        let mut s = self
            .strings
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| UsbError::new(ErrorKind::Pipe, op))?;
        s.truncate(usize::from(length));
        Ok(s)
    }
    fn control_out(&mut self, setup: Control, data: &[u8], _: Duration) -> Result<usize, UsbError> {
        Err(unsupported(Operation::ControlOut {
            setup,
            length: data.len(),
        }))
    }
    fn bulk_in(&mut self, endpoint: u8, length: usize, _: Duration) -> Result<Vec<u8>, UsbError> {
        Ok(vec![endpoint; length.min(3)])
    }
    fn bulk_out(&mut self, _: u8, data: &[u8], _: Duration) -> Result<usize, UsbError> {
        Ok(data.len())
    }
    fn reset(&mut self) -> Result<(), UsbError> {
        Err(UsbError::new(ErrorKind::NotFound, Operation::Reset))
    }
}

#[test]
fn string_descriptor_asks_languages_then_the_string_in_the_first_language() {
    let mut dev = TableDevice::new(vec![
        (0, string::encode_languages(&[LanguageId::EN_US]).unwrap()),
        (
            3,
            string::encode("Apple Mobile Device (Recovery Mode)").unwrap(),
        ),
    ]);
    let d: &mut dyn UsbDevice = &mut dev;
    assert_eq!(
        d.string_descriptor(3, T).unwrap(),
        "Apple Mobile Device (Recovery Mode)"
    );
    assert_eq!((d.vendor_id(), d.product_id()), (0x05AC, 0x1281));
    assert_eq!(
        dev.asked,
        [
            Control::get_descriptor(3, 0, 0),
            Control::get_descriptor(3, 3, 0x0409)
        ]
    );
}

#[test]
fn garbled_string_is_a_malformed_error_with_its_cause() {
    let mut dev = TableDevice::new(vec![
        (0, vec![4, 3, 9, 4]),
        (4, vec![7, 3, b'x', 0, b'y', 0, 0]),
    ]);
    let e = dev.string_descriptor(4, T).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Malformed);
    assert!(matches!(
        e.descriptor_error(),
        Some(usb::DescriptorError::OddStringLength { length: 7 })
    ));
    assert_eq!(
        dev.string_descriptor(0, T).unwrap_err().kind(),
        ErrorKind::InvalidParam
    );
    // A missing string is whatever the device said: a stall.
    assert_eq!(
        dev.string_descriptor(9, T).unwrap_err().kind(),
        ErrorKind::Pipe
    );
}

#[test]
fn active_configuration_descriptor_follows_the_device() {
    let mut dev = TableDevice::new(vec![]);
    assert_eq!(
        dev.active_configuration_descriptor()
            .unwrap()
            .map(|c| c.value),
        Some(1)
    );
    dev.set_configuration(0).unwrap();
    assert!(dev.active_configuration_descriptor().unwrap().is_none());
}

#[test]
fn transfers_as_data_are_performed_on_a_dyn_device() {
    let mut dev = TableDevice::new(vec![]);
    let d: &mut dyn UsbDevice = &mut dev;
    let data = [1u8, 2, 3, 4];
    let out = Transfer::BulkOut {
        endpoint: 4,
        data: &data,
    };
    assert_eq!(out.perform(d, T), Ok(Completion::Out { written: 4 }));
    assert_eq!(
        Transfer::BulkIn {
            endpoint: 0x81,
            length: 64
        }
        .perform(d, T),
        Ok(Completion::In(vec![0x81; 3]))
    );
    let e = Transfer::Reset.perform(d, T).unwrap_err();
    assert_eq!(
        (e.kind(), e.operation()),
        (ErrorKind::NotFound, &Operation::Reset)
    );
    assert_eq!(
        out.operation(),
        Operation::BulkOut {
            endpoint: 4,
            length: 4
        }
    );
    let e = Transfer::ControlOut {
        setup: Control::new(0x40, 0, 0, 0),
        data: &data,
    }
    .perform(d, T)
    .unwrap_err();
    assert_eq!(e.endpoint(), Some(0));
}
