//! Whole conversations: the async `Client` against a tiny device task built on `DeviceCodec`,
//! over `tokio::io::duplex`.

use lockdown::{
    keys, Client, CodecError, DaemonType, DeviceCodec, Error, ErrorKind, Format, HostCodec,
    QueryType, Reply, Request, Service, Session,
};
use plist::{Dictionary, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

/// What the fake device does with one request.
enum Act {
    Reply(Reply),
    /// Raw bytes, then keep going.
    Raw(Vec<u8>),
    /// Raw bytes, then hang up.
    RawThenClose(Vec<u8>),
}

/// A device that answers each request with `handler`; returns the requests it saw.
fn device<F>(mut stream: DuplexStream, format: Format, mut handler: F) -> JoinHandle<Vec<Request>>
where
    F: FnMut(&Request) -> Act + Send + 'static,
{
    tokio::spawn(async move {
        let mut codec = DeviceCodec::new().with_format(format);
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                codec.finish().unwrap();
                return seen;
            }
            codec.receive(&buf[..n]);
            while let Some(envelope) = codec.poll_request().unwrap() {
                assert_eq!(envelope.label.as_deref(), Some("restation-test"));
                let act = handler(&envelope.request);
                seen.push(envelope.request);
                match act {
                    Act::Reply(reply) => {
                        let mut out = Vec::new();
                        codec.encode_reply(&reply, &mut out).unwrap();
                        stream.write_all(&out).await.unwrap();
                    }
                    Act::Raw(bytes) => stream.write_all(&bytes).await.unwrap(),
                    Act::RawThenClose(bytes) => {
                        stream.write_all(&bytes).await.unwrap();
                        return seen;
                    }
                }
            }
        }
    })
}

/// A phone in normal mode with a few identity values; `Error` for anything it does not know.
fn normal_phone(request: &Request) -> Act {
    Act::Reply(match request {
        Request::QueryType => Reply::QueryType {
            daemon: DaemonType::Lockdown,
            restore_protocol_version: None,
        },
        Request::GetValue { domain, key } => {
            let value = match (domain.as_deref(), key.as_deref()) {
                (None, Some(keys::UNIQUE_CHIP_ID)) => Value::from(0x001A_2B3C_4D5E_6F70u64),
                (None, Some(keys::PRODUCT_TYPE)) => Value::from("iPhone10,3"),
                (None, Some(keys::PRODUCT_VERSION)) => Value::from("15.4.1"),
                (None, Some(keys::BUILD_VERSION)) => Value::from("19E258"),
                (None, Some(keys::CHIP_ID)) => Value::from(0x8015u64),
                (None, None) => {
                    let mut all = Dictionary::new();
                    all.insert(keys::PRODUCT_TYPE.into(), "iPhone10,3".into());
                    all.insert(keys::ACTIVATION_STATE.into(), "Activated".into());
                    Value::Dictionary(all)
                }
                _ => return Act::Reply(Reply::error("GetValue", ErrorKind::MissingValue)),
            };
            Reply::GetValue {
                domain: domain.clone(),
                key: key.clone(),
                value: Some(value),
            }
        }
        Request::StartSession { host_id, .. } if host_id == "HOST-OK" => Reply::StartSession {
            session_id: "SESSION-1".into(),
            enable_session_ssl: true,
        },
        Request::StartSession { .. } => Reply::error("StartSession", ErrorKind::InvalidHostID),
        Request::StartService { service, .. }
            if service == "com.apple.mobile.diagnostics_relay" =>
        {
            Reply::StartService {
                service: Some(service.clone()),
                port: 49_152,
                enable_service_ssl: true,
            }
        }
        Request::StartService { .. } => Reply::error("StartService", ErrorKind::PasswordProtected),
        other => Reply::ack(other.name()),
    })
}

fn client(stream: DuplexStream) -> Client<DuplexStream> {
    Client::with_codec(stream, HostCodec::new().with_label("restation-test"))
}

#[tokio::test]
async fn identify_a_phone_in_normal_mode() {
    for format in [Format::Xml, Format::Binary] {
        let (host_end, device_end) = tokio::io::duplex(64);
        let phone = device(device_end, format, normal_phone);
        let mut lockdown = client(host_end);

        assert_eq!(
            lockdown.query_type().await.unwrap(),
            QueryType {
                daemon: DaemonType::Lockdown,
                restore_protocol_version: None
            }
        );
        let ecid = lockdown
            .get_value(None, Some(keys::UNIQUE_CHIP_ID))
            .await
            .unwrap();
        assert_eq!(ecid.as_unsigned_integer(), Some(0x001A_2B3C_4D5E_6F70));
        for (key, want) in [
            (keys::PRODUCT_TYPE, "iPhone10,3"),
            (keys::PRODUCT_VERSION, "15.4.1"),
            (keys::BUILD_VERSION, "19E258"),
        ] {
            let value = lockdown.get_value(None, Some(key)).await.unwrap();
            assert_eq!(value.as_string(), Some(want), "{key}");
        }
        let chip = lockdown.get_value(None, Some(keys::CHIP_ID)).await.unwrap();
        assert_eq!(chip.as_unsigned_integer(), Some(0x8015));
        let all = lockdown.get_value(None, None).await.unwrap();
        assert_eq!(
            all.as_dictionary()
                .and_then(|d| d.get(keys::ACTIVATION_STATE))
                .and_then(Value::as_string),
            Some("Activated")
        );
        let err = lockdown
            .get_value(Some("com.apple.disk_usage"), Some("Nope"))
            .await
            .unwrap_err();
        assert_eq!(err.device_kind(), Some(&ErrorKind::MissingValue));

        lockdown.goodbye().await.unwrap();
        drop(lockdown);
        let seen = phone.await.unwrap();
        assert_eq!(seen.len(), 9);
        assert_eq!(seen.last(), Some(&Request::Goodbye));
    }
}

#[tokio::test]
async fn session_service_and_recovery() {
    let (host_end, device_end) = tokio::io::duplex(256);
    let phone = device(device_end, Format::Xml, normal_phone);
    let mut lockdown = client(host_end);

    let session = lockdown
        .start_session("HOST-OK", "SYSTEM-BUID")
        .await
        .unwrap();
    assert_eq!(
        session,
        Session {
            session_id: "SESSION-1".into(),
            enable_session_ssl: true
        }
    );
    let service = lockdown
        .start_service("com.apple.mobile.diagnostics_relay")
        .await
        .unwrap();
    assert_eq!(
        service,
        Service {
            service: "com.apple.mobile.diagnostics_relay".into(),
            port: 49_152,
            enable_service_ssl: true
        }
    );
    lockdown
        .set_value(
            Some("com.apple.mobile.restation"),
            Some("Bench"),
            "A3".into(),
        )
        .await
        .unwrap();
    lockdown.remove_value(None, Some("Bench")).await.unwrap();
    lockdown.stop_session("SESSION-1").await.unwrap();
    lockdown.enter_recovery().await.unwrap();

    // The TLS seam: the stream comes back with nothing left over.
    let (stream, leftover) = lockdown.into_parts();
    assert!(leftover.is_empty());
    drop(stream);

    let seen = phone.await.unwrap();
    assert_eq!(
        seen[0],
        Request::StartSession {
            host_id: "HOST-OK".into(),
            system_buid: Some("SYSTEM-BUID".into())
        }
    );
    assert!(matches!(&seen[2], Request::SetValue { value: Value::String(s), .. } if s == "A3"));
    assert_eq!(seen.last(), Some(&Request::EnterRecovery));
}

#[tokio::test]
async fn device_errors_are_typed() {
    let (host_end, device_end) = tokio::io::duplex(64);
    let _phone = device(device_end, Format::Binary, normal_phone);
    let mut lockdown = client(host_end);

    let err = lockdown
        .start_session("HOST-UNKNOWN", "SYSTEM-BUID")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Device { request, kind: ErrorKind::InvalidHostID } if request == "StartSession"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "lockdown StartSession failed on the device: InvalidHostID"
    );

    let err = lockdown.start_service("com.apple.afc").await.unwrap_err();
    assert!(
        matches!(&err, Error::Device { request, kind: ErrorKind::PasswordProtected } if request == "StartService"),
        "{err}"
    );
    assert!(err.device_kind().is_some_and(ErrorKind::needs_user));

    // The connection is still usable after a refusal.
    lockdown.query_type().await.unwrap();
}

#[tokio::test]
async fn unknown_error_string_is_kept() {
    let (host_end, device_end) = tokio::io::duplex(64);
    let _phone = device(device_end, Format::Xml, |_| {
        Act::Reply(Reply::error(
            "EnterRecovery",
            ErrorKind::from_wire("BrandNewError"),
        ))
    });
    let mut lockdown = client(host_end);
    let err = lockdown.enter_recovery().await.unwrap_err();
    assert_eq!(
        err.device_kind(),
        Some(&ErrorKind::Unknown("BrandNewError".into()))
    );
}

#[tokio::test]
async fn wrong_request_echo_is_a_mismatch() {
    let (host_end, device_end) = tokio::io::duplex(64);
    let _phone = device(device_end, Format::Xml, |_| {
        Act::Reply(Reply::GetValue {
            domain: None,
            key: Some("ProductType".into()),
            value: Some("iPhone10,3".into()),
        })
    });
    let mut lockdown = client(host_end);
    let err = lockdown.start_service("com.apple.afc").await.unwrap_err();
    assert!(
        matches!(&err, Error::Mismatch { expected, found: Some(found) } if expected == "StartService" && found == "GetValue"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_echo_is_a_mismatch_except_for_query_type() {
    let (host_end, device_end) = tokio::io::duplex(64);
    let mut restored_query_type = Dictionary::new();
    restored_query_type.insert("Type".into(), DaemonType::RESTORED.into());
    restored_query_type.insert("RestoreProtocolVersion".into(), Value::from(15u64));
    let mut no_echo = Dictionary::new();
    no_echo.insert("Result".into(), "Success".into());
    let mut frames = vec![
        frame(&Value::Dictionary(restored_query_type)),
        frame(&Value::Dictionary(no_echo)),
    ]
    .into_iter();
    let _phone = device(device_end, Format::Xml, move |_| {
        Act::Raw(frames.next().unwrap())
    });
    let mut lockdown = client(host_end);
    assert_eq!(
        lockdown.query_type().await.unwrap(),
        QueryType {
            daemon: DaemonType::Restored,
            restore_protocol_version: Some(15)
        }
    );
    let err = lockdown.goodbye().await.unwrap_err();
    assert!(matches!(&err, Error::Mismatch { found: None, .. }), "{err}");
}

fn frame(value: &Value) -> Vec<u8> {
    lockdown::encode_frame(value, Format::Xml, "test").unwrap()
}

#[tokio::test]
async fn peer_closing_mid_frame() {
    let (host_end, device_end) = tokio::io::duplex(64);
    let whole = {
        let codec = DeviceCodec::new();
        let mut out = Vec::new();
        codec
            .encode_reply(
                &Reply::QueryType {
                    daemon: DaemonType::Lockdown,
                    restore_protocol_version: None,
                },
                &mut out,
            )
            .unwrap();
        out
    };
    let half = whole[..whole.len() / 2].to_vec();
    let half_len = half.len();
    let _phone = device(device_end, Format::Xml, move |_| {
        Act::RawThenClose(half.clone())
    });
    let mut lockdown = client(host_end);
    let err = lockdown.query_type().await.unwrap_err();
    assert!(
        matches!(&err, Error::Closed { request, buffered } if request == "QueryType" && *buffered == half_len),
        "{err}"
    );
}

#[tokio::test]
async fn peer_closing_before_replying() {
    let (host_end, device_end) = tokio::io::duplex(64);
    let _phone = device(device_end, Format::Xml, |_| Act::RawThenClose(Vec::new()));
    let mut lockdown = client(host_end);
    let err = lockdown.enter_recovery().await.unwrap_err();
    assert!(
        matches!(&err, Error::Closed { request, buffered: 0 } if request == "EnterRecovery"),
        "{err}"
    );
}

#[tokio::test]
async fn hostile_replies_are_typed_errors() {
    type Check = fn(&CodecError) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (vec![0xff, 0xff, 0xff, 0xff], |e| {
            matches!(
                e,
                CodecError::FrameTooLong {
                    len: 0xffff_ffff,
                    ..
                }
            )
        }),
        (
            {
                let mut f = vec![0, 0, 0, 9];
                f.extend_from_slice(b"\xff\xfe<plist>");
                f
            },
            |e| matches!(e, CodecError::InvalidPlist { .. }),
        ),
        (frame(&Value::Array(vec![Value::from(1u64)])), |e| {
            matches!(e, CodecError::NotADictionary { found: "array" })
        }),
        (
            {
                let mut d = Dictionary::new();
                d.insert("Request".into(), Value::from(5u64));
                frame(&Value::Dictionary(d))
            },
            |e| {
                matches!(
                    e,
                    CodecError::WrongType {
                        field: "Request",
                        ..
                    }
                )
            },
        ),
        (
            {
                let mut d = Dictionary::new();
                d.insert("Request".into(), "StartService".into());
                d.insert("Port".into(), "not a port".into());
                frame(&Value::Dictionary(d))
            },
            |e| {
                matches!(
                    e,
                    CodecError::WrongType {
                        field: "Port",
                        expected: "integer",
                        found: "string",
                        ..
                    }
                )
            },
        ),
    ];
    for (bytes, check) in cases {
        let (host_end, device_end) = tokio::io::duplex(64);
        let _phone = device(device_end, Format::Xml, move |_| Act::Raw(bytes.clone()));
        let mut lockdown = client(host_end);
        match lockdown.start_service("com.apple.afc").await {
            Err(Error::Codec { request, source }) => {
                assert_eq!(request, "StartService");
                assert!(check(&source), "{source:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn restored_conversation() {
    let (host_end, device_end) = tokio::io::duplex(64);
    let restored = device(device_end, Format::Xml, |request| {
        Act::Reply(match request {
            Request::QueryType => Reply::QueryType {
                daemon: DaemonType::Restored,
                restore_protocol_version: Some(15),
            },
            Request::QueryValue { query_key } => {
                let mut info = Dictionary::new();
                info.insert(keys::UNIQUE_CHIP_ID.into(), Value::from(42u64));
                let mut fields = Dictionary::new();
                fields.insert(
                    query_key.clone().unwrap_or_default(),
                    Value::Dictionary(info),
                );
                Reply::Generic {
                    request: Some("QueryValue".into()),
                    result: None,
                    fields,
                }
            }
            other => Reply::ack(other.name()),
        })
    });
    let mut host = client(host_end);
    let kind = host.query_type().await.unwrap();
    assert_eq!(kind.daemon, DaemonType::Restored);
    let reply = host
        .request(Request::QueryValue {
            query_key: Some("HardwareInfo".into()),
        })
        .await
        .unwrap();
    let Reply::Generic { fields, .. } = reply else {
        panic!("{reply:?}")
    };
    let ecid = fields
        .get("HardwareInfo")
        .and_then(Value::as_dictionary)
        .and_then(|d| d.get(keys::UNIQUE_CHIP_ID))
        .and_then(Value::as_unsigned_integer);
    assert_eq!(ecid, Some(42));
    host.send(&Request::StartRestore {
        restore_protocol_version: kind.restore_protocol_version,
        restore_options: Some(Dictionary::new()),
    })
    .await
    .unwrap();
    // StartRestore gets no lockdown-style reply; the next frame is the restore loop's, read raw.
    let next = host.receive().await.unwrap();
    assert_eq!(next.request(), Some("StartRestore"));
    drop(host);
    let seen = restored.await.unwrap();
    assert_eq!(seen.len(), 3);
}
