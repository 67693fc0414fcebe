//! What follows the mux header: VERSION, CONTROL, SETUP payloads and the 20-byte TCP header.

use std::borrow::Cow;

use bytes::Bytes;
use thiserror::Error;

use crate::header::{be_u16, be_u32, Header, Protocol, Sequence};

/// Size of the TCP header the mux uses (no options).
pub const TCP_HEADER_LEN: usize = 20;
/// Size of a VERSION payload.
pub const VERSION_LEN: usize = 12;
/// The byte a host sends in SETUP.
pub const SETUP_BYTE: u8 = 0x07;

/// VERSION payload: `major, minor, padding`, each a big-endian u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major version (2 = v2 headers, 1 = v1 only).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Padding, 0 in practice.
    pub pad: u32,
}

impl Version {
    /// What a host offers: 2.0.
    pub const HOST: Version = Version {
        major: 2,
        minor: 0,
        pad: 0,
    };

    /// The 12 payload bytes.
    pub fn encode(&self) -> [u8; VERSION_LEN] {
        let mut b = [0u8; VERSION_LEN];
        b[0..4].copy_from_slice(&self.major.to_be_bytes());
        b[4..8].copy_from_slice(&self.minor.to_be_bytes());
        b[8..12].copy_from_slice(&self.pad.to_be_bytes());
        b
    }

    /// Decodes the first 12 bytes (trailing bytes are ignored, as usbmuxd does).
    pub fn decode(buf: &[u8]) -> Result<Version, MessageError> {
        if buf.len() < VERSION_LEN {
            return Err(MessageError::Truncated {
                what: "VERSION payload",
                needed: VERSION_LEN,
                got: buf.len(),
            });
        }
        Ok(Version {
            major: be_u32(buf, 0),
            minor: be_u32(buf, 4),
            pad: be_u32(buf, 8),
        })
    }
}

/// SETUP payload: one byte, 0x07 from a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Setup(pub u8);

impl Default for Setup {
    fn default() -> Self {
        Setup(SETUP_BYTE)
    }
}

impl Setup {
    /// The payload byte.
    pub fn encode(&self) -> [u8; 1] {
        [self.0]
    }

    /// Decodes a SETUP payload (exactly one byte is expected; more is accepted and ignored).
    pub fn decode(buf: &[u8]) -> Result<Setup, MessageError> {
        buf.first()
            .map(|b| Setup(*b))
            .ok_or(MessageError::Truncated {
                what: "SETUP payload",
                needed: 1,
                got: 0,
            })
    }
}

/// Severity byte of a CONTROL message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlKind {
    /// 3
    Error,
    /// 5
    Warning,
    /// 7
    Info,
    /// Anything else.
    Other(u8),
}

impl ControlKind {
    /// Wire byte.
    pub fn byte(self) -> u8 {
        match self {
            ControlKind::Error => 3,
            ControlKind::Warning => 5,
            ControlKind::Info => 7,
            ControlKind::Other(b) => b,
        }
    }

    /// From the wire byte.
    pub fn from_byte(b: u8) -> ControlKind {
        match b {
            3 => ControlKind::Error,
            5 => ControlKind::Warning,
            7 => ControlKind::Info,
            other => ControlKind::Other(other),
        }
    }
}

/// CONTROL payload: a severity byte then text (kept as bytes, devices do not promise UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Control {
    /// Severity.
    pub kind: ControlKind,
    /// Message bytes after the severity byte.
    pub text: Vec<u8>,
}

impl Control {
    /// The text, lossily decoded, without a trailing NUL or newline.
    pub fn text(&self) -> Cow<'_, str> {
        let mut t = self.text.as_slice();
        while let Some((last, rest)) = t.split_last() {
            if *last == 0 || *last == b'\n' {
                t = rest;
            } else {
                break;
            }
        }
        String::from_utf8_lossy(t)
    }

    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.text.len());
        v.push(self.kind.byte());
        v.extend_from_slice(&self.text);
        v
    }

    /// Decodes a CONTROL payload; it must hold at least the severity byte.
    pub fn decode(buf: &[u8]) -> Result<Control, MessageError> {
        let (kind, text) = buf.split_first().ok_or(MessageError::Truncated {
            what: "CONTROL payload",
            needed: 1,
            got: 0,
        })?;
        Ok(Control {
            kind: ControlKind::from_byte(*kind),
            text: text.to_vec(),
        })
    }
}

/// TCP flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN (never sent by the mux; closes are RST).
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// SYN|ACK, the accept answer.
    pub const SYN_ACK: TcpFlags = TcpFlags(0x12);

    /// True if every bit of `other` is set.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl std::fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (0x02, "SYN"),
            (0x10, "ACK"),
            (0x04, "RST"),
            (0x01, "FIN"),
            (0x08, "PSH"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            write!(f, "{:#04x}", self.0)?;
        }
        Ok(())
    }
}

/// The 20-byte TCP header, network byte order. Checksum and urgent pointer are sent as zero
/// and ignored on input; the data-offset field is written as 5 and, like usbmuxd, not trusted
/// on input (the mux never carries TCP options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpHeader {
    /// Sender's port.
    pub sport: u16,
    /// Receiver's port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Window in units of 256 bytes (the wire value).
    pub window: u16,
}

impl TcpHeader {
    /// The window in bytes (`window << 8`).
    pub fn window_bytes(&self) -> u32 {
        u32::from(self.window) << 8
    }

    /// Wire value for a window of `bytes` (`bytes >> 8`, saturating).
    pub fn window_field(bytes: u32) -> u16 {
        u16::try_from(bytes >> 8).unwrap_or(u16::MAX)
    }

    /// Appends the 20 bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sport.to_be_bytes());
        out.extend_from_slice(&self.dport.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ack.to_be_bytes());
        out.push(0x50);
        out.push(self.flags.0);
        out.extend_from_slice(&self.window.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
    }

    /// The 20 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(TCP_HEADER_LEN);
        self.encode_into(&mut v);
        v
    }

    /// Decodes the first 20 bytes of `buf`.
    pub fn decode(buf: &[u8]) -> Result<TcpHeader, MessageError> {
        if buf.len() < TCP_HEADER_LEN {
            return Err(MessageError::Truncated {
                what: "TCP header",
                needed: TCP_HEADER_LEN,
                got: buf.len(),
            });
        }
        Ok(TcpHeader {
            sport: be_u16(buf, 0),
            dport: be_u16(buf, 2),
            seq: be_u32(buf, 4),
            ack: be_u32(buf, 8),
            flags: TcpFlags(buf.get(13).copied().unwrap_or(0)),
            window: be_u16(buf, 14),
        })
    }
}

/// A payload that does not hold what its protocol needs. Not fatal for the link: the
/// packet was delimited by its header and can be dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// Too short.
    #[error("truncated {what}: need {needed} bytes, have {got}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
}

/// A decoded mux packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// VERSION.
    Version(Version),
    /// CONTROL.
    Control(Control),
    /// SETUP.
    Setup(Setup),
    /// TCP segment and its payload.
    Tcp(TcpHeader, Bytes),
}

impl Message {
    /// The protocol this message travels under.
    pub fn protocol(&self) -> Protocol {
        match self {
            Message::Version(_) => Protocol::Version,
            Message::Control(_) => Protocol::Control,
            Message::Setup(_) => Protocol::Setup,
            Message::Tcp(..) => Protocol::Tcp,
        }
    }

    /// Decodes the payload of a packet whose header said `protocol`.
    pub fn decode(protocol: Protocol, payload: Bytes) -> Result<Message, MessageError> {
        Ok(match protocol {
            Protocol::Version => Message::Version(Version::decode(&payload)?),
            Protocol::Control => Message::Control(Control::decode(&payload)?),
            Protocol::Setup => Message::Setup(Setup::decode(&payload)?),
            Protocol::Tcp => {
                let th = TcpHeader::decode(&payload)?;
                Message::Tcp(th, payload.slice(TCP_HEADER_LEN..))
            }
        })
    }

    /// A whole packet: header (v1 if `seq` is `None`, else v2) and payload.
    pub fn encode(&self, seq: Option<Sequence>) -> Vec<u8> {
        match self {
            Message::Version(v) => encode_packet(Protocol::Version, seq, &v.encode(), &[]),
            Message::Control(c) => encode_packet(Protocol::Control, seq, &c.encode(), &[]),
            Message::Setup(s) => encode_packet(Protocol::Setup, seq, &s.encode(), &[]),
            Message::Tcp(th, data) => encode_tcp(seq, th, data),
        }
    }
}

/// Encodes one packet from a protocol header part and a body, in one allocation.
pub fn encode_packet(
    protocol: Protocol,
    seq: Option<Sequence>,
    head: &[u8],
    body: &[u8],
) -> Vec<u8> {
    let header = Header::new(protocol, head.len() + body.len(), seq);
    let mut out = Vec::with_capacity(header.length as usize);
    header.encode_into(&mut out);
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    out
}

/// Encodes one TCP packet.
pub fn encode_tcp(seq: Option<Sequence>, th: &TcpHeader, data: &[u8]) -> Vec<u8> {
    let header = Header::new(Protocol::Tcp, TCP_HEADER_LEN + data.len(), seq);
    let mut out = Vec::with_capacity(header.length as usize);
    header.encode_into(&mut out);
    th.encode_into(&mut out);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_header_layout() {
        let th = TcpHeader {
            sport: 1,
            dport: 62078,
            seq: 0,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 512,
        };
        let b = th.encode();
        assert_eq!(b.len(), 20);
        assert_eq!(&b[0..4], &[0, 1, 0xF2, 0x7E]);
        assert_eq!(b[12], 0x50);
        assert_eq!(b[13], 0x02);
        assert_eq!(&b[14..16], &[2, 0]);
        assert_eq!(th.window_bytes(), 131072);
        assert_eq!(TcpHeader::window_field(131072), 512);
    }

    #[test]
    fn control_text_is_trimmed() {
        let c = Control::decode(b"\x03boom\n\0").unwrap();
        assert_eq!(c.kind, ControlKind::Error);
        assert_eq!(c.text(), "boom");
        assert!(Control::decode(b"").is_err());
    }

    #[test]
    fn short_payloads_are_typed() {
        assert!(matches!(
            Version::decode(&[0; 11]),
            Err(MessageError::Truncated {
                needed: 12,
                got: 11,
                ..
            })
        ));
        assert!(TcpHeader::decode(&[0; 19]).is_err());
        assert!(Setup::decode(&[]).is_err());
        assert_eq!(format!("{}", TcpFlags::SYN_ACK), "SYN|ACK");
    }
}
