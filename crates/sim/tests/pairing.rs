//! Pairing and the TLS session with the virtual phone, through the hub and usbmux: the host side
//! is `lockdown::pairing` + `lockdown::tls` (rustls' sans-IO client driven over the test mux).
//!
//! The phone of profile seed 7 has one device key (made once per process); the host's pair
//! record for it is made once per test binary.

mod common;

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use common::host::{device_error, HostError, Lockdown, MuxDriver};
use common::*;
use lockdown::pairing::{self, PairOutcome};
use lockdown::{tls, ErrorKind as LdError, HostCodec, PairRecordFile, Reply, Request};
use plist::Value;
use sim::clock::Clock;
use sim::phone::{Mode, Phone, RecoveryStage};
use sim::profile::{Pairing, Profile, Trust};
use usb::{ErrorKind, HotplugEvent};
use usbmux::ConnId;

const SEED: u64 = 7;

fn profile(trust: Trust, pairing: Pairing) -> Profile {
    let mut profile = Profile::for_product_type("iPhone14,3", SEED).unwrap();
    profile.trust = trust;
    profile.pairing = pairing;
    profile
}

fn bench(trust: Trust, pairing: Pairing) -> Bench {
    let bench = Bench::empty(2);
    bench
        .hub
        .plug(
            0,
            Phone::new(
                profile(trust, pairing),
                options(Mode::Normal),
                bench.clock.now(),
            ),
        )
        .unwrap();
    bench
}

/// The host's record for the phone of [`SEED`], made from the `DevicePublicKey` it reports.
fn record(ld: &mut Lockdown, mux: &mut MuxDriver<'_>) -> PairRecordFile {
    static RECORD: OnceLock<PairRecordFile> = OnceLock::new();
    let Value::Data(pem) = ld.get_value(mux, None, Some("DevicePublicKey")).unwrap() else {
        panic!("DevicePublicKey is not data")
    };
    assert!(pem.starts_with(b"-----BEGIN RSA PUBLIC KEY-----"));
    RECORD
        .get_or_init(|| {
            let mut rng = rand_core::OsRng;
            pairing::generate_pair_record(
                &pem,
                pairing::new_host_id(&mut rng),
                "0A1B2C3D-0000-4000-8000-00000000B01D".into(),
                SystemTime::now(),
                &mut rng,
            )
            .unwrap()
        })
        .clone()
}

fn pair(ld: &mut Lockdown, mux: &mut MuxDriver<'_>, record: &PairRecordFile) -> PairOutcome {
    let request = pairing::pair_request(record);
    let mut wire = Vec::new();
    ld.codec.encode_request(&request, &mut wire).unwrap();
    mux.send(ld.conn, &wire).unwrap();
    loop {
        if let Some(reply) = ld.codec.poll_reply().unwrap() {
            return pairing::pair_outcome("Pair", reply).unwrap();
        }
        let bytes = mux.recv(ld.conn).unwrap();
        ld.codec.receive(&bytes);
    }
}

/// Lockdown inside TLS on one mux connection: rustls' client connection, sans-IO.
struct TlsLockdown {
    conn: ConnId,
    codec: HostCodec,
    tls: rustls::ClientConnection,
}

#[derive(Debug)]
enum TlsFailure {
    Tls(rustls::Error),
    Mux(HostError),
}

impl TlsLockdown {
    /// StartSession has answered EnableSessionSSL: run the handshake.
    fn handshake(
        ld: Lockdown,
        mux: &mut MuxDriver<'_>,
        record: &PairRecordFile,
    ) -> Result<TlsLockdown, TlsFailure> {
        let config = tls::client_config(record).unwrap();
        let tls = rustls::ClientConnection::new(config, tls::server_name()).unwrap();
        let mut s = TlsLockdown {
            conn: ld.conn,
            codec: ld.codec,
            tls,
        };
        loop {
            s.flush(mux)?;
            if !s.tls.is_handshaking() {
                return Ok(s);
            }
            s.pump(mux)?;
        }
    }

    fn flush(&mut self, mux: &mut MuxDriver<'_>) -> Result<(), TlsFailure> {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        if !out.is_empty() {
            mux.send(self.conn, &out).map_err(TlsFailure::Mux)?;
        }
        Ok(())
    }

    fn pump(&mut self, mux: &mut MuxDriver<'_>) -> Result<(), TlsFailure> {
        let bytes = mux.recv(self.conn).map_err(TlsFailure::Mux)?;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            self.tls.read_tls(&mut rest).unwrap();
            if let Err(e) = self.tls.process_new_packets() {
                let _ = self.flush(mux);
                return Err(TlsFailure::Tls(e));
            }
        }
        let mut plain = Vec::new();
        match self.tls.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        self.codec.receive(&plain);
        Ok(())
    }

    fn request(&mut self, mux: &mut MuxDriver<'_>, request: Request) -> Result<Reply, HostError> {
        let name = request.name().to_string();
        let mut wire = Vec::new();
        self.codec.encode_request(&request, &mut wire)?;
        self.tls.writer().write_all(&wire).unwrap();
        self.flush(mux).map_err(|e| match e {
            TlsFailure::Mux(e) => e,
            TlsFailure::Tls(e) => HostError::Protocol(e.to_string()),
        })?;
        loop {
            if let Some(reply) = self.codec.poll_reply()? {
                return lockdown::check_reply(&name, reply).map_err(HostError::Lockdown);
            }
            self.pump(mux).map_err(|e| match e {
                TlsFailure::Mux(e) => e,
                TlsFailure::Tls(e) => HostError::Protocol(e.to_string()),
            })?;
        }
    }
}

fn start_session(ld: &mut Lockdown, mux: &mut MuxDriver<'_>, record: &PairRecordFile) -> bool {
    match ld
        .request(
            mux,
            Request::StartSession {
                host_id: record.host_id.clone(),
                system_buid: Some(record.system_buid.clone()),
            },
        )
        .unwrap()
    {
        Reply::StartSession {
            enable_session_ssl, ..
        } => enable_session_ssl,
        other => panic!("{other:?}"),
    }
}

#[test]
fn trust_dialog_then_pair_then_tls_then_enter_recovery() {
    let bench = bench(Trust::DialogPending, Pairing::Required);
    bench.drain();
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    let record = record(&mut ld, &mut mux);

    // A real phone: no EnterRecovery outside a TLS session.
    let err = ld.request(&mut mux, Request::EnterRecovery).unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::SessionInactive));

    // The dialog shows: a retryable outcome for the operator.
    let outcome = pair(&mut ld, &mut mux, &record);
    assert_eq!(outcome, PairOutcome::TrustDialogPending);
    assert_eq!(outcome.operator_message(), Some("tap Trust on the phone"));
    assert_eq!(
        pair(&mut ld, &mut mux, &record),
        PairOutcome::TrustDialogPending
    );
    // The simulated user taps Trust.
    bench.hub.with_phone(0, sim::normal::tap_trust).unwrap();
    let PairOutcome::Paired {
        escrow_bag: Some(bag),
    } = pair(&mut ld, &mut mux, &record)
    else {
        panic!("no escrow bag")
    };
    assert_eq!(bag.len(), 64);
    let mut saved = record.clone();
    saved.escrow_bag = Some(bag);
    let back = PairRecordFile::from_bytes(&saved.to_xml().unwrap()).unwrap();
    assert_eq!(back, saved);
    let validated = {
        let request = pairing::validate_pair_request(&saved);
        ld.request(&mut mux, request)
    };
    assert!(validated.is_ok(), "{validated:?}");

    // StartSession → TLS on the same connection.
    assert!(start_session(&mut ld, &mut mux, &saved));
    let started = Instant::now();
    let mut tls = TlsLockdown::handshake(ld, &mut mux, &saved).unwrap();
    eprintln!(
        "TLS handshake through the virtual hub: {:?} ({:?})",
        started.elapsed(),
        tls.tls.protocol_version()
    );
    assert_eq!(
        tls.tls.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let reply = tls
        .request(
            &mut mux,
            Request::GetValue {
                domain: None,
                key: Some("ProductType".into()),
            },
        )
        .unwrap();
    assert!(
        matches!(&reply, Reply::GetValue { value: Some(v), .. } if v.as_string() == Some("iPhone14,3")),
        "{reply:?}"
    );

    // EnterRecovery inside the session: the phone leaves and comes back in recovery.
    tls.request(&mut mux, Request::EnterRecovery).unwrap();
    let mut gone = None;
    for _ in 0..10_000 {
        if let Err(e) = mux.step() {
            gone = Some(e);
            break;
        }
    }
    assert_eq!(gone.and_then(|e| e.usb_kind()), Some(ErrorKind::NoDevice));
    drop(mux);
    bench.hub.run_for(Duration::from_secs(30));
    let events = bench.drain();
    assert!(
        matches!(events.last(), Some(HotplugEvent::Arrived { device }) if device.product_id() == 0x1281),
        "{events:?}"
    );
    assert_eq!(
        bench.hub.with_phone(0, |p| p.mode()),
        Some(Mode::Recovery(RecoveryStage::Iboot))
    );
    // The pairing survives the reboot.
    let paired = bench
        .hub
        .with_phone(0, |p| {
            p.core().lockdown.pairings.contains_key(&saved.host_id)
        })
        .unwrap();
    assert!(paired);
}

#[test]
fn an_unknown_host_id_is_refused() {
    let bench = bench(Trust::Trusted, Pairing::Required);
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    let record = record(&mut ld, &mut mux);
    // Never paired with this phone.
    let err = ld
        .request(
            &mut mux,
            Request::StartSession {
                host_id: record.host_id.clone(),
                system_buid: Some(record.system_buid.clone()),
            },
        )
        .unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::InvalidHostID));
    let err = ld
        .request(&mut mux, pairing::validate_pair_request(&record))
        .unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::InvalidHostID));
    // Pair without a record, or with a device certificate for another key, is refused.
    let err = ld
        .request(&mut mux, Request::Pair(Default::default()))
        .unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::MissingPairRecord));
    let mut wrong = record.clone();
    wrong.device_certificate = record.host_certificate.clone();
    let err = ld
        .request(&mut mux, pairing::pair_request(&wrong))
        .unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::InvalidPairRecord));
}

/// Flips one base64 character in the body of a PEM certificate: same length, other bytes.
fn tamper(pem: &[u8]) -> Vec<u8> {
    let mut out = pem.to_vec();
    let end = out
        .windows(5)
        .rposition(|w| w == b"-----")
        .and_then(|p| out[..p].windows(5).rposition(|w| w == b"-----"))
        .unwrap();
    // A character well inside the last body line (the signature).
    let at = out[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|nl| out[..nl].iter().rposition(|&b| b == b'\n').unwrap() + 5)
        .unwrap();
    out[at] = if out[at] == b'A' { b'B' } else { b'A' };
    out
}

#[test]
fn a_tampered_device_certificate_fails_verification_and_a_wrong_client_is_dropped() {
    let bench = bench(Trust::Trusted, Pairing::Required);
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    let record = record(&mut ld, &mut mux);
    assert!(matches!(
        pair(&mut ld, &mut mux, &record),
        PairOutcome::Paired { .. }
    ));

    // The host's copy of the device certificate was altered: the phone's does not match it.
    let mut tampered = record.clone();
    tampered.device_certificate = tamper(&record.device_certificate);
    assert_ne!(tampered.device_certificate, record.device_certificate);
    assert!(start_session(&mut ld, &mut mux, &tampered));
    let Err(TlsFailure::Tls(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
        why,
    )))) = TlsLockdown::handshake(ld, &mut mux, &tampered)
    else {
        panic!("the tampered certificate was accepted")
    };
    assert!(why.to_string().contains("device certificate"), "{why}");

    // libimobiledevice presents its root certificate and key instead of the host's: accepted.
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    let mut as_root = record.clone();
    as_root.host_certificate = record.root_certificate.clone();
    as_root.host_private_key = record.root_private_key.clone();
    assert!(start_session(&mut ld, &mut mux, &as_root));
    let mut tls = TlsLockdown::handshake(ld, &mut mux, &as_root).unwrap();
    tls.request(&mut mux, Request::Goodbye).unwrap();

    // A host presenting a certificate of another pairing (same HostID) is dropped.
    let mut rng = rand_core::OsRng;
    let device_pem = {
        let mut ld = Lockdown::connect(&mut mux).unwrap();
        match ld
            .get_value(&mut mux, None, Some("DevicePublicKey"))
            .unwrap()
        {
            Value::Data(pem) => pem,
            other => panic!("{other:?}"),
        }
    };
    let other = pairing::generate_pair_record(
        &device_pem,
        record.host_id.clone(),
        record.system_buid.clone(),
        SystemTime::now(),
        &mut rng,
    )
    .unwrap();
    let mut impostor = record.clone();
    impostor.host_certificate = other.host_certificate;
    impostor.host_private_key = other.host_private_key;
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    assert!(start_session(&mut ld, &mut mux, &impostor));
    let failed = TlsLockdown::handshake(ld, &mut mux, &impostor);
    assert!(failed.is_err(), "the phone accepted a foreign client");

    // The genuine record still works on a new connection.
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    assert!(start_session(&mut ld, &mut mux, &record));
    let mut tls = TlsLockdown::handshake(ld, &mut mux, &record).unwrap();
    tls.request(&mut mux, Request::Goodbye).unwrap();
}

#[test]
fn a_lenient_phone_still_serves_unpaired_hosts_in_plaintext() {
    let bench = bench(Trust::Trusted, Pairing::Lenient);
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    let reply = ld
        .request(
            &mut mux,
            Request::StartSession {
                host_id: "NOT-PAIRED".into(),
                system_buid: None,
            },
        )
        .unwrap();
    assert!(matches!(
        reply,
        Reply::StartSession {
            enable_session_ssl: false,
            ..
        }
    ));
    ld.get_value(&mut mux, None, Some("ProductType")).unwrap();
}
