//! Property tests of the ASR framing: every message both sides send (and any dictionary of
//! plist scalars) encodes to one frame ending with the `</plist>` line and decodes back to the
//! same dictionary, however the stream is cut, with the raw bytes that follow left intact.

use plist::{Dictionary, Value};
use proptest::prelude::*;
use sim::asr::{encode, AsrReader, END_LINE};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "[ -~]{0,40}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Data),
    ]
}

fn dictionary() -> impl Strategy<Value = Dictionary> {
    let inner = proptest::collection::btree_map("[A-Za-z][A-Za-z ]{0,20}", scalar(), 0..4)
        .prop_map(|m| Value::Dictionary(m.into_iter().collect()));
    proptest::collection::btree_map(
        "[A-Za-z][A-Za-z ]{0,20}",
        prop_oneof![4 => scalar(), 1 => inner],
        0..8,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// The messages of an ASR conversation, as both sides write them.
fn messages() -> Vec<Dictionary> {
    let d = |pairs: Vec<(&str, Value)>| -> Dictionary {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    };
    let payload = d(vec![("Port", 1u64.into()), ("Size", 123_456_789u64.into())]);
    vec![
        d(vec![
            ("Command", "Initiate".into()),
            ("Checksum Chunks", true.into()),
            ("Version", 1u64.into()),
        ]),
        d(vec![
            ("Checksum Chunk Size", 131072u64.into()),
            ("FEC Slice Stride", 40u64.into()),
            ("Packet Payload Size", 1450u64.into()),
            ("Packets Per FEC", 25u64.into()),
            ("Payload", Value::Dictionary(payload)),
            ("Stream ID", 1u64.into()),
            ("Version", 1u64.into()),
        ]),
        d(vec![
            ("Command", "OOBData".into()),
            ("OOB Offset", 0u64.into()),
            ("OOB Length", 512u64.into()),
        ]),
        d(vec![("Command", "Payload".into())]),
    ]
}

#[test]
fn every_asr_message_round_trips() {
    for m in messages() {
        let wire = encode(&m).unwrap();
        assert!(wire.ends_with(END_LINE));
        let mut r = AsrReader::new();
        r.push(&wire);
        assert_eq!(r.next_plist().unwrap(), Some(m));
        assert_eq!(r.buffered(), 0);
    }
}

proptest! {
    #[test]
    fn decode_encode_is_identity_at_any_cut(
        dicts in proptest::collection::vec(dictionary(), 1..4),
        raw in proptest::collection::vec(any::<u8>(), 0..100),
        cut in 0usize..10_000,
    ) {
        let mut wire = Vec::new();
        for d in &dicts {
            wire.extend(encode(d).unwrap());
        }
        wire.extend_from_slice(&raw);
        let cut = cut % (wire.len() + 1);
        let mut r = AsrReader::new();
        r.push(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(d) = r.next_plist().unwrap() {
            got.push(d);
        }
        r.push(&wire[cut..]);
        while got.len() < dicts.len() {
            match r.next_plist().unwrap() {
                Some(d) => got.push(d),
                None => break,
            }
        }
        prop_assert_eq!(&got, &dicts);
        prop_assert_eq!(r.take(raw.len()), Some(raw.clone()));
        prop_assert_eq!(r.buffered(), 0);
    }
}
