//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_corpus.rs`.
//!
//! Each function runs one decoder on arbitrary bytes and asserts the invariants that must hold
//! whatever the input: no panic, errors are typed, and whatever decodes re-encodes to something
//! that decodes to the same message.

use plist::Value;

use crate::frame::{decode_dictionary, encode_frame, FrameDecoder, PREFIX_LEN};
use crate::pair_record::{PairRecordError, PairRecordFile, MAX_PAIR_RECORD_LEN};
use crate::{CodecError, Envelope, Format, Reply};

/// Frame limit used by the fuzz targets (small, so the limit path is reached often).
pub const FUZZ_MAX_FRAME_LEN: u32 = 64 * 1024;

/// Stream input: the first byte picks the chunk size the rest is fed in; every frame found is
/// decoded as a dictionary.
pub fn frame_decoder(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::with_max_frame_len(FUZZ_MAX_FRAME_LEN);
    let mut consumed = 0usize;
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    assert!(payload.len() <= FUZZ_MAX_FRAME_LEN as usize);
                    consumed += PREFIX_LEN + payload.len();
                    let _ = decode_dictionary(&payload);
                }
                Ok(None) => break,
                Err(CodecError::FrameTooLong { len, max }) => {
                    assert!(len > u64::from(max));
                    assert!(decoder.next_frame().is_err(), "limit error must be sticky");
                    return;
                }
                Err(other) => panic!("frame decoder returned {other:?}"),
            }
        }
    }
    assert_eq!(consumed + decoder.buffered(), stream.len());
    match decoder.finish() {
        Ok(()) => assert_eq!(decoder.buffered(), 0),
        Err(CodecError::Truncated { buffered, needed }) => {
            assert_eq!(buffered, decoder.buffered());
            assert!(needed > buffered);
        }
        Err(other) => panic!("finish returned {other:?}"),
    }
}

fn binary(value: Value, what: &str) -> Vec<u8> {
    match encode_frame(&value, Format::Binary, what) {
        Ok(frame) => frame,
        Err(err) => panic!("a decoded {what} must encode as binary: {err}"),
    }
}

/// A frame payload decoded as a request; binary re-encoding must be a fixed point.
pub fn request(data: &[u8]) {
    let Ok(dict) = decode_dictionary(data) else {
        return;
    };
    let Ok(first) = Envelope::from_dictionary(dict) else {
        return;
    };
    let _ = encode_frame(
        &Value::Dictionary(first.to_dictionary()),
        Format::Xml,
        "request",
    );
    let frame = binary(Value::Dictionary(first.to_dictionary()), "request");
    let second = decode_dictionary(frame.get(PREFIX_LEN..).unwrap_or_default())
        .and_then(Envelope::from_dictionary)
        .unwrap_or_else(|err| panic!("re-encoded request does not decode: {err}"));
    assert_eq!(second.request.name(), first.request.name());
    assert_eq!(
        binary(Value::Dictionary(second.to_dictionary()), "request"),
        frame
    );
}

/// A frame payload decoded as a reply; binary re-encoding must be a fixed point.
pub fn reply(data: &[u8]) {
    let Ok(dict) = decode_dictionary(data) else {
        return;
    };
    let Ok(first) = Reply::from_dictionary(dict) else {
        return;
    };
    let _ = encode_frame(
        &Value::Dictionary(first.to_dictionary()),
        Format::Xml,
        "reply",
    );
    let frame = binary(Value::Dictionary(first.to_dictionary()), "reply");
    let second = decode_dictionary(frame.get(PREFIX_LEN..).unwrap_or_default())
        .and_then(Reply::from_dictionary)
        .unwrap_or_else(|err| panic!("re-encoded reply does not decode: {err}"));
    assert_eq!(second.request(), first.request());
    assert_eq!(
        binary(Value::Dictionary(second.to_dictionary()), "reply"),
        frame
    );
}

/// A pair record file (`/var/lib/lockdown/<UDID>.plist`): whatever reads must write as XML, and
/// that XML must read back to a record that writes the same XML.
pub fn pair_record(data: &[u8]) {
    let first = match PairRecordFile::from_bytes(data) {
        Ok(record) => record,
        Err(PairRecordError::TooLarge { len, max }) => {
            assert!(len > max && max == MAX_PAIR_RECORD_LEN);
            return;
        }
        Err(PairRecordError::Empty { .. } | PairRecordError::Format(_)) => return,
        Err(other) => panic!("reading a pair record returned {other:?}"),
    };
    // Keys outside the record's own may hold values XML cannot carry (a binary plist UID).
    let Ok(xml) = first.to_xml() else {
        return;
    };
    let second = match PairRecordFile::from_bytes(&xml) {
        Ok(record) => record,
        // Binary input re-encoded as XML can outgrow the limits; that is not a decoder bug.
        Err(PairRecordError::TooLarge { .. })
        | Err(PairRecordError::Format(CodecError::TooLarge { .. })) => return,
        Err(other) => panic!("a written pair record does not read back: {other}"),
    };
    assert_eq!(second.host_id, first.host_id);
    assert_eq!(second.device_certificate, first.device_certificate);
    assert_eq!(second.to_xml().ok(), Some(xml), "XML is not a fixed point");
}
