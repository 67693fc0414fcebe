//! Replays every committed seed of every fuzz target through the same `fuzzing::*` function
//! the fuzzer calls, so `cargo test` exercises them on stable.
//!
//! The seeds were written by `write_seed_corpus` below:
//! `cargo test -p lockdown --test fuzz_corpus -- --ignored write_seed_corpus`.

use std::fs;
use std::path::{Path, PathBuf};

use lockdown::{
    encode_frame, DaemonType, Envelope, ErrorKind, Format, Outcome, PairRecord, PairRequest, Reply,
    Request,
};
use plist::{Dictionary, Value};

type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("frame_decoder", lockdown::fuzzing::frame_decoder),
    ("request", lockdown::fuzzing::request),
    ("reply", lockdown::fuzzing::reply),
];

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
        assert!(files.len() >= 10, "{target}: only {} seeds", files.len());
        for file in files {
            let data = fs::read(&file).unwrap();
            run(&data);
        }
    }
}

fn requests() -> Vec<(&'static str, Request)> {
    let record = PairRecord {
        device_certificate: Some(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
        host_certificate: Some(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
        root_certificate: Some(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
        host_id: Some("5E3F1C2A-0000-4000-8000-000000000001".into()),
        system_buid: Some("7A1B2C3D-0000-4000-8000-000000000002".into()),
        ..PairRecord::default()
    };
    let mut options = Dictionary::new();
    options.insert("ExtendedPairingErrors".into(), Value::Boolean(true));
    let pair = PairRequest {
        pair_record: Some(record),
        protocol_version: Some("2".into()),
        pairing_options: Some(options),
    };
    vec![
        ("query_type", Request::QueryType),
        (
            "get_value",
            Request::GetValue {
                domain: None,
                key: Some("UniqueChipID".into()),
            },
        ),
        (
            "set_value",
            Request::SetValue {
                domain: Some("com.apple.international".into()),
                key: Some("Language".into()),
                value: "en".into(),
            },
        ),
        (
            "remove_value",
            Request::RemoveValue {
                domain: Some("com.apple.x".into()),
                key: None,
            },
        ),
        (
            "start_session",
            Request::StartSession {
                host_id: "HOST".into(),
                system_buid: Some("BUID".into()),
            },
        ),
        (
            "stop_session",
            Request::StopSession {
                session_id: "S".into(),
            },
        ),
        (
            "start_service",
            Request::StartService {
                service: "com.apple.mobile.diagnostics_relay".into(),
                escrow_bag: Some(vec![1, 2, 3]),
            },
        ),
        ("enter_recovery", Request::EnterRecovery),
        ("goodbye", Request::Goodbye),
        ("pair", Request::Pair(pair.clone())),
        ("validate_pair", Request::ValidatePair(pair)),
        (
            "query_value",
            Request::QueryValue {
                query_key: Some("HardwareInfo".into()),
            },
        ),
        (
            "start_restore",
            Request::StartRestore {
                restore_protocol_version: Some(15),
                restore_options: Some(Dictionary::new()),
            },
        ),
        ("reboot", Request::Reboot),
        (
            "other",
            Request::Other {
                name: "Activate".into(),
                fields: Dictionary::new(),
            },
        ),
    ]
}

fn replies() -> Vec<(&'static str, Reply)> {
    let mut extended = Dictionary::new();
    extended.insert(
        "ExtendedResponse".into(),
        Value::Dictionary(Dictionary::new()),
    );
    vec![
        (
            "query_type",
            Reply::QueryType {
                daemon: DaemonType::Lockdown,
                restore_protocol_version: None,
            },
        ),
        (
            "query_type_restored",
            Reply::QueryType {
                daemon: DaemonType::Restored,
                restore_protocol_version: Some(15),
            },
        ),
        (
            "get_value",
            Reply::GetValue {
                domain: None,
                key: Some("ProductType".into()),
                value: Some("iPhone10,3".into()),
            },
        ),
        (
            "start_session",
            Reply::StartSession {
                session_id: "S".into(),
                enable_session_ssl: true,
            },
        ),
        (
            "start_service",
            Reply::StartService {
                service: Some("com.apple.afc".into()),
                port: 49152,
                enable_service_ssl: false,
            },
        ),
        (
            "error",
            Reply::error("StartSession", ErrorKind::PasswordProtected),
        ),
        (
            "error_extended",
            Reply::Error {
                request: Some("Pair".into()),
                error: ErrorKind::MCChallengeRequired,
                fields: extended,
            },
        ),
        ("ack", Reply::ack("EnterRecovery")),
        (
            "failure",
            Reply::Generic {
                request: Some("Goodbye".into()),
                result: Some(Outcome::Failure),
                fields: Dictionary::new(),
            },
        ),
    ]
}

fn payload(value: &Value, format: Format) -> Vec<u8> {
    let frame = encode_frame(value, format, "seed").unwrap();
    frame[4..].to_vec()
}

fn dict(pairs: &[(&str, Value)]) -> Value {
    Value::Dictionary(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// Payloads no decoder should accept as a message, shared by the request and reply targets.
fn nasty_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let deep = {
        let mut s = String::from("<?xml version=\"1.0\"?><plist version=\"1.0\">");
        s.push_str(&"<array>".repeat(300));
        s.push_str(&"</array>".repeat(300));
        s.push_str("</plist>");
        s.into_bytes()
    };
    // Binary plist where each array holds two references to the next: expands exponentially.
    let bomb = {
        let levels = 40usize;
        let mut data = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for i in 0..levels {
            offsets.push(data.len());
            data.extend_from_slice(&[0xa2, (i + 1) as u8, (i + 1) as u8]);
        }
        offsets.push(data.len());
        data.push(0x50);
        let table = data.len();
        for off in &offsets {
            data.extend_from_slice(&(*off as u16).to_be_bytes());
        }
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2, 1]);
        data.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
        data.extend_from_slice(&0u64.to_be_bytes());
        data.extend_from_slice(&(table as u64).to_be_bytes());
        data
    };
    let mut truncated_binary = payload(&dict(&[("Request", "QueryType".into())]), Format::Binary);
    truncated_binary.truncate(truncated_binary.len() - 7);
    vec![
        ("empty", Vec::new()),
        ("garbage", b"hello, lockdown".to_vec()),
        ("non_utf8_xml", b"<?xml version=\"1.0\"?><plist><dict><key>\xff</key><string>\xc3(</string></dict></plist>".to_vec()),
        ("array_not_dict", payload(&Value::Array(vec![Value::from(1u64)]), Format::Xml)),
        ("string_not_dict", payload(&Value::from("QueryType"), Format::Binary)),
        ("request_is_integer", payload(&dict(&[("Request", Value::from(7u64))]), Format::Xml)),
        ("port_is_string", payload(&dict(&[("Request", "StartService".into()), ("Port", "62078".into())]), Format::Xml)),
        ("port_too_big", payload(&dict(&[("Request", "StartService".into()), ("Port", Value::from(70000u64))]), Format::Binary)),
        ("error_is_integer", payload(&dict(&[("Request", "GetValue".into()), ("Error", Value::from(1u64))]), Format::Xml)),
        ("session_missing_id", payload(&dict(&[("Request", "StartSession".into())]), Format::Xml)),
        ("truncated_binary", truncated_binary),
        ("deep_nesting", deep),
        ("reference_bomb", bomb),
    ]
}

#[test]
#[ignore = "writes the seed corpus; run once by hand"]
fn write_seed_corpus() {
    let write = |target: &str, name: String, data: &[u8]| {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };
    let label = Some("restation".to_owned());
    let mut stream_all = vec![7u8];
    for (name, request) in requests() {
        for (format, tag) in [(Format::Xml, "xml"), (Format::Binary, "bin")] {
            let value =
                Value::Dictionary(Envelope::new(label.clone(), request.clone()).to_dictionary());
            write("request", format!("{name}_{tag}"), &payload(&value, format));
            let frame = encode_frame(&value, format, name).unwrap();
            stream_all.extend_from_slice(&frame);
            let mut seed = vec![255u8];
            seed.extend_from_slice(&frame);
            write("frame_decoder", format!("request_{name}_{tag}"), &seed);
        }
    }
    for (name, reply) in replies() {
        for (format, tag) in [(Format::Xml, "xml"), (Format::Binary, "bin")] {
            let value = Value::Dictionary(reply.to_dictionary());
            write("reply", format!("{name}_{tag}"), &payload(&value, format));
            let frame = encode_frame(&value, format, name).unwrap();
            stream_all.extend_from_slice(&frame);
            let mut seed = vec![3u8];
            seed.extend_from_slice(&frame);
            write("frame_decoder", format!("reply_{name}_{tag}"), &seed);
        }
    }
    write("frame_decoder", "stream_all_chunk7".into(), &stream_all);
    let mut truncated = stream_all.clone();
    truncated.truncate(stream_all.len() - 10);
    write("frame_decoder", "stream_truncated".into(), &truncated);
    write(
        "frame_decoder",
        "length_4gib".into(),
        &[1, 0xff, 0xff, 0xff, 0xff, b'<'],
    );
    write(
        "frame_decoder",
        "length_over_limit".into(),
        &[4, 0x00, 0x01, 0x00, 0x01],
    );
    write(
        "frame_decoder",
        "zero_length".into(),
        &[1, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    write("frame_decoder", "half_prefix".into(), &[1, 0, 0]);
    for (name, data) in nasty_payloads() {
        write("request", format!("nasty_{name}"), &data);
        write("reply", format!("nasty_{name}"), &data);
        let mut seed = vec![16u8];
        seed.extend_from_slice(&(data.len() as u32).to_be_bytes());
        seed.extend_from_slice(&data);
        write("frame_decoder", format!("nasty_{name}"), &seed);
    }
}

#[test]
fn nasty_payloads_are_rejected_as_replies() {
    for (name, data) in nasty_payloads() {
        let decoded = lockdown::decode_dictionary(&data).and_then(Reply::from_dictionary);
        assert!(decoded.is_err(), "{name} decoded as {decoded:?}");
    }
    let bomb = nasty_payloads()
        .into_iter()
        .find(|(name, _)| *name == "reference_bomb")
        .unwrap()
        .1;
    assert!(matches!(
        lockdown::decode_dictionary(&bomb),
        Err(lockdown::CodecError::TooLarge { .. })
    ));
}
