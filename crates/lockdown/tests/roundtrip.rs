//! Property tests: decode(encode(x)) == x for every request and reply shape, in XML and in
//! binary, through the full frame codec.

use lockdown::{
    DaemonType, DeviceCodec, Envelope, ErrorKind, Format, HostCodec, Outcome, PairRecord,
    PairRequest, Reply, Request,
};
use plist::{Dictionary, Value};
use proptest::prelude::*;

/// Text both plist formats carry unchanged (XML cannot hold most control characters).
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._,:/+=-]{0,12}|[\\PC&&[^\\r]]{0,8}"
}

/// Field names guaranteed not to collide with the keys a message types.
fn extra_key() -> impl Strategy<Value = String> {
    "X[a-zA-Z0-9]{0,10}"
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::String),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(Value::Data),
        (-1.0e12f64..1.0e12).prop_map(Value::Real),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((text(), inner), 0..4)
                .prop_map(|pairs| Value::Dictionary(pairs.into_iter().collect())),
        ]
    })
}

fn dict() -> impl Strategy<Value = Dictionary> {
    proptest::collection::vec((text(), value()), 0..4).prop_map(|p| p.into_iter().collect())
}

fn extra_dict() -> impl Strategy<Value = Dictionary> {
    proptest::collection::vec((extra_key(), value()), 0..3).prop_map(|p| p.into_iter().collect())
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn opt_data() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
}

fn pair_record() -> impl Strategy<Value = PairRecord> {
    (
        (opt_data(), opt_data(), opt_data(), opt_data()),
        (opt_text(), opt_text(), opt_text(), opt_data()),
        extra_dict(),
    )
        .prop_map(
            |((dc, hc, rc, pk), (host, buid, mac, bag), extra)| PairRecord {
                device_certificate: dc,
                host_certificate: hc,
                root_certificate: rc,
                device_public_key: pk,
                host_id: host,
                system_buid: buid,
                wifi_mac_address: mac,
                escrow_bag: bag,
                extra,
            },
        )
}

fn pair_request() -> impl Strategy<Value = PairRequest> {
    (
        proptest::option::of(pair_record()),
        opt_text(),
        proptest::option::of(dict()),
    )
        .prop_map(
            |(pair_record, protocol_version, pairing_options)| PairRequest {
                pair_record,
                protocol_version,
                pairing_options,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::QueryType),
        (opt_text(), opt_text()).prop_map(|(domain, key)| Request::GetValue { domain, key }),
        (opt_text(), opt_text(), value()).prop_map(|(domain, key, value)| Request::SetValue {
            domain,
            key,
            value
        }),
        (opt_text(), opt_text()).prop_map(|(domain, key)| Request::RemoveValue { domain, key }),
        (text(), opt_text()).prop_map(|(host_id, system_buid)| Request::StartSession {
            host_id,
            system_buid
        }),
        text().prop_map(|session_id| Request::StopSession { session_id }),
        (text(), opt_data()).prop_map(|(service, escrow_bag)| Request::StartService {
            service,
            escrow_bag
        }),
        Just(Request::EnterRecovery),
        Just(Request::Goodbye),
        pair_request().prop_map(Request::Pair),
        pair_request().prop_map(Request::ValidatePair),
        pair_request().prop_map(Request::Unpair),
        opt_text().prop_map(|query_key| Request::QueryValue { query_key }),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(dict())
        )
            .prop_map(|(restore_protocol_version, restore_options)| {
                Request::StartRestore {
                    restore_protocol_version,
                    restore_options,
                }
            }),
        Just(Request::Reboot),
        ("Z[a-zA-Z]{0,12}", extra_dict())
            .prop_map(|(name, fields)| Request::Other { name, fields }),
    ]
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        (0..ErrorKind::TABLE.len()).prop_map(|i| ErrorKind::TABLE[i].1.clone()),
        "Z[a-zA-Z]{0,12}".prop_map(ErrorKind::Unknown),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let daemon = prop_oneof![
        Just(DaemonType::Lockdown),
        Just(DaemonType::Restored),
        "z\\.[a-z.]{0,12}".prop_map(DaemonType::Other),
    ];
    let outcome = prop_oneof![
        Just(Outcome::Success),
        Just(Outcome::Failure),
        "Z[a-z]{0,6}".prop_map(Outcome::Other),
    ];
    prop_oneof![
        (daemon, proptest::option::of(any::<u64>())).prop_map(
            |(daemon, restore_protocol_version)| Reply::QueryType {
                daemon,
                restore_protocol_version
            }
        ),
        (opt_text(), opt_text(), proptest::option::of(value()))
            .prop_map(|(domain, key, value)| Reply::GetValue { domain, key, value }),
        (text(), any::<bool>()).prop_map(|(session_id, enable_session_ssl)| {
            Reply::StartSession {
                session_id,
                enable_session_ssl,
            }
        }),
        (opt_text(), any::<u16>(), any::<bool>()).prop_map(
            |(service, port, enable_service_ssl)| Reply::StartService {
                service,
                port,
                enable_service_ssl
            }
        ),
        (
            proptest::option::of("[A-Z][a-zA-Z]{0,12}"),
            error_kind(),
            extra_dict()
        )
            .prop_map(|(request, error, fields)| Reply::Error {
                request,
                error,
                fields
            }),
        // Generic replies echo a name this crate does not type (typed names decode typed).
        (
            proptest::option::of(prop_oneof![
                Just("SetValue".to_owned()),
                Just("Goodbye".to_owned()),
                Just("EnterRecovery".to_owned()),
                Just("Pair".to_owned()),
                "Z[a-zA-Z]{0,12}"
            ]),
            proptest::option::of(outcome),
            extra_dict()
        )
            .prop_map(|(request, result, fields)| Reply::Generic {
                request,
                result,
                fields
            }),
    ]
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::Xml), Just(Format::Binary)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trips(
        request in request(),
        label in opt_text(),
        format in format(),
        chunk in 1usize..64,
    ) {
        let mut host = HostCodec::new().with_format(format);
        if let Some(label) = &label {
            host = host.with_label(label.clone());
        }
        let mut wire = Vec::new();
        host.encode_request(&request, &mut wire).unwrap();
        let mut device = DeviceCodec::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            device.receive(piece);
            while let Some(envelope) = device.poll_request().unwrap() {
                got.push(envelope);
            }
        }
        prop_assert_eq!(got, vec![Envelope::new(label, request)]);
        prop_assert_eq!(device.buffered(), 0);
    }

    #[test]
    fn reply_round_trips(reply in reply(), format in format(), chunk in 1usize..64) {
        let device = DeviceCodec::new().with_format(format);
        let mut wire = Vec::new();
        device.encode_reply(&reply, &mut wire).unwrap();
        let mut host = HostCodec::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            host.receive(piece);
            while let Some(reply) = host.poll_reply().unwrap() {
                got.push(reply);
            }
        }
        prop_assert_eq!(got, vec![reply]);
    }

    #[test]
    fn envelope_dictionary_round_trips(request in request(), label in opt_text()) {
        let envelope = Envelope::new(label, request);
        prop_assert_eq!(Envelope::from_dictionary(envelope.to_dictionary()).unwrap(), envelope);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        lockdown::fuzzing::frame_decoder(&data);
        lockdown::fuzzing::request(&data);
        lockdown::fuzzing::reply(&data);
    }
}
