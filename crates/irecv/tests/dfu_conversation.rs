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

// ---------------------------------------------------------------------------------------------
// Time limits and cancellation

use std::ops::ControlFlow;

use irecv::budget::{Budget, MinThroughput, Overrun};
use irecv::dfu::run_download_cancellable;

/// GETSTATE idle, DNLOAD block 0, then a GETSTATUS answered `reply`, all at `now`.
fn to_first_status(dl: &mut Download<'_>, now: Instant, reply: [u8; 6]) {
    dl.handle(Ok(Completion::In(vec![2])), now).unwrap();
    let len = dl.block(0).len();
    dl.handle(Ok(Completion::Out { written: len }), now)
        .unwrap();
    dl.handle(Ok(Completion::In(reply.to_vec())), now).unwrap();
}

#[test]
fn busy_with_zero_poll_timeout_waits_the_floor_instead_of_spinning() {
    // dfuDNBUSY with bwPollTimeout = 0: the engine used to ask for the next GETSTATUS at the
    // same instant, forever (a tight loop against a real phone).
    let data = image(10);
    let mut dl = Download::new(&data, Options::dfu()).unwrap();
    let now = Instant::now();
    to_first_status(&mut dl, now, [0, 0, 0, 0, State::DnBusy as u8, 0]);
    let ms = Duration::from_millis(1);
    assert!(
        matches!(dl.poll(now), Action::Wait { not_before, .. } if not_before == now + ms),
        "{:?}",
        dl.poll(now)
    );
    // At the floor: GETSTATUS. The manifest polls have the same floor.
    assert!(matches!(dl.poll(now + ms), Action::Transfer { .. }));
    let t = now + ms;
    dl.handle(Ok(Completion::In(vec![0, 0, 0, 0, 5, 0])), t)
        .unwrap();
    dl.handle(Ok(Completion::Out { written: 0 }), t).unwrap();
    dl.handle(Ok(Completion::In(vec![0, 0, 0, 0, 6, 0])), t)
        .unwrap();
    assert!(matches!(dl.poll(t), Action::Wait { not_before, .. } if not_before == t + ms));
}

#[test]
fn busy_with_zero_poll_timeout_is_polled_once_a_millisecond() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    phone.dfu_side().busy_for = Some(Duration::from_millis(50));
    let (r, _) = run(&mut phone, &mut clock, &image(0x900), Options::dfu());
    r.unwrap();
    let waits = clock.waits.lock().unwrap().clone();
    assert!(waits.iter().all(|w| *w == Duration::from_millis(1)));
    // 51 GETSTATUS per block (0, 1, ..., 50 ms), 2 blocks, 1 at manifest.
    assert_eq!(phone.dfu_side().status_times.len(), 2 * 51 + 1);
}

/// A phone that keeps every 2 KiB block in dfuDNBUSY for 9.9 s with bwPollTimeout = 0, each
/// transfer taking 1 ms: a 300-block iBSS used to take 50 minutes.
fn sluggish_dfu_phone(clock: &FakeClock) -> FakePhone {
    let mut phone = FakePhone::dfu(clock);
    phone.transfer_time = Duration::from_millis(1);
    phone.dfu_side().busy_for = Some(Duration::from_millis(9900));
    phone
}

#[test]
fn sluggish_phone_runs_out_of_the_default_budget() {
    let mut clock = FakeClock::new();
    let mut phone = sluggish_dfu_phone(&clock);
    let (r, progress) = run(&mut phone, &mut clock, &image(0x800 * 300), Options::dfu());
    let e = r.unwrap_err();
    // 20 s of grace, then 8 KiB/s: with two blocks (4 KiB) taken, time is up at 20.5 s.
    assert_eq!((e.phase, e.block), (Phase::Download, Some(2)));
    let Cause::OutOfTime {
        overrun,
        elapsed,
        progress: p,
    } = e.cause
    else {
        panic!("{e}")
    };
    assert_eq!(
        overrun,
        dfu::DFU_BUDGET
            .min_throughput
            .map(|m| Overrun::TooSlow {
                bytes_per_second: m.bytes_per_second,
                grace: m.grace
            })
            .unwrap()
    );
    assert_eq!(elapsed, Duration::from_millis(20_500));
    assert_eq!((p.sent, p.total), (0x1000, 0x800 * 300));
    assert_eq!(clock.elapsed(), Duration::from_millis(20_500));
    let sent: Vec<u64> = progress.iter().map(|p| p.sent).collect();
    assert_eq!(
        sent,
        [0x800, 0x1000],
        "run_download reports each block once"
    );
    assert!(!phone.shorts().contains(&"RESET".to_string()));
    assert!(e.to_string().contains("4096 of 614400 image bytes"), "{e}");
    assert!(e.to_string().contains("at block 2"), "{e}");
}

#[test]
fn fixed_deadline_ends_the_download_on_time() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    {
        let d = phone.dfu_side();
        d.busy_for = Some(Duration::from_millis(1000));
        d.poll_timeout_ms = 300;
    }
    let limit = Duration::from_secs(3);
    let options = Options {
        budget: Budget {
            deadline: Some(limit),
            min_throughput: None,
        },
        ..Options::dfu()
    };
    let (r, _) = run(&mut phone, &mut clock, &image(0x800 * 10), options);
    let e = r.unwrap_err();
    // Blocks are acknowledged at 1.2 s and 2.4 s; block 2 is still busy at 3 s.
    assert_eq!(e.block, Some(2));
    assert_eq!(e.last_state, Some(State::DnBusy));
    assert!(matches!(
        e.cause,
        Cause::OutOfTime { overrun: Overrun::Deadline { limit: l }, elapsed, progress }
            if l == limit && elapsed == limit && progress.sent == 0x1000
    ));
    // The last wait was cut to the deadline, not a whole bwPollTimeout past it.
    assert_eq!(clock.elapsed(), limit);
}

#[test]
fn transfer_timeouts_are_cut_to_the_budget() {
    let data = image(10);
    let options = Options {
        budget: Budget {
            deadline: Some(Duration::from_secs(5)),
            min_throughput: None,
        },
        ..Options::dfu()
    };
    let mut dl = Download::new(&data, options).unwrap();
    let t0 = Instant::now();
    dl.start(t0);
    let timeout = |a: Action<'_>| match a {
        Action::Transfer { timeout, .. } => timeout,
        other => panic!("{other:?}"),
    };
    assert_eq!(timeout(dl.poll(t0)), Duration::from_secs(5));
    let t = t0 + Duration::from_millis(4500);
    assert_eq!(timeout(dl.poll(t)), Duration::from_millis(500));
    // Out of time: poll says so without a transfer, and the engine is not changed by it...
    let end = t0 + Duration::from_secs(5);
    let Action::Failed(e) = dl.poll(end) else {
        panic!("expected the end of the budget")
    };
    assert_eq!(e.phase, Phase::Prepare);
    assert!(matches!(e.cause, Cause::OutOfTime { .. }));
    // ...and a transfer that timed out because of the cut fails as out of time, for good.
    let timed_out = usb::UsbError::new(ErrorKind::Timeout, usb::Operation::Reset);
    let e2 = dl.handle(Err(timed_out), end).unwrap_err();
    assert_eq!(e2, e);
    assert_eq!(dl.poll(end + Duration::from_secs(1)), Action::Failed(e));
}

#[test]
fn huge_deadlines_mean_no_deadline() {
    // `now + Duration::MAX` used to panic.
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    {
        let d = phone.dfu_side();
        d.busy_polls = 2;
        d.poll_timeout_ms = 50;
    }
    let options = Options {
        block_deadline: Duration::MAX,
        manifest_deadline: Duration::MAX,
        budget: Budget {
            deadline: Some(Duration::MAX),
            min_throughput: Some(MinThroughput {
                bytes_per_second: 1,
                grace: Duration::MAX,
            }),
        },
        min_poll_interval: Duration::MAX,
        ..Options::dfu()
    };
    // A floor of Duration::MAX: each wait is "forever", clamped to the (far) block deadline.
    // So only test the first wait through the engine, then run a sane floor to the end.
    let data = image(0x900);
    let mut dl = Download::new(&data, options).unwrap();
    let now = Instant::now();
    to_first_status(&mut dl, now, [0, 50, 0, 0, State::DnBusy as u8, 0]);
    assert!(
        matches!(dl.poll(now), Action::Wait { not_before, deadline } if not_before > now && deadline >= not_before)
    );
    let options = Options {
        min_poll_interval: Duration::ZERO,
        ..options
    };
    let (r, _) = run(&mut phone, &mut clock, &data, options);
    assert_eq!(r.unwrap().blocks, 2);
    assert_eq!(clock.elapsed(), Duration::from_millis(200));
}

#[test]
fn progress_callback_can_cancel_between_blocks() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    let data = image(0x800 * 5);
    let mut calls = 0;
    let r = run_download_cancellable(&mut phone, &data, Options::dfu(), &mut clock, &mut |p| {
        calls += 1;
        if p.sent >= 0x1000 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let e = r.unwrap_err();
    assert_eq!(calls, 2);
    assert_eq!((e.phase, e.block), (Phase::Download, Some(2)));
    assert!(matches!(e.cause, Cause::Cancelled { progress } if progress.sent == 0x1000));
    assert_eq!(e.to_string(), "DFU download failed at block 2 (device in dfuDNLOAD-IDLE (5)): cancelled with 4096 of 10240 image bytes acknowledged");
    // Nothing after the cancel: the last transfer is block 1's GETSTATUS, no reset.
    assert_eq!(phone.shorts().last().unwrap(), GETSTATUS);
    assert_eq!(phone.dfu_side().block_lengths.len(), 2);
}

#[test]
fn progress_callback_can_cancel_a_stalled_block() {
    let mut clock = FakeClock::new();
    let mut phone = FakePhone::dfu(&clock);
    {
        let d = phone.dfu_side();
        d.always_busy = true;
        d.poll_timeout_ms = 100;
    }
    let mut seen = Vec::new();
    let r = run_download_cancellable(
        &mut phone,
        &image(100),
        Options::dfu(),
        &mut clock,
        &mut |p| {
            seen.push(p.sent);
            if seen.len() == 5 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    let e = r.unwrap_err();
    assert!(matches!(e.cause, Cause::Cancelled { progress } if progress.sent == 0));
    assert_eq!(e.block, Some(0));
    assert_eq!(
        seen, [0; 5],
        "called before each wait, with the same progress"
    );
    assert_eq!(clock.elapsed(), Duration::from_millis(400));
}

#[test]
fn cancel_after_the_end_changes_nothing() {
    let data = image(10);
    let mut dl = Download::new(&data, Options::dfu()).unwrap();
    let now = Instant::now();
    dl.handle(Ok(Completion::In(vec![10])), now).unwrap(); // dfuERROR → CLRSTATUS
    dl.cancel();
    let Action::Failed(e) = dl.poll(now) else {
        panic!()
    };
    assert_eq!((e.phase, e.block), (Phase::Prepare, None));
    dl.cancel();
    assert_eq!(dl.poll(now), Action::Failed(e));
}

#[test]
fn block_of_any_index_is_empty_past_the_end() {
    // `index + 1` used to overflow for u32::MAX.
    let data = image(0x900);
    let dl = Download::new(&data, Options::dfu()).unwrap();
    assert_eq!(dl.block_count(), 2);
    assert_eq!(dl.block(1).len(), 0x100 + 16);
    assert!(dl.block(2).is_empty());
    assert!(dl.block(u32::MAX).is_empty());
    assert!(dl.block(u32::MAX - 1).is_empty());
    let port = Download::new(&data, Options::port_dfu()).unwrap();
    assert!(port.block(u32::MAX).is_empty());
}

#[test]
fn device_leaving_at_the_end_of_the_budget_is_still_a_finish() {
    let data = image(10);
    let options = Options {
        budget: Budget {
            deadline: Some(Duration::from_secs(1)),
            min_throughput: None,
        },
        ..Options::dfu()
    };
    let mut dl = Download::new(&data, options).unwrap();
    let now = Instant::now();
    to_first_status(&mut dl, now, [0, 0, 0, 0, 5, 0]);
    let Action::Transfer { transfer, .. } = dl.poll(now) else {
        panic!("expected the zero-length DNLOAD")
    };
    let gone = usb::UsbError::new(ErrorKind::NoDevice, transfer.operation());
    let late = now + Duration::from_secs(2);
    dl.handle(Err(gone), late).unwrap();
    assert!(
        matches!(dl.poll(late), Action::Finished(f) if f.departure == Departure::LeftDuringManifest)
    );
}
