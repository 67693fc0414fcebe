//! Property tests for the serial-string and nonce-string codecs: for every value, parsing the
//! canonical rendering gives the value back (decode(encode(x)) == x).

use irecv::serial::{Field, Nonces, SerialInfo};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

/// A text value as a device could send it: bracketed text without `]` (spaces allowed), or a
/// bare word that does not start with `[` (may hold `]`).
fn text_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 .,:\\-\\[]{1,24}",
        "[a-zA-Z0-9.\\-][!-~]{0,12}",
        "[a-z ]{0,3}[éü€]{1,3}",
    ]
    .prop_filter("non-blank", |s| !s.is_empty())
}

/// An unknown tag's field (five-letter tags never collide with the four-letter known ones).
fn extra_field(tag: String) -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(None).prop_map(|v: Option<String>| (v, false)),
        "[a-zA-Z0-9 .\\-]{0,16}".prop_map(|v| (Some(v), true)),
        "[a-zA-Z0-9.\\-][!-~]{0,12}".prop_map(|v| (Some(v), false)),
    ]
    .prop_map(move |(value, bracketed)| Field {
        tag: tag.clone(),
        value,
        bracketed,
    })
}

fn extras() -> impl Strategy<Value = Vec<Field>> {
    btree_map("[A-Z][A-Z0-9_]{4,7}", Just(()), 0..4)
        .prop_flat_map(|tags| tags.into_keys().map(extra_field).collect::<Vec<_>>())
}

fn serial_info() -> impl Strategy<Value = SerialInfo> {
    (
        (
            option::of(any::<u32>()),
            any::<u32>(),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(any::<u64>()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
        ),
        (
            option::of(text_value()),
            option::of(text_value()),
            option::of(text_value()),
        ),
        extras(),
    )
        .prop_map(
            |(
                (sdom, cpid, cprv, cpfm, scep, bdid, ecid, ibfl, sika),
                (srtg, srnm, imei),
                extra,
            )| {
                SerialInfo {
                    sdom,
                    cpid: Some(cpid),
                    cprv,
                    cpfm,
                    scep,
                    bdid,
                    ecid,
                    ibfl,
                    sika,
                    srtg,
                    srnm,
                    imei,
                    unreadable: Vec::new(),
                    extra,
                    truncated: false,
                }
            },
        )
}

fn nonces() -> impl Strategy<Value = Nonces> {
    (
        option::of(vec(any::<u8>(), 1..48)),
        option::of(vec(any::<u8>(), 1..48)),
    )
        .prop_filter("at least one nonce", |(a, s)| a.is_some() || s.is_some())
        .prop_map(|(ap_nonce, sep_nonce)| Nonces {
            ap_nonce,
            sep_nonce,
        })
}

proptest! {
    #[test]
    fn serial_info_round_trips(info in serial_info()) {
        let rendered = info.to_string();
        prop_assert_eq!(SerialInfo::parse(&rendered), Ok(info), "{}", rendered);
    }

    #[test]
    fn nonces_round_trip(n in nonces()) {
        let rendered = n.to_string();
        prop_assert_eq!(Nonces::parse(&rendered), Ok(n), "{}", rendered);
    }

    #[test]
    fn parse_never_panics_on_bytes(bytes in vec(any::<u8>(), 0..512)) {
        irecv::fuzzing::serial(&bytes);
        irecv::fuzzing::nonces(&bytes);
    }

    #[test]
    fn parse_never_panics_on_tag_soup(
        parts in vec(
            prop_oneof![
                Just("CPID:".to_string()), Just("ECID:".to_string()), Just("SRTG:[".to_string()),
                Just("]".to_string()), Just(" ".to_string()), Just("\0".to_string()),
                Just("NONC:".to_string()), Just("SNON:".to_string()),
                "[0-9A-Fa-fx*]{0,20}", "[ -~]{0,6}",
            ],
            0..40,
        )
    ) {
        let s: String = parts.concat();
        irecv::fuzzing::serial(s.as_bytes());
        irecv::fuzzing::nonces(s.as_bytes());
    }
}
