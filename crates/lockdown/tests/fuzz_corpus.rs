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
    ("pair_record", lockdown::fuzzing::pair_record),
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

fn sample_pair_record() -> lockdown::PairRecordFile {
    let pem = |label: &str, body: &str| {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n").into_bytes()
    };
    lockdown::PairRecordFile {
        device_certificate: pem("CERTIFICATE", "TUlJQ2RldmljZQ=="),
        host_certificate: pem("CERTIFICATE", "TUlJQ2hvc3Q="),
        root_certificate: pem("CERTIFICATE", "TUlJQ3Jvb3Q="),
        host_private_key: pem("RSA PRIVATE KEY", "TUlJRWhvc3RrZXk="),
        root_private_key: pem("RSA PRIVATE KEY", "TUlJRXJvb3RrZXk="),
        host_id: "5E3F1C2A-0000-4000-8000-000000000001".into(),
        system_buid: "7A1B2C3D-0000-4000-8000-000000000002".into(),
        wifi_mac_address: Some("a0:b1:c2:d3:e4:f5".into()),
        escrow_bag: Some(vec![0xEB; 48]),
        extra: Dictionary::new(),
    }
}

/// Seeds of the `pair_record` target:
/// `cargo test -p lockdown --test fuzz_corpus -- --ignored write_pair_record_seeds`.
#[test]
#[ignore]
fn write_pair_record_seeds() {
    let dir = corpus_dir("pair_record");
    fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, data: &[u8]| fs::write(dir.join(name), data).unwrap();
    let record = sample_pair_record();
    let xml = record.to_xml().unwrap();
    write("valid_xml", &xml);
    let mut binary = Vec::new();
    plist::to_writer_binary(&mut binary, &Value::Dictionary(record.to_dictionary())).unwrap();
    write("valid_binary", &binary);
    let mut minimal = record.clone();
    minimal.wifi_mac_address = None;
    minimal.escrow_bag = None;
    write("valid_minimal", &minimal.to_xml().unwrap());
    let mut extra = record.clone();
    extra
        .extra
        .insert("UDID".into(), "00008101-000A1B2C3D4E5F60".into());
    write("valid_with_udid", &extra.to_xml().unwrap());
    write("truncated_xml", &xml[..xml.len() / 2]);
    write("truncated_binary", &binary[..binary.len() - 9]);
    let mut missing = record.to_dictionary();
    missing.remove("HostPrivateKey");
    write(
        "missing_host_key",
        &payload(&Value::Dictionary(missing), Format::Xml),
    );
    let mut wrong = record.to_dictionary();
    wrong.insert("HostID".into(), Value::Data(vec![1, 2, 3]));
    write(
        "host_id_is_data",
        &payload(&Value::Dictionary(wrong), Format::Binary),
    );
    let mut empty = record.to_dictionary();
    empty.insert("DeviceCertificate".into(), Value::Data(Vec::new()));
    write(
        "empty_device_certificate",
        &payload(&Value::Dictionary(empty), Format::Xml),
    );
    write(
        "not_a_dictionary",
        &payload(&Value::Array(vec![Value::from(1u64)]), Format::Binary),
    );
    write(
        "huge",
        &vec![b' '; lockdown::pair_record::MAX_PAIR_RECORD_LEN + 1],
    );
    write("garbage", b"\x00\x01bplist00\xff\xfe<plist>");
    for (name, data) in nasty_payloads() {
        write(&format!("nasty_{name}"), &data);
    }
}

#[test]
fn a_libimobiledevice_shaped_record_reads() {
    // The layout libimobiledevice's userpref writes: keys sorted, PEM text in <data>.
    let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>DeviceCertificate</key>
	<data>
	LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUMKLS0tLS1FTkQgQ0VSVElG
	SUNBVEUtLS0tLQo=
	</data>
	<key>EscrowBag</key>
	<data>
	AAECAwQFBgc=
	</data>
	<key>HostCertificate</key>
	<data>
	LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUMKLS0tLS1FTkQgQ0VSVElG
	SUNBVEUtLS0tLQo=
	</data>
	<key>HostID</key>
	<string>2F0C1D6E-3B4A-4C5D-8E9F-0A1B2C3D4E5F</string>
	<key>HostPrivateKey</key>
	<data>
	LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFCi0tLS0tRU5EIFJT
	QSBQUklWQVRFIEtFWS0tLS0tCg==
	</data>
	<key>RootCertificate</key>
	<data>
	LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUMKLS0tLS1FTkQgQ0VSVElG
	SUNBVEUtLS0tLQo=
	</data>
	<key>RootPrivateKey</key>
	<data>
	LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFCi0tLS0tRU5EIFJT
	QSBQUklWQVRFIEtFWS0tLS0tCg==
	</data>
	<key>SystemBUID</key>
	<string>6B7C8D9E-0F1A-4B2C-9D3E-4F5A6B7C8D9E</string>
	<key>UDID</key>
	<string>00008101-000A1B2C3D4E5F60</string>
	<key>WiFiMACAddress</key>
	<string>a0:b1:c2:d3:e4:f5</string>
</dict>
</plist>
"#;
    let record = lockdown::PairRecordFile::from_bytes(xml).unwrap();
    assert_eq!(record.host_id, "2F0C1D6E-3B4A-4C5D-8E9F-0A1B2C3D4E5F");
    assert_eq!(record.system_buid, "6B7C8D9E-0F1A-4B2C-9D3E-4F5A6B7C8D9E");
    assert!(record
        .device_certificate
        .starts_with(b"-----BEGIN CERTIFICATE-----\n"));
    assert!(record
        .host_private_key
        .starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(
        record.escrow_bag.as_deref(),
        Some(&[0, 1, 2, 3, 4, 5, 6, 7][..])
    );
    assert_eq!(
        record.wifi_mac_address.as_deref(),
        Some("a0:b1:c2:d3:e4:f5")
    );
    assert_eq!(
        record.extra.get("UDID").and_then(Value::as_string),
        Some("00008101-000A1B2C3D4E5F60")
    );
    let pair = record.to_pair_record();
    assert_eq!(pair.host_id.as_deref(), Some(record.host_id.as_str()));
    assert!(
        pair.to_dictionary().get("HostPrivateKey").is_none(),
        "keys never leave the host"
    );
    lockdown::fuzzing::pair_record(xml);
}
