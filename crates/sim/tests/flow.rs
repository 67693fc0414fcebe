//! The whole way from DFU to restore mode, as a restore drives it (PROTOCOLS.md §8 steps 2–3),
//! with `irecv`'s host side, waiting on hotplug events of the same slot between modes.

mod common;

use std::time::Duration;

use common::*;
use irecv::dfu::{self, Options as DfuOptions};
use irecv::recovery::{self, Command};
use irecv::serial::SerialInfo;
use sim::check::ImageKind;
use sim::phone::Mode;
use sim::profile::DfuStage;
use usb::{HotplugEvent, UsbDevice};

/// Waits for the next arrival on the bench (running the hub's timers), returns its product id.
fn next_arrival(bench: &Bench) -> u16 {
    bench.hub.run_for(Duration::from_secs(60));
    let events = bench.drain();
    let arrived = arrivals(&events);
    assert_eq!(arrived.len(), 1, "{events:?}");
    arrived[0]
}

fn send(dev: &mut dyn UsbDevice, text: &str) {
    recovery::send_command(dev, &Command::new(text).unwrap(), T).unwrap();
}

fn load(dev: &mut dyn UsbDevice, what: &str, data: &[u8]) {
    recovery::run_upload(dev, data, &mut |_| {}).unwrap();
    send(dev, what);
}

fn dfu_to_restore(product: &str) -> Vec<u16> {
    let bench = Bench::new(product, 11, options(Mode::Dfu(DfuStage::SecureRom)));
    let mut pids = vec![bench.info(0).unwrap().product_id()];
    let ecid = bench.hub.with_phone(0, |p| p.profile().ecid).unwrap();
    let mut clock = bench.driver_clock();
    bench.drain();

    // iBSS over DFU.
    let mut dev = bench.open(0);
    dfu::run_download(
        dev.as_mut(),
        &image(40_000, 1),
        DfuOptions::dfu(),
        &mut clock,
        &mut |_| {},
    )
    .unwrap();
    pids.push(next_arrival(&bench));
    let mut dev = bench.open(0);
    let serial = SerialInfo::parse(dev.string_descriptor(4, T).unwrap()).unwrap();
    assert_eq!(serial.ecid, Some(ecid), "same phone");

    // iBEC: over DFU again on A12+, over a recovery upload + go before.
    let ibec = image(50_000, 2);
    if dev.product_id() == 0x1227 {
        dfu::run_download(
            dev.as_mut(),
            &ibec,
            DfuOptions::dfu(),
            &mut clock,
            &mut |_| {},
        )
        .unwrap();
    } else {
        recovery::claim_interfaces(dev.as_mut()).unwrap();
        recovery::run_upload(dev.as_mut(), &ibec, &mut |_| {}).unwrap();
        let _ = recovery::send_command(dev.as_mut(), &Command::new("go").unwrap(), T).unwrap();
    }
    pids.push(next_arrival(&bench));

    // iBEC: environment, logo, components, bootx.
    let mut dev = bench.open(0);
    recovery::claim_interfaces(dev.as_mut()).unwrap();
    recovery::setenv(dev.as_mut(), "auto-boot", "false", T).unwrap();
    recovery::saveenv(dev.as_mut(), T).unwrap();
    load(dev.as_mut(), "setpicture 4", &image(3000, 3));
    send(dev.as_mut(), "bgcolor 0 0 255");
    load(dev.as_mut(), "firmware", &image(7000, 4));
    load(dev.as_mut(), "ramdisk", &image(200_000, 5));
    load(dev.as_mut(), "devicetree", &image(9000, 6));
    load(dev.as_mut(), "rsepfirmware", &image(8000, 7));
    recovery::setenv(
        dev.as_mut(),
        "boot-args",
        "rd=md0 nand-enable-reformat=1 -progress",
        T,
    )
    .unwrap();
    recovery::run_upload(dev.as_mut(), &image(100_000, 8), &mut |_| {}).unwrap();
    let _ = recovery::send_command(dev.as_mut(), &Command::new("bootx").unwrap(), T).unwrap();
    pids.push(next_arrival(&bench));

    let record = bench
        .hub
        .with_phone(0, |p| p.core().record.clone())
        .unwrap();
    assert!(record.uploads.iter().all(|u| u.accepted));
    assert_eq!(
        record.uploads.last().map(|u| u.kind),
        Some(ImageKind::Recovery("bootx"))
    );
    assert_eq!(record.bgcolor, Some((0, 0, 255)));
    assert_eq!(record.arrivals.last(), Some(&Mode::Restore));
    // Every departure was followed by exactly one arrival on the same slot.
    let path = bench.hub.port_path(0).cloned();
    assert!(bench.drain().iter().all(|e| match e {
        HotplugEvent::Arrived { device } => device.port_path == path,
        HotplugEvent::Left { port_path, .. } => *port_path == path,
    }));
    pids
}

#[test]
fn a11_dfu_ibss_recovery_go_ibec_bootx_restore() {
    assert_eq!(
        dfu_to_restore("iPhone10,3"),
        [0x1227, 0x1281, 0x1281, 0x12A8]
    );
}

#[test]
fn a15_dfu_ibss_dfu_ibec_recovery_bootx_restore() {
    assert_eq!(
        dfu_to_restore("iPhone14,3"),
        [0x1227, 0x1227, 0x1281, 0x12A8]
    );
}

#[test]
fn a8_goes_the_old_way_too() {
    assert_eq!(
        dfu_to_restore("iPhone7,2"),
        [0x1227, 0x1281, 0x1281, 0x12A8]
    );
}
