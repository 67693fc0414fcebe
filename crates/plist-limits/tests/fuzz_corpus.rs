//! Replays every committed seed of the fuzz target through the same `fuzzing::decode` the
//! fuzzer calls, so `cargo test` exercises them on stable.
//!
//! The seeds were written by `write_seed_corpus` below:
//! `cargo test -p plist_limits --test fuzz_corpus -- --ignored write_seed_corpus`.

use std::fs;
use std::path::{Path, PathBuf};

use plist::{Date, Dictionary, Uid, Value};
use plist_limits::fuzzing::{
    deep_then_bad_reference, deep_then_invalid_xml, nested_xml, reference_bomb, shared_data, Bplist,
};
use plist_limits::{decode, Error, Limits};

type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[("decode", plist_limits::fuzzing::decode)];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn replay_seed_corpus() {
    for (target, run) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 20, "{target}: only {} seeds", files.len());
        for file in files {
            let data = fs::read(&file).unwrap();
            run(&data);
        }
    }
}

fn xml(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    value.to_writer_xml(&mut out).unwrap();
    out
}

fn binary(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    value.to_writer_binary(&mut out).unwrap();
    out
}

/// Values of every kind, as a usbmuxd or lockdown peer would send them.
fn valid_values() -> Vec<(&'static str, Value)> {
    let mut attached = Dictionary::new();
    attached.insert("MessageType".into(), "Attached".into());
    attached.insert("DeviceID".into(), 3u64.into());
    let mut props = Dictionary::new();
    props.insert("ConnectionType".into(), "USB".into());
    props.insert("SerialNumber".into(), "00008030-001A2B3C4D5E6F70".into());
    props.insert("LocationID".into(), 0x0011_0000u64.into());
    props.insert("ConnectionSpeed".into(), 480_000_000u64.into());
    attached.insert("Properties".into(), Value::Dictionary(props));
    let mut scalars = Dictionary::new();
    scalars.insert("true".into(), true.into());
    scalars.insert("false".into(), false.into());
    scalars.insert("negative".into(), Value::from(-42i64));
    scalars.insert("u64max".into(), Value::from(u64::MAX));
    scalars.insert("real".into(), Value::Real(3.25));
    scalars.insert(
        "date".into(),
        Value::Date(Date::from_xml_format("2024-03-01T12:00:00Z").unwrap()),
    );
    scalars.insert("data".into(), Value::Data(vec![0, 1, 2, 0xff]));
    scalars.insert("unicode".into(), "réglage – 設定 🍎".into());
    scalars.insert("empty".into(), "".into());
    vec![
        ("attached", Value::Dictionary(attached)),
        ("scalars", Value::Dictionary(scalars)),
        ("empty_array", Value::Array(Vec::new())),
        ("empty_dict", Value::Dictionary(Dictionary::new())),
        ("string_root", "QueryType".into()),
        (
            "nested",
            Value::Array(vec![Value::Array(vec![Value::Array(vec![1u64.into()])])]),
        ),
    ]
}

#[test]
#[ignore = "writes the seed corpus; run once by hand"]
fn write_seed_corpus() {
    let dir = corpus_dir("decode");
    fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, data: &[u8]| fs::write(dir.join(name), data).unwrap();
    for (name, value) in valid_values() {
        write(&format!("{name}_xml"), &xml(&value));
        write(&format!("{name}_bin"), &binary(&value));
    }
    write(
        "uid_bin",
        &binary(&Value::Array(vec![Value::Uid(Uid::new(7))])),
    );
    // Nasty ones.
    write("empty", b"");
    write("garbage", b"hello, usbmuxd");
    write(
        "wrong_magic",
        b"bplist01\x08\x00\x00\x00\x00\x00\x00\x01\x01",
    );
    let mut truncated = binary(&valid_values()[0].1);
    truncated.truncate(truncated.len() - 5);
    write("truncated_bin", &truncated);
    let mut truncated = xml(&valid_values()[0].1);
    truncated.truncate(truncated.len() / 2);
    write("truncated_xml", &truncated);
    write(
        "key_without_value_xml",
        b"<plist><dict><key>k</key></dict></plist>",
    );
    write(
        "integer_key_xml",
        b"<plist><dict><integer>1</integer><true/></dict></plist>",
    );
    write("two_roots_xml", b"<plist><true/><array/></plist>");
    write("bad_integer_xml", b"<plist><integer>zz</integer></plist>");
    write("reference_bomb_40", &reference_bomb(40));
    write("reference_bomb_8", &reference_bomb(8));
    write("nested_xml_129", &nested_xml(129));
    write("nested_xml_1000", &nested_xml(1000));
    write("deep_then_invalid_xml_1000", &deep_then_invalid_xml(1000));
    write(
        "deep_then_bad_reference_1000",
        &deep_then_bad_reference(1000),
    );
    write("shared_data_small", &shared_data(64, 300));
    // Two levels of sharing: 100 x 100 uses of a 4 KiB data object, 40 MiB from 5 KB.
    let mut b = Bplist::new();
    b.container(0xa, 100, &[1; 100]);
    b.container(0xa, 100, &[2; 100]);
    let mut data = vec![0x4f, 0x11, 0x10, 0x00];
    data.resize(4 + 4096, 0x5a);
    b.object(&data);
    write("shared_two_levels", &b.finish());
    // An array that holds itself.
    let mut b = Bplist::new();
    b.container(0xa, 1, &[0]);
    write("cycle", &b.finish());
    // A dictionary keyed by an integer.
    let mut b = Bplist::new();
    b.container(0xd, 1, &[1, 1]);
    b.object(&[0x10, 5]);
    write("integer_key_bin", &b.finish());
    // 1000 objects at one offset: more table entries than the small value limit.
    let mut data = b"bplist00\x08".to_vec();
    data.resize(9 + 1000, 8);
    data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 1]);
    data.extend_from_slice(&1000u64.to_be_bytes());
    data.extend_from_slice(&0u64.to_be_bytes());
    data.extend_from_slice(&9u64.to_be_bytes());
    write("huge_table", &data);
    // A length prefix claiming 2^32 bytes of data.
    let mut b = Bplist::new();
    b.object(&[0x4f, 0x13, 0, 0, 0, 1, 0, 0, 0, 0]);
    write("data_length_4gib", &b.finish());
}

/// The nasty seeds are refused for the reason they were written for, with the default limits.
#[test]
fn hostile_seeds_are_refused_with_typed_errors() {
    let limits = Limits::default();
    let read = |name: &str| fs::read(corpus_dir("decode").join(name)).unwrap();
    // The guard charges a data object its announced length, present or not.
    for name in ["reference_bomb_40", "shared_two_levels", "data_length_4gib"] {
        let err = decode(&read(name), &limits).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{name}: {err:?}");
    }
    for name in [
        "nested_xml_129",
        "nested_xml_1000",
        "deep_then_invalid_xml_1000",
        "deep_then_bad_reference_1000",
    ] {
        let err = decode(&read(name), &limits).unwrap_err();
        assert!(
            matches!(err, Error::TooDeep { max: 128, .. }),
            "{name}: {err:?}"
        );
    }
    for name in ["cycle", "wrong_magic", "truncated_bin"] {
        let err = decode(&read(name), &limits).unwrap_err();
        assert!(matches!(err, Error::Parse { .. }), "{name}: {err:?}");
    }
    let err = decode(&read("integer_key_bin"), &limits).unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyNotString {
                found: "integer",
                ..
            }
        ),
        "{err:?}"
    );
}
