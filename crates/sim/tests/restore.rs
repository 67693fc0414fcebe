//! Host ↔ virtual phone in restore mode: restored (QueryType, HardwareInfo, StartRestore, the
//! message loop) and ASR through the test host in `common::host`, then the reboot into the new
//! build; and the restore-mode faults with the symptom a real phone shows.

mod common;

use std::time::Duration;

use common::host::{identify, restore, HostError, RestoreHost, RestoreSeen};
use common::*;
use plist::Value;
use sim::check::ImageKind;
use sim::fault::Point;
use sim::phone::{Mode, Options, RecoveryStage};
use sim::restore::{operation, RESTORE_PROTOCOL_VERSION};
use usb::{ErrorKind, HotplugEvent, UsbBackend};

const RESTORE: Mode = Mode::Restore;
const IMAGE_LEN: usize = 300_000;

fn host() -> RestoreHost {
    RestoreHost {
        image: image(IMAGE_LEN, 9),
        build: Some(("22B83".into(), "18.1".into())),
        ..RestoreHost::default()
    }
}

fn run(bench: &Bench, host: &RestoreHost) -> Result<RestoreSeen, HostError> {
    let mut dev = bench.open(0);
    restore(dev.as_mut(), host)
}

/// Runs the hub until the phone arrives again; returns the mode.
fn next_mode(bench: &Bench) -> Option<Mode> {
    bench.hub.run_for(Duration::from_secs(60));
    let events = bench.drain();
    events
        .iter()
        .any(|e| matches!(e, HotplugEvent::Arrived { .. }))
        .then(|| bench.hub.with_phone(0, |p| p.mode()))
        .flatten()
}

#[test]
fn happy_path_restores_and_reboots_into_the_new_build() {
    let bench = Bench::new("iPhone14,3", 4, options(RESTORE));
    let profile = bench.hub.with_phone(0, |p| p.profile().clone()).unwrap();
    assert_eq!(profile.build_version, "21F90");
    bench.drain();
    let host = host();
    let seen = run(&bench, &host).unwrap();

    assert_eq!(
        seen.restore_protocol_version,
        Some(RESTORE_PROTOCOL_VERSION)
    );
    let hw = &seen.hardware_info;
    assert_eq!(
        hw.get("UniqueChipID").and_then(Value::as_unsigned_integer),
        Some(profile.ecid)
    );
    assert_eq!(
        hw.get("ChipID").and_then(Value::as_unsigned_integer),
        Some(0x8110)
    );
    assert_eq!(
        hw.get("BoardID").and_then(Value::as_unsigned_integer),
        Some(u64::from(profile.board_id))
    );
    assert_eq!(
        seen.requested,
        [
            "RootTicket",
            "SystemImageData",
            "KernelCache",
            "DeviceTree",
            "NORData",
            "BasebandData",
            "FDRTrustData"
        ]
    );
    let image_progress: Vec<u64> = seen
        .progress
        .iter()
        .filter(|(op, _)| *op == operation::RESTORE_IMAGE)
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(image_progress, (1..=10).map(|d| d * 10).collect::<Vec<_>>());
    assert!(seen.progress.contains(&(operation::VERIFY_RESTORE, 100)));
    assert_eq!(seen.status, Some(0));
    assert_eq!(seen.asr_reset, None);

    // The phone kept what it got: the OS image (checked whole) and each data item.
    let record = bench
        .hub
        .with_phone(0, |p| p.core().record.clone())
        .unwrap();
    let os = record
        .uploads
        .iter()
        .find(|u| u.kind == ImageKind::Restore("SystemImageData"))
        .unwrap();
    assert_eq!(os.size, IMAGE_LEN as u64);
    assert_eq!(os.sha256, sha256(&host.image));
    assert!(record
        .uploads
        .iter()
        .any(|u| u.kind == ImageKind::Restore("KernelCache") && u.size == 2000));

    // The reboot: normal mode, the new build.
    let events = bench.drain();
    assert_eq!(lefts(&events), 1, "{events:?}");
    assert_eq!(next_mode(&bench), Some(Mode::Normal));
    let mut dev = bench.open(0);
    let v = identify(
        dev.as_mut(),
        &["BuildVersion", "ProductVersion", "UniqueChipID"],
    )
    .unwrap();
    assert_eq!(v[0].as_string(), Some("22B83"));
    assert_eq!(v[1].as_string(), Some("18.1"));
    assert_eq!(v[2].as_unsigned_integer(), Some(profile.ecid));
    assert_eq!(dev.device_descriptor().device_version, 0x1801);
}

#[test]
fn a_wifi_only_ipad_is_not_asked_for_baseband_data() {
    let bench = Bench::new("iPad7,5", 4, options(RESTORE));
    let profile = bench.hub.with_phone(0, |p| p.profile().clone()).unwrap();
    let expected: Vec<&str> = sim::restore::restore_steps(&profile)
        .into_iter()
        .filter_map(|s| match s {
            sim::restore::Step::Data(d) => Some(d.name()),
            _ => None,
        })
        .collect();
    let seen = run(&bench, &host()).unwrap();
    assert_eq!(seen.requested, expected);
    assert!(!expected.contains(&"BasebandData"));
    assert!(expected.contains(&"FDRTrustData"));
    assert_eq!(seen.status, Some(0));
}

#[test]
fn a_bad_chunk_fails_the_restore_with_status_14_and_the_phone_lands_in_recovery() {
    let bench = Bench::new("iPhone14,3", 4, options(RESTORE));
    let host = RestoreHost {
        corrupt_chunk: Some(1),
        ..host()
    };
    let seen = run(&bench, &host).unwrap();
    assert_eq!(seen.status, Some(14));
    let reset = seen.asr_reset.unwrap();
    assert!(
        reset.contains("chunk 1") && reset.contains("SHA-1"),
        "{reset}"
    );
    let report = bench
        .hub
        .with_phone(0, |p| match p.mode_state() {
            sim::phone::ModeState::Restore(r) => Some(r.report().clone()),
            _ => None,
        })
        .flatten();
    // Off the bus now, but its restore-mode state says where it stopped: after chunk 0.
    assert_eq!(report.unwrap().asr_received, 131072);
    assert_eq!(
        next_mode(&bench),
        Some(Mode::Recovery(RecoveryStage::Iboot))
    );
}

#[test]
fn a_short_image_fails_with_status_minus_1() {
    let bench = Bench::new("iPhone14,3", 4, options(RESTORE));
    let host = RestoreHost {
        truncate: Some(200_000),
        ..host()
    };
    let seen = run(&bench, &host).unwrap();
    assert_eq!(seen.status, Some(-1));
    assert_eq!(
        next_mode(&bench),
        Some(Mode::Recovery(RecoveryStage::Iboot))
    );
}

#[test]
fn final_status_fault_reports_its_number() {
    let bench = Bench::new(
        "iPhone14,3",
        4,
        options_with(RESTORE, "final-status:status=6"),
    );
    let seen = run(&bench, &host()).unwrap();
    assert_eq!(seen.status, Some(6));
    assert_eq!(
        next_mode(&bench),
        Some(Mode::Recovery(RecoveryStage::Iboot))
    );
    let build = bench
        .hub
        .with_phone(0, |p| p.profile().build_version.clone())
        .unwrap();
    assert_eq!(build, "21F90", "a failed restore installs nothing");
}

#[test]
fn asr_corrupt_on_the_wire_is_caught_by_the_chunk_check() {
    let bench = Bench::new("iPhone14,3", 4, options_with(RESTORE, "asr:corrupt@50%x1"));
    let seen = run(&bench, &host()).unwrap();
    assert_eq!(seen.status, Some(14));
    assert!(seen.asr_reset.unwrap().contains("SHA-1"));
}

#[test]
fn asr_stall_is_a_pipe_error_on_bulk_out_near_the_mark() {
    let bench = Bench::new("iPhone14,3", 4, options_with(RESTORE, "asr:stall@30%"));
    let err = run(&bench, &host()).unwrap_err();
    assert_eq!(err.usb_kind(), Some(ErrorKind::Pipe));
    let received = bench
        .hub
        .with_phone(0, |p| match p.mode_state() {
            sim::phone::ModeState::Restore(r) => r.report().asr_received,
            _ => u64::MAX,
        })
        .unwrap();
    assert!(received < (IMAGE_LEN as u64) * 3 / 10, "{received}");
    let strikes = bench
        .hub
        .with_phone(0, |p| p.core().faults.history().len())
        .unwrap();
    assert_eq!(strikes, 1);
}

#[test]
fn asr_unplug_and_panic_drop_the_phone_which_comes_back_in_recovery() {
    for spec in ["asr:unplug@50%x1", "asr:panic@50%x1"] {
        let bench = Bench::new("iPhone14,3", 4, options_with(RESTORE, spec));
        bench.drain();
        let err = run(&bench, &host()).unwrap_err();
        assert_eq!(err.usb_kind(), Some(ErrorKind::NoDevice), "{spec}");
        assert_eq!(lefts(&bench.drain()), 1);
        assert_eq!(
            next_mode(&bench),
            Some(Mode::Recovery(RecoveryStage::Iboot)),
            "{spec}"
        );
    }
}

#[test]
fn restore_mode_panic_strikes_a_moment_after_arrival() {
    let bench = Bench::new(
        "iPhone14,3",
        4,
        options_with(RESTORE, "restore-mode:panicx1"),
    );
    bench.drain();
    let err = run(&bench, &host()).unwrap_err();
    assert_eq!(err.usb_kind(), Some(ErrorKind::NoDevice));
    assert_eq!(
        next_mode(&bench),
        Some(Mode::Recovery(RecoveryStage::Iboot))
    );
}

#[test]
fn restore_mode_never_returns_after_the_final_status() {
    let bench = Bench::new(
        "iPhone14,3",
        4,
        options_with(RESTORE, "restore-mode:never-returns"),
    );
    bench.drain();
    let seen = run(&bench, &host()).unwrap();
    assert_eq!(seen.status, Some(0));
    bench.hub.run_for(Duration::from_secs(600));
    assert_eq!(arrivals(&bench.drain()), Vec::<u16>::new());
    assert!(bench.hub.devices().unwrap().is_empty());
}

#[test]
fn restored_refuse_on_a_data_answer_fails_the_restore() {
    // Transfers at `restored`: #1 QueryType, #2 QueryValue, #3 StartRestore, #4 RootTicket.
    let bench = Bench::new(
        "iPhone14,3",
        4,
        options_with(RESTORE, "restored:refuse@#4x1"),
    );
    let seen = run(&bench, &host()).unwrap();
    assert_eq!(seen.requested, ["RootTicket"]);
    assert_eq!(seen.status, Some(14));
}

#[test]
fn restored_progress_trigger_measures_against_upload_sizes() {
    // 4 KiB expected at `restored`: the answers cross 50 % at the KernelCache (2000 bytes).
    let mut o: Options = options_with(RESTORE, "restored:timeout@50%x1");
    o.upload_sizes.insert(Point::Restored, 4096);
    let bench = Bench::new("iPhone14,3", 4, o);
    let err = run(&bench, &host()).unwrap_err();
    assert_eq!(err.usb_kind(), Some(ErrorKind::Timeout));
}

#[test]
fn restored_reboot_answers_then_reboots_to_the_boot_target() {
    let bench = Bench::new("iPhone14,3", 4, options(RESTORE));
    bench.drain();
    let mut dev = bench.open(0);
    let mut mux = common::host::MuxDriver::open(dev.as_mut()).unwrap();
    let mut ld = common::host::Lockdown::connect(&mut mux).unwrap();
    let err = ld
        .request(
            &mut mux,
            lockdown::Request::QueryValue {
                query_key: Some("NoSuchKey".into()),
            },
        )
        .unwrap_err();
    assert_eq!(
        common::host::device_error(&err),
        Some(&lockdown::ErrorKind::MissingValue)
    );
    let saved = ld
        .request(
            &mut mux,
            lockdown::Request::QueryValue {
                query_key: Some("SavedDebugInfo".into()),
            },
        )
        .unwrap();
    assert!(
        matches!(saved, lockdown::Reply::Generic { ref fields, .. } if fields.contains_key("SavedDebugInfo"))
    );
    ld.request(&mut mux, lockdown::Request::Reboot).unwrap();
    drop(mux);
    assert_eq!(lefts(&bench.drain()), 1);
    // Nothing set auto-boot false: iOS boots.
    assert_eq!(next_mode(&bench), Some(Mode::Normal));
}

#[test]
fn thirty_two_phones_restore_at_once_from_thirty_two_threads() {
    use sim::clock::{Clock, ManualClock};
    use sim::hub::VirtualHub;
    use sim::phone::Phone;
    use sim::profile::{Profile, PRESETS};
    use std::sync::{Arc, Barrier};

    let clock: Arc<dyn Clock> = ManualClock::new();
    let hub = VirtualHub::new(32, Arc::clone(&clock));
    for port in 0..32 {
        let product = PRESETS[port % PRESETS.len()];
        let profile = Profile::for_product_type(product, 100 + port as u64).unwrap();
        hub.plug(port, Phone::new(profile, options(RESTORE), clock.now()))
            .unwrap();
    }
    let started = std::time::Instant::now();
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|port| {
            let (hub, barrier) = (hub.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let path = hub.port_path(port).cloned();
                let info = hub
                    .devices()
                    .unwrap()
                    .into_iter()
                    .find(|d| d.port_path == path)
                    .unwrap();
                let mut dev = hub.open(info.id).unwrap();
                barrier.wait();
                let host = RestoreHost {
                    image: image(150_000 + port * 1000, port as u8),
                    ..RestoreHost::default()
                };
                let seen = restore(dev.as_mut(), &host).unwrap();
                (seen.status, seen.hardware_info.get("UniqueChipID").cloned())
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let wall = started.elapsed();
    assert!(results.iter().all(|(status, _)| *status == Some(0)));
    let ecids: std::collections::HashSet<u64> = results
        .iter()
        .filter_map(|(_, e)| e.as_ref().and_then(Value::as_unsigned_integer))
        .collect();
    assert_eq!(ecids.len(), 32, "each thread restored its own phone");
    eprintln!("32 restores (150 KB images): {wall:?} wall time");
}
