//! DFU downloads against a fake phone that records every transfer and runs the DFU 1.1 state
//! machine (with the suffix CRC checked by an independent bitwise CRC). Time is a fake clock.

mod fake_phone;

use std::time::{Duration, Instant};

use fake_phone::{FakeClock, FakePhone};
use irecv::dfu::{
    self, run_download, Action, Cause, Departure, Download, Options, Phase, State, Status,
};
use irecv::recovery::Progress;
use usb::{Completion, ErrorKind};

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn run(
    phone: &mut FakePhone,
    clock: &mut FakeClock,
    data: &[u8],
    options: Options,
) -> (Result<dfu::Finished, dfu::DownloadError>, Vec<Progress>) {
    let mut seen = Vec::new();
    let r = run_download(phone, data, options, clock, &mut |p| seen.push(p));
    (r, seen)
}

const GETSTATE: &str = "IN a1/5 v0 i0 len1";
const GETSTATUS: &str = "IN a1/3 v0 i0 len6";

fn dnload(block: u16, len: usize) -> String {
    format!("OUT 21/1 v{block} i0 len{len}")
}

/// The transfers of a clean download of blocks with these lengths.
fn clean_sequence(block_lengths: &[usize]) -> Vec<String> {
    let mut s = vec![GETSTATE.to_string()];
    for (i, len) in block_lengths.iter().enumerate() {
        s.push(dnload(i as u16, *len));
        s.push(GETSTATUS.into());
    }
    s.push(dnload(block_lengths.len() as u16, 0));
    s.push(GETSTATUS.into());
    s.push("RESET".into());
    s
}

#[test]
fn small_image_goes_in_one_block_with_the_suffix() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    let data = image(100);
    let (r, progress) = run(&mut phone, &mut clock, &data, Options::dfu());
    let f = r.unwrap();
    assert_eq!(phone.shorts(), clean_sequence(&[116]));
    assert_eq!(
        f,
        dfu::Finished {
            blocks: 1,
            manifest_state: Some(State::Manifest),
            departure: Departure::Reset
        }
    );
    let d = phone.dfu_side();
    assert_eq!(&d.received[..100], &data[..]);
    assert_eq!(&d.received[100..], &dfu::suffix(&data));
    assert_eq!(
        progress,
        [Progress {
            sent: 100,
            total: 100
        }]
    );
    assert_eq!(clock.elapsed(), Duration::ZERO);
}

#[test]
fn block_multiple_gets_a_suffix_only_last_block() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    let data = image(0x800 * 3);
    let (r, progress) = run(&mut phone, &mut clock, &data, Options::dfu());
    assert_eq!(r.unwrap().blocks, 4);
    assert_eq!(phone.shorts(), clean_sequence(&[0x800, 0x800, 0x800, 16]));
    let d = phone.dfu_side();
    assert_eq!(d.block_lengths, [0x800, 0x800, 0x800, 16]);
    assert_eq!(&d.received[..data.len()], &data[..]);
    assert_eq!(&d.received[data.len()..], &dfu::suffix(&data));
    let sent: Vec<u64> = progress.iter().map(|p| p.sent).collect();
    assert_eq!(sent, [0x800, 0x1000, 0x1800]);
}

#[test]
fn odd_sizes_split_where_the_suffix_fits() {
    // Room for the suffix in the last data block.
    for (len, blocks) in [
        (0x800 * 2 + 0x123, vec![0x800, 0x800, 0x133]),
        (0x7f0, vec![0x800]),
        (0x801, vec![0x800, 0x11]),
        // Multiples of 512 mean nothing special to DFU (no zero-length packet here).
        (0x600, vec![0x610]),
        (0x800 + 0x200, vec![0x800, 0x210]),
        // No room: data block, then the suffix alone.
        (0x7f1, vec![0x7f1, 16]),
        (0x800 + 0x7ff, vec![0x800, 0x7ff, 16]),
        (1, vec![17]),
    ] {
        let mut clock = FakeClock::new();
        let mut phone = FakePhone::dfu(&clock);
        let data = image(len);
        let (r, _) = run(&mut phone, &mut clock, &data, Options::dfu());
        assert_eq!(r.unwrap().blocks as usize, blocks.len(), "size {len:#x}");
        assert_eq!(phone.shorts(), clean_sequence(&blocks), "size {len:#x}");
        let d = phone.dfu_side();
        assert_eq!(&d.received[..len], &data[..], "size {len:#x}");
        assert_eq!(d.received.len(), len + 16);
    }
}

#[test]
fn port_dfu_uses_small_blocks_and_no_suffix() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::port_dfu(&clock);
    let data = image(0x40 * 2 + 5);
    let options = Options::for_product_id(0xF014);
    let (r, _) = run(&mut phone, &mut clock, &data, options);
    r.unwrap();
    assert_eq!(phone.shorts(), clean_sequence(&[0x40, 0x40, 5]));
    assert_eq!(phone.dfu_side().received, data);
}

#[test]
fn busy_device_is_polled_no_earlier_than_it_asked() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    {
        let d = phone.dfu_side();
        d.busy_polls = 2;
        d.poll_timeout_ms = 50;
    }
    let data = image(0x900);
    let (r, _) = run(&mut phone, &mut clock, &data, Options::dfu());
    r.unwrap();
    // Per block: GETSTATUS (busy), wait 50 ms, GETSTATUS (busy), wait 50 ms, GETSTATUS (idle).
    let expected = vec![
        GETSTATE.to_string(),
        dnload(0, 0x800),
        GETSTATUS.into(),
        GETSTATUS.into(),
        GETSTATUS.into(),
        dnload(1, 0x110),
        GETSTATUS.into(),
        GETSTATUS.into(),
        GETSTATUS.into(),
        dnload(2, 0),
        GETSTATUS.into(),
        "RESET".into(),
    ];
    assert_eq!(phone.shorts(), expected);
    let ms = Duration::from_millis;
    assert_eq!(
        phone.dfu_side().status_times,
        [ms(0), ms(50), ms(100), ms(100), ms(150), ms(200), ms(200)]
    );
    assert_eq!(*clock.waits.lock().unwrap(), [ms(50); 4]);
}

#[test]
fn device_that_never_leaves_dnbusy_hits_the_deadline() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    {
        let d = phone.dfu_side();
        d.always_busy = true;
        d.poll_timeout_ms = 100;
    }
    let options = Options {
        block_deadline: Duration::from_secs(2),
        ..Options::dfu()
    };
    let started = Instant::now();
    let (r, progress) = run(&mut phone, &mut clock, &image(0x1000), options);
    let e = r.unwrap_err();
    assert_eq!(e.phase, Phase::Download);
    assert_eq!(e.block, Some(0));
    assert_eq!(e.last_state, Some(State::DnBusy));
    assert_eq!(
        e.cause,
        Cause::Deadline {
            state: State::DnBusy,
            waited: Duration::from_secs(2)
        }
    );
    // Polls at 0, 0.1, ..., 2.0 s of fake time; no real waiting.
    assert_eq!(phone.dfu_side().status_times.len(), 21);
    assert_eq!(clock.elapsed(), Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(progress.is_empty());
    // Nothing after the failure: no finish, no reset.
    assert!(!phone.shorts().contains(&"RESET".to_string()));
}

#[test]
fn device_in_dfu_error_is_cleared_first() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    phone.dfu_side().state = State::Error;
    phone.dfu_side().status = Status::ErrStalledPkt;
    let data = image(10);
    let (r, _) = run(&mut phone, &mut clock, &data, Options::dfu());
    r.unwrap();
    let mut expected = vec![GETSTATE.to_string(), "OUT 21/4 v0 i0 len0".into()];
    expected.extend(clean_sequence(&[26]));
    assert_eq!(phone.shorts(), expected);
}

#[test]
fn device_in_another_state_is_aborted_first() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    phone.dfu_side().state = State::DnloadIdle;
    let (r, _) = run(&mut phone, &mut clock, &image(10), Options::dfu());
    r.unwrap();
    assert_eq!(
        phone.shorts()[..3],
        [GETSTATE, "OUT 21/6 v0 i0 len0", GETSTATE]
    );
}

#[test]
fn device_that_never_reaches_idle_is_a_typed_error() {
    // Sans-IO directly: the device answers dfuERROR to every GETSTATE.
    let data = image(10);
    let mut dl = Download::new(&data, Options::dfu()).unwrap();
    let now = Instant::now();
    let mut clears = 0;
    let err = loop {
        match dl.poll(now) {
            Action::Transfer { transfer, .. } => {
                let result = match transfer {
                    usb::Transfer::ControlIn { .. } => Ok(Completion::In(vec![10])),
                    usb::Transfer::ControlOut { setup, .. } => {
                        assert_eq!(setup.request, 4, "CLRSTATUS");
                        clears += 1;
                        Ok(Completion::Out { written: 0 })
                    }
                    other => panic!("unexpected {other:?}"),
                };
                if let Err(e) = dl.handle(result, now) {
                    break e;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(clears, 3);
    assert_eq!(err.phase, Phase::Prepare);
    assert_eq!(
        err.cause,
        Cause::NotIdle {
            state: State::Error,
            attempts: 3
        }
    );
    // The engine stays failed and says so.
    assert_eq!(dl.poll(now), Action::Failed(err));
}

#[test]
fn stall_mid_download_names_the_block_and_keeps_the_kind() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    phone.dfu_side().stall_block = Some(2);
    let (r, progress) = run(&mut phone, &mut clock, &image(0x2000), Options::dfu());
    let e = r.unwrap_err();
    assert_eq!(e.phase, Phase::Download);
    assert_eq!(e.block, Some(2));
    assert_eq!(e.usb_kind(), Some(ErrorKind::Pipe));
    assert_eq!(e.last_state, Some(State::DnloadIdle));
    assert_eq!(progress.last().map(|p| p.sent), Some(0x1000));
    assert_eq!(
        e.to_string(),
        "DFU download failed at block 2 (device in dfuDNLOAD-IDLE (5)): USB control OUT 0x21/1 \
         wValue=0x0002 wIndex=0x0000 (2048 bytes) failed: pipe"
    );
    assert_eq!(phone.shorts().last().unwrap(), &dnload(2, 0x800));
}

#[test]
fn device_rejecting_the_image_at_manifest_reports_its_status() {
    // A SecureROM-like phone checks the suffix; sending without it (Port DFU options) fails.
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    let (r, _) = run(&mut phone, &mut clock, &image(100), Options::port_dfu());
    let e = r.unwrap_err();
    assert_eq!(e.phase, Phase::Manifest);
    assert_eq!(e.status(), Some(Status::ErrFirmware));
    assert_eq!(e.last_state, Some(State::Error));
}

#[test]
fn reset_that_finds_the_device_gone_is_a_re_enumeration() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    phone.dfu_side().reset_error = Some(ErrorKind::NotFound);
    let (r, _) = run(&mut phone, &mut clock, &image(5000), Options::dfu());
    assert_eq!(r.unwrap().departure, Departure::ReEnumerated);
    phone.gone = false;
    let mut phone2 = FakePhone::dfu(&clock);
    phone2.dfu_side().reset_error = Some(ErrorKind::Access);
    let (r, _) = run(&mut phone2, &mut clock, &image(5000), Options::dfu());
    let e = r.unwrap_err();
    assert_eq!(
        (e.phase, e.usb_kind()),
        (Phase::Reset, Some(ErrorKind::Access))
    );
}

#[test]
fn garbled_status_reply_is_a_typed_error() {
    let data = image(10);
    let mut dl = Download::new(&data, Options::dfu()).unwrap();
    let now = Instant::now();
    dl.handle(Ok(Completion::In(vec![2])), now).unwrap(); // GETSTATE: idle
    dl.handle(Ok(Completion::Out { written: 26 }), now).unwrap(); // DNLOAD 0
    let e = dl
        .handle(Ok(Completion::In(vec![0, 0, 0])), now)
        .unwrap_err();
    assert_eq!(
        e.cause,
        Cause::Reply(dfu::ReplyError::Length {
            expected: 6,
            got: 3
        })
    );
    assert_eq!(e.block, Some(0));
}

#[test]
fn short_dnload_is_a_typed_error() {
    let data = image(10);
    let mut dl = Download::new(&data, Options::dfu()).unwrap();
    let now = Instant::now();
    dl.handle(Ok(Completion::In(vec![2])), now).unwrap();
    let e = dl
        .handle(Ok(Completion::Out { written: 20 }), now)
        .unwrap_err();
    assert_eq!(
        e.cause,
        Cause::ShortWrite {
            expected: 26,
            written: 20
        }
    );
}

#[test]
fn device_leaving_during_manifest_is_a_finish_without_reset() {
    let data = image(10);
    let mut dl = Download::new(&data, Options::dfu()).unwrap();
    let now = Instant::now();
    dl.handle(Ok(Completion::In(vec![2])), now).unwrap(); // GETSTATE: idle
    dl.handle(Ok(Completion::Out { written: 26 }), now).unwrap(); // DNLOAD 0
    dl.handle(Ok(Completion::In(vec![0, 0, 0, 0, 5, 0])), now)
        .unwrap(); // dnload-idle
    let Action::Transfer { transfer, .. } = dl.poll(now) else {
        panic!("expected the zero-length DNLOAD")
    };
    assert_eq!(
        transfer,
        usb::Transfer::ControlOut {
            setup: usb::Control::new(0x21, 1, 1, 0),
            data: &[]
        }
    );
    let gone = usb::UsbError::new(ErrorKind::NoDevice, transfer.operation());
    dl.handle(Err(gone), now).unwrap();
    let Action::Finished(f) = dl.poll(now) else {
        panic!("expected the end")
    };
    assert_eq!(f.departure, Departure::LeftDuringManifest);
    assert_eq!(f.manifest_state, None);
}
