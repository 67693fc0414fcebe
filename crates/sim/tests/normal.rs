//! Host ↔ virtual phone in normal mode: usbmux through the hub, lockdownd on 62078 with
//! `lockdown`'s host codec, EnterRecovery → recovery on the same port, and the normal-mode
//! faults.

mod common;

use std::time::Duration;

use common::host::{device_error, enter_recovery, identify, Lockdown, MuxDriver};
use common::*;
use irecv::serial::SerialInfo;
use lockdown::{ErrorKind as LdError, Reply, Request};
use plist::Value;
use sim::clock::Clock;
use sim::phone::{Mode, Phone, RecoveryStage};
use sim::profile::{Profile, Trust};
use usb::{ErrorKind, HotplugEvent, Speed, UsbBackend};

const NORMAL: Mode = Mode::Normal;

#[test]
fn query_type_and_get_value_through_usbmux() {
    // A plain session of an unpaired host below: a lenient phone.
    let bench = Bench::lenient("iPhone14,3", 3, options(NORMAL));
    let profile = bench.hub.with_phone(0, |p| p.profile().clone()).unwrap();
    let mut dev = bench.open(0);
    assert_eq!(dev.product_id(), 0x12A8);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    assert!(matches!(
        ld.request(&mut mux, Request::QueryType).unwrap(),
        Reply::QueryType {
            daemon: lockdown::DaemonType::Lockdown,
            restore_protocol_version: None
        }
    ));
    let ecid = ld.get_value(&mut mux, None, Some("UniqueChipID")).unwrap();
    assert_eq!(ecid.as_unsigned_integer(), Some(profile.ecid));
    let all = ld.get_value(&mut mux, None, None).unwrap();
    let all = all.as_dictionary().unwrap();
    for key in lockdown::keys::IDENTITY {
        assert!(all.contains_key(key), "whole domain lacks {key}");
    }
    assert_eq!(
        all.get("ProductType").and_then(Value::as_string),
        Some("iPhone14,3")
    );
    assert_eq!(
        all.get("HardwareModel").and_then(Value::as_string),
        Some("D64AP")
    );
    assert_eq!(
        all.get("ChipID").and_then(Value::as_unsigned_integer),
        Some(0x8110)
    );
    let err = ld.get_value(&mut mux, None, Some("NoSuchKey")).unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::MissingValue));
    let battery = ld
        .get_value(&mut mux, Some("com.apple.mobile.battery"), None)
        .unwrap();
    assert!(battery
        .as_dictionary()
        .unwrap()
        .contains_key("BatteryCurrentCapacity"));

    // Services: none offered yet, refused with a typed error.
    let err = ld
        .request(
            &mut mux,
            Request::StartService {
                service: "com.apple.mobile.diagnostics_relay".into(),
                escrow_bag: None,
            },
        )
        .unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::InvalidService));

    // SetValue needs a session; global identity keys are read-only; DeviceName is not.
    let set = |name: &str| Request::SetValue {
        domain: None,
        key: Some(name.into()),
        value: Value::from("Bench 7"),
    };
    let err = ld.request(&mut mux, set("DeviceName")).unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::SessionInactive));
    let session = match ld
        .request(
            &mut mux,
            Request::StartSession {
                host_id: "HOST-1".into(),
                system_buid: Some("BUID".into()),
            },
        )
        .unwrap()
    {
        Reply::StartSession {
            session_id,
            enable_session_ssl,
        } => {
            assert!(!enable_session_ssl, "no TLS yet");
            session_id
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(session.len(), 36);
    ld.request(&mut mux, set("DeviceName")).unwrap();
    let err = ld.request(&mut mux, set("ProductType")).unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::ImmutableValue));
    assert_eq!(
        ld.get_value(&mut mux, None, Some("DeviceName"))
            .unwrap()
            .as_string(),
        Some("Bench 7")
    );
    ld.request(
        &mut mux,
        Request::SetValue {
            domain: Some("com.example.bench".into()),
            key: Some("Slot".into()),
            value: Value::from(3u64),
        },
    )
    .unwrap();
    ld.request(
        &mut mux,
        Request::RemoveValue {
            domain: Some("com.example.bench".into()),
            key: Some("Slot".into()),
        },
    )
    .unwrap();
    let err = ld
        .request(
            &mut mux,
            Request::StopSession {
                session_id: "wrong".into(),
            },
        )
        .unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::InvalidSessionID));
    ld.request(
        &mut mux,
        Request::StopSession {
            session_id: session.clone(),
        },
    )
    .unwrap();
    ld.request(&mut mux, Request::Goodbye).unwrap();
    // The new name survives the connection (and lives in the phone).
    drop(mux);
    let name = bench
        .hub
        .with_phone(0, |p| p.profile().device_name.clone())
        .unwrap();
    assert_eq!(name, "Bench 7");
}

#[test]
fn enter_recovery_leaves_and_comes_back_in_recovery_on_the_same_port() {
    // The test host sends EnterRecovery without a session: a lenient phone.
    let bench = Bench::lenient("iPhone10,3", 5, options(NORMAL));
    let before = bench.info(0).unwrap();
    let ecid = bench.hub.with_phone(0, |p| p.profile().ecid).unwrap();
    bench.drain();
    let mut dev = bench.open(0);
    let gone = enter_recovery(dev.as_mut()).unwrap();
    assert_eq!(gone.usb_kind(), Some(ErrorKind::NoDevice));
    let events = bench.drain();
    assert!(
        matches!(events.as_slice(), [HotplugEvent::Left { .. }]),
        "{events:?}"
    );
    bench.hub.run_for(Duration::from_secs(30));
    let events = bench.drain();
    let [HotplugEvent::Arrived { device }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(device.product_id(), 0x1281);
    assert_eq!(device.port_path, before.port_path, "same port");
    let mut rec = bench.hub.open(device.id).unwrap();
    let serial = SerialInfo::parse(rec.string_descriptor(4, T).unwrap()).unwrap();
    assert_eq!(serial.ecid, Some(ecid), "same phone");
    // auto-boot false: a reboot comes back in recovery.
    assert_eq!(
        irecv::recovery::getenv(rec.as_mut(), "auto-boot", T).unwrap(),
        "false"
    );
    assert_eq!(
        bench.hub.with_phone(0, |p| p.mode()),
        Some(Mode::Recovery(RecoveryStage::Iboot))
    );
}

#[test]
fn a_pending_trust_dialog_refuses_sessions_and_pairing() {
    let bench = Bench::empty(2);
    let mut profile = Profile::for_product_type("iPhone14,3", 1).unwrap();
    profile.trust = Trust::DialogPending;
    bench
        .hub
        .plug(0, Phone::new(profile, options(NORMAL), bench.clock.now()))
        .unwrap();
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    let err = ld
        .request(
            &mut mux,
            Request::StartSession {
                host_id: "HOST".into(),
                system_buid: None,
            },
        )
        .unwrap_err();
    assert_eq!(
        device_error(&err),
        Some(&LdError::PairingDialogResponsePending)
    );
    assert!(device_error(&err).unwrap().needs_user());
    let err = ld
        .request(&mut mux, Request::Pair(Default::default()))
        .unwrap_err();
    assert_eq!(
        device_error(&err),
        Some(&LdError::PairingDialogResponsePending)
    );
    // Identity still reads without a session.
    ld.get_value(&mut mux, None, Some("UniqueChipID")).unwrap();
}

#[test]
fn lockdown_refuse_answers_password_protected_then_recovers() {
    // Transfers at `lockdown`: #1 QueryType, #2 the first GetValue.
    let bench = Bench::new(
        "iPhone14,3",
        2,
        options_with(NORMAL, "lockdown:refuse@#2x1"),
    );
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    ld.request(&mut mux, Request::QueryType).unwrap();
    let err = ld
        .get_value(&mut mux, None, Some("UniqueChipID"))
        .unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::PasswordProtected));
    ld.get_value(&mut mux, None, Some("UniqueChipID")).unwrap();
}

#[test]
fn enter_recovery_refused_keeps_the_phone_in_normal_mode() {
    let bench = Bench::new(
        "iPhone14,3",
        2,
        options_with(NORMAL, "enter-recovery:refuse"),
    );
    let mut dev = bench.open(0);
    bench.drain();
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    let err = ld.request(&mut mux, Request::EnterRecovery).unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::SessionInactive));
    bench.hub.run_for(Duration::from_secs(60));
    assert!(bench.drain().is_empty(), "no mode change");
    ld.get_value(&mut mux, None, Some("ProductType")).unwrap();
}

#[test]
fn the_default_phone_wants_a_paired_tls_session_for_enter_recovery() {
    let bench = Bench::new("iPhone14,3", 6, options(NORMAL));
    let pairing = bench.hub.with_phone(0, |p| p.profile().pairing).unwrap();
    assert_eq!(pairing, sim::profile::Pairing::Required);
    let mut dev = bench.open(0);
    bench.drain();
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    let err = ld.request(&mut mux, Request::EnterRecovery).unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::SessionInactive));
    let err = ld
        .request(
            &mut mux,
            Request::StartSession {
                host_id: "UNPAIRED-HOST".into(),
                system_buid: None,
            },
        )
        .unwrap_err();
    assert_eq!(device_error(&err), Some(&LdError::InvalidHostID));
    bench.hub.run_for(Duration::from_secs(60));
    assert!(bench.drain().is_empty(), "no mode change");
}

#[test]
fn enter_recovery_never_returns() {
    let bench = Bench::lenient(
        "iPhone10,3",
        2,
        options_with(NORMAL, "enter-recovery:never-returns"),
    );
    let mut dev = bench.open(0);
    bench.drain();
    let gone = enter_recovery(dev.as_mut()).unwrap();
    assert_eq!(gone.usb_kind(), Some(ErrorKind::NoDevice));
    bench.hub.run_for(Duration::from_secs(600));
    let events = bench.drain();
    assert!(
        matches!(events.as_slice(), [HotplugEvent::Left { .. }]),
        "{events:?}"
    );
    assert!(bench.hub.devices().unwrap().is_empty());
}

#[test]
fn lockdown_unplug_drops_the_phone_and_the_cable_is_reseated() {
    let bench = Bench::new(
        "iPhone14,3",
        2,
        options_with(NORMAL, "lockdown:unplug@#1x1"),
    );
    let mut dev = bench.open(0);
    bench.drain();
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = Lockdown::connect(&mut mux).unwrap();
    let err = ld.request(&mut mux, Request::QueryType).unwrap_err();
    assert_eq!(err.usb_kind(), Some(ErrorKind::NoDevice));
    assert_eq!(lefts(&bench.drain()), 1);
    bench.hub.run_for(Duration::from_secs(6));
    assert_eq!(arrivals(&bench.drain()), [0x12A8], "back in normal mode");
    let mut dev = bench.open(0);
    let values = identify(dev.as_mut(), &["ProductType"]).unwrap();
    assert_eq!(values[0].as_string(), Some("iPhone14,3"));
}

#[test]
fn lockdown_timeout_and_io_error_reach_the_host_as_usb_errors() {
    for (spec, kind) in [
        ("lockdown:timeout@#1x1", ErrorKind::Timeout),
        ("lockdown:io-error@#1x1", ErrorKind::Io),
        ("lockdown:stall@#1x1", ErrorKind::Pipe),
    ] {
        let bench = Bench::new("iPhone14,3", 2, options_with(NORMAL, spec));
        let mut dev = bench.open(0);
        let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
        let mut ld = Lockdown::connect(&mut mux).unwrap();
        let err = ld.request(&mut mux, Request::QueryType).unwrap_err();
        assert_eq!(err.usb_kind(), Some(kind), "{spec}");
    }
}

#[test]
fn normal_flap_leaves_and_returns_in_normal_mode_and_full_speed_shows() {
    let bench = Bench::new("iPhone14,3", 2, options_with(NORMAL, "normal:flapx1"));
    bench.drain();
    bench.hub.run_for(Duration::from_secs(10));
    let events = bench.drain();
    assert!(
        matches!(
            events.as_slice(),
            [HotplugEvent::Left { .. }, HotplugEvent::Arrived { .. }]
        ),
        "{events:?}"
    );
    assert_eq!(arrivals(&events), [0x12A8]);

    let bench = Bench::new("iPhone14,3", 2, options_with(NORMAL, "normal:full-speed"));
    assert_eq!(bench.info(0).unwrap().speed, Speed::Full);
    let mut dev = bench.open(0);
    identify(dev.as_mut(), &["UniqueChipID"]).unwrap();
}

#[test]
fn binary_plist_requests_are_answered_too() {
    let bench = Bench::new("iPhone7,2", 8, options(NORMAL));
    let udid = bench
        .hub
        .with_phone(0, |p| p.profile().udid.clone())
        .unwrap();
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let conn = mux.connect(lockdown::PORT).unwrap();
    let mut ld = Lockdown {
        conn,
        codec: lockdown::HostCodec::new().with_format(lockdown::Format::Binary),
    };
    let v = ld
        .get_value(&mut mux, None, Some("UniqueDeviceID"))
        .unwrap();
    assert_eq!(v.as_string(), Some(udid.as_str()));
    assert_eq!(udid.len(), 40, "an A8 has the old 40-hex UDID");
}
