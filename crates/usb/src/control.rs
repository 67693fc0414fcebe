//! Control transfers: the 8-byte SETUP packet and its `bmRequestType` fields (USB 2.0 §9.3).

use serde::{Deserialize, Serialize};

/// Which way the data stage of a transfer goes (bit 7 of `bmRequestType`, bit 7 of an
/// endpoint address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Host to device.
    Out,
    /// Device to host.
    In,
}

/// Bits 5..6 of `bmRequestType`: who defines the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ControlType {
    /// Chapter 9 requests (GET_DESCRIPTOR, SET_CONFIGURATION, ...).
    Standard,
    /// Requests defined by a device class (DFU's DNLOAD, GETSTATUS, ...).
    Class,
    /// Vendor requests (iBoot commands).
    Vendor,
    /// The value 3, which USB reserves.
    Reserved,
}

/// Bits 0..4 of `bmRequestType`: what the request is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Recipient {
    /// The device as a whole.
    Device,
    /// The interface named by `wIndex`.
    Interface,
    /// The endpoint named by `wIndex`.
    Endpoint,
    /// Something else.
    Other,
    /// One of the values 4..=31, reserved by USB.
    Reserved(u8),
}

/// A control request without its data stage: `bmRequestType`, `bRequest`, `wValue`, `wIndex`.
///
/// `wLength` is not part of it: for an IN transfer it is the length asked for, for an OUT
/// transfer it is the length of the data handed to [`crate::UsbDevice::control_out`].
///
/// ```
/// use usb::{Control, ControlType, Direction, Recipient};
///
/// // DFU GETSTATUS: class request to interface 0, device to host.
/// let get_status = Control::new(0xA1, 3, 0, 0);
/// assert_eq!(get_status.direction(), Direction::In);
/// assert_eq!(get_status.control_type(), ControlType::Class);
/// assert_eq!(get_status.recipient(), Recipient::Interface);
/// assert_eq!(
///     Control::build(Direction::In, ControlType::Class, Recipient::Interface, 3, 0, 0),
///     get_status
/// );
/// assert_eq!(get_status.to_setup_packet(6), [0xA1, 3, 0, 0, 0, 0, 6, 0]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Control {
    /// `bmRequestType`.
    pub request_type: u8,
    /// `bRequest`.
    pub request: u8,
    /// `wValue`.
    pub value: u16,
    /// `wIndex`.
    pub index: u16,
}

/// Another name for [`Control`], for readers who think in SETUP packets.
pub type ControlSetup = Control;

/// Standard request codes (USB 2.0 table 9-4) that this crate uses.
pub mod standard_request {
    /// GET_STATUS.
    pub const GET_STATUS: u8 = 0;
    /// GET_DESCRIPTOR.
    pub const GET_DESCRIPTOR: u8 = 6;
    /// GET_CONFIGURATION.
    pub const GET_CONFIGURATION: u8 = 8;
    /// SET_CONFIGURATION.
    pub const SET_CONFIGURATION: u8 = 9;
    /// SET_INTERFACE (select an alternate setting).
    pub const SET_INTERFACE: u8 = 11;
}

/// A SETUP packet that is not 8 bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a SETUP packet is 8 bytes, got {length}")]
pub struct SetupPacketError {
    /// How many bytes came.
    pub length: usize,
}

impl Control {
    /// A request from its four raw fields.
    pub const fn new(request_type: u8, request: u8, value: u16, index: u16) -> Self {
        Self {
            request_type,
            request,
            value,
            index,
        }
    }

    /// A request from the meaning of its `bmRequestType` bits.
    pub const fn build(
        direction: Direction,
        control_type: ControlType,
        recipient: Recipient,
        request: u8,
        value: u16,
        index: u16,
    ) -> Self {
        let d = match direction {
            Direction::Out => 0,
            Direction::In => 0x80,
        };
        let t = match control_type {
            ControlType::Standard => 0,
            ControlType::Class => 1 << 5,
            ControlType::Vendor => 2 << 5,
            ControlType::Reserved => 3 << 5,
        };
        let r = match recipient {
            Recipient::Device => 0,
            Recipient::Interface => 1,
            Recipient::Endpoint => 2,
            Recipient::Other => 3,
            Recipient::Reserved(v) => v & 0x1f,
        };
        Self::new(d | t | r, request, value, index)
    }

    /// Standard GET_DESCRIPTOR for descriptor `descriptor_type` number `index`; `language` is
    /// the language id for string descriptors and 0 otherwise.
    pub const fn get_descriptor(descriptor_type: u8, index: u8, language: u16) -> Self {
        Self::new(
            0x80,
            standard_request::GET_DESCRIPTOR,
            ((descriptor_type as u16) << 8) | index as u16,
            language,
        )
    }

    /// Direction of the data stage.
    pub const fn direction(&self) -> Direction {
        if self.request_type & 0x80 != 0 {
            Direction::In
        } else {
            Direction::Out
        }
    }

    /// Standard, class or vendor request.
    pub const fn control_type(&self) -> ControlType {
        match (self.request_type >> 5) & 3 {
            0 => ControlType::Standard,
            1 => ControlType::Class,
            2 => ControlType::Vendor,
            _ => ControlType::Reserved,
        }
    }

    /// Device, interface, endpoint or other.
    pub const fn recipient(&self) -> Recipient {
        match self.request_type & 0x1f {
            0 => Recipient::Device,
            1 => Recipient::Interface,
            2 => Recipient::Endpoint,
            3 => Recipient::Other,
            v => Recipient::Reserved(v),
        }
    }

    /// The 8 bytes on the wire, with `wLength = length`.
    pub const fn to_setup_packet(&self, length: u16) -> [u8; 8] {
        let v = self.value.to_le_bytes();
        let i = self.index.to_le_bytes();
        let l = length.to_le_bytes();
        [
            self.request_type,
            self.request,
            v[0],
            v[1],
            i[0],
            i[1],
            l[0],
            l[1],
        ]
    }

    /// Splits 8 SETUP bytes into the request and its `wLength`.
    pub fn parse_setup_packet(bytes: &[u8]) -> Result<(Self, u16), SetupPacketError> {
        let b: &[u8; 8] = bytes.try_into().map_err(|_| SetupPacketError {
            length: bytes.len(),
        })?;
        Ok((
            Self::new(
                b[0],
                b[1],
                u16::from_le_bytes([b[2], b[3]]),
                u16::from_le_bytes([b[4], b[5]]),
            ),
            u16::from_le_bytes([b[6], b[7]]),
        ))
    }
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:#04x}/{} wValue={:#06x} wIndex={:#06x}",
            self.request_type, self.request, self.value, self.index
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_type_bits_of_the_requests_iphones_use() {
        // iBoot command: vendor, device, OUT.
        let c = Control::new(0x40, 0, 0, 0);
        assert_eq!(
            (c.direction(), c.control_type(), c.recipient()),
            (Direction::Out, ControlType::Vendor, Recipient::Device)
        );
        // iBoot upload start: vendor, interface, OUT.
        assert_eq!(
            Control::new(0x41, 0, 0, 0).recipient(),
            Recipient::Interface
        );
        // getenv answer: vendor, device, IN.
        assert_eq!(Control::new(0xC0, 0, 0, 0).direction(), Direction::In);
        // DFU DNLOAD: class, interface, OUT.
        let c = Control::new(0x21, 1, 7, 0);
        assert_eq!(
            Control::build(
                Direction::Out,
                ControlType::Class,
                Recipient::Interface,
                1,
                7,
                0
            ),
            c
        );
        assert_eq!(
            Control::new(0x1f, 0, 0, 0).recipient(),
            Recipient::Reserved(0x1f)
        );
        assert_eq!(
            Control::new(0x60, 0, 0, 0).control_type(),
            ControlType::Reserved
        );
    }

    #[test]
    fn get_descriptor_packs_type_and_index_into_wvalue() {
        let c = Control::get_descriptor(3, 4, 0x0409);
        assert_eq!(c.to_setup_packet(255), [0x80, 6, 4, 3, 0x09, 0x04, 255, 0]);
    }

    #[test]
    fn setup_packet_round_trip_and_wrong_length() {
        let c = Control::new(0xA1, 3, 0x1234, 0x0001);
        assert_eq!(
            Control::parse_setup_packet(&c.to_setup_packet(6)),
            Ok((c, 6))
        );
        assert_eq!(
            Control::parse_setup_packet(&[0; 7]),
            Err(SetupPacketError { length: 7 })
        );
    }
}
