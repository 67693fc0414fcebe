//! A peer on port 62078 (lockdownd or restored, or something pretending to be one) sends
//! plists built to exhaust the stack or memory. Each must come back as a typed error; none may
//! abort the process.
//!
//! The attacks run on a thread with an explicit 2 MiB stack (a tokio worker's default), so the
//! result does not depend on `RUST_MIN_STACK`.

use lockdown::{decode_value, encode_frame, CodecError, Format, HostCodec};
use plist::{Dictionary, Value};

fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Decodes `payload` directly and through a [`HostCodec`] (as a reply frame), on a 2 MiB stack.
fn decode_both_ways(payload: Vec<u8>) -> [CodecError; 2] {
    on_small_stack(move || {
        // No `unwrap_err`: the Debug of a wrongly accepted value can be megabytes long.
        let direct = match decode_value(&payload) {
            Ok(value) => panic!("decode_value accepted a {}", kind(&value)),
            Err(err) => err,
        };
        let mut host = HostCodec::new();
        host.receive(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        host.receive(&payload);
        let framed = match host.poll_reply() {
            Ok(reply) => panic!("HostCodec accepted a reply: {}", reply.is_some()),
            Err(err) => err,
        };
        assert_eq!(host.buffered(), 0);
        [direct, framed]
    })
}

fn kind(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("array of {} items", items.len()),
        Value::Dictionary(dict) => format!("dictionary of {} entries", dict.len()),
        _ => "scalar".into(),
    }
}

/// Big-endian bplist00 writer for hand-made object graphs: 4-byte offsets and references.
struct Bplist {
    data: Vec<u8>,
    offsets: Vec<u32>,
}

impl Bplist {
    fn new() -> Bplist {
        Bplist {
            data: b"bplist00".to_vec(),
            offsets: Vec::new(),
        }
    }

    /// Starts object number `self.offsets.len()`.
    fn object(&mut self, bytes: &[u8]) {
        self.offsets.push(u32::try_from(self.data.len()).unwrap());
        self.data.extend_from_slice(bytes);
    }

    /// An array or dict marker with `count` entries (0xa for arrays, 0xd for dicts).
    fn container(&mut self, kind: u8, count: usize, refs: &[u32]) {
        let mut bytes = Vec::new();
        if count < 15 {
            bytes.push(kind << 4 | u8::try_from(count).unwrap());
        } else {
            bytes.extend_from_slice(&[kind << 4 | 0x0f, 0x12]);
            bytes.extend_from_slice(&u32::try_from(count).unwrap().to_be_bytes());
        }
        for r in refs {
            bytes.extend_from_slice(&r.to_be_bytes());
        }
        self.object(&bytes);
    }

    fn finish(mut self) -> Vec<u8> {
        let table = self.data.len() as u64;
        for off in &self.offsets {
            self.data.extend_from_slice(&off.to_be_bytes());
        }
        self.data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 4, 4]);
        self.data
            .extend_from_slice(&(self.offsets.len() as u64).to_be_bytes());
        self.data.extend_from_slice(&0u64.to_be_bytes());
        self.data.extend_from_slice(&table.to_be_bytes());
        self.data
    }
}

/// H3 (XML): a deep subtree is built, then the parse fails on `<integer>zz</integer>`.
#[test]
fn xml_parse_error_after_a_deep_subtree() {
    let depth = 200_000;
    let mut xml = String::from("<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>x</key>");
    xml.push_str(&"<array>".repeat(depth));
    xml.push_str(&"</array>".repeat(depth));
    xml.push_str("<key>y</key><integer>zz</integer></dict></plist>");
    for err in decode_both_ways(xml.into_bytes()) {
        assert!(matches!(err, CodecError::TooDeep { max: 128 }), "{err:?}");
    }
}

/// H3 (binary): root dict whose first value is a chain of one-element arrays and whose second
/// value is a reference past the object table.
#[test]
fn binary_parse_error_after_a_deep_subtree() {
    let depth = 60_000u32;
    let mut b = Bplist::new();
    // 0: root dict {"k": 2, "k": 9_999_999}; 1: "k"; 2..2+depth: arrays [next]; last: 0.
    b.container(0xd, 2, &[1, 1, 2, 9_999_999]);
    b.object(&[0x51, b'k']);
    for i in 0..depth {
        b.container(0xa, 1, &[3 + i]);
    }
    b.object(&[0x10, 0]);
    let payload = b.finish();
    assert!(payload.len() < 1 << 20, "{}", payload.len());
    for err in decode_both_ways(payload) {
        assert!(matches!(err, CodecError::TooDeep { max: 128 }), "{err:?}");
    }
}

/// M2: one 1 MiB data object referenced 40 times. A ~1 MiB frame that decodes into 40 MiB of
/// values: the budget is absolute (32 MiB by default), not a multiple of the frame size.
#[test]
fn shared_references_past_the_absolute_budget_are_refused() {
    let mut b = Bplist::new();
    b.container(0xa, 40, &[1; 40]);
    let mut data = vec![0x4f, 0x12];
    data.extend_from_slice(&(1u32 << 20).to_be_bytes());
    data.resize(data.len() + (1 << 20), 0xab);
    b.object(&data);
    let payload = b.finish();
    assert!(payload.len() < (1 << 20) + 1024);
    for err in decode_both_ways(payload) {
        assert!(matches!(err, CodecError::TooLarge { .. }), "{err:?}");
    }
}

/// What restored really sends stays well inside the defaults: a DataRequest-sized reply with a
/// few MiB of data, in both formats.
#[test]
fn a_large_honest_reply_still_decodes() {
    let mut dict = Dictionary::new();
    dict.insert("MsgType".into(), "DataRequestMsg".into());
    dict.insert("DataType".into(), "FirmwareUpdaterData".into());
    dict.insert("Payload".into(), Value::Data(vec![0x5a; 6 << 20]));
    let value = Value::Dictionary(dict);
    for format in [Format::Xml, Format::Binary] {
        let frame = encode_frame(&value, format, "DataRequest").unwrap();
        let decoded = on_small_stack(move || decode_value(&frame[4..]).unwrap());
        assert_eq!(decoded, value);
    }
}
