//! Host ↔ virtual phone in DFU mode, with `irecv`'s DFU engine: uploads, re-enumeration to
//! recovery (or DFU again on A12+), a bad CRC refused, personalization refusals.

mod common;

use common::*;
use irecv::dfu::{self, Cause, Departure, Options as DfuOptions, State, Status};
use irecv::serial::SerialInfo;
use sim::check::{ImageKind, Verdict};
use sim::phone::{Mode, ModeState, RecoveryStage};
use sim::profile::DfuStage;
use usb::{Control, UsbDevice};

const ROM: Mode = Mode::Dfu(DfuStage::SecureRom);

fn download(
    bench: &Bench,
    dev: &mut dyn UsbDevice,
    data: &[u8],
) -> Result<dfu::Finished, dfu::DownloadError> {
    let mut clock = bench.driver_clock();
    dfu::run_download(dev, data, DfuOptions::dfu(), &mut clock, &mut |_| {})
}

#[test]
fn ibss_on_a11_re_enumerates_in_recovery() {
    let bench = Bench::new("iPhone10,3", 1, options(ROM));
    let mut dev = bench.open(0);
    assert_eq!(dev.product_id(), 0x1227);
    let serial = SerialInfo::parse(dev.string_descriptor(4, T).unwrap()).unwrap();
    assert_eq!(serial.srtg.as_deref(), Some("iBoot-3332.0.0.1.23"));
    let functional = dev.configurations()[0].interfaces[0].alt_settings[0]
        .class_descriptors()
        .next()
        .unwrap();
    assert_eq!(functional.1, [7, 0x21, 0x01, 10, 0, 0x00, 0x08]);

    let ibss = image(0x800 * 5 + 100, 3); // the suffix fits in the last block
    let done = download(&bench, dev.as_mut(), &ibss).unwrap();
    assert_eq!(done.blocks, 6);
    assert_eq!(done.departure, Departure::ReEnumerated);
    assert_eq!(done.manifest_state, Some(State::Manifest));
    assert_eq!(
        dev.string_descriptor(4, T).unwrap_err().kind(),
        usb::ErrorKind::NoDevice
    );

    assert!(bench.wait_for(0, |m| matches!(m, Mode::Recovery(_))));
    let events = bench.drain();
    assert_eq!(arrivals(&events), [0x1227, 0x1281]);
    assert_eq!(lefts(&events), 1);
    let mut dev = bench.open(0);
    let serial = SerialInfo::parse(dev.string_descriptor(4, T).unwrap()).unwrap();
    assert_eq!(serial.srtg, None, "iBoot shows no SRTG");
    let (mode, record) = bench
        .hub
        .with_phone(0, |p| (p.mode(), p.core().record.clone()))
        .unwrap();
    assert_eq!(mode, Mode::Recovery(RecoveryStage::Ibss));
    let up = &record.uploads[0];
    assert_eq!(up.kind, ImageKind::Dfu(DfuStage::SecureRom));
    assert_eq!(
        (up.size, up.sha256, up.accepted),
        (ibss.len() as u64, sha256(&ibss), true)
    );
}

#[test]
fn a12_comes_back_in_dfu_after_ibss_then_recovery_after_ibec() {
    let bench = Bench::new("iPhone14,3", 2, options(ROM));
    let mut dev = bench.open(0);
    // Exactly a multiple of the block size: the suffix goes in a block of its own.
    let ibss = image(0x800 * 4, 1);
    let done = download(&bench, dev.as_mut(), &ibss).unwrap();
    assert_eq!(done.blocks, 5);
    assert!(bench.wait_for(0, |m| m == Mode::Dfu(DfuStage::Ibss)));
    let mut dev = bench.open(0);
    assert_eq!(dev.product_id(), 0x1227);
    let serial = SerialInfo::parse(dev.string_descriptor(4, T).unwrap()).unwrap();
    assert_eq!(serial.srtg, None, "iBSS serving DFU shows no SRTG");
    assert!(dev
        .string_descriptor(4, T)
        .unwrap()
        .starts_with("SDOM:01 CPID:8110"));

    let ibec = image(0x800 * 3 + 7, 2);
    download(&bench, dev.as_mut(), &ibec).unwrap();
    assert!(bench.wait_for(0, |m| m == Mode::Recovery(RecoveryStage::Ibec)));
    assert_eq!(arrivals(&bench.drain()), [0x1227, 0x1227, 0x1281]);
}

#[test]
fn a_bad_crc_is_refused_and_nothing_boots() {
    let bench = Bench::new("iPhone10,3", 3, options(ROM));
    let mut dev = bench.open(0);
    let payload = image(3000, 9);
    let mut bad = payload.clone();
    bad.extend_from_slice(&dfu::suffix(&payload));
    let n = bad.len();
    bad[n - 1] ^= 0xFF; // break the CRC
    let raw = DfuOptions {
        suffix: false,
        ..DfuOptions::dfu()
    };
    let mut clock = bench.driver_clock();
    let err = dfu::run_download(dev.as_mut(), &bad, raw, &mut clock, &mut |_| {}).unwrap_err();
    assert_eq!(err.phase, dfu::Phase::Manifest);
    assert_eq!(err.status(), Some(Status::ErrFile));
    assert_eq!(err.last_state, Some(State::Error));
    // A reset boots nothing: the phone stays in DFU, and takes a good image after CLRSTATUS.
    dev.reset().unwrap();
    bench.hub.run_for(std::time::Duration::from_secs(30));
    assert_eq!(lefts(&bench.drain()), 0);
    let record = bench
        .hub
        .with_phone(0, |p| p.core().record.clone())
        .unwrap();
    assert!(!record.uploads[0].accepted);
    assert!(record.uploads[0]
        .refusal
        .as_deref()
        .unwrap()
        .contains("CRC"));
    download(&bench, dev.as_mut(), &payload).unwrap();
    assert!(bench.wait_for(0, |m| matches!(m, Mode::Recovery(_))));
}

#[test]
fn raw_dfu_requests_follow_the_state_machine() {
    let bench = Bench::new("iPhone7,2", 4, options(ROM));
    let mut dev = bench.open(0);
    let get_state =
        |dev: &mut dyn UsbDevice| dev.control_in(Control::new(0xA1, 5, 0, 0), 1, T).unwrap()[0];
    let get_status =
        |dev: &mut dyn UsbDevice| dev.control_in(Control::new(0xA1, 3, 0, 0), 6, T).unwrap();
    assert_eq!(get_state(dev.as_mut()), 2);
    // A zero-length DNLOAD in dfuIDLE stalls and leaves dfuERROR.
    let e = dev
        .control_out(Control::new(0x21, 1, 0, 0), &[], T)
        .unwrap_err();
    assert_eq!(e.kind(), usb::ErrorKind::Pipe);
    assert_eq!(get_state(dev.as_mut()), 10);
    dev.control_out(Control::new(0x21, 4, 0, 0), &[], T)
        .unwrap(); // CLRSTATUS
    assert_eq!(get_state(dev.as_mut()), 2);
    // A block bigger than wTransferSize stalls.
    assert!(dev
        .control_out(Control::new(0x21, 1, 0, 0), &[0; 0x801], T)
        .is_err());
    dev.control_out(Control::new(0x21, 6, 0, 0), &[], T)
        .unwrap(); // ABORT
                   // One block: SYNC → BUSY (bwPollTimeout 1 ms) → DNLOAD-IDLE once the time has passed.
    dev.control_out(Control::new(0x21, 1, 0, 0), &[1; 64], T)
        .unwrap();
    assert_eq!(get_state(dev.as_mut()), 3);
    let s = get_status(dev.as_mut());
    assert_eq!((s[0], s[1], s[4]), (0, 1, 4));
    bench.clock_advance(std::time::Duration::from_millis(2));
    assert_eq!(get_status(dev.as_mut())[4], 5);
    let st = bench.hub.with_phone(0, |p| match p.mode_state() {
        ModeState::Dfu(d) => (d.received(), d.blocks()),
        _ => (0, 0),
    });
    assert_eq!(st, Some((64, 1)));
}

#[test]
fn personalization_hook_refuses_and_the_phone_comes_back_in_dfu() {
    let bench = Bench::new("iPhone14,3", 5, options(ROM));
    let ecid = bench.hub.with_phone(0, |p| p.profile().ecid).unwrap();
    bench.hub.with_phone(0, |p| {
        p.set_image_check(Box::new(move |img: &sim::check::ImageContext<'_>| {
            assert_eq!(img.ecid, ecid);
            if img.data.starts_with(b"IMG4") {
                Verdict::Accept
            } else {
                Verdict::Refuse("no ticket for this ECID".into())
            }
        }))
    });
    let mut dev = bench.open(0);
    let done = download(&bench, dev.as_mut(), &image(5000, 1)).unwrap();
    assert_eq!(done.departure, Departure::ReEnumerated);
    assert!(bench.wait_for(0, |m| m == Mode::Dfu(DfuStage::SecureRom)));
    let mut dev = bench.open(0);
    let mut signed = b"IMG4".to_vec();
    signed.extend(image(5000, 2));
    download(&bench, dev.as_mut(), &signed).unwrap();
    assert!(bench.wait_for(0, |m| m == Mode::Dfu(DfuStage::Ibss)));
    let accepted: Vec<bool> = bench
        .hub
        .with_phone(0, |p| {
            p.core().record.uploads.iter().map(|u| u.accepted).collect()
        })
        .unwrap();
    assert_eq!(accepted, [false, true]);
}

#[test]
fn port_dfu_takes_small_blocks_without_suffix() {
    let bench = Bench::new("iPhone10,3", 6, options(Mode::Dfu(DfuStage::Port)));
    let mut dev = bench.open(0);
    assert_eq!(dev.product_id(), 0xF014);
    let data = image(1000, 4);
    let mut clock = bench.driver_clock();
    let done = dfu::run_download(
        dev.as_mut(),
        &data,
        DfuOptions::for_product_id(0xF014),
        &mut clock,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(done.blocks, 16);
    assert!(bench.wait_for(0, |m| matches!(m, Mode::Recovery(_))));
    let err = {
        // A 0x800 block is too big for Port DFU.
        let bench = Bench::new("iPhone10,3", 6, options(Mode::Dfu(DfuStage::Port)));
        let mut dev = bench.open(0);
        download(&bench, dev.as_mut(), &data).unwrap_err()
    };
    assert!(matches!(err.cause, Cause::Usb(_)), "{err}");
}
