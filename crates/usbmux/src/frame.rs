//! Cutting the bulk-IN byte stream into mux packets.
//!
//! The USB driver reads fixed-size chunks (16384 bytes); a chunk can hold several packets,
//! or a piece of one. [`FrameReader`] buffers and hands out whole packets.

use bytes::{Buf, Bytes, BytesMut};

use crate::header::{Header, HeaderError, HeaderVersion};

/// A packet is handed out as a view into the reader's buffer only when it fills at least
/// `1 / COPY_RATIO` of that buffer; smaller ones are copied.
const COPY_RATIO: usize = 4;

/// One whole mux packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The header.
    pub header: Header,
    /// The bytes after the header (`header.length - header size` of them).
    pub payload: Bytes,
}

/// Stream decoder for mux packets.
///
/// A [`Packet`]'s payload is a view into the reader's buffer only when the packet fills at
/// least a quarter of that buffer; smaller payloads are copied. Keeping packets around
/// therefore never pins much more memory than they hold.
///
/// ```
/// use usbmux::{FrameReader, HeaderVersion, Message, Version};
/// let bytes = Message::Version(Version::HOST).encode(None);
/// let mut reader = FrameReader::new();
/// reader.push(&bytes[..5]);
/// assert!(reader.next_packet(HeaderVersion::V1)?.is_none());
/// reader.push(&bytes[5..]);
/// let packet = reader.next_packet(HeaderVersion::V1)?.unwrap();
/// assert_eq!(packet.payload.len(), 12);
/// # Ok::<(), usbmux::HeaderError>(())
/// ```
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl HeaderError {
    /// Whether the stream is lost after this error (everything but an unknown protocol,
    /// whose packet is skipped by its length).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, HeaderError::UnknownProtocol { .. })
    }
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Appends bytes read from bulk IN.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the next packet's first word is protocol 0 (VERSION), which is always sent
    /// with a v1 header.
    pub fn starts_with_version(&self) -> bool {
        self.buf.get(..4) == Some(&[0, 0, 0, 0][..])
    }

    /// Bytes held that do not yet form a whole packet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole packet, if the buffer holds one. Headers are read with layout
    /// `version` (the link switches to v2 after the handshake, between two packets).
    ///
    /// Errors: [`HeaderError::UnknownProtocol`] is returned once the whole packet is
    /// buffered, and that packet is dropped (reading can go on); the other errors are
    /// fatal ([`HeaderError::is_fatal`]) and leave the buffer as it was.
    pub fn next_packet(&mut self, version: HeaderVersion) -> Result<Option<Packet>, HeaderError> {
        if self.buf.len() < version.len() {
            return Ok(None);
        }
        let header = match Header::decode(&self.buf, version) {
            Ok(h) => h,
            Err(HeaderError::UnknownProtocol { protocol, length }) => {
                if self.buf.len() < length as usize {
                    return Ok(None);
                }
                let _ = self.buf.split_to(length as usize);
                return Err(HeaderError::UnknownProtocol { protocol, length });
            }
            Err(e) => return Err(e),
        };
        let len = header.length as usize;
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            return Ok(None);
        }
        let header_len = header.header_len();
        // A payload much smaller than the buffer is copied out: a view would pin the whole
        // buffer (up to 64 KiB and more) for as long as the packet is kept, and force the
        // next `push` to allocate a fresh one. Large payloads stay views (no copy).
        let payload = if len.saturating_mul(COPY_RATIO) < self.buf.capacity() {
            let payload = Bytes::copy_from_slice(self.buf.get(header_len..len).unwrap_or(&[]));
            self.buf.advance(len);
            payload
        } else {
            let mut packet = self.buf.split_to(len).freeze();
            packet.split_off(header_len)
        };
        Ok(Some(Packet { header, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{Protocol, Sequence};
    use crate::message::{encode_packet, Message, Version};

    #[test]
    fn several_packets_in_one_chunk_and_one_across_chunks() {
        let mut stream = Vec::new();
        for i in 0..3u8 {
            stream.extend(encode_packet(
                Protocol::Control,
                Some(Sequence::default()),
                &[7, i],
                &[],
            ));
        }
        let big = encode_packet(
            Protocol::Tcp,
            Some(Sequence::default()),
            &[0; 20],
            &[9; 40000],
        );
        stream.extend(&big);
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(16384) {
            r.push(chunk);
            while let Some(p) = r.next_packet(HeaderVersion::V2).unwrap() {
                got.push(p);
            }
        }
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].payload.len(), 40020);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn unknown_protocol_is_skipped() {
        let mut r = FrameReader::new();
        r.push(&[0, 0, 0, 9, 0, 0, 0, 10, 1, 2]);
        r.push(&Message::Version(Version::HOST).encode(None));
        let e = r.next_packet(HeaderVersion::V1).unwrap_err();
        assert!(!e.is_fatal());
        assert!(r.next_packet(HeaderVersion::V1).unwrap().is_some());
    }

    #[test]
    fn small_payloads_are_copied_large_ones_are_views() {
        // A 1-byte segment next to a 60000-byte packet: keeping the small packet must not
        // keep the reader's 60 KiB buffer alive.
        let small = encode_packet(Protocol::Tcp, Some(Sequence::default()), &[0; 20], &[1]);
        let big = encode_packet(
            Protocol::Tcp,
            Some(Sequence::default()),
            &[0; 20],
            &[2; 60000],
        );
        let mut r = FrameReader::new();
        r.push(&small);
        r.push(&big);
        let span = |r: &FrameReader| {
            let base = r.buf.as_ptr() as usize;
            base..base + r.buf.capacity()
        };
        let before = span(&r);
        let p = r.next_packet(HeaderVersion::V2).unwrap().unwrap();
        assert_eq!(p.payload.len(), 21);
        assert!(
            !before.contains(&(p.payload.as_ptr() as usize)),
            "a small payload is a copy"
        );
        let before = span(&r);
        let q = r.next_packet(HeaderVersion::V2).unwrap().unwrap();
        assert!(
            before.contains(&(q.payload.as_ptr() as usize)),
            "a large payload is a view, not a copy"
        );
        assert_eq!(q.payload.len(), 60020);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn huge_length_does_not_allocate() {
        let mut r = FrameReader::new();
        r.push(&[0, 0, 0, 6, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(r.next_packet(HeaderVersion::V1).unwrap_err().is_fatal());
    }
}
