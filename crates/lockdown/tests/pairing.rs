//! Pairing crypto and the TLS session, end to end in memory: a pair record made for a device
//! key, a fake lockdownd (the crate's `DeviceCodec` + tokio-rustls with `tls::server_config`)
//! on a `tokio::io::duplex`, `StartSession` → TLS → `GetValue` inside.
//!
//! RSA key generation is slow in debug builds, so the keys are made once per test binary.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use lockdown::pairing::{self, PairOutcome};
use lockdown::{tls, Client, DeviceCodec, ErrorKind, PairRecordFile, Reply, Request};
use plist::Value;
use rsa::RsaPrivateKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

struct Keys {
    device: RsaPrivateKey,
    record: PairRecordFile,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand_core::OsRng;
        let started = Instant::now();
        let device = pairing::generate_key(&mut rng).unwrap();
        let public = pairing::public_key_pem(&device.to_public_key()).unwrap();
        let record = pairing::generate_pair_record(
            &public,
            pairing::new_host_id(&mut rng),
            "5F1A2B3C-0000-4000-8000-00000000B01D".into(),
            SystemTime::now(),
            &mut rng,
        )
        .unwrap();
        eprintln!(
            "3 RSA-2048 keys + 3 certificates in {:?}",
            started.elapsed()
        );
        Keys { device, record }
    })
}

fn device_key_der(key: &RsaPrivateKey) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pairing::private_key_pkcs8_der(key).unwrap(),
    ))
}

fn phone_config(record: &PairRecordFile) -> Arc<rustls::ServerConfig> {
    let device_cert =
        tls::certificate_from_pem("DeviceCertificate", &keys().record.device_certificate).unwrap();
    let host_cert = tls::certificate_from_pem("HostCertificate", &record.host_certificate).unwrap();
    tls::server_config(device_cert, device_key_der(&keys().device), vec![host_cert]).unwrap()
}

async fn read_request<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    codec: &mut DeviceCodec,
) -> Option<Request> {
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(env) = codec.poll_request().unwrap() {
            return Some(env.request);
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        codec.receive(&buf[..n]);
    }
}

async fn write_reply<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    codec: &DeviceCodec,
    reply: &Reply,
) {
    let mut out = Vec::new();
    codec.encode_reply(reply, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    stream.flush().await.unwrap();
}

/// A lockdownd that knows one host: answers Pair (first with the dialog pending), StartSession
/// with SSL, then GetValue inside TLS.
async fn fake_phone(mut stream: DuplexStream, trusted: PairRecordFile) {
    let mut codec = DeviceCodec::new();
    let mut dialog_shown = false;
    while let Some(request) = read_request(&mut stream, &mut codec).await {
        let reply = match request {
            Request::GetValue { key, .. } if key.as_deref() == Some("DevicePublicKey") => {
                Reply::GetValue {
                    domain: None,
                    key,
                    value: Some(Value::Data(
                        pairing::public_key_pem(&keys().device.to_public_key()).unwrap(),
                    )),
                }
            }
            Request::Pair(_) if !dialog_shown => {
                dialog_shown = true;
                Reply::error("Pair", ErrorKind::PairingDialogResponsePending)
            }
            Request::Pair(_) => {
                let mut fields = plist::Dictionary::new();
                fields.insert("EscrowBag".into(), Value::Data(vec![0xEB; 32]));
                Reply::Generic {
                    request: Some("Pair".into()),
                    result: None,
                    fields,
                }
            }
            Request::StartSession { host_id, .. } if host_id == trusted.host_id => {
                write_reply(
                    &mut stream,
                    &codec,
                    &Reply::StartSession {
                        session_id: "SESSION".into(),
                        enable_session_ssl: true,
                    },
                )
                .await;
                let acceptor = tokio_rustls::TlsAcceptor::from(phone_config(&trusted));
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut codec = DeviceCodec::new();
                while let Some(request) = read_request(&mut tls, &mut codec).await {
                    let reply = match request {
                        Request::GetValue { key, .. } => Reply::GetValue {
                            domain: None,
                            key,
                            value: Some(Value::from("iPhone14,3")),
                        },
                        other => Reply::ack(other.name()),
                    };
                    write_reply(&mut tls, &codec, &reply).await;
                }
                return;
            }
            Request::StartSession { .. } => Reply::error("StartSession", ErrorKind::InvalidHostID),
            other => Reply::ack(other.name()),
        };
        write_reply(&mut stream, &codec, &reply).await;
    }
}

#[tokio::test]
async fn pair_then_session_over_tls() {
    let record = keys().record.clone();
    let (host, phone) = tokio::io::duplex(64 * 1024);
    let phone = tokio::spawn(fake_phone(phone, record.clone()));
    let mut client = Client::new(host);

    // The key we generated the record for is what the phone reports.
    let pem = client.device_public_key().await.unwrap();
    assert!(pem.starts_with(b"-----BEGIN RSA PUBLIC KEY-----"));

    // First Pair: the dialog is up. A retryable outcome, not an error.
    let outcome = client.pair(&record).await.unwrap();
    assert_eq!(outcome, PairOutcome::TrustDialogPending);
    assert!(outcome.is_retryable());
    // The operator taps Trust; the retry pairs and hands out the escrow bag.
    let outcome = client.pair(&record).await.unwrap();
    let PairOutcome::Paired {
        escrow_bag: Some(bag),
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(bag, vec![0xEB; 32]);

    let started = Instant::now();
    let (session, mut tls) = client.start_tls_session(&record).await.unwrap();
    eprintln!("StartSession + TLS handshake: {:?}", started.elapsed());
    assert_eq!(session.session_id, "SESSION");
    assert!(session.enable_session_ssl);
    let value = tls.get_value(None, Some("ProductType")).await.unwrap();
    assert_eq!(value.as_string(), Some("iPhone14,3"));
    tls.goodbye().await.unwrap();
    drop(tls);
    tokio::time::timeout(Duration::from_secs(10), phone)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_tampered_device_certificate_fails_the_handshake() {
    // The host's record pins a device certificate for another key: the phone's real
    // certificate does not match it.
    let mut rng = rand_core::OsRng;
    let record = keys().record.clone();
    let other = pairing::generate_key(&mut rng).unwrap();
    let other = pairing::generate_pair_record(
        &pairing::public_key_pem(&other.to_public_key()).unwrap(),
        record.host_id.clone(),
        record.system_buid.clone(),
        SystemTime::now(),
        &mut rng,
    )
    .unwrap();
    let mut tampered = record.clone();
    tampered.device_certificate = other.device_certificate;

    let (host, phone) = tokio::io::duplex(64 * 1024);
    let phone = tokio::spawn(fake_phone(phone, record));
    let client = Client::new(host);
    let err = client.start_tls_session(&tampered).await.unwrap_err();
    let lockdown::Error::Tls { source } = &err else {
        panic!("{err:?}")
    };
    let rustls_error = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("{source:?}"));
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = rustls_error
    else {
        panic!("{rustls_error:?}")
    };
    let text = other.to_string();
    assert!(text.contains("not the one in the pair record"), "{text}");
    let _ = tokio::time::timeout(Duration::from_secs(10), phone).await;
}

#[tokio::test]
async fn an_unknown_host_is_refused() {
    let mut record = keys().record.clone();
    let (host, phone) = tokio::io::duplex(64 * 1024);
    let phone = tokio::spawn(fake_phone(phone, record.clone()));
    record.host_id = "00000000-0000-4000-8000-000000000000".into();
    let err = Client::new(host)
        .start_tls_session(&record)
        .await
        .unwrap_err();
    assert_eq!(err.device_kind(), Some(&ErrorKind::InvalidHostID));
    let _ = tokio::time::timeout(Duration::from_secs(10), phone).await;
}

#[test]
fn generated_certificates_have_the_reference_shape() {
    let record = &keys().record;
    for (field, pem) in [
        ("RootCertificate", &record.root_certificate),
        ("HostCertificate", &record.host_certificate),
        ("DeviceCertificate", &record.device_certificate),
    ] {
        let der: CertificateDer<'static> = tls::certificate_from_pem(field, pem).unwrap();
        // webpki parses it as an end-entity certificate (v3, well-formed).
        webpki::EndEntityCert::try_from(&der).unwrap();
    }
    // The device certificate carries the device's key; the host certificate the host's.
    let device =
        tls::certificate_from_pem("DeviceCertificate", &record.device_certificate).unwrap();
    assert_eq!(
        pairing::certificate_public_key(&device),
        Some(keys().device.to_public_key())
    );
    let host = tls::certificate_from_pem("HostCertificate", &record.host_certificate).unwrap();
    assert_ne!(
        pairing::certificate_public_key(&host),
        Some(keys().device.to_public_key())
    );
    assert!(pairing::certificate_public_key(b"not a certificate").is_none());
    // The private keys are PKCS#1 PEM, as libimobiledevice writes them.
    assert!(record
        .host_private_key
        .starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
    tls::private_key_from_pem("HostPrivateKey", &record.host_private_key).unwrap();
    tls::client_config(record).unwrap();
    // The record survives the file format.
    assert_eq!(
        &PairRecordFile::from_bytes(&record.to_xml().unwrap()).unwrap(),
        record
    );
}
