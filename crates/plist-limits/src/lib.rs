//! `plist_limits` owns the step where bytes a peer sent become a [`plist::Value`]: every plist
//! that arrives from the phone or from a usbmux daemon (lockdownd and restored messages,
//! usbmuxd client-socket replies) goes through [`decode`] before any protocol crate looks at
//! it. It accepts XML and binary (`bplist00`) plists and refuses, with a typed [`Error`], what
//! would cost more than the [`Limits`] allow: containers nested deeper than `max_depth` (a
//! stack overflow in `Value`'s recursive `Drop` otherwise), more than `max_values` values or
//! `max_bytes` bytes of decoded values (binary reference bombs, where a few hundred bytes
//! expand to 2^40 values, are refused from the object graph before anything is built).
//!
//! ```
//! use plist_limits::{decode, Error, Limits};
//!
//! let xml = br#"<?xml version="1.0"?><plist version="1.0"><dict>
//!     <key>MessageType</key><string>Result</string><key>Number</key><integer>0</integer>
//! </dict></plist>"#;
//! let value = decode(xml, &Limits::default())?;
//! assert_eq!(value.as_dictionary().and_then(|d| d.get("Number")), Some(&0u64.into()));
//!
//! // 200 nested arrays: fine for the plist crate, refused here.
//! let deep = format!("<plist>{}{}</plist>", "<array>".repeat(200), "</array>".repeat(200));
//! assert!(matches!(
//!     decode(deep.as_bytes(), &Limits::default()),
//!     Err(Error::TooDeep { max: 128, .. })
//! ));
//! # Ok::<(), Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod build;
mod error;
mod guard;

#[doc(hidden)]
pub mod fuzzing;

use std::io::Cursor;

use plist::stream::{BinaryReader, XmlReader};
use plist::Value;

pub use error::{Error, Measure};

/// What one decoded value is charged, in bytes, on top of its string or data bytes: the size of
/// a [`plist::Value`] (dictionary keys are charged as values too).
pub const NODE_COST: u64 = std::mem::size_of::<Value>() as u64;

/// How much a decoded plist may cost. Copy it around; [`Limits::default`] suits lockdown,
/// restored and usbmuxd messages.
///
/// `max_depth` is also how deep `Value`'s recursive `Drop`, `Clone`, `PartialEq` and `Debug`
/// go on a decoded value, so it is capped at [`Limits::DEPTH_CEILING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    max_depth: usize,
    max_values: u64,
    max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new()
    }
}

impl Limits {
    /// Default container nesting limit.
    pub const DEFAULT_MAX_DEPTH: usize = 128;
    /// Default value-count limit (about a million).
    pub const DEFAULT_MAX_VALUES: u64 = 1 << 20;
    /// Default decoded-size limit: 32 MiB (restored's largest replies carry a few MiB).
    pub const DEFAULT_MAX_BYTES: u64 = 32 << 20;
    /// The largest `max_depth` accepted: recursion over a value this deep stays well inside a
    /// 2 MiB thread stack.
    pub const DEPTH_CEILING: usize = 1024;

    /// The defaults.
    pub const fn new() -> Limits {
        Limits {
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_values: Self::DEFAULT_MAX_VALUES,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }

    /// Sets the nesting limit (a root container is depth 1), capped at [`Self::DEPTH_CEILING`].
    pub const fn with_max_depth(mut self, max_depth: usize) -> Limits {
        self.max_depth = if max_depth > Self::DEPTH_CEILING {
            Self::DEPTH_CEILING
        } else {
            max_depth
        };
        self
    }

    /// Sets the value-count limit.
    pub const fn with_max_values(mut self, max_values: u64) -> Limits {
        self.max_values = max_values;
        self
    }

    /// Sets the decoded-size limit ([`NODE_COST`] per value plus string and data bytes).
    pub const fn with_max_bytes(mut self, max_bytes: u64) -> Limits {
        self.max_bytes = max_bytes;
        self
    }

    /// The nesting limit.
    pub const fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The value-count limit.
    pub const fn max_values(&self) -> u64 {
        self.max_values
    }

    /// The decoded-size limit.
    pub const fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// How the input was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `<?xml ...?><plist>` text.
    Xml,
    /// `bplist00`.
    Binary,
}

impl Format {
    /// Binary when the input starts with `bplist00`, XML otherwise (no other format is read:
    /// OpenStep/ASCII plists are not something a phone or usbmuxd sends).
    pub fn of(bytes: &[u8]) -> Format {
        if bytes.starts_with(b"bplist00") {
            Format::Binary
        } else {
            Format::Xml
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Xml => "XML",
            Format::Binary => "binary",
        })
    }
}

/// Decodes an XML or binary plist within `limits`.
///
/// Binary plists are first checked from their object graph (shared references count once per
/// use); then the value is built from the parser's events with an explicit stack, stopping at
/// the first limit breach, so nothing deeper than `max_depth` or bigger than the budget is ever
/// held. Both checks charge the same: [`NODE_COST`] per value plus string and data bytes.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Value, Error> {
    let format = Format::of(bytes);
    let builder = build::Builder::new(limits, format);
    match format {
        Format::Binary => {
            precheck_binary(bytes, limits)?;
            builder.build(BinaryReader::new(Cursor::new(bytes)), bytes.len())
        }
        Format::Xml => builder.build(XmlReader::new(Cursor::new(bytes)), bytes.len()),
    }
}

/// Refuses a binary plist whose object graph already says it is too large.
fn precheck_binary(bytes: &[u8], limits: &Limits) -> Result<(), Error> {
    let too_large = |measure, max, found| Error::TooLarge {
        format: Format::Binary,
        measure,
        max,
        found,
    };
    // Every reachable object decodes to at least one value, and the parser allocates per
    // object: a table larger than the value limit is refused before it is walked.
    if let Some(trailer) = guard::trailer(bytes) {
        let objects = u64::try_from(trailer.num_objects).unwrap_or(u64::MAX);
        if objects > limits.max_values() {
            return Err(too_large(Measure::Values, limits.max_values(), objects));
        }
    }
    if let Some(cost) = guard::expanded(bytes) {
        if cost.values > limits.max_values() {
            return Err(too_large(Measure::Values, limits.max_values(), cost.values));
        }
        if cost.bytes > limits.max_bytes() {
            return Err(too_large(Measure::Bytes, limits.max_bytes(), cost.bytes));
        }
    }
    Ok(())
}

/// The plist type name of a value, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "array",
        Value::Dictionary(_) => "dictionary",
        Value::Boolean(_) => "boolean",
        Value::Data(_) => "data",
        Value::Date(_) => "date",
        Value::Real(_) => "real",
        Value::Integer(_) => "integer",
        Value::String(_) => "string",
        Value::Uid(_) => "uid",
        _ => "unknown value",
    }
}

/// Nesting depth of a value (a scalar is 0, a root container 1), without recursion.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Dictionary(dict) => Box::new(dict.values()),
            _ => {
                deepest = deepest.max(depth);
                continue;
            }
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::{deep_then_bad_reference, deep_then_invalid_xml, nested_xml};

    fn run_on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn depth_limit_is_inclusive() {
        let limits = Limits::default();
        let ok = decode(&nested_xml(128), &limits).unwrap();
        assert_eq!(depth(&ok), 128);
        assert!(matches!(
            decode(&nested_xml(129), &limits),
            Err(Error::TooDeep {
                format: Format::Xml,
                max: 128
            })
        ));
        let tight = Limits::new().with_max_depth(2);
        assert!(decode(&nested_xml(2), &tight).is_ok());
        assert!(decode(&nested_xml(3), &tight).is_err());
    }

    #[test]
    fn deep_input_is_refused_on_a_small_stack() {
        for data in [
            nested_xml(200_000),
            deep_then_invalid_xml(200_000),
            deep_then_bad_reference(60_000),
        ] {
            let err = run_on_small_stack(move || decode(&data, &Limits::default()).unwrap_err());
            assert!(matches!(err, Error::TooDeep { max: 128, .. }), "{err:?}");
        }
    }

    #[test]
    fn depth_ceiling_is_safe_on_a_small_stack() {
        let limits = Limits::new().with_max_depth(usize::MAX);
        assert_eq!(limits.max_depth(), Limits::DEPTH_CEILING);
        run_on_small_stack(move || {
            let value = decode(&nested_xml(Limits::DEPTH_CEILING), &limits).unwrap();
            let copy = value.clone();
            assert_eq!(copy, value);
            assert_eq!(depth(&value), Limits::DEPTH_CEILING);
            let mut xml = Vec::new();
            value.to_writer_xml(&mut xml).unwrap();
            assert!(!format!("{value:?}").is_empty());
        });
    }

    #[test]
    fn value_and_byte_budgets() {
        let mut array = String::from("<plist><array>");
        for _ in 0..100 {
            array.push_str("<true/>");
        }
        array.push_str("</array></plist>");
        let limits = Limits::new().with_max_values(100);
        assert!(matches!(
            decode(array.as_bytes(), &limits),
            Err(Error::TooLarge {
                measure: Measure::Values,
                max: 100,
                found: 101,
                ..
            })
        ));
        assert!(decode(array.as_bytes(), &limits.with_max_values(101)).is_ok());
        let data = Value::Data(vec![1; 10_000]);
        let mut binary = Vec::new();
        data.to_writer_binary(&mut binary).unwrap();
        let mut xml = Vec::new();
        data.to_writer_xml(&mut xml).unwrap();
        for bytes in [binary, xml] {
            let tight = Limits::new().with_max_bytes(10_000);
            let err = decode(&bytes, &tight).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::TooLarge {
                        measure: Measure::Bytes,
                        max: 10_000,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert_eq!(
                decode(&bytes, &tight.with_max_bytes(10_000 + NODE_COST)).unwrap(),
                data
            );
        }
    }

    #[test]
    fn reference_bomb_is_refused_before_parsing() {
        let err = decode(&crate::fuzzing::reference_bomb(40), &Limits::default()).unwrap_err();
        match err {
            Error::TooLarge {
                format: Format::Binary,
                measure: Measure::Values,
                found,
                ..
            } => assert!(found > 1 << 40, "{found}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn huge_object_table_is_refused_before_walking() {
        // 2 million objects, all at the same offset: 2 MiB of offset table, one real object.
        let mut data = b"bplist00".to_vec();
        data.push(0x08); // false
        let table = data.len() as u64;
        let objects = 2u64 << 20;
        data.resize(data.len() + objects as usize, 8);
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 1]);
        data.extend_from_slice(&objects.to_be_bytes());
        data.extend_from_slice(&0u64.to_be_bytes());
        data.extend_from_slice(&table.to_be_bytes());
        assert!(matches!(
            decode(&data, &Limits::default()),
            Err(Error::TooLarge {
                measure: Measure::Values,
                found,
                ..
            }) if found == objects
        ));
    }

    #[test]
    fn malformed_input_is_typed() {
        let limits = Limits::default();
        type Case = (&'static [u8], fn(&Error) -> bool);
        let cases: [Case; 8] = [
            (b"", |e| matches!(e, Error::Unfinished { open: 0, .. })),
            (b"not a plist", |e| {
                matches!(
                    e,
                    Error::Parse {
                        format: Format::Xml,
                        len: 11,
                        ..
                    }
                )
            }),
            (b"<plist><array><true/></plist>", |e| {
                matches!(e, Error::Parse { .. })
            }),
            (
                b"<plist><dict><integer>1</integer><true/></dict></plist>",
                |e| {
                    matches!(
                        e,
                        Error::KeyNotString {
                            found: "integer",
                            ..
                        }
                    )
                },
            ),
            (
                b"<plist><dict><key>k</key></dict></plist>",
                |e| matches!(e, Error::MissingValue { key, .. } if key == "k"),
            ),
            (b"<plist><true/><false/></plist>", |e| {
                matches!(
                    e,
                    Error::TrailingValue {
                        found: "boolean",
                        ..
                    }
                )
            }),
            (b"<plist><true/><array/></plist>", |e| {
                matches!(e, Error::TrailingValue { found: "array", .. })
            }),
            (b"bplist00\x08", |e| {
                matches!(
                    e,
                    Error::Parse {
                        format: Format::Binary,
                        ..
                    }
                )
            }),
        ];
        for (bytes, expected) in cases {
            let err = decode(bytes, &limits).unwrap_err();
            assert!(
                expected(&err),
                "{:?}: {err:?}",
                String::from_utf8_lossy(bytes)
            );
            assert!(!err.is_limit());
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn both_formats_decode_like_the_plist_crate() {
        let mut dict = plist::Dictionary::new();
        dict.insert("MessageType".into(), "Attached".into());
        dict.insert("DeviceID".into(), 7u64.into());
        dict.insert("Data".into(), Value::Data(vec![0, 1, 2]));
        dict.insert(
            "Nested".into(),
            Value::Array(vec![Value::Real(1.5), true.into()]),
        );
        let value = Value::Dictionary(dict);
        let mut xml = Vec::new();
        value.to_writer_xml(&mut xml).unwrap();
        let mut binary = Vec::new();
        value.to_writer_binary(&mut binary).unwrap();
        for bytes in [xml, binary] {
            let ours = decode(&bytes, &Limits::default()).unwrap();
            assert_eq!(ours, value);
            assert_eq!(ours, Value::from_reader(Cursor::new(&bytes)).unwrap());
        }
    }
}
