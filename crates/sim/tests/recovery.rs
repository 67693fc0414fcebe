//! Host ↔ virtual phone in recovery mode, through the hub and `irecv`'s host side: commands,
//! environment, uploads, bootx, reboot.

mod common;

use std::time::{Duration, Instant};

use common::*;
use irecv::recovery::{self, Command, CommandOutcome};
use irecv::serial::{Nonces, SerialInfo};
use irecv::Mode as UsbMode;
use sim::check::ImageKind;
use sim::phone::{Mode, RecoveryStage};
use usb::{HotplugEvent, UsbDevice};

const IBOOT: Mode = Mode::Recovery(RecoveryStage::Iboot);

fn send(dev: &mut dyn UsbDevice, text: &str) -> CommandOutcome {
    recovery::send_command(dev, &Command::new(text).unwrap(), T).unwrap()
}

fn upload(dev: &mut dyn UsbDevice, data: &[u8]) {
    let p = recovery::run_upload(dev, data, &mut |_| {}).unwrap();
    assert_eq!(p.sent, data.len() as u64);
}

#[test]
fn identity_strings_and_environment() {
    let bench = Bench::new("iPhone14,3", 1, options(IBOOT));
    let info = bench.info(0).unwrap();
    assert_eq!(
        UsbMode::from_product_id(info.product_id()),
        Ok(UsbMode::Recovery(irecv::mode::RecoveryId::P1281))
    );
    let mut dev = bench.open(0);
    let profile = bench.hub.with_phone(0, |p| p.profile().clone()).unwrap();

    // What libirecovery reads: serial in iSerialNumber (4), nonces in string 1.
    let serial = dev
        .string_descriptor(dev.device_descriptor().serial_number_index, T)
        .unwrap();
    let parsed = SerialInfo::parse(&serial).unwrap();
    assert_eq!(parsed.ecid, Some(profile.ecid));
    assert_eq!(parsed.device().unwrap().product_type, "iPhone14,3");
    assert_eq!(parsed.srnm.as_deref(), Some(profile.serial_number.as_str()));
    let nonces = Nonces::parse(dev.string_descriptor(1, T).unwrap()).unwrap();
    assert_eq!(nonces.ap_nonce.as_deref(), Some(&profile.ap_nonce[..]));
    assert_eq!(dev.string_descriptor(2, T).unwrap(), "Apple Inc.");
    assert_eq!(
        dev.string_descriptor(3, T).unwrap(),
        "Apple Mobile Device (Recovery Mode)"
    );

    let ifs = recovery::claim_interfaces(dev.as_mut()).unwrap();
    assert!(
        !ifs.console,
        "0x1281 has no console claimed by the host side"
    );

    assert_eq!(
        recovery::getenv(dev.as_mut(), "auto-boot", T).unwrap(),
        "true"
    );
    assert_eq!(
        recovery::getenv(dev.as_mut(), "build-version", T).unwrap(),
        profile.iboot_version
    );
    recovery::setenv(dev.as_mut(), "auto-boot", "false", T).unwrap();
    recovery::setenv(
        dev.as_mut(),
        "boot-args",
        "rd=md0 nand-enable-reformat=1 -progress",
        T,
    )
    .unwrap();
    assert_eq!(
        recovery::getenv(dev.as_mut(), "auto-boot", T).unwrap(),
        "false"
    );
    assert_eq!(
        recovery::getenv(dev.as_mut(), "boot-args", T).unwrap(),
        "rd=md0 nand-enable-reformat=1 -progress"
    );
    assert_eq!(
        recovery::getenv(dev.as_mut(), "no-such-var", T).unwrap(),
        ""
    );
    // Not saved yet: NVRAM still says true.
    let saved = bench
        .hub
        .with_phone(0, |p| p.core().nvram.get("auto-boot").cloned())
        .unwrap();
    assert_eq!(saved.as_deref(), Some("true"));
    recovery::saveenv(dev.as_mut(), T).unwrap();
    let saved = bench
        .hub
        .with_phone(0, |p| p.core().nvram.get("auto-boot").cloned())
        .unwrap();
    assert_eq!(saved.as_deref(), Some("false"));

    assert_eq!(
        send(dev.as_mut(), "bgcolor 255 128 0"),
        CommandOutcome::Accepted
    );
    assert_eq!(send(dev.as_mut(), "setpicture 4"), CommandOutcome::Accepted);
    let (color, picture) = bench
        .hub
        .with_phone(0, |p| (p.core().record.bgcolor, p.core().record.picture))
        .unwrap();
    assert_eq!((color, picture), (Some((255, 128, 0)), Some(4)));
}

#[test]
fn console_output_on_bulk_in_0x81() {
    let bench = Bench::new("iPhone10,3", 2, options(IBOOT));
    let mut dev = bench.open(0);
    dev.claim_interface(0).unwrap();
    dev.claim_interface(1).unwrap();
    dev.set_alternate_setting(1, 1).unwrap();
    send(dev.as_mut(), "frobnicate");
    let mut text = String::new();
    loop {
        let chunk = recovery::read_output(dev.as_mut(), 512, Duration::from_millis(100)).unwrap();
        if chunk.is_empty() {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("Entering recovery mode"), "{text}");
    assert!(text.contains("Command 'frobnicate' not found"), "{text}");
    // Interface 2 does not exist.
    assert_eq!(
        dev.claim_interface(2).unwrap_err().kind(),
        usb::ErrorKind::NotFound
    );
    assert_eq!(
        dev.set_alternate_setting(1, 2).unwrap_err().kind(),
        usb::ErrorKind::Pipe
    );
}

#[test]
fn upload_with_the_irecv_engine_then_consumed_by_ramdisk() {
    let bench = Bench::new("iPhone10,3", 3, options(IBOOT));
    let mut dev = bench.open(0);
    recovery::claim_interfaces(dev.as_mut()).unwrap();
    // A multiple of 512: the engine ends with a zero-length packet.
    let ramdisk = image(3 * 0x8000 + 1024, 7);
    let t0 = bench.clock.elapsed();
    upload(dev.as_mut(), &ramdisk);
    let took = bench.clock.elapsed() - t0;
    let pending = bench.hub.with_phone(0, |p| match p.mode_state() {
        sim::phone::ModeState::Recovery(r) => r.pending_upload(),
        _ => (0, false),
    });
    assert_eq!(pending, Some((ramdisk.len(), true)));
    send(dev.as_mut(), "ramdisk");
    let record = bench
        .hub
        .with_phone(0, |p| p.core().record.clone())
        .unwrap();
    let up = record.uploads.last().unwrap();
    assert_eq!(up.kind, ImageKind::Recovery("ramdisk"));
    assert_eq!(
        (up.size, up.sha256, up.accepted),
        (ramdisk.len() as u64, sha256(&ramdisk), true)
    );
    // ~100 KB at 40 MB/s: a few milliseconds of virtual time, none of real waiting.
    assert!(
        took > Duration::from_millis(2) && took < Duration::from_millis(10),
        "{took:?}"
    );
    // A consuming command without an upload is refused on the console, not by USB.
    assert_eq!(send(dev.as_mut(), "devicetree"), CommandOutcome::Accepted);
    let n = bench
        .hub
        .with_phone(0, |p| p.core().record.uploads.len())
        .unwrap();
    assert_eq!(n, 1);
}

fn load(dev: &mut dyn UsbDevice, what: &str, data: &[u8]) {
    upload(dev, data);
    send(dev, what);
}

#[test]
fn bootx_without_ramdisk_stays_in_recovery() {
    let bench = Bench::new(
        "iPhone14,3",
        4,
        options(Mode::Recovery(RecoveryStage::Ibec)),
    );
    let mut dev = bench.open(0);
    recovery::claim_interfaces(dev.as_mut()).unwrap();
    load(dev.as_mut(), "devicetree", &image(4000, 1));
    upload(dev.as_mut(), &image(9000, 2)); // the kernelcache
    bench.drain();
    assert_eq!(send(dev.as_mut(), "bootx"), CommandOutcome::Accepted);
    bench.hub.run_for(Duration::from_secs(120));
    assert!(bench.drain().is_empty(), "the phone must not leave");
    assert_eq!(
        recovery::getenv(dev.as_mut(), "auto-boot", T).unwrap(),
        "true"
    );
    let mode = bench.hub.with_phone(0, |p| p.mode()).unwrap();
    assert_eq!(mode, Mode::Recovery(RecoveryStage::Ibec));
}

#[test]
fn bootx_with_everything_loaded_arrives_in_restore_mode() {
    let bench = Bench::new(
        "iPhone14,3",
        5,
        options(Mode::Recovery(RecoveryStage::Ibec)),
    );
    let mut dev = bench.open(0);
    recovery::claim_interfaces(dev.as_mut()).unwrap();
    recovery::setenv(dev.as_mut(), "auto-boot", "false", T).unwrap();
    recovery::saveenv(dev.as_mut(), T).unwrap();
    load(dev.as_mut(), "ramdisk", &image(20_000, 1));
    load(dev.as_mut(), "devicetree", &image(4000, 2));
    load(dev.as_mut(), "rsepfirmware", &image(3000, 3));
    upload(dev.as_mut(), &image(9000, 4));
    bench.drain();
    let out = send(dev.as_mut(), "bootx");
    assert!(matches!(
        out,
        CommandOutcome::Accepted | CommandOutcome::DeviceLeft { .. }
    ));
    let left = bench.drain();
    assert_eq!(lefts(&left), 1, "{left:?}");
    assert_eq!(
        dev.control_out(usb::Control::new(0x40, 0, 0, 0), b"saveenv\0", T)
            .unwrap_err()
            .kind(),
        usb::ErrorKind::NoDevice
    );
    assert!(bench.wait_for(0, |m| m == Mode::Restore));
    let arrived = arrivals(&bench.drain());
    assert_eq!(arrived.len(), 1);
    assert!((0x1290..=0x12AF).contains(&arrived[0]), "{:#x}", arrived[0]);
    assert_eq!(UsbMode::from_product_id(arrived[0]), Ok(UsbMode::Normal));

    // Restore mode talks usbmux: configuration 3, handshake, and 62078 accepts.
    let mut dev = bench.open(0);
    assert_eq!(dev.configurations().len(), 4);
    dev.set_configuration(3).unwrap();
    dev.claim_interface(1).unwrap();
    let now = Instant::now();
    let mut link = usbmux::Link::new(now);
    let mut connected = None;
    let mut conn = None;
    for _ in 0..50 {
        while let Some(p) = link.poll_transmit() {
            dev.bulk_out(0x04, &p, T).unwrap();
        }
        match dev.bulk_in(0x85, 16384, Duration::from_millis(50)) {
            Ok(bytes) => link.handle_input(&bytes, now).unwrap(),
            Err(e) => assert_eq!(e.kind(), usb::ErrorKind::Timeout),
        }
        while let Some(e) = link.poll_event() {
            match e {
                usbmux::Event::Ready { .. } => conn = Some(link.connect(62078, now).unwrap()),
                usbmux::Event::Connected { conn } => connected = Some(conn),
                _ => {}
            }
        }
        if connected.is_some() {
            break;
        }
    }
    assert!(
        connected.is_some() && connected == conn,
        "restored's port accepts"
    );
    let kinds: Vec<_> = bench
        .hub
        .with_phone(0, |p| {
            p.core().record.uploads.iter().map(|u| u.kind).collect()
        })
        .unwrap();
    assert_eq!(
        kinds,
        [
            ImageKind::Recovery("ramdisk"),
            ImageKind::Recovery("devicetree"),
            ImageKind::Recovery("rsepfirmware"),
            ImageKind::Recovery("bootx")
        ]
    );
}

#[test]
fn reboot_follows_the_saved_auto_boot() {
    let bench = Bench::new("iPhone7,2", 6, options(IBOOT));
    let mut dev = bench.open(0);
    recovery::claim_interfaces(dev.as_mut()).unwrap();
    assert!(matches!(
        send(dev.as_mut(), "reboot"),
        CommandOutcome::Accepted | CommandOutcome::DeviceLeft { .. }
    ));
    assert!(bench.wait_for(0, |m| m == Mode::Normal));
    let events = bench.drain();
    assert_eq!(arrivals(&events), [0x1281, 0x1281 + 0x27]); // 0x12A8
    match events.last() {
        Some(HotplugEvent::Arrived { device }) => {
            assert_eq!(device.descriptor.num_configurations, 4);
        }
        other => panic!("{other:?}"),
    }

    // With auto-boot false saved, a reboot comes back in recovery.
    let bench = Bench::new("iPhone7,2", 6, options(IBOOT));
    let mut dev = bench.open(0);
    recovery::setenv(dev.as_mut(), "auto-boot", "false", T).unwrap();
    recovery::saveenv(dev.as_mut(), T).unwrap();
    send(dev.as_mut(), "reset");
    assert!(bench.wait_for(0, |m| matches!(m, Mode::Recovery(_))));
    let mut dev = bench.open(0);
    assert_eq!(
        recovery::getenv(dev.as_mut(), "auto-boot", T).unwrap(),
        "false"
    );
}

#[test]
fn ibss_loads_ibec_and_go_re_enumerates_in_ibec() {
    let bench = Bench::new(
        "iPhone10,3",
        7,
        options(Mode::Recovery(RecoveryStage::Ibss)),
    );
    let mut dev = bench.open(0);
    recovery::claim_interfaces(dev.as_mut()).unwrap();
    // iBSS cannot bootx; go without an image does nothing.
    assert_eq!(send(dev.as_mut(), "bootx"), CommandOutcome::Accepted);
    assert_eq!(send(dev.as_mut(), "go"), CommandOutcome::Accepted);
    bench.hub.run_for(Duration::from_secs(60));
    assert_eq!(lefts(&bench.drain()), 0);
    let ibec = image(0x8000 + 77, 3);
    upload(dev.as_mut(), &ibec);
    let out = send(dev.as_mut(), "go");
    assert!(matches!(
        out,
        CommandOutcome::Accepted | CommandOutcome::DeviceLeft { .. }
    ));
    assert!(bench.wait_for(0, |m| m == Mode::Recovery(RecoveryStage::Ibec)));
    let events = bench.drain();
    assert_eq!((lefts(&events), arrivals(&events)), (1, vec![0x1281]));
    let record = bench
        .hub
        .with_phone(0, |p| p.core().record.clone())
        .unwrap();
    assert_eq!(record.uploads[0].kind, ImageKind::Recovery("go"));
    assert_eq!(record.uploads[0].sha256, sha256(&ibec));
    assert_eq!(record.commands, ["bootx", "go", "go"]);
}
