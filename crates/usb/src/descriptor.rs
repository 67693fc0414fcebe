//! Standard descriptors (USB 2.0 §9.6): device, configuration, interface, endpoint, parsed
//! from the raw bytes a device sends, and written back to bytes (for the simulator and traces).
//!
//! Devices send garbage sometimes (a flaky cable, a half-booted phone), so every parser here
//! returns a typed [`DescriptorError`] and never panics; each has a fuzz target.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::control::Direction;

/// `bDescriptorType` values this crate knows.
pub mod descriptor_type {
    /// Device descriptor.
    pub const DEVICE: u8 = 1;
    /// Configuration descriptor.
    pub const CONFIGURATION: u8 = 2;
    /// String descriptor.
    pub const STRING: u8 = 3;
    /// Interface descriptor.
    pub const INTERFACE: u8 = 4;
    /// Endpoint descriptor.
    pub const ENDPOINT: u8 = 5;
}

/// Which descriptor a [`DescriptorError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DescriptorKind {
    /// Device descriptor (type 1).
    Device,
    /// Configuration descriptor (type 2) and the descriptors that follow it.
    Configuration,
    /// String descriptor (type 3), including the language table at index 0.
    String,
    /// Interface descriptor (type 4).
    Interface,
    /// Endpoint descriptor (type 5).
    Endpoint,
    /// A class or vendor descriptor inside a configuration.
    Other(u8),
}

impl DescriptorKind {
    fn from_type(t: u8) -> Self {
        match t {
            descriptor_type::DEVICE => Self::Device,
            descriptor_type::CONFIGURATION => Self::Configuration,
            descriptor_type::STRING => Self::String,
            descriptor_type::INTERFACE => Self::Interface,
            descriptor_type::ENDPOINT => Self::Endpoint,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for DescriptorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device => f.write_str("device"),
            Self::Configuration => f.write_str("configuration"),
            Self::String => f.write_str("string"),
            Self::Interface => f.write_str("interface"),
            Self::Endpoint => f.write_str("endpoint"),
            Self::Other(t) => write!(f, "type {t:#04x}"),
        }
    }
}

/// Bytes that are not the descriptor they claim to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The descriptor (or the data) ends before the length it announces.
    #[error("{kind} descriptor at offset {offset} truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// What was being read.
        kind: DescriptorKind,
        /// Where it starts in the buffer.
        offset: usize,
        /// Bytes it needs from `offset`.
        needed: usize,
        /// Bytes there are from `offset`.
        available: usize,
    },
    /// `bDescriptorType` is not the one asked for.
    #[error("expected a {expected} descriptor, got bDescriptorType {found:#04x}")]
    WrongType {
        /// The kind that was asked for.
        expected: DescriptorKind,
        /// The type byte that came.
        found: u8,
    },
    /// `bLength` is smaller than the descriptor's fixed fields (or 0/1, which would loop).
    #[error(
        "{kind} descriptor at offset {offset}: bLength {length} is below the minimum {minimum}"
    )]
    BadLength {
        /// What was being read.
        kind: DescriptorKind,
        /// Where it starts.
        offset: usize,
        /// The `bLength` that came.
        length: u8,
        /// The smallest valid value.
        minimum: u8,
    },
    /// A device descriptor's `bLength` is not 18.
    #[error("device descriptor bLength is {length}, must be 18")]
    DeviceLength {
        /// The `bLength` that came.
        length: u8,
    },
    /// `wTotalLength` is shorter than the configuration header itself.
    #[error("configuration wTotalLength {total} is shorter than its own header ({header} bytes)")]
    BadTotalLength {
        /// `wTotalLength`.
        total: u16,
        /// `bLength` of the configuration descriptor.
        header: u8,
    },
    /// An endpoint descriptor came before any interface descriptor.
    #[error("endpoint descriptor at offset {offset} precedes any interface descriptor")]
    EndpointOutsideInterface {
        /// Where it starts.
        offset: usize,
    },
    /// A device or configuration descriptor inside a configuration's descriptor set.
    #[error("unexpected {kind} descriptor at offset {offset} inside a configuration")]
    Unexpected {
        /// What it claims to be.
        kind: DescriptorKind,
        /// Where it starts.
        offset: usize,
    },
    /// A string descriptor whose UTF-16 payload has an odd number of bytes.
    #[error("string descriptor bLength {length} leaves an odd number of UTF-16 bytes")]
    OddStringLength {
        /// The `bLength` that came.
        length: u8,
    },
    /// Something too big to be written as a descriptor (`bLength` is one byte,
    /// `wTotalLength` two).
    #[error("{kind} descriptor would be {length} bytes, more than its length field can say")]
    TooLong {
        /// What was being written.
        kind: DescriptorKind,
        /// How long it would have been.
        length: usize,
    },
}

/// Reads `(bLength, bDescriptorType)` at `offset` and checks both fit.
fn header(
    data: &[u8],
    offset: usize,
    kind: DescriptorKind,
) -> Result<(usize, u8), DescriptorError> {
    let rest = data.get(offset..).unwrap_or_default();
    match rest {
        [len, ty, ..] => {
            let len = usize::from(*len);
            if len < 2 {
                return Err(DescriptorError::BadLength {
                    kind,
                    offset,
                    length: len as u8,
                    minimum: 2,
                });
            }
            if len > rest.len() {
                return Err(DescriptorError::Truncated {
                    kind: DescriptorKind::from_type(*ty),
                    offset,
                    needed: len,
                    available: rest.len(),
                });
            }
            Ok((len, *ty))
        }
        _ => Err(DescriptorError::Truncated {
            kind,
            offset,
            needed: 2,
            available: rest.len(),
        }),
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    match (b.get(at), b.get(at + 1)) {
        (Some(lo), Some(hi)) => u16::from_le_bytes([*lo, *hi]),
        _ => 0,
    }
}

fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// The device descriptor (18 bytes): who the device is and how many configurations it has.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceDescriptor {
    /// `bcdUSB` (0x0200 for USB 2.0).
    pub usb_version: u16,
    /// `bDeviceClass`.
    pub class: u8,
    /// `bDeviceSubClass`.
    pub subclass: u8,
    /// `bDeviceProtocol`.
    pub protocol: u8,
    /// `bMaxPacketSize0`: packet size of endpoint 0.
    pub max_packet_size_0: u8,
    /// `idVendor` (0x05AC for Apple).
    pub vendor_id: u16,
    /// `idProduct`: tells the phone's mode (0x1227 DFU, 0x1281 recovery, ...).
    pub product_id: u16,
    /// `bcdDevice`.
    pub device_version: u16,
    /// `iManufacturer`: string index, 0 for none.
    pub manufacturer_index: u8,
    /// `iProduct`: string index, 0 for none.
    pub product_index: u8,
    /// `iSerialNumber`: string index, 0 for none (iBoot puts its serial string there).
    pub serial_number_index: u8,
    /// `bNumConfigurations`.
    pub num_configurations: u8,
}

impl DeviceDescriptor {
    /// Length of a device descriptor.
    pub const LENGTH: usize = 18;

    /// Parses a device descriptor; bytes after its 18 are ignored.
    pub fn parse(data: &[u8]) -> Result<Self, DescriptorError> {
        let kind = DescriptorKind::Device;
        if let [len, ty, ..] = data {
            if *ty != descriptor_type::DEVICE {
                return Err(DescriptorError::WrongType {
                    expected: kind,
                    found: *ty,
                });
            }
            if usize::from(*len) != Self::LENGTH {
                return Err(DescriptorError::DeviceLength { length: *len });
            }
        }
        if data.len() < Self::LENGTH {
            return Err(DescriptorError::Truncated {
                kind,
                offset: 0,
                needed: Self::LENGTH,
                available: data.len(),
            });
        }
        Ok(Self {
            usb_version: le16(data, 2),
            class: byte(data, 4),
            subclass: byte(data, 5),
            protocol: byte(data, 6),
            max_packet_size_0: byte(data, 7),
            vendor_id: le16(data, 8),
            product_id: le16(data, 10),
            device_version: le16(data, 12),
            manufacturer_index: byte(data, 14),
            product_index: byte(data, 15),
            serial_number_index: byte(data, 16),
            num_configurations: byte(data, 17),
        })
    }

    /// The 18 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; 18] {
        let u = self.usb_version.to_le_bytes();
        let v = self.vendor_id.to_le_bytes();
        let p = self.product_id.to_le_bytes();
        let d = self.device_version.to_le_bytes();
        [
            18,
            descriptor_type::DEVICE,
            u[0],
            u[1],
            self.class,
            self.subclass,
            self.protocol,
            self.max_packet_size_0,
            v[0],
            v[1],
            p[0],
            p[1],
            d[0],
            d[1],
            self.manufacturer_index,
            self.product_index,
            self.serial_number_index,
            self.num_configurations,
        ]
    }
}

/// Transfer type of an endpoint (bits 0..1 of `bmAttributes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferType {
    /// Control.
    Control,
    /// Isochronous.
    Isochronous,
    /// Bulk.
    Bulk,
    /// Interrupt.
    Interrupt,
}

/// An endpoint descriptor and the class descriptors that follow it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointDescriptor {
    /// `bEndpointAddress`: number in bits 0..3, direction in bit 7 (0x81 = IN 1).
    pub address: u8,
    /// `bmAttributes`: transfer type and, for isochronous, sync/usage.
    pub attributes: u8,
    /// `wMaxPacketSize`, raw (bits 11..12 are the high-bandwidth multiplier).
    pub max_packet_size: u16,
    /// `bInterval`.
    pub interval: u8,
    /// Bytes of this descriptor past the standard 7 (audio endpoints carry 2 more).
    pub extension: Vec<u8>,
    /// Complete descriptors that follow this endpoint (e.g. SuperSpeed companion).
    pub extra: Vec<u8>,
}

impl EndpointDescriptor {
    /// Endpoint number (0..=15).
    pub fn number(&self) -> u8 {
        self.address & 0x0f
    }

    /// IN or OUT.
    pub fn direction(&self) -> Direction {
        if self.address & 0x80 != 0 {
            Direction::In
        } else {
            Direction::Out
        }
    }

    /// Bulk, interrupt, ...
    pub fn transfer_type(&self) -> TransferType {
        match self.attributes & 3 {
            0 => TransferType::Control,
            1 => TransferType::Isochronous,
            2 => TransferType::Bulk,
            _ => TransferType::Interrupt,
        }
    }

    /// Bytes per packet (bits 0..10 of `wMaxPacketSize`).
    pub fn max_packet_bytes(&self) -> u16 {
        self.max_packet_size & 0x7ff
    }
}

/// One alternate setting of an interface: an interface descriptor with its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AltSetting {
    /// `bInterfaceNumber`.
    pub interface_number: u8,
    /// `bAlternateSetting`.
    pub alternate_setting: u8,
    /// `bInterfaceClass` (0xFE application specific, e.g. DFU; 0xFF vendor).
    pub class: u8,
    /// `bInterfaceSubClass`.
    pub subclass: u8,
    /// `bInterfaceProtocol`.
    pub protocol: u8,
    /// `iInterface`: string index, 0 for none.
    pub string_index: u8,
    /// Bytes of this descriptor past the standard 9 (normally empty).
    pub extension: Vec<u8>,
    /// Complete class/vendor descriptors between this interface descriptor and its first
    /// endpoint (e.g. the DFU functional descriptor, type 0x21).
    pub extra: Vec<u8>,
    /// The endpoints, in the order the device listed them.
    pub endpoints: Vec<EndpointDescriptor>,
}

impl AltSetting {
    /// The class descriptors in [`AltSetting::extra`] as `(bDescriptorType, whole descriptor)`.
    pub fn class_descriptors(&self) -> RawDescriptors<'_> {
        RawDescriptors { data: &self.extra }
    }

    /// The endpoint with this address, if the setting has it.
    pub fn endpoint(&self, address: u8) -> Option<&EndpointDescriptor> {
        self.endpoints.iter().find(|e| e.address == address)
    }
}

/// An interface: all alternate settings sharing one `bInterfaceNumber`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interface {
    /// `bInterfaceNumber`.
    pub number: u8,
    /// The alternate settings in the order listed (setting 0 is normally first).
    pub alt_settings: Vec<AltSetting>,
}

impl Interface {
    /// The alternate setting with this `bAlternateSetting`.
    pub fn alt_setting(&self, alternate_setting: u8) -> Option<&AltSetting> {
        self.alt_settings
            .iter()
            .find(|a| a.alternate_setting == alternate_setting)
    }
}

/// A configuration descriptor with everything `wTotalLength` covers.
///
/// ```
/// use usb::{ConfigurationDescriptor, TransferType};
///
/// // A DFU-mode phone: one interface (0xFE/0x01/0x00), no endpoints, a DFU functional
/// // descriptor (download capable, transfer size 2048). wTotalLength is 25.
/// let bytes = [
///     9, 2, 25, 0, 1, 1, 0, 0x80, 250, // configuration
///     9, 4, 0, 0, 0, 0xFE, 1, 0, 0, // interface 0
///     7, 0x21, 0x01, 10, 0, 0x00, 0x08, // DFU functional
/// ];
/// let config = ConfigurationDescriptor::parse(&bytes)?;
/// let alt = config.interface(0).and_then(|i| i.alt_setting(0)).unwrap();
/// assert_eq!((alt.class, alt.subclass, alt.protocol), (0xFE, 1, 0));
/// let (ty, dfu) = alt.class_descriptors().next().unwrap();
/// assert_eq!((ty, u16::from_le_bytes([dfu[5], dfu[6]])), (0x21, 2048));
/// assert_eq!(config.to_bytes()?, bytes);
/// # Ok::<(), usb::DescriptorError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfigurationDescriptor {
    /// `bConfigurationValue`: what SET_CONFIGURATION takes.
    pub value: u8,
    /// `iConfiguration`: string index, 0 for none.
    pub string_index: u8,
    /// `bmAttributes` (0x80 bus powered, 0x40 self powered, 0x20 remote wakeup).
    pub attributes: u8,
    /// `bMaxPower`, raw: units of 2 mA (8 mA at SuperSpeed).
    pub max_power: u8,
    /// Bytes of the configuration descriptor past the standard 9 (normally empty).
    pub extension: Vec<u8>,
    /// Complete descriptors between the configuration and the first interface (e.g. an
    /// interface association descriptor).
    pub extra: Vec<u8>,
    /// The interfaces, in the order of their first appearance.
    pub interfaces: Vec<Interface>,
}

impl ConfigurationDescriptor {
    /// Length of the configuration descriptor's fixed fields.
    pub const HEADER_LENGTH: usize = 9;

    /// Parses a configuration descriptor and the `wTotalLength` bytes it covers; bytes after
    /// `wTotalLength` are ignored. Counts the device announces (`bNumInterfaces`,
    /// `bNumEndpoints`) are not trusted: the descriptors actually present are kept.
    pub fn parse(data: &[u8]) -> Result<Self, DescriptorError> {
        let kind = DescriptorKind::Configuration;
        if let [_, ty, ..] = data {
            if *ty != descriptor_type::CONFIGURATION {
                return Err(DescriptorError::WrongType {
                    expected: kind,
                    found: *ty,
                });
            }
        }
        let (len, _) = header(data, 0, kind)?;
        if len < Self::HEADER_LENGTH {
            return Err(DescriptorError::BadLength {
                kind,
                offset: 0,
                length: len as u8,
                minimum: Self::HEADER_LENGTH as u8,
            });
        }
        let total = le16(data, 2);
        if usize::from(total) < len {
            return Err(DescriptorError::BadTotalLength {
                total,
                header: len as u8,
            });
        }
        let body = data
            .get(..usize::from(total))
            .ok_or(DescriptorError::Truncated {
                kind,
                offset: 0,
                needed: usize::from(total),
                available: data.len(),
            })?;
        let mut config = Self {
            value: byte(body, 5),
            string_index: byte(body, 6),
            attributes: byte(body, 7),
            max_power: byte(body, 8),
            extension: body
                .get(Self::HEADER_LENGTH..len)
                .unwrap_or_default()
                .to_vec(),
            extra: Vec::new(),
            interfaces: Vec::new(),
        };
        // Where the class descriptors that follow go: config, current alt, current endpoint.
        enum Owner {
            Config,
            Alt(usize, usize),
            Endpoint(usize, usize, usize),
        }
        let mut owner = Owner::Config;
        let mut offset = len;
        while offset < body.len() {
            let (dlen, ty) = header(body, offset, kind)?;
            let d = body.get(offset..offset + dlen).unwrap_or_default();
            match ty {
                descriptor_type::INTERFACE => {
                    if dlen < 9 {
                        return Err(DescriptorError::BadLength {
                            kind: DescriptorKind::Interface,
                            offset,
                            length: dlen as u8,
                            minimum: 9,
                        });
                    }
                    let alt = AltSetting {
                        interface_number: byte(d, 2),
                        alternate_setting: byte(d, 3),
                        class: byte(d, 5),
                        subclass: byte(d, 6),
                        protocol: byte(d, 7),
                        string_index: byte(d, 8),
                        extension: d.get(9..).unwrap_or_default().to_vec(),
                        extra: Vec::new(),
                        endpoints: Vec::new(),
                    };
                    let i = match config
                        .interfaces
                        .iter()
                        .position(|i| i.number == alt.interface_number)
                    {
                        Some(i) => i,
                        None => {
                            config.interfaces.push(Interface {
                                number: alt.interface_number,
                                alt_settings: Vec::new(),
                            });
                            config.interfaces.len() - 1
                        }
                    };
                    if let Some(interface) = config.interfaces.get_mut(i) {
                        interface.alt_settings.push(alt);
                        owner = Owner::Alt(i, interface.alt_settings.len() - 1);
                    }
                }
                descriptor_type::ENDPOINT => {
                    if dlen < 7 {
                        return Err(DescriptorError::BadLength {
                            kind: DescriptorKind::Endpoint,
                            offset,
                            length: dlen as u8,
                            minimum: 7,
                        });
                    }
                    let endpoint = EndpointDescriptor {
                        address: byte(d, 2),
                        attributes: byte(d, 3),
                        max_packet_size: le16(d, 4),
                        interval: byte(d, 6),
                        extension: d.get(7..).unwrap_or_default().to_vec(),
                        extra: Vec::new(),
                    };
                    let (i, a) = match owner {
                        Owner::Config => {
                            return Err(DescriptorError::EndpointOutsideInterface { offset })
                        }
                        Owner::Alt(i, a) | Owner::Endpoint(i, a, _) => (i, a),
                    };
                    if let Some(alt) = config
                        .interfaces
                        .get_mut(i)
                        .and_then(|x| x.alt_settings.get_mut(a))
                    {
                        alt.endpoints.push(endpoint);
                        owner = Owner::Endpoint(i, a, alt.endpoints.len() - 1);
                    }
                }
                descriptor_type::DEVICE | descriptor_type::CONFIGURATION => {
                    return Err(DescriptorError::Unexpected {
                        kind: DescriptorKind::from_type(ty),
                        offset,
                    });
                }
                _ => {
                    let target = match owner {
                        Owner::Config => Some(&mut config.extra),
                        Owner::Alt(i, a) => config
                            .interfaces
                            .get_mut(i)
                            .and_then(|x| x.alt_settings.get_mut(a))
                            .map(|alt| &mut alt.extra),
                        Owner::Endpoint(i, a, e) => config
                            .interfaces
                            .get_mut(i)
                            .and_then(|x| x.alt_settings.get_mut(a))
                            .and_then(|alt| alt.endpoints.get_mut(e))
                            .map(|ep| &mut ep.extra),
                    };
                    if let Some(target) = target {
                        target.extend_from_slice(d);
                    }
                }
            }
            offset += dlen;
        }
        Ok(config)
    }

    /// The bytes on the wire; `wTotalLength`, `bNumInterfaces` and `bNumEndpoints` are
    /// computed from what the value holds (the counts saturate at 255).
    pub fn to_bytes(&self) -> Result<Vec<u8>, DescriptorError> {
        fn sized(
            kind: DescriptorKind,
            fixed: usize,
            extension: &[u8],
        ) -> Result<u8, DescriptorError> {
            let length = fixed + extension.len();
            u8::try_from(length).map_err(|_| DescriptorError::TooLong { kind, length })
        }
        let mut out = Vec::new();
        let len = sized(DescriptorKind::Configuration, 9, &self.extension)?;
        // Counts are informative (parse does not trust them): saturate rather than refuse.
        let num_interfaces = u8::try_from(self.interfaces.len()).unwrap_or(u8::MAX);
        out.extend_from_slice(&[
            len,
            descriptor_type::CONFIGURATION,
            0,
            0,
            num_interfaces,
            self.value,
            self.string_index,
            self.attributes,
            self.max_power,
        ]);
        out.extend_from_slice(&self.extension);
        out.extend_from_slice(&self.extra);
        for interface in &self.interfaces {
            for alt in &interface.alt_settings {
                let len = sized(DescriptorKind::Interface, 9, &alt.extension)?;
                let num_endpoints = u8::try_from(alt.endpoints.len()).unwrap_or(u8::MAX);
                out.extend_from_slice(&[
                    len,
                    descriptor_type::INTERFACE,
                    alt.interface_number,
                    alt.alternate_setting,
                    num_endpoints,
                    alt.class,
                    alt.subclass,
                    alt.protocol,
                    alt.string_index,
                ]);
                out.extend_from_slice(&alt.extension);
                out.extend_from_slice(&alt.extra);
                for ep in &alt.endpoints {
                    let len = sized(DescriptorKind::Endpoint, 7, &ep.extension)?;
                    let mps = ep.max_packet_size.to_le_bytes();
                    out.extend_from_slice(&[
                        len,
                        descriptor_type::ENDPOINT,
                        ep.address,
                        ep.attributes,
                        mps[0],
                        mps[1],
                        ep.interval,
                    ]);
                    out.extend_from_slice(&ep.extension);
                    out.extend_from_slice(&ep.extra);
                }
            }
        }
        let total = u16::try_from(out.len()).map_err(|_| DescriptorError::TooLong {
            kind: DescriptorKind::Configuration,
            length: out.len(),
        })?;
        if let Some(t) = out.get_mut(2..4) {
            t.copy_from_slice(&total.to_le_bytes());
        }
        Ok(out)
    }

    /// The interface with this `bInterfaceNumber`.
    pub fn interface(&self, number: u8) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.number == number)
    }

    /// Whether `bmAttributes` says self powered.
    pub fn self_powered(&self) -> bool {
        self.attributes & 0x40 != 0
    }

    /// `bMaxPower` in milliamperes at USB 2.0 speeds (2 mA units).
    pub fn max_power_ma(&self) -> u32 {
        u32::from(self.max_power) * 2
    }
}

/// Iterator over complete descriptors packed one after another, as
/// `(bDescriptorType, whole descriptor)`; stops at the first malformed one.
#[derive(Debug, Clone)]
pub struct RawDescriptors<'a> {
    data: &'a [u8],
}

impl<'a> RawDescriptors<'a> {
    /// Iterates over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
}

impl<'a> Iterator for RawDescriptors<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let len = usize::from(*self.data.first()?);
        let ty = *self.data.get(1)?;
        if len < 2 {
            self.data = &[];
            return None;
        }
        let Some(d) = self.data.get(..len) else {
            self.data = &[];
            return None;
        };
        self.data = self.data.get(len..).unwrap_or_default();
        Some((ty, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery_config() -> Vec<u8> {
        // The recovery-mode layout described in PROTOCOLS.md §12, written from the text.
        let mut b = vec![9, 2, 0, 0, 2, 1, 5, 0x80, 250];
        b.extend_from_slice(&[9, 4, 0, 0, 1, 0xFE, 1, 2, 0]);
        b.extend_from_slice(&[7, 5, 0x04, 2, 0x00, 0x02, 0]);
        b.extend_from_slice(&[9, 4, 1, 0, 0, 0xFF, 0xFF, 0x51, 0]);
        b.extend_from_slice(&[9, 4, 1, 1, 2, 0xFF, 0xFF, 0x51, 6]);
        b.extend_from_slice(&[7, 5, 0x81, 2, 0x00, 0x02, 0]);
        b.extend_from_slice(&[7, 5, 0x02, 2, 0x00, 0x02, 0]);
        let total = b.len() as u16;
        b[2..4].copy_from_slice(&total.to_le_bytes());
        b
    }

    #[test]
    fn recovery_layout_parses_and_round_trips() {
        let bytes = recovery_config();
        let c = ConfigurationDescriptor::parse(&bytes).unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.max_power_ma(), 500);
        let ep = &c.interface(0).unwrap().alt_settings[0].endpoints[0];
        assert_eq!(
            (ep.address, ep.direction(), ep.transfer_type()),
            (4, Direction::Out, TransferType::Bulk)
        );
        assert_eq!(ep.max_packet_bytes(), 512);
        let serial = c.interface(1).unwrap().alt_setting(1).unwrap();
        assert_eq!(serial.endpoint(0x81).unwrap().direction(), Direction::In);
        assert_eq!(serial.endpoint(0x81).unwrap().number(), 1);
        assert_eq!(c.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn trailing_bytes_after_total_length_are_ignored() {
        let mut bytes = recovery_config();
        let expected = ConfigurationDescriptor::parse(&bytes).unwrap();
        bytes.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(ConfigurationDescriptor::parse(&bytes).unwrap(), expected);
    }

    #[test]
    fn garbage_gives_typed_errors() {
        use DescriptorError as E;
        assert!(matches!(
            ConfigurationDescriptor::parse(&[]),
            Err(E::Truncated { .. })
        ));
        assert!(matches!(
            ConfigurationDescriptor::parse(&[9, 1]),
            Err(E::WrongType { found: 1, .. })
        ));
        assert!(matches!(
            ConfigurationDescriptor::parse(&[4, 2, 4, 0]),
            Err(E::BadLength { minimum: 9, .. })
        ));
        assert!(matches!(
            ConfigurationDescriptor::parse(&[9, 2, 5, 0, 0, 0, 0, 0, 0]),
            Err(E::BadTotalLength { total: 5, .. })
        ));
        // wTotalLength says more than came.
        let mut b = recovery_config();
        b.truncate(b.len() - 3);
        assert!(matches!(
            ConfigurationDescriptor::parse(&b),
            Err(E::Truncated { .. })
        ));
        // A zero bLength inside would loop forever if not caught.
        let b = [9, 2, 11, 0, 1, 1, 0, 0x80, 50, 0, 4];
        assert!(matches!(
            ConfigurationDescriptor::parse(&b),
            Err(E::BadLength { offset: 9, .. })
        ));
        // An endpoint before any interface.
        let b = [9, 2, 16, 0, 1, 1, 0, 0x80, 50, 7, 5, 0x81, 2, 0, 2, 0];
        assert_eq!(
            ConfigurationDescriptor::parse(&b),
            Err(E::EndpointOutsideInterface { offset: 9 })
        );
        // A short interface descriptor.
        let b = [9, 2, 13, 0, 1, 1, 0, 0x80, 50, 4, 4, 0, 0];
        assert!(matches!(
            ConfigurationDescriptor::parse(&b),
            Err(E::BadLength {
                kind: DescriptorKind::Interface,
                ..
            })
        ));
        // A nested configuration descriptor.
        let b = [
            9, 2, 18, 0, 1, 1, 0, 0x80, 50, 9, 2, 9, 0, 1, 1, 0, 0x80, 50,
        ];
        assert!(matches!(
            ConfigurationDescriptor::parse(&b),
            Err(E::Unexpected { .. })
        ));
    }

    #[test]
    fn class_descriptors_attach_to_the_right_owner() {
        let mut b = vec![9, 2, 0, 0, 1, 1, 0, 0x80, 50];
        b.extend_from_slice(&[8, 11, 0, 1, 1, 1, 0, 0]); // IAD before the interface
        b.extend_from_slice(&[9, 4, 0, 0, 1, 1, 1, 0, 0]);
        b.extend_from_slice(&[5, 0x24, 1, 0, 1]); // class-specific interface
        b.extend_from_slice(&[9, 5, 0x81, 1, 0, 1, 1, 0, 0]); // 9-byte audio endpoint
        b.extend_from_slice(&[7, 0x25, 1, 0, 0, 0, 0]); // class-specific endpoint
        let total = b.len() as u16;
        b[2..4].copy_from_slice(&total.to_le_bytes());
        let c = ConfigurationDescriptor::parse(&b).unwrap();
        assert_eq!(c.extra.len(), 8);
        let alt = &c.interfaces[0].alt_settings[0];
        assert_eq!(
            alt.class_descriptors().map(|(t, _)| t).collect::<Vec<_>>(),
            [0x24]
        );
        assert_eq!(alt.endpoints[0].extension, [0, 0]);
        assert_eq!(alt.endpoints[0].extra.len(), 7);
        assert_eq!(c.to_bytes().unwrap(), b);
    }

    #[test]
    fn device_descriptor_round_trip_and_errors() {
        let d = DeviceDescriptor {
            usb_version: 0x0200,
            class: 0,
            subclass: 0,
            protocol: 0,
            max_packet_size_0: 64,
            vendor_id: 0x05ac,
            product_id: 0x1227,
            device_version: 0,
            manufacturer_index: 2,
            product_index: 3,
            serial_number_index: 4,
            num_configurations: 1,
        };
        let b = d.to_bytes();
        assert_eq!(DeviceDescriptor::parse(&b), Ok(d));
        assert_eq!(
            DeviceDescriptor::parse(&b[..10]),
            Err(DescriptorError::Truncated {
                kind: DescriptorKind::Device,
                offset: 0,
                needed: 18,
                available: 10
            })
        );
        let mut bad = b;
        bad[0] = 17;
        assert_eq!(
            DeviceDescriptor::parse(&bad),
            Err(DescriptorError::DeviceLength { length: 17 })
        );
        bad[1] = 2;
        assert!(matches!(
            DeviceDescriptor::parse(&bad),
            Err(DescriptorError::WrongType { .. })
        ));
    }

    #[test]
    fn to_bytes_refuses_what_cannot_be_said() {
        let mut c = ConfigurationDescriptor::parse(&recovery_config()).unwrap();
        c.extension = vec![0; 250];
        assert!(matches!(c.to_bytes(), Err(DescriptorError::TooLong { .. })));
    }

    #[test]
    fn raw_descriptors_stop_at_garbage() {
        let d = [3, 0x21, 1, 0, 9, 9];
        let v: Vec<_> = RawDescriptors::new(&d).collect();
        assert_eq!(v, [(0x21, &d[..3])]);
    }
}
