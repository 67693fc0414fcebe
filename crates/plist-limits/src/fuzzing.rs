//! Entry point for the fuzz target in `fuzz/` and for `tests/fuzz_corpus.rs`, plus builders of
//! the hostile inputs the seed corpus and the tests use.

use std::io::Cursor;

use plist::Value;

use crate::{decode as decode_with, depth, Limits, NODE_COST};

/// Limits small enough that the fuzzer reaches every limit path often.
pub const SMALL: Limits = Limits::new()
    .with_max_depth(8)
    .with_max_values(256)
    .with_max_bytes(16 * 1024);

/// Values above which [`decode`] skips the comparison with the plist crate and the re-encoding
/// check (both cost far more than decoding).
pub const HEAVY_CHECKS_UP_TO: u64 = 20_000;

/// Decodes `data` with [`SMALL`] and with the default limits and checks, whatever the input:
/// no panic; a decoded value is within the limits; up to [`HEAVY_CHECKS_UP_TO`] values, it
/// equals what the plist crate itself decodes and re-encodes (binary) to bytes that decode to
/// the same value; whatever decodes within the small limits decodes the same within the
/// defaults.
pub fn decode(data: &[u8]) {
    let small = check(data, &SMALL);
    let default = check(data, &Limits::default());
    if let Some(small) = small {
        assert_eq!(Some(binary(&small)), default.as_ref().map(binary));
    }
}

fn check(data: &[u8], limits: &Limits) -> Option<Value> {
    let value = match decode_with(data, limits) {
        Ok(value) => value,
        Err(err) => {
            assert!(!err.to_string().is_empty());
            return None;
        }
    };
    assert!(depth(&value) <= limits.max_depth());
    let (values, bytes) = cost(&value);
    assert!(values <= limits.max_values(), "{values} values");
    assert!(bytes <= limits.max_bytes(), "{bytes} bytes");
    if values > HEAVY_CHECKS_UP_TO {
        // Legitimately large (e.g. a 17-level reference fan-out within the budget): the checks
        // below would only slow the fuzzer down.
        return Some(value);
    }
    // What we accepted is bounded, so the plist crate's own (recursive) decoder is safe on it.
    let theirs = Value::from_reader(Cursor::new(data))
        .unwrap_or_else(|err| panic!("plist refuses what was decoded: {err}"));
    let encoded = binary(&value);
    assert_eq!(encoded, binary(&theirs), "differs from plist's decoding");
    // Binary re-encoding: the guard charges UTF-16 strings up to 3 bytes per code unit.
    let relaxed = limits.with_max_bytes(limits.max_bytes().saturating_mul(3));
    let again = decode_with(&encoded, &relaxed)
        .unwrap_or_else(|err| panic!("re-encoded value does not decode: {err}"));
    assert_eq!(binary(&again), encoded);
    Some(value)
}

fn binary(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    value
        .to_writer_binary(&mut out)
        .unwrap_or_else(|err| panic!("a decoded value must encode as binary: {err}"));
    out
}

/// Values and bytes a decoded value is charged, counted without recursion.
pub fn cost(value: &Value) -> (u64, u64) {
    let (mut values, mut bytes) = (0u64, 0u64);
    let mut charge = |payload: usize| {
        values += 1;
        bytes += NODE_COST + payload as u64;
    };
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => {
                charge(0);
                stack.extend(items);
            }
            Value::Dictionary(dict) => {
                charge(0);
                for (key, value) in dict {
                    charge(key.len());
                    stack.push(value);
                }
            }
            Value::String(text) => charge(text.len()),
            Value::Data(data) => charge(data.len()),
            _ => charge(0),
        }
    }
    (values, bytes)
}

/// A bplist00 writer for hand-made object graphs (4-byte offsets and references).
#[derive(Debug)]
pub struct Bplist {
    data: Vec<u8>,
    offsets: Vec<u32>,
}

impl Default for Bplist {
    fn default() -> Self {
        Bplist::new()
    }
}

impl Bplist {
    /// An empty object table.
    pub fn new() -> Bplist {
        Bplist {
            data: b"bplist00".to_vec(),
            offsets: Vec::new(),
        }
    }

    /// Appends object number `self.len()`, given as its raw bytes.
    pub fn object(&mut self, bytes: &[u8]) {
        self.offsets
            .push(u32::try_from(self.data.len()).unwrap_or(u32::MAX));
        self.data.extend_from_slice(bytes);
    }

    /// Appends an array (`kind` 0xa) or dict (0xd) of `count` entries with these references
    /// (for a dict: all keys, then all values).
    pub fn container(&mut self, kind: u8, count: usize, refs: &[u32]) {
        let mut bytes = Vec::new();
        match u8::try_from(count) {
            Ok(small) if small < 15 => bytes.push(kind << 4 | small),
            _ => {
                bytes.extend_from_slice(&[kind << 4 | 0x0f, 0x12]);
                bytes.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes());
            }
        }
        for r in refs {
            bytes.extend_from_slice(&r.to_be_bytes());
        }
        self.object(&bytes);
    }

    /// Objects so far.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether no object was added.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Offset table and trailer (root object 0).
    pub fn finish(mut self) -> Vec<u8> {
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

/// Object i (i < levels) is an array holding two references to object i+1; the last object
/// is an empty string: 2^levels values from a few hundred bytes (1-byte references, so
/// `levels` must stay below 255).
pub fn reference_bomb(levels: usize) -> Vec<u8> {
    let mut data = b"bplist00".to_vec();
    let mut offsets = Vec::new();
    for i in 0..levels {
        offsets.push(data.len());
        let next = u8::try_from(i + 1).unwrap_or(u8::MAX);
        data.extend_from_slice(&[0xa2, next, next]);
    }
    offsets.push(data.len());
    data.push(0x50);
    let table = data.len();
    for off in &offsets {
        data.extend_from_slice(&u16::try_from(*off).unwrap_or(u16::MAX).to_be_bytes());
    }
    data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2, 1]);
    data.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
    data.extend_from_slice(&0u64.to_be_bytes());
    data.extend_from_slice(&(table as u64).to_be_bytes());
    data
}

/// `depth` nested empty arrays, as XML.
pub fn nested_xml(depth: usize) -> Vec<u8> {
    let mut xml = String::from("<?xml version=\"1.0\"?><plist version=\"1.0\">");
    xml.push_str(&"<array>".repeat(depth));
    xml.push_str(&"</array>".repeat(depth));
    xml.push_str("</plist>");
    xml.into_bytes()
}

/// A dict whose first value is `depth` nested arrays and whose second value does not parse.
pub fn deep_then_invalid_xml(depth: usize) -> Vec<u8> {
    let mut xml = String::from("<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>x</key>");
    xml.push_str(&"<array>".repeat(depth));
    xml.push_str(&"</array>".repeat(depth));
    xml.push_str("<key>y</key><integer>zz</integer></dict></plist>");
    xml.into_bytes()
}

/// A binary root dict whose first value is a chain of `depth` one-element arrays and whose
/// second value is a reference past the object table.
pub fn deep_then_bad_reference(depth: u32) -> Vec<u8> {
    let mut b = Bplist::new();
    b.container(0xd, 2, &[1, 1, 2, 0x00ff_ffff]);
    b.object(&[0x51, b'k']);
    for i in 0..depth {
        b.container(0xa, 1, &[3 + i]);
    }
    b.object(&[0x10, 0]);
    b.finish()
}

/// One `len`-byte data object referenced `uses` times from the root array.
pub fn shared_data(len: u32, uses: usize) -> Vec<u8> {
    let mut b = Bplist::new();
    b.container(0xa, uses, &vec![1; uses]);
    let mut data = vec![0x4f, 0x12];
    data.extend_from_slice(&len.to_be_bytes());
    data.resize(data.len() + len as usize, 0xab);
    b.object(&data);
    b.finish()
}
