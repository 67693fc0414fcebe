//! Property tests: for arbitrary plist values within the limits, decode(encode(v)) == v in XML
//! and in binary; and the limits are exact (a value decodes with limits equal to its own depth,
//! value count and size, and is refused with any of them one lower).

use std::time::{Duration, SystemTime};

use plist::{Date, Uid, Value};
use plist_limits::fuzzing::cost;
use plist_limits::{decode, depth, Error, Format, Limits, Measure};
use proptest::prelude::*;

/// Text both plist formats carry unchanged (XML cannot hold most control characters).
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._,:/+=-]{0,12}|[\\PC&&[^\\r]]{0,8}"
}

fn date() -> impl Strategy<Value = Value> {
    // XML dates carry whole seconds.
    (0u64..8_000_000_000).prop_map(|secs| {
        Value::Date(Date::from(
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        ))
    })
}

fn leaf(uids: bool) -> BoxedStrategy<Value> {
    let common = prop_oneof![
        text().prop_map(Value::String),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Data),
        (proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL)
            .prop_map(Value::Real),
        date(),
    ];
    if uids {
        prop_oneof![9 => common, 1 => any::<u64>().prop_map(|n| Value::Uid(Uid::new(n)))].boxed()
    } else {
        common.boxed()
    }
}

/// Values up to 8 levels deep (`uids`: binary only, XML cannot hold them).
fn value(uids: bool) -> impl Strategy<Value = Value> {
    leaf(uids).prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((text(), inner), 0..6)
                .prop_map(|pairs| Value::Dictionary(pairs.into_iter().collect())),
        ]
    })
}

fn encode(value: &Value, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        Format::Xml => value.to_writer_xml(&mut out).unwrap(),
        Format::Binary => value.to_writer_binary(&mut out).unwrap(),
    }
    out
}

/// Limits exactly as large as `value` needs.
fn exact(value: &Value) -> Limits {
    let (values, bytes) = cost(value);
    Limits::new()
        .with_max_depth(depth(value))
        .with_max_values(values)
        .with_max_bytes(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn xml_roundtrip(v in value(false)) {
        let bytes = encode(&v, Format::Xml);
        prop_assert_eq!(decode(&bytes, &Limits::default()).unwrap(), v);
    }

    #[test]
    fn binary_roundtrip(v in value(true)) {
        let bytes = encode(&v, Format::Binary);
        prop_assert_eq!(decode(&bytes, &Limits::default()).unwrap(), v);
    }

    #[test]
    fn limits_are_exact(v in value(false)) {
        let limits = exact(&v);
        let xml = encode(&v, Format::Xml);
        prop_assert_eq!(decode(&xml, &limits).unwrap(), v.clone());
        if limits.max_depth() > 0 {
            let err = decode(&xml, &limits.with_max_depth(limits.max_depth() - 1)).unwrap_err();
            prop_assert!(matches!(err, Error::TooDeep { .. }), "{:?}", err);
        }
        let err = decode(&xml, &limits.with_max_values(limits.max_values() - 1)).unwrap_err();
        prop_assert!(
            matches!(err, Error::TooLarge { measure: Measure::Values, .. }),
            "{:?}",
            err
        );
        let err = decode(&xml, &limits.with_max_bytes(limits.max_bytes() - 1)).unwrap_err();
        prop_assert!(
            matches!(err, Error::TooLarge { measure: Measure::Bytes, .. }),
            "{:?}",
            err
        );
        // Binary: the same depth and value count suffice, and one less is refused.
        let binary = encode(&v, Format::Binary);
        let roomy = limits.with_max_bytes(limits.max_bytes() * 3);
        prop_assert_eq!(decode(&binary, &roomy).unwrap(), v);
        let err = decode(&binary, &roomy.with_max_values(limits.max_values() - 1)).unwrap_err();
        prop_assert!(
            matches!(err, Error::TooLarge { measure: Measure::Values, .. }),
            "{:?}",
            err
        );
    }
}
