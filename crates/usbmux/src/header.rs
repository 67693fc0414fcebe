//! The mux header that opens every packet on the USB bulk pipes.
//!
//! Version 1 is 8 bytes (`protocol`, `length`), version 2 adds `magic`, `tx_seq` and `rx_seq`
//! (16 bytes). All fields are big-endian and `length` counts the header itself.

use thiserror::Error;

/// The magic number a v2 header carries after `length`.
pub const MAGIC: u32 = 0xFEED_FACE;
/// Size of a v1 header.
pub const V1_LEN: usize = 8;
/// Size of a v2 header.
pub const V2_LEN: usize = 16;
/// Largest mux packet (header included) the host sends: the USB MTU of usbmuxd.
pub const MAX_PACKET: usize = 49152;
/// Largest mux packet (header included) accepted from the device (usbmuxd's DEV_MRU).
pub const MAX_INCOMING_PACKET: usize = 65536;
/// Largest TCP payload in one packet: [`MAX_PACKET`] minus a v2 header and a TCP header.
pub const MAX_TCP_PAYLOAD: usize = MAX_PACKET - V2_LEN - crate::message::TCP_HEADER_LEN;

/// What a mux packet carries (the `protocol` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// 0: version negotiation.
    Version,
    /// 1: device log/control messages.
    Control,
    /// 2: setup (host → device, after a v2 version answer).
    Setup,
    /// 6: the TCP-like stream layer.
    Tcp,
}

impl Protocol {
    /// The wire number.
    pub fn number(self) -> u32 {
        match self {
            Protocol::Version => 0,
            Protocol::Control => 1,
            Protocol::Setup => 2,
            Protocol::Tcp => 6,
        }
    }

    /// The protocol for a wire number, if known.
    pub fn from_number(n: u32) -> Option<Protocol> {
        match n {
            0 => Some(Protocol::Version),
            1 => Some(Protocol::Control),
            2 => Some(Protocol::Setup),
            6 => Some(Protocol::Tcp),
            _ => None,
        }
    }
}

/// Which header layout is in use on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderVersion {
    /// 8-byte header (before the handshake, and with v1-only devices).
    V1,
    /// 16-byte header with magic and sequence numbers.
    V2,
}

impl HeaderVersion {
    /// Header size in bytes.
    pub fn len(self) -> usize {
        match self {
            HeaderVersion::V1 => V1_LEN,
            HeaderVersion::V2 => V2_LEN,
        }
    }

    /// Never empty; present for clippy's `len_without_is_empty`.
    pub fn is_empty(self) -> bool {
        false
    }
}

/// The v2 sequence pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sequence {
    /// Sender's packet counter.
    pub tx_seq: u16,
    /// Last sequence the sender saw from its peer.
    pub rx_seq: u16,
}

/// A mux header. `seq` is `None` for a v1 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the packet carries.
    pub protocol: Protocol,
    /// Total packet length, header included.
    pub length: u32,
    /// Sequence numbers (v2 only).
    pub seq: Option<Sequence>,
}

/// A header that cannot be decoded. Every variant is fatal for the link: the byte stream
/// cannot be re-synchronised after it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("truncated mux header: need {needed} bytes, have {got}")]
    Truncated {
        /// Bytes a header needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A v2 header without 0xFEEDFACE.
    #[error("bad mux magic: expected 0xFEEDFACE, got {got:#010x}")]
    BadMagic {
        /// The magic found.
        got: u32,
    },
    /// `length` smaller than the header itself.
    #[error("mux packet length {length} is shorter than its {header}-byte header")]
    LengthTooShort {
        /// Length field.
        length: u32,
        /// Header size in use.
        header: usize,
    },
    /// `length` larger than any packet a device may send.
    #[error("mux packet length {length} exceeds the maximum of {max}")]
    LengthTooLong {
        /// Length field.
        length: u32,
        /// The limit.
        max: usize,
    },
    /// A protocol number this crate does not know.
    #[error("unknown mux protocol {protocol} (packet length {length})")]
    UnknownProtocol {
        /// The protocol number.
        protocol: u32,
        /// Length field (the packet can be skipped).
        length: u32,
    },
}

impl Header {
    /// A header for a packet of `payload_len` bytes after the header.
    pub fn new(protocol: Protocol, payload_len: usize, seq: Option<Sequence>) -> Header {
        let hl = if seq.is_some() { V2_LEN } else { V1_LEN };
        let length = u32::try_from(payload_len.saturating_add(hl)).unwrap_or(u32::MAX);
        Header {
            protocol,
            length,
            seq,
        }
    }

    /// Layout of this header.
    pub fn version(&self) -> HeaderVersion {
        if self.seq.is_some() {
            HeaderVersion::V2
        } else {
            HeaderVersion::V1
        }
    }

    /// Size of this header on the wire.
    pub fn header_len(&self) -> usize {
        self.version().len()
    }

    /// Bytes after the header, as the `length` field says.
    pub fn payload_len(&self) -> usize {
        (self.length as usize).saturating_sub(self.header_len())
    }

    /// Appends the encoded header to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.protocol.number().to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        if let Some(seq) = self.seq {
            out.extend_from_slice(&MAGIC.to_be_bytes());
            out.extend_from_slice(&seq.tx_seq.to_be_bytes());
            out.extend_from_slice(&seq.rx_seq.to_be_bytes());
        }
    }

    /// The encoded header.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(V2_LEN);
        self.encode_into(&mut v);
        v
    }

    /// Decodes a header of layout `version` from the start of `buf`, checking magic and
    /// that `length` lies between the header size and [`MAX_INCOMING_PACKET`].
    pub fn decode(buf: &[u8], version: HeaderVersion) -> Result<Header, HeaderError> {
        let needed = version.len();
        if buf.len() < needed {
            return Err(HeaderError::Truncated {
                needed,
                got: buf.len(),
            });
        }
        let protocol = be_u32(buf, 0);
        let length = be_u32(buf, 4);
        let seq = match version {
            HeaderVersion::V1 => None,
            HeaderVersion::V2 => {
                let magic = be_u32(buf, 8);
                if magic != MAGIC {
                    return Err(HeaderError::BadMagic { got: magic });
                }
                Some(Sequence {
                    tx_seq: be_u16(buf, 12),
                    rx_seq: be_u16(buf, 14),
                })
            }
        };
        if (length as usize) < needed {
            return Err(HeaderError::LengthTooShort {
                length,
                header: needed,
            });
        }
        if length as usize > MAX_INCOMING_PACKET {
            return Err(HeaderError::LengthTooLong {
                length,
                max: MAX_INCOMING_PACKET,
            });
        }
        let protocol = Protocol::from_number(protocol)
            .ok_or(HeaderError::UnknownProtocol { protocol, length })?;
        Ok(Header {
            protocol,
            length,
            seq,
        })
    }
}

/// Big-endian u32 at `at`; callers have checked the length (returns 0 if not).
pub(crate) fn be_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

/// Big-endian u16 at `at`; callers have checked the length (returns 0 if not).
pub(crate) fn be_u16(buf: &[u8], at: usize) -> u16 {
    buf.get(at..at + 2)
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map(u16::from_be_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_layout() {
        let h = Header::new(Protocol::Version, 12, None);
        assert_eq!(h.encode(), [0, 0, 0, 0, 0, 0, 0, 20]);
        assert_eq!(Header::decode(&h.encode(), HeaderVersion::V1), Ok(h));
    }

    #[test]
    fn v2_layout() {
        let h = Header::new(
            Protocol::Tcp,
            20,
            Some(Sequence {
                tx_seq: 1,
                rx_seq: 0xFFFF,
            }),
        );
        assert_eq!(
            h.encode(),
            [0, 0, 0, 6, 0, 0, 0, 36, 0xFE, 0xED, 0xFA, 0xCE, 0, 1, 0xFF, 0xFF]
        );
    }

    #[test]
    fn bad_inputs_are_typed() {
        assert!(matches!(
            Header::decode(&[0; 3], HeaderVersion::V1),
            Err(HeaderError::Truncated { needed: 8, got: 3 })
        ));
        assert!(matches!(
            Header::decode(&[0, 0, 0, 6, 0, 0, 0, 4], HeaderVersion::V1),
            Err(HeaderError::LengthTooShort { length: 4, .. })
        ));
        assert!(matches!(
            Header::decode(&[0, 0, 0, 6, 0xFF, 0xFF, 0xFF, 0xFF], HeaderVersion::V1),
            Err(HeaderError::LengthTooLong { .. })
        ));
        assert!(matches!(
            Header::decode(&[0, 0, 0, 9, 0, 0, 0, 8], HeaderVersion::V1),
            Err(HeaderError::UnknownProtocol { protocol: 9, .. })
        ));
        let mut v2 = Header::new(Protocol::Tcp, 0, Some(Sequence::default())).encode();
        v2[8] = 0;
        assert!(matches!(
            Header::decode(&v2, HeaderVersion::V2),
            Err(HeaderError::BadMagic { .. })
        ));
    }
}
