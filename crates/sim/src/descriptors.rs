//! The USB face of each mode: device descriptor, configuration descriptors and strings, as the
//! raw bytes a phone sends to GET_DESCRIPTOR (PROTOCOLS.md §12).
//!
//! Bytes are written here by hand (not through `usb`'s writer) so that the test that parses
//! them with `usb`'s parser checks two independent readings of the same layout.

use crate::profile::{DfuStage, Profile};

/// `idVendor` of every Apple device.
pub const APPLE_VENDOR_ID: u16 = 0x05AC;
/// DFU mode product id.
pub const DFU_PRODUCT_ID: u16 = 0x1227;
/// Port DFU product id.
pub const PORT_DFU_PRODUCT_ID: u16 = 0xF014;
/// English (United States).
pub const LANGUAGE_EN_US: u16 = 0x0409;

/// Everything a mode presents at enumeration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbIdentity {
    /// The 18-byte device descriptor.
    pub device: [u8; 18],
    /// Each configuration with everything its `wTotalLength` covers, in index order.
    pub configurations: Vec<Vec<u8>>,
    /// String descriptors by index (≥ 1), as text.
    pub strings: Vec<(u8, String)>,
}

impl UsbIdentity {
    /// `idProduct`.
    pub fn product_id(&self) -> u16 {
        u16::from_le_bytes([self.device[10], self.device[11]])
    }

    /// The text of string `index`.
    pub fn string(&self, index: u8) -> Option<&str> {
        self.strings
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, s)| s.as_str())
    }

    /// `bConfigurationValue`s offered.
    pub fn configuration_values(&self) -> impl Iterator<Item = u8> + '_ {
        self.configurations.iter().filter_map(|c| c.get(5).copied())
    }

    /// The configuration with this `bConfigurationValue`.
    pub fn configuration(&self, value: u8) -> Option<&[u8]> {
        self.configurations
            .iter()
            .find(|c| c.get(5) == Some(&value))
            .map(Vec::as_slice)
    }

    /// Whether configuration `value` has interface `interface` with alternate setting `alt`.
    pub fn has_interface(&self, value: u8, interface: u8, alt: Option<u8>) -> bool {
        let Some(config) = self.configuration(value) else {
            return false;
        };
        let mut offset = 0;
        while let (Some(&len), Some(&ty)) = (config.get(offset), config.get(offset + 1)) {
            if ty == 4
                && config.get(offset + 2) == Some(&interface)
                && alt.is_none_or(|a| config.get(offset + 3) == Some(&a))
            {
                return true;
            }
            if len == 0 {
                break;
            }
            offset += usize::from(len);
        }
        false
    }
}

fn device(product_id: u16, bcd_device: u16, num_configurations: u8, strings: [u8; 3]) -> [u8; 18] {
    let p = product_id.to_le_bytes();
    let d = bcd_device.to_le_bytes();
    let v = APPLE_VENDOR_ID.to_le_bytes();
    [
        18,
        1,
        0x00,
        0x02, // bcdUSB 2.00
        0,
        0,
        0,
        64, // class per interface, EP0 64 bytes
        v[0],
        v[1],
        p[0],
        p[1],
        d[0],
        d[1],
        strings[0],
        strings[1],
        strings[2],
        num_configurations,
    ]
}

/// Builds a configuration: header, then the body descriptors; fills `wTotalLength` and
/// `bNumInterfaces`.
struct Config {
    bytes: Vec<u8>,
    interfaces: Vec<u8>,
}

impl Config {
    fn new(value: u8, string_index: u8, attributes: u8) -> Self {
        Self {
            // 250 × 2 mA = 500 mA.
            bytes: vec![9, 2, 0, 0, 0, value, string_index, attributes, 250],
            interfaces: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn interface(
        mut self,
        number: u8,
        alt: u8,
        endpoints: u8,
        class: u8,
        subclass: u8,
        protocol: u8,
        string_index: u8,
    ) -> Self {
        if !self.interfaces.contains(&number) {
            self.interfaces.push(number);
        }
        self.bytes.extend_from_slice(&[
            9,
            4,
            number,
            alt,
            endpoints,
            class,
            subclass,
            protocol,
            string_index,
        ]);
        self
    }

    fn endpoint(mut self, address: u8, attributes: u8, max_packet: u16, interval: u8) -> Self {
        let m = max_packet.to_le_bytes();
        self.bytes
            .extend_from_slice(&[7, 5, address, attributes, m[0], m[1], interval]);
        self
    }

    fn raw(mut self, descriptor: &[u8]) -> Self {
        self.bytes.extend_from_slice(descriptor);
        self
    }

    fn bulk(self, address: u8) -> Self {
        self.endpoint(address, 2, 512, 0)
    }

    fn finish(mut self) -> Vec<u8> {
        let total = (self.bytes.len() as u16).to_le_bytes();
        self.bytes[2] = total[0];
        self.bytes[3] = total[1];
        self.bytes[4] = self.interfaces.len() as u8;
        self.bytes
    }
}

/// Recovery mode (iBoot): strings 2/3/4/5, the nonces in string 1, one configuration with the
/// upload interface (bulk OUT 0x04) and the console interface (interface 1 alt 1: bulk IN 0x81,
/// bulk OUT 0x02).
pub fn recovery(profile: &Profile) -> UsbIdentity {
    let product = "Apple Mobile Device (Recovery Mode)";
    let config = Config::new(1, 5, 0x80)
        .interface(0, 0, 1, 0xFE, 0x01, 0x02, 0)
        .bulk(0x04)
        .interface(1, 0, 0, 0xFF, 0xFF, 0x51, 0)
        .interface(1, 1, 2, 0xFF, 0xFF, 0x51, 6)
        .bulk(0x81)
        .bulk(0x02)
        .finish();
    UsbIdentity {
        device: device(profile.recovery_product_id, 0x0000, 1, [2, 3, 4]),
        configurations: vec![config],
        strings: vec![
            (1, profile.nonce_string()),
            (2, "Apple Inc.".to_string()),
            (3, product.to_string()),
            (4, profile.recovery_serial()),
            (5, product.to_string()),
            (6, "Apple USB Serial Interface".to_string()),
        ],
    }
}

/// The DFU functional descriptor: download only, will not detach, manifestation intolerant,
/// wDetachTimeout 10 ms, wTransferSize as given.
fn dfu_functional(transfer_size: u16) -> [u8; 7] {
    let t = transfer_size.to_le_bytes();
    [7, 0x21, 0x01, 10, 0, t[0], t[1]]
}

/// DFU mode (SecureROM, iBSS-served DFU, or Port DFU): interface 0 0xFE/0x01/0x00 without
/// endpoints and the 7-byte DFU functional descriptor (wTransferSize 2048; 64 on Port DFU).
pub fn dfu(profile: &Profile, stage: DfuStage) -> UsbIdentity {
    let product = "Apple Mobile Device (DFU Mode)";
    let (pid, transfer_size) = match stage {
        DfuStage::Port => (PORT_DFU_PRODUCT_ID, 0x40),
        _ => (DFU_PRODUCT_ID, 0x800),
    };
    let config = Config::new(1, 5, 0x80)
        .interface(0, 0, 0, 0xFE, 0x01, 0x00, 0)
        .raw(&dfu_functional(transfer_size))
        .finish();
    UsbIdentity {
        device: device(pid, 0x0000, 1, [2, 3, 4]),
        configurations: vec![config],
        strings: vec![
            (1, profile.nonce_string()),
            (2, "Apple Inc.".to_string()),
            (3, product.to_string()),
            (4, profile.dfu_serial(stage)),
            (5, product.to_string()),
        ],
    }
}

/// Interface number of the usbmux interface in configurations 3 and 4 of normal mode.
pub const MUX_INTERFACE: u8 = 1;
/// Bulk OUT endpoint of the usbmux interface.
pub const MUX_OUT: u8 = 0x04;
/// Bulk IN endpoint of the usbmux interface.
pub const MUX_IN: u8 = 0x85;

/// Normal mode (and the restore ramdisk, which shares it): strings 1 "Apple Inc.", 2 the
/// device class, 3 the UDID; four configurations (PTP; iPod USB Interface; PTP + Apple Mobile
/// Device; PTP + Apple Mobile Device + Apple USB Ethernet), the mux interface FF/FE/02 with bulk
/// OUT 0x04 and bulk IN 0x85 in the last two.
pub fn normal(profile: &Profile) -> UsbIdentity {
    let ptp = |c: Config| {
        c.interface(0, 0, 3, 0x06, 0x01, 0x01, 4)
            .bulk(0x02)
            .bulk(0x81)
            .endpoint(0x83, 3, 64, 10)
    };
    let mux = |c: Config| {
        c.interface(MUX_INTERFACE, 0, 2, 0xFF, 0xFE, 0x02, 9)
            .bulk(MUX_OUT)
            .bulk(MUX_IN)
    };
    let c1 = ptp(Config::new(1, 4, 0xC0)).finish();
    // iPod USB Interface: audio control, audio streaming (alt 1 streams), HID.
    let c2 = Config::new(2, 5, 0xC0)
        .interface(0, 0, 0, 0x01, 0x01, 0x00, 0)
        .raw(&[9, 0x24, 0x01, 0x00, 0x01, 0x09, 0x00, 0x01, 0x01])
        .interface(1, 0, 0, 0x01, 0x02, 0x00, 0)
        .interface(1, 1, 1, 0x01, 0x02, 0x00, 0)
        .endpoint(0x82, 0x05, 192, 4)
        .interface(2, 0, 1, 0x03, 0x00, 0x00, 0)
        .raw(&[9, 0x21, 0x11, 0x01, 0x00, 0x01, 0x22, 0x40, 0x00])
        .endpoint(0x83, 3, 64, 10)
        .finish();
    let c3 = mux(ptp(Config::new(3, 6, 0xC0))).finish();
    let c4 = mux(ptp(Config::new(4, 7, 0xC0)))
        .interface(2, 0, 0, 0xFF, 0xFD, 0x01, 10)
        .interface(2, 1, 2, 0xFF, 0xFD, 0x01, 10)
        .bulk(0x06)
        .bulk(0x86)
        .finish();
    UsbIdentity {
        device: device(
            profile.normal_product_id,
            profile.normal_bcd_device(),
            4,
            [1, 2, 3],
        ),
        configurations: vec![c1, c2, c3, c4],
        strings: vec![
            (1, "Apple Inc.".to_string()),
            (2, profile.device_class().to_string()),
            (3, profile.udid.clone()),
            (4, "PTP".to_string()),
            (5, "iPod USB Interface".to_string()),
            (6, "PTP + Apple Mobile Device".to_string()),
            (
                7,
                "PTP + Apple Mobile Device + Apple USB Ethernet".to_string(),
            ),
            (8, "Apple Mobile Device".to_string()),
            (9, "Apple USB Multiplexor".to_string()),
            (10, "Apple USB Ethernet".to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use usb::{ConfigurationDescriptor, DeviceDescriptor, TransferType};

    fn profile() -> Profile {
        Profile::for_product_type("iPhone14,3", 9).unwrap()
    }

    #[test]
    fn recovery_layout_parses_as_section_12_says() {
        let id = recovery(&profile());
        let d = DeviceDescriptor::parse(&id.device).unwrap();
        assert_eq!(
            (d.vendor_id, d.product_id, d.device_version),
            (0x05AC, 0x1281, 0)
        );
        assert_eq!(
            (
                d.manufacturer_index,
                d.product_index,
                d.serial_number_index,
                d.num_configurations
            ),
            (2, 3, 4, 1)
        );
        let c = ConfigurationDescriptor::parse(&id.configurations[0]).unwrap();
        assert_eq!(
            (c.value, c.attributes, c.max_power, c.string_index),
            (1, 0x80, 250, 5)
        );
        let i0 = &c.interface(0).unwrap().alt_settings[0];
        assert_eq!((i0.class, i0.subclass, i0.protocol), (0xFE, 1, 2));
        let ep = i0.endpoint(0x04).unwrap();
        assert_eq!(
            (ep.transfer_type(), ep.max_packet_bytes()),
            (TransferType::Bulk, 512)
        );
        let i1 = c.interface(1).unwrap();
        assert!(i1.alt_setting(0).unwrap().endpoints.is_empty());
        let alt1 = i1.alt_setting(1).unwrap();
        assert!(alt1.endpoint(0x81).is_some() && alt1.endpoint(0x02).is_some());
        assert!(id.string(1).unwrap().starts_with("NONC:"));
        assert!(id.string(4).unwrap().contains("ECID:"));
        assert_eq!(id.string(3), id.string(5));
        assert!(id.has_interface(1, 1, Some(1)));
        assert!(!id.has_interface(1, 2, None));
    }

    #[test]
    fn dfu_layout_is_25_bytes_with_the_functional_descriptor() {
        let id = dfu(&profile(), DfuStage::SecureRom);
        assert_eq!(id.configurations[0].len(), 25);
        let c = ConfigurationDescriptor::parse(&id.configurations[0]).unwrap();
        let alt = &c.interface(0).unwrap().alt_settings[0];
        assert_eq!((alt.class, alt.subclass, alt.protocol), (0xFE, 1, 0));
        assert!(alt.endpoints.is_empty());
        let (ty, f) = alt.class_descriptors().next().unwrap();
        assert_eq!(ty, 0x21);
        assert_eq!(f, [7, 0x21, 0x01, 10, 0, 0x00, 0x08]);
        assert_eq!(
            DeviceDescriptor::parse(&id.device).unwrap().product_id,
            0x1227
        );
        let port = dfu(&profile(), DfuStage::Port);
        assert_eq!(port.product_id(), 0xF014);
    }

    #[test]
    fn normal_layout_has_four_configurations_and_the_mux_in_3_and_4() {
        let p = profile();
        let id = normal(&p);
        let d = DeviceDescriptor::parse(&id.device).unwrap();
        assert_eq!(
            (d.product_id, d.num_configurations, d.device_version),
            (0x12A8, 4, 0x1705)
        );
        assert_eq!(id.string(3), Some(p.udid.as_str()));
        for (i, raw) in id.configurations.iter().enumerate() {
            let c = ConfigurationDescriptor::parse(raw).unwrap();
            assert_eq!((c.value as usize, c.attributes), (i + 1, 0xC0));
            assert_eq!(c.to_bytes().unwrap(), *raw, "configuration {}", i + 1);
            let mux = c
                .interfaces
                .iter()
                .flat_map(|i| &i.alt_settings)
                .find(|a| (a.class, a.subclass, a.protocol) == (0xFF, 0xFE, 0x02));
            assert_eq!(mux.is_some(), i >= 2, "configuration {}", i + 1);
            if let Some(m) = mux {
                assert!(m.endpoint(MUX_OUT).is_some() && m.endpoint(MUX_IN).is_some());
            }
        }
    }
}
