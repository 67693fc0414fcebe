//! Each fault kind, injected in recovery or DFU or on the link, produces the USB-level symptom a
//! real phone would, deterministically.

mod common;

use std::time::Duration;

use common::*;
use irecv::dfu::{self, Options as DfuOptions, Status};
use irecv::recovery::{self, Command};
use sim::phone::{Mode, Options, RecoveryStage};
use sim::profile::DfuStage;
use usb::{Control, ErrorKind, HotplugEvent, Speed, UsbDevice};

const ROM: Mode = Mode::Dfu(DfuStage::SecureRom);
const IBOOT: Mode = Mode::Recovery(RecoveryStage::Iboot);

fn download(
    bench: &Bench,
    dev: &mut dyn UsbDevice,
    data: &[u8],
) -> Result<dfu::Finished, dfu::DownloadError> {
    let mut clock = bench.driver_clock();
    dfu::run_download(dev, data, DfuOptions::dfu(), &mut clock, &mut |_| {})
}

fn command(dev: &mut dyn UsbDevice, text: &str) -> Result<(), ErrorKind> {
    recovery::send_command(dev, &Command::new(text).unwrap(), T)
        .map(|_| ())
        .map_err(|e| e.usb_kind().unwrap())
}

fn sized(start: Mode, faults: &str, dfu_size: u64) -> Options {
    let mut o = options_with(start, faults);
    o.upload_sizes
        .insert(sim::fault::Point::DfuUpload, dfu_size);
    o
}

#[test]
fn unplug_at_half_of_a_dfu_upload_then_the_retry_succeeds() {
    let ibss = image(0x800 * 10, 1);
    let bench = Bench::new(
        "iPhone10,3",
        1,
        sized(ROM, "dfu-upload:unplug@50%x1", ibss.len() as u64),
    );
    let mut dev = bench.open(0);
    bench.drain();
    let err = download(&bench, dev.as_mut(), &ibss).unwrap_err();
    assert_eq!(err.usb_kind(), Some(ErrorKind::NoDevice));
    assert_eq!(err.block, Some(4), "the block that crosses 50 %");
    let events = bench.drain();
    assert!(
        matches!(events.as_slice(), [HotplugEvent::Left { .. }]),
        "{events:?}"
    );
    // Every later transfer on that enumeration: NO_DEVICE.
    for _ in 0..3 {
        let e = dev
            .control_in(Control::new(0xA1, 5, 0, 0), 1, T)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoDevice);
    }
    // The cable is re-seated: DFU again, and this time it goes through.
    assert!(bench.wait_for(0, |m| m == ROM));
    let mut dev = bench.open(0);
    download(&bench, dev.as_mut(), &ibss).unwrap();
    assert!(bench.wait_for(0, |m| matches!(m, Mode::Recovery(_))));
}

#[test]
fn stall_on_the_third_block_leaves_dfu_error_and_clrstatus_recovers() {
    let bench = Bench::new("iPhone10,3", 2, options_with(ROM, "dfu-upload:stall@#3x1"));
    let mut dev = bench.open(0);
    let data = image(0x800 * 5, 2);
    let err = download(&bench, dev.as_mut(), &data).unwrap_err();
    assert_eq!(err.usb_kind(), Some(ErrorKind::Pipe));
    assert_eq!(err.block, Some(2));
    assert_eq!(
        dev.control_in(Control::new(0xA1, 5, 0, 0), 1, T).unwrap(),
        [10]
    );
    // The engine clears the error and starts over.
    download(&bench, dev.as_mut(), &data).unwrap();
}

#[test]
fn io_error_and_refuse_in_recovery() {
    let bench = Bench::new(
        "iPhone14,3",
        3,
        options_with(IBOOT, "recovery:io-errorx1,recovery:refuse@#3x1"),
    );
    let mut dev = bench.open(0);
    assert_eq!(command(dev.as_mut(), "setenv a 1"), Err(ErrorKind::Io));
    assert_eq!(command(dev.as_mut(), "setenv a 2"), Ok(()));
    assert_eq!(
        command(dev.as_mut(), "setenv a 3"),
        Err(ErrorKind::Pipe),
        "refused: stall"
    );
    assert_eq!(recovery::getenv(dev.as_mut(), "a", T).unwrap(), "2");
}

#[test]
fn timeout_takes_the_hosts_timeout_in_virtual_time() {
    let bench = Bench::new("iPhone10,3", 4, options_with(ROM, "dfu:timeoutx1"));
    let mut dev = bench.open(0);
    let t0 = bench.clock.elapsed();
    let e = dev
        .control_in(Control::new(0xA1, 5, 0, 0), 1, Duration::from_secs(7))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(bench.clock.elapsed() - t0 >= Duration::from_secs(7));
    assert_eq!(
        dev.control_in(Control::new(0xA1, 5, 0, 0), 1, T).unwrap(),
        [2]
    );
}

#[test]
fn corrupt_block_fails_the_crc_and_corrupt_upload_changes_the_hash() {
    let bench = Bench::new(
        "iPhone10,3",
        5,
        options_with(ROM, "dfu-upload:corrupt@#2x1"),
    );
    let mut dev = bench.open(0);
    let err = download(&bench, dev.as_mut(), &image(0x800 * 3, 5)).unwrap_err();
    assert_eq!(err.status(), Some(Status::ErrFile));

    let bench = Bench::new(
        "iPhone10,3",
        5,
        options_with(IBOOT, "recovery-upload:corrupt@#1x1"),
    );
    let mut dev = bench.open(0);
    let data = image(50_000, 6);
    recovery::run_upload(dev.as_mut(), &data, &mut |_| {}).unwrap();
    command(dev.as_mut(), "ramdisk").unwrap();
    let up = bench
        .hub
        .with_phone(0, |p| p.core().record.uploads[0].clone())
        .unwrap();
    assert_eq!(up.size, data.len() as u64);
    assert_ne!(up.sha256, sha256(&data));
}

#[test]
fn panic_drops_the_phone_and_it_returns_in_recovery() {
    let bench = Bench::new(
        "iPhone14,3",
        6,
        options_with(Mode::Recovery(RecoveryStage::Ibec), "recovery:panic@#2"),
    );
    let mut dev = bench.open(0);
    command(dev.as_mut(), "setenv x 1").unwrap();
    assert_eq!(
        command(dev.as_mut(), "setenv x 2"),
        Err(ErrorKind::NoDevice)
    );
    assert_eq!(lefts(&bench.drain()), 1);
    assert!(bench.wait_for(0, |m| m == IBOOT));
    assert_eq!(arrivals(&bench.drain()), [0x1281]);
}

#[test]
fn flap_leaves_and_returns_in_the_same_mode_unasked() {
    let bench = Bench::new("iPhone10,3", 7, options_with(ROM, "dfu:flapx1"));
    bench.drain();
    bench.hub.run_for(Duration::from_secs(10));
    let events = bench.drain();
    assert_eq!(lefts(&events), 1);
    assert_eq!(arrivals(&events), [0x1227]);
    bench.hub.run_for(Duration::from_secs(60));
    assert!(bench.drain().is_empty(), "x1: only once");
}

#[test]
fn never_returns_after_bootx_or_dfu() {
    let bench = Bench::new(
        "iPhone14,3",
        8,
        options_with(Mode::Recovery(RecoveryStage::Ibec), "bootx:never-returns"),
    );
    let mut dev = bench.open(0);
    for (what, len) in [("ramdisk", 3000), ("devicetree", 2000)] {
        recovery::run_upload(dev.as_mut(), &image(len, 1), &mut |_| {}).unwrap();
        command(dev.as_mut(), what).unwrap();
    }
    recovery::run_upload(dev.as_mut(), &image(4000, 2), &mut |_| {}).unwrap();
    bench.drain();
    command(dev.as_mut(), "bootx").unwrap();
    bench.hub.run_for(Duration::from_secs(600));
    let events = bench.drain();
    assert_eq!(
        (lefts(&events), arrivals(&events).len()),
        (1, 0),
        "{events:?}"
    );

    let bench = Bench::new(
        "iPhone10,3",
        8,
        options_with(ROM, "dfu-upload:never-returns"),
    );
    let mut dev = bench.open(0);
    download(&bench, dev.as_mut(), &image(3000, 3)).unwrap();
    bench.hub.run_for(Duration::from_secs(600));
    assert_eq!(arrivals(&bench.drain()), [0x1227], "only the first arrival");
}

#[test]
fn refuse_in_dfu_is_an_error_status() {
    let bench = Bench::new("iPhone10,3", 9, options_with(ROM, "dfu-upload:refuse"));
    let mut dev = bench.open(0);
    let err = download(&bench, dev.as_mut(), &image(3000, 3)).unwrap_err();
    assert_eq!(err.status(), Some(Status::ErrTarget));
}

fn dfu_upload_time(bench: &Bench, len: usize) -> Duration {
    let mut dev = bench.open(0);
    let t0 = bench.clock.elapsed();
    download(bench, dev.as_mut(), &image(len, 1)).unwrap();
    bench.clock.elapsed() - t0
}

#[test]
fn full_speed_enumeration_and_bad_cable_are_slow() {
    let fast = Bench::new("iPhone10,3", 10, options(ROM));
    assert_eq!(fast.info(0).unwrap().speed, Speed::High);
    let slow = Bench::new("iPhone10,3", 10, options_with(ROM, "dfu:full-speed"));
    assert_eq!(slow.info(0).unwrap().speed, Speed::Full);
    assert_eq!(slow.open(0).speed(), Speed::Full);
    let len = 0x800 * 64;
    let (f, s) = (dfu_upload_time(&fast, len), dfu_upload_time(&slow, len));
    // 128 KiB at 1 MB/s is 131 ms of data alone; the busy polls are the same at both speeds.
    assert!(
        s > Duration::from_millis(131) && s > f * 3,
        "full speed {s:?} vs high speed {f:?}"
    );
    // It re-enumerates at high speed: the fault was for the DFU enumeration only... and
    // recovery is a different point.
    assert!(slow.wait_for(0, |m| matches!(m, Mode::Recovery(_))));
    assert_eq!(slow.info(0).unwrap().speed, Speed::High);

    // A bad cable on the port: every enumeration is full speed.
    let bench = Bench::empty(2);
    bench.hub.set_cable_full_speed(1, true).unwrap();
    bench.plug(1, "iPhone14,3", 1, options(IBOOT));
    assert_eq!(bench.info(1).unwrap().speed, Speed::Full);
}

#[test]
fn slow_link_caps_the_rate() {
    let bench = Bench::new("iPhone10,3", 11, options_with(IBOOT, "link:slow=100KiB/s"));
    let mut dev = bench.open(0);
    let t0 = bench.clock.elapsed();
    recovery::run_upload(dev.as_mut(), &image(100 * 1024, 1), &mut |_| {}).unwrap();
    let took = bench.clock.elapsed() - t0;
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "{took:?}"
    );
}

#[test]
fn chances_are_deterministic_per_seed() {
    let run = || {
        let bench = Bench::new("iPhone10,3", 12, options_with(IBOOT, "link:io-error@~20%"));
        let mut dev = bench.open(0);
        (0..200)
            .map(|i| command(dev.as_mut(), &format!("setenv n {i}")).is_err())
            .collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run());
    let failures = a.iter().filter(|f| **f).count();
    assert!((20..70).contains(&failures), "{failures}");
}

#[test]
fn byte_trigger_strikes_the_chunk_that_crosses_it() {
    let bench = Bench::new(
        "iPhone14,3",
        13,
        options_with(IBOOT, "recovery-upload:stall@64KiBx1"),
    );
    let mut dev = bench.open(0);
    let data = image(0x8000 * 4, 1);
    let err = recovery::run_upload(dev.as_mut(), &data, &mut |_| {}).unwrap_err();
    match err {
        recovery::RecoveryError::Upload(e) => {
            assert_eq!(e.step, recovery::UploadStep::Chunk(1));
            assert_eq!(e.offset, 0x8000);
            assert_eq!(e.usb_kind(), Some(ErrorKind::Pipe));
        }
        other => panic!("{other}"),
    }
    // x1: the retry goes through.
    recovery::run_upload(dev.as_mut(), &data, &mut |_| {}).unwrap();
}

#[test]
fn bootx_panic_comes_back_in_recovery_not_restore() {
    let bench = Bench::new(
        "iPhone14,3",
        14,
        options_with(Mode::Recovery(RecoveryStage::Ibec), "bootx:panic"),
    );
    let mut dev = bench.open(0);
    for (what, len) in [("ramdisk", 3000), ("devicetree", 2000)] {
        recovery::run_upload(dev.as_mut(), &image(len, 1), &mut |_| {}).unwrap();
        command(dev.as_mut(), what).unwrap();
    }
    recovery::run_upload(dev.as_mut(), &image(4000, 2), &mut |_| {}).unwrap();
    let out = recovery::send_command(dev.as_mut(), &Command::new("bootx").unwrap(), T).unwrap();
    assert!(matches!(out, recovery::CommandOutcome::DeviceLeft { .. }));
    assert!(bench.wait_for(0, |m| m != Mode::Recovery(RecoveryStage::Ibec)));
    let mode = bench.hub.with_phone(0, |p| p.mode()).unwrap();
    assert_eq!(mode, IBOOT);
}

#[test]
fn mode_faults_strike_at_the_arrival_in_that_mode() {
    // Full speed only once the phone reaches recovery; a spontaneous flap in normal mode.
    let bench = Bench::new(
        "iPhone10,3",
        15,
        options_with(ROM, "recovery:full-speed,normal:flapx1"),
    );
    assert_eq!(bench.info(0).unwrap().speed, Speed::High);
    let mut dev = bench.open(0);
    download(&bench, dev.as_mut(), &image(5000, 1)).unwrap();
    assert!(bench.wait_for(0, |m| matches!(m, Mode::Recovery(_))));
    assert_eq!(bench.info(0).unwrap().speed, Speed::Full);
    let mut dev = bench.open(0);
    command(dev.as_mut(), "reboot").unwrap();
    assert!(bench.wait_for(0, |m| m == Mode::Normal));
    bench.drain();
    bench.hub.run_for(Duration::from_secs(10));
    let events = bench.drain();
    assert_eq!(
        (lefts(&events), arrivals(&events)),
        (1, vec![0x12A8]),
        "{events:?}"
    );
}
