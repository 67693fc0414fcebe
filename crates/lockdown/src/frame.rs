//! Framing: a 4-byte big-endian length, then a plist (XML or binary).
//!
//! [`FrameDecoder`] is sans-IO: push whatever bytes arrived, pull whole frames out. A length
//! prefix above the limit is an error as soon as the 4 prefix bytes are in, and an accepted
//! length is not reserved up front: the buffer grows with the bytes that actually arrive.
//!
//! Payloads are parsed by [`plist_limits::decode`] within [`Limits`]: nesting depth, value
//! count and an absolute budget of decoded bytes (32 MiB by default), whatever the frame size.

use bytes::{Buf, Bytes, BytesMut};
use plist::{Dictionary, Value};
use plist_limits::Limits;

use crate::CodecError;

/// Length of the big-endian length prefix.
pub const PREFIX_LEN: usize = 4;

/// Default limit for one frame's payload: 16 MiB (lockdown messages are a few KiB; restored's
/// largest plists are well below this).
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Most bytes reserved ahead of their arrival for a frame body whose length prefix is in.
const MAX_RESERVE: usize = 64 * 1024;

/// Deepest container nesting accepted in a decoded plist by default.
pub const MAX_DEPTH: usize = Limits::DEFAULT_MAX_DEPTH;

/// How a plist is written on the wire. Decoding accepts both, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// `<?xml ...?><plist>` text, what libimobiledevice and pymobiledevice3 send.
    #[default]
    Xml,
    /// `bplist00`.
    Binary,
}

/// Encodes one frame (prefix + plist) and appends it to `out`.
///
/// `what` names the message for error context.
pub fn encode_frame_into(
    value: &Value,
    format: Format,
    what: &str,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; PREFIX_LEN]);
    let written = match format {
        Format::Xml => value.to_writer_xml(&mut *out),
        Format::Binary => value.to_writer_binary(&mut *out),
    };
    if let Err(source) = written {
        out.truncate(start);
        return Err(CodecError::Encode {
            message: what.to_owned(),
            format,
            source,
        });
    }
    let len = out.len() - start - PREFIX_LEN;
    let Ok(len32) = u32::try_from(len) else {
        out.truncate(start);
        return Err(CodecError::EncodeTooLong {
            message: what.to_owned(),
            len,
            max: u64::from(u32::MAX),
        });
    };
    if let Some(prefix) = out.get_mut(start..start + PREFIX_LEN) {
        prefix.copy_from_slice(&len32.to_be_bytes());
    }
    Ok(())
}

/// Encodes one frame (prefix + plist) into a new buffer.
pub fn encode_frame(value: &Value, format: Format, what: &str) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_frame_into(value, format, what, &mut out)?;
    Ok(out)
}

/// Splits a byte stream into frame payloads.
///
/// ```
/// use lockdown::FrameDecoder;
/// let mut decoder = FrameDecoder::new();
/// decoder.push(&[0, 0, 0, 3, b'a']);
/// assert_eq!(decoder.next_frame().unwrap(), None); // 2 bytes missing
/// decoder.push(b"bc");
/// assert_eq!(decoder.next_frame().unwrap().as_deref(), Some(&b"abc"[..]));
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_len: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with the default 16 MiB limit.
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A decoder that rejects payloads longer than `max_frame_len` bytes.
    pub fn with_max_frame_len(max_frame_len: u32) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame_len,
        }
    }

    /// The payload limit.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole payload, `None` if more bytes are needed.
    ///
    /// A length above the limit is reported every time this is called again (the stream cannot
    /// be resynchronised), and the body is never buffered on purpose.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, CodecError> {
        let Some(prefix) = self.buf.get(..PREFIX_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; PREFIX_LEN];
        len_bytes.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len_bytes);
        if len > self.max_frame_len {
            return Err(CodecError::FrameTooLong {
                len: u64::from(len),
                max: self.max_frame_len,
            });
        }
        let len = len as usize;
        if self.buf.len() - PREFIX_LEN < len {
            // Room for what is likely to come next, not for what the peer announced.
            self.buf
                .reserve((PREFIX_LEN + len - self.buf.len()).min(MAX_RESERVE));
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Removes and returns everything buffered (e.g. before handing the stream to TLS).
    pub fn take_buffered(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Call when the peer closed: an unfinished frame is [`CodecError::Truncated`].
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let needed = match self.buf.get(..PREFIX_LEN) {
            Some(prefix) => {
                let mut len_bytes = [0u8; PREFIX_LEN];
                len_bytes.copy_from_slice(prefix);
                PREFIX_LEN.saturating_add(u32::from_be_bytes(len_bytes) as usize)
            }
            None => PREFIX_LEN,
        };
        Err(CodecError::Truncated {
            buffered: self.buf.len(),
            needed,
        })
    }
}

/// The plist type name of a value, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    plist_limits::kind(value)
}

/// Parses a frame payload (XML or binary plist, detected by content) into any plist value,
/// within the default [`Limits`]: containers nested at most [`MAX_DEPTH`] deep, at most
/// 32 MiB of decoded values (binary plists whose shared references would expand past that are
/// refused before parsing).
pub fn decode_value(payload: &[u8]) -> Result<Value, CodecError> {
    decode_value_with(payload, &Limits::default())
}

/// [`decode_value`] within `limits`.
pub fn decode_value_with(payload: &[u8], limits: &Limits) -> Result<Value, CodecError> {
    plist_limits::decode(payload, limits).map_err(|err| match err {
        plist_limits::Error::TooDeep { max, .. } => CodecError::TooDeep { max },
        plist_limits::Error::TooLarge {
            measure,
            max,
            found,
            ..
        } => CodecError::TooLarge {
            measure,
            max,
            found,
        },
        source => CodecError::InvalidPlist {
            len: payload.len(),
            source,
        },
    })
}

/// Parses a frame payload that must be a dictionary (every lockdown message is one).
pub fn decode_dictionary(payload: &[u8]) -> Result<Dictionary, CodecError> {
    decode_dictionary_with(payload, &Limits::default())
}

/// [`decode_dictionary`] within `limits`.
pub fn decode_dictionary_with(payload: &[u8], limits: &Limits) -> Result<Dictionary, CodecError> {
    match decode_value_with(payload, limits)? {
        Value::Dictionary(dict) => Ok(dict),
        other => Err(CodecError::NotADictionary {
            found: type_name(&other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        let mut dict = Dictionary::new();
        dict.insert("Request".into(), "QueryType".into());
        Value::Dictionary(dict)
    }

    #[test]
    fn encode_then_decode_both_formats() {
        for format in [Format::Xml, Format::Binary] {
            let frame = encode_frame(&sample(), format, "test").unwrap();
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4);
            let mut decoder = FrameDecoder::new();
            decoder.push(&frame);
            let payload = decoder.next_frame().unwrap().unwrap();
            assert_eq!(
                Value::Dictionary(decode_dictionary(&payload).unwrap()),
                sample()
            );
            assert_eq!(decoder.buffered(), 0);
            decoder.finish().unwrap();
        }
    }

    #[test]
    fn byte_at_a_time_and_back_to_back() {
        let mut stream = encode_frame(&sample(), Format::Xml, "a").unwrap();
        stream.extend(encode_frame(&sample(), Format::Binary, "b").unwrap());
        let mut decoder = FrameDecoder::new();
        let mut frames = 0;
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(payload) = decoder.next_frame().unwrap() {
                decode_dictionary(&payload).unwrap();
                frames += 1;
            }
        }
        assert_eq!(frames, 2);
    }

    #[test]
    fn four_gib_prefix_is_refused_without_allocating() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0xff, 0xff, 0xff, 0xff, b'<']);
        let err = decoder.next_frame().unwrap_err();
        assert!(
            matches!(err, CodecError::FrameTooLong { len: 0xffff_ffff, max } if max == DEFAULT_MAX_FRAME_LEN)
        );
        assert!(decoder.buf.capacity() < 1024);
        // Sticky: the stream cannot be resynchronised.
        assert!(decoder.next_frame().is_err());
    }

    #[test]
    fn announced_length_is_not_reserved_up_front() {
        // M2: a 4-byte prefix announcing 16 MiB must not make the decoder reserve 16 MiB; the
        // buffer grows with the bytes that actually arrive.
        let mut decoder = FrameDecoder::new();
        decoder.push(&DEFAULT_MAX_FRAME_LEN.to_be_bytes());
        decoder.push(b"<?xml");
        assert_eq!(decoder.next_frame().unwrap(), None);
        assert!(
            decoder.buf.capacity() <= 2 * MAX_RESERVE,
            "reserved {} bytes for a frame that has not arrived",
            decoder.buf.capacity()
        );
        // It still completes once the bytes are there.
        let body = vec![b' '; DEFAULT_MAX_FRAME_LEN as usize - 5];
        for chunk in body.chunks(1 << 20) {
            decoder.push(chunk);
        }
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(frame.len(), DEFAULT_MAX_FRAME_LEN as usize);
    }

    #[test]
    fn configurable_limit() {
        let mut decoder = FrameDecoder::with_max_frame_len(10);
        decoder.push(&[0, 0, 0, 11]);
        assert!(matches!(
            decoder.next_frame(),
            Err(CodecError::FrameTooLong { len: 11, max: 10 })
        ));
    }

    #[test]
    fn truncated_frame_reported_on_finish() {
        let frame = encode_frame(&sample(), Format::Xml, "t").unwrap();
        let mut decoder = FrameDecoder::new();
        decoder.push(&frame[..frame.len() - 1]);
        assert_eq!(decoder.next_frame().unwrap(), None);
        match decoder.finish() {
            Err(CodecError::Truncated { buffered, needed }) => {
                assert_eq!(buffered, frame.len() - 1);
                assert_eq!(needed, frame.len());
            }
            other => panic!("{other:?}"),
        }
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0, 0]);
        assert!(matches!(
            decoder.finish(),
            Err(CodecError::Truncated {
                buffered: 2,
                needed: 4
            })
        ));
    }

    #[test]
    fn bad_payloads_are_typed_errors() {
        assert!(matches!(
            decode_dictionary(b"not a plist"),
            Err(CodecError::InvalidPlist { len: 11, .. })
        ));
        assert!(matches!(
            decode_dictionary(b""),
            Err(CodecError::InvalidPlist { .. })
        ));
        let xml_array = br#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><array><string>x</string></array></plist>"#;
        assert!(matches!(
            decode_dictionary(xml_array),
            Err(CodecError::NotADictionary { found: "array" })
        ));
        let non_utf8 = b"<?xml version=\"1.0\"?><plist><dict><key>\xff\xfe</key><string>\xc3\x28</string></dict></plist>";
        assert!(matches!(
            decode_dictionary(non_utf8),
            Err(CodecError::InvalidPlist { .. })
        ));
        let mut truncated_bplist = Vec::new();
        sample().to_writer_binary(&mut truncated_bplist).unwrap();
        truncated_bplist.truncate(truncated_bplist.len() - 5);
        assert!(matches!(
            decode_dictionary(&truncated_bplist),
            Err(CodecError::InvalidPlist { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let depth = 100_000;
        let mut xml = String::from("<?xml version=\"1.0\"?><plist version=\"1.0\">");
        xml.push_str(&"<array>".repeat(depth));
        xml.push_str(&"</array>".repeat(depth));
        xml.push_str("</plist>");
        assert!(matches!(
            decode_value(xml.as_bytes()),
            Err(CodecError::TooDeep { max: MAX_DEPTH })
        ));
        let mut ok = String::from("<?xml version=\"1.0\"?><plist version=\"1.0\">");
        ok.push_str(&"<array>".repeat(MAX_DEPTH));
        ok.push_str(&"</array>".repeat(MAX_DEPTH));
        ok.push_str("</plist>");
        decode_value(ok.as_bytes()).unwrap();
    }

    #[test]
    fn limits_are_configurable() {
        let mut dict = Dictionary::new();
        dict.insert("Payload".into(), Value::Data(vec![1; 4096]));
        let payload = &encode_frame(&Value::Dictionary(dict), Format::Binary, "t").unwrap()[4..];
        decode_dictionary(payload).unwrap();
        let tight = Limits::new().with_max_bytes(4096);
        assert!(matches!(
            decode_dictionary_with(payload, &tight),
            Err(CodecError::TooLarge {
                measure: plist_limits::Measure::Bytes,
                max: 4096,
                ..
            })
        ));
        let shallow = Limits::new().with_max_depth(0);
        assert!(matches!(
            decode_dictionary_with(payload, &shallow),
            Err(CodecError::TooDeep { max: 0 })
        ));
    }

    #[test]
    fn uid_cannot_be_xml() {
        let value = Value::Uid(plist::Uid::new(3));
        assert!(matches!(
            encode_frame(&value, Format::Xml, "uid"),
            Err(CodecError::Encode {
                format: Format::Xml,
                ..
            })
        ));
        encode_frame(&value, Format::Binary, "uid").unwrap();
    }
}
