//! Recovery-mode conversations against a fake phone that records every transfer: commands,
//! getenv/setenv, uploads (chunking and zero-length packets), console output, and the phone
//! leaving the bus after `go`.

mod fake_phone;

use std::time::Duration;

use fake_phone::{FakeClock, FakePhone, Record};
use irecv::recovery::{
    self, claim_interfaces, run_upload, send_command, Command, CommandOutcome, Progress,
    RecoveryError, UploadCause, UploadStep,
};
use usb::{Control, ErrorKind};

const T: Duration = Duration::from_secs(1);
const START: &str = "OUT 41/0 v0 i0 len0";

fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

fn bulk(len: usize) -> String {
    format!("BULK OUT 04 len{len}")
}

fn upload(len: usize) -> (FakePhone, Vec<Progress>, Vec<u8>) {
    let clock = FakeClock::new();
    let mut phone = FakePhone::recovery(0x1281, &clock);
    let data = file(len);
    let mut seen = Vec::new();
    let done = run_upload(&mut phone, &data, &mut |p| seen.push(p)).unwrap();
    assert_eq!(
        done,
        Progress {
            sent: len as u64,
            total: len as u64
        }
    );
    (phone, seen, data)
}

#[test]
fn small_file_is_one_chunk_without_zlp() {
    let (mut phone, progress, data) = upload(1000);
    assert_eq!(phone.shorts(), [START.to_string(), bulk(1000)]);
    let r = phone.recovery_side();
    assert_eq!(r.received, data);
    assert_eq!(r.zero_length_packets, 0);
    assert_eq!(
        progress,
        [Progress {
            sent: 1000,
            total: 1000
        }]
    );
}

#[test]
fn chunk_multiple_ends_with_a_zlp() {
    let (mut phone, progress, data) = upload(0x8000 * 2);
    assert_eq!(
        phone.shorts(),
        [START.to_string(), bulk(0x8000), bulk(0x8000), bulk(0)]
    );
    let r = phone.recovery_side();
    assert_eq!(r.received, data);
    assert_eq!(r.zero_length_packets, 1);
    let sent: Vec<u64> = progress.iter().map(|p| p.sent).collect();
    assert_eq!(sent, [0x8000, 0x10000]);
}

#[test]
fn packet_multiple_that_is_not_a_chunk_multiple_ends_with_a_zlp() {
    let (mut phone, _, data) = upload(0x8000 + 1024);
    assert_eq!(
        phone.shorts(),
        [START.to_string(), bulk(0x8000), bulk(1024), bulk(0)]
    );
    assert_eq!(phone.recovery_side().received, data);
    // The ZLP is really empty and on endpoint 0x04.
    assert_eq!(
        phone.records.last(),
        Some(&Record::BulkOut {
            endpoint: 4,
            data: vec![]
        })
    );
}

#[test]
fn odd_size_has_no_zlp() {
    for len in [0x8000 + 1, 511, 513, 0x8000 * 3 - 1] {
        let (mut phone, _, data) = upload(len);
        let mut expected = vec![START.to_string()];
        let mut left = len;
        while left > 0 {
            expected.push(bulk(left.min(0x8000)));
            left -= left.min(0x8000);
        }
        assert_eq!(phone.shorts(), expected, "size {len}");
        assert_eq!(phone.recovery_side().received, data);
        assert_eq!(phone.recovery_side().zero_length_packets, 0);
    }
    let (phone, _, _) = upload(512);
    assert_eq!(phone.shorts(), [START.to_string(), bulk(512), bulk(0)]);
}

#[test]
fn stall_mid_upload_names_the_chunk_and_offset() {
    let clock = FakeClock::new();
    let mut phone = FakePhone::recovery(0x1281, &clock);
    phone.recovery_side().stall_chunk = Some(1);
    let data = file(0x8000 * 3);
    let e = run_upload(&mut phone, &data, &mut |_| {}).unwrap_err();
    let RecoveryError::Upload(u) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(u.step, UploadStep::Chunk(1));
    assert_eq!(u.offset, 0x8000);
    assert!(matches!(&u.cause, UploadCause::Usb(x) if x.endpoint() == Some(4)));
    assert_eq!(e.usb_kind(), Some(ErrorKind::Pipe));
    assert_eq!(phone.shorts().len(), 3, "nothing after the stall");
}

#[test]
fn getenv_and_setenv() {
    let clock = FakeClock::new();
    let mut phone = FakePhone::recovery(0x1281, &clock);
    recovery::setenv(
        &mut phone,
        "boot-args",
        "rd=md0 nand-enable-reformat=1 -progress",
        T,
    )
    .unwrap();
    recovery::saveenv(&mut phone, T).unwrap();
    let value = recovery::getenv(&mut phone, "boot-args", T).unwrap();
    assert_eq!(value, "rd=md0 nand-enable-reformat=1 -progress");
    assert_eq!(recovery::getenv(&mut phone, "unset-var", T).unwrap(), "");
    assert_eq!(
        phone.recovery_side().commands,
        [
            "setenv boot-args rd=md0 nand-enable-reformat=1 -progress",
            "saveenv",
            "getenv boot-args",
            "getenv unset-var"
        ]
    );
    let shorts = phone.shorts();
    assert_eq!(
        shorts[2],
        format!("OUT 40/0 v0 i0 len{}", "getenv boot-args".len() + 1)
    );
    assert_eq!(shorts[3], "IN c0/0 v0 i0 len255");
    // The command bytes are the text plus one NUL.
    assert_eq!(
        phone.records[1],
        Record::ControlOut {
            setup: Control::new(0x40, 0, 0, 0),
            data: b"saveenv\0".to_vec()
        }
    );
}

#[test]
fn pipe_after_go_is_success_with_disconnect() {
    for (text, how) in [
        ("go", ErrorKind::Pipe),
        ("bootx", ErrorKind::NoDevice),
        ("reboot", ErrorKind::Pipe),
        ("reset", ErrorKind::Pipe),
    ] {
        let clock = FakeClock::new();
        let mut phone = FakePhone::recovery(0x1281, &clock);
        phone.recovery_side().leave_with = how;
        let out = send_command(&mut phone, &Command::new(text).unwrap(), T).unwrap();
        let CommandOutcome::DeviceLeft { error } = out else {
            panic!("{text}: {out:?}")
        };
        assert_eq!(error.kind(), how);
        assert_eq!(
            phone.shorts(),
            [format!("OUT 40/1 v0 i0 len{}", text.len() + 1)]
        );
        // The phone is gone now: a further command is a real failure with the kind kept.
        let e = recovery::setenv(&mut phone, "auto-boot", "true", T).unwrap_err();
        assert_eq!(e.usb_kind(), Some(ErrorKind::NoDevice));
    }
}

#[test]
fn normal_command_is_accepted() {
    let clock = FakeClock::new();
    let mut phone = FakePhone::recovery(0x1281, &clock);
    let out = send_command(&mut phone, &Command::new("bgcolor 255 0 0").unwrap(), T).unwrap();
    assert_eq!(out, CommandOutcome::Accepted);
    assert_eq!(phone.recovery_side().commands, ["bgcolor 255 0 0"]);
}

#[test]
fn interfaces_and_console_output() {
    let clock = FakeClock::new();
    let mut old = FakePhone::recovery(0x1281, &clock);
    assert!(!claim_interfaces(&mut old).unwrap().console);
    assert_eq!(old.shorts(), ["SET CONFIG 1", "CLAIM 0"]);

    let mut phone = FakePhone::recovery(0x1282, &clock);
    phone.active_configuration = 1;
    assert!(claim_interfaces(&mut phone).unwrap().console);
    assert_eq!(phone.shorts(), ["CLAIM 0", "CLAIM 1", "ALT 1/1"]);

    phone
        .recovery_side()
        .output
        .push_back(b"] setenv auto-boot true\n".to_vec());
    let out = recovery::read_output(&mut phone, 0x1000, T).unwrap();
    assert_eq!(out, b"] setenv auto-boot true\n");
    // Nothing more to say: a timeout is an empty read, not an error.
    assert!(recovery::read_output(&mut phone, 0x1000, T)
        .unwrap()
        .is_empty());
    assert_eq!(
        phone.shorts()[3..],
        ["BULK IN 81 len4096", "BULK IN 81 len4096"]
    );
}

// ---------------------------------------------------------------------------------------------
// Time limits and cancellation

use std::ops::ControlFlow;
use std::time::Instant;

use irecv::budget::{Budget, Overrun};
use irecv::recovery::{run_upload_cancellable, Upload, UploadAction, UploadOptions};
use usb::{Completion, Operation, UsbError};

fn upload_error(e: RecoveryError) -> recovery::UploadError {
    match e {
        RecoveryError::Upload(u) => u,
        other => panic!("{other:?}"),
    }
}

#[test]
fn sluggish_phone_runs_out_of_the_default_budget() {
    // One 32 KiB chunk per 9.9 s: 100 MB used to take nine hours.
    let clock = FakeClock::new();
    let mut phone = FakePhone::recovery(0x1281, &clock);
    phone.transfer_time = Duration::from_millis(9900);
    let data = vec![0x5a; 100 << 20];
    let mut seen = Vec::new();
    let e = run_upload_cancellable(
        &mut phone,
        &data,
        UploadOptions::default(),
        &clock,
        &mut |p| {
            seen.push(p.sent);
            ControlFlow::Continue(())
        },
    )
    .unwrap_err();
    let u = upload_error(e);
    // START at 9.9 s, chunks 0 and 1 at 19.8 s and 29.7 s; then 30 s of grace + 64 KiB at
    // 64 KiB/s = 31 s: chunk 2's timeout is cut to 1.3 s and it is out of time then.
    assert_eq!((u.step, u.offset), (UploadStep::Chunk(2), 0x10000));
    let UploadCause::OutOfTime {
        overrun,
        elapsed,
        total,
    } = u.cause
    else {
        panic!("{u}")
    };
    assert!(matches!(
        overrun,
        Overrun::TooSlow {
            bytes_per_second: 65536,
            ..
        }
    ));
    assert_eq!(elapsed, Duration::from_secs(31));
    assert_eq!(total, 100 << 20);
    assert_eq!(clock.elapsed(), Duration::from_secs(31));
    assert_eq!(seen, [0x8000, 0x10000]);
    assert_eq!(
        phone.shorts().len(),
        4,
        "START and three chunks, nothing after"
    );
}

#[test]
fn fixed_deadline_ends_the_upload() {
    let clock = FakeClock::new();
    let mut phone = FakePhone::recovery(0x1281, &clock);
    phone.transfer_time = Duration::from_millis(400);
    let options = UploadOptions {
        budget: Budget {
            deadline: Some(Duration::from_secs(1)),
            min_throughput: None,
        },
        ..UploadOptions::default()
    };
    let data = file(0x8000 * 10);
    let e = run_upload_cancellable(&mut phone, &data, options, &clock, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    let u = upload_error(e);
    // START 0.4 s, chunk 0 0.8 s, chunk 1 cut to 0.2 s.
    assert_eq!((u.step, u.offset), (UploadStep::Chunk(1), 0x8000));
    assert!(matches!(
        u.cause,
        UploadCause::OutOfTime { overrun: Overrun::Deadline { .. }, elapsed, .. }
            if elapsed == Duration::from_secs(1)
    ));
    assert!(u.to_string().contains("offset 32768"), "{u}");
}

#[test]
fn progress_callback_can_cancel_the_upload() {
    let clock = FakeClock::new();
    let mut phone = FakePhone::recovery(0x1281, &clock);
    let data = file(0x8000 * 4);
    let e = run_upload_cancellable(
        &mut phone,
        &data,
        UploadOptions::default(),
        &clock,
        &mut |p| {
            if p.sent == 0x10000 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap_err();
    let u = upload_error(e);
    assert_eq!(
        (u.step, u.offset, u.cause),
        (UploadStep::Chunk(2), 0x10000, UploadCause::Cancelled)
    );
    assert_eq!(
        phone.shorts(),
        [START.to_string(), bulk(0x8000), bulk(0x8000)]
    );
}

#[test]
fn upload_timeouts_are_cut_to_the_budget_and_cancel_sticks() {
    let data = file(1000);
    let options = UploadOptions {
        budget: Budget {
            deadline: Some(Duration::from_secs(3)),
            min_throughput: None,
        },
        ..UploadOptions::default()
    };
    let mut up = Upload::new(&data, options).unwrap();
    let t0 = Instant::now();
    up.start(t0);
    let timeout = |a: UploadAction<'_>| match a {
        UploadAction::Transfer { timeout, .. } => timeout,
        other => panic!("{other:?}"),
    };
    assert_eq!(timeout(up.poll_at(t0)), Duration::from_secs(3));
    assert_eq!(
        timeout(up.poll_at(t0 + Duration::from_millis(2999))),
        Duration::from_millis(1)
    );
    // The clockless poll knows nothing of the budget.
    assert_eq!(timeout(up.poll()), recovery::DEFAULT_TIMEOUT);
    let end = t0 + Duration::from_secs(3);
    assert!(matches!(up.poll_at(end), UploadAction::Failed(e) if e.step == UploadStep::Start));
    // A START that timed out at the end of the budget is out of time, not a USB failure.
    let op = Operation::ControlOut {
        setup: Control::new(0x41, 0, 0, 0),
        length: 0,
    };
    let e = up
        .handle_at(Err(UsbError::new(ErrorKind::Timeout, op)), end)
        .unwrap_err();
    assert!(matches!(e.cause, UploadCause::OutOfTime { .. }));
    assert_eq!(e.usb_kind(), None);
    // Cancelling a failed upload changes nothing.
    up.cancel();
    assert_eq!(up.poll(), UploadAction::Failed(e));

    let mut up = Upload::new(&data, UploadOptions::default()).unwrap();
    up.handle_at(Ok(Completion::Out { written: 0 }), t0)
        .unwrap();
    up.cancel();
    assert!(matches!(
        up.poll_at(t0),
        UploadAction::Failed(e) if e.cause == UploadCause::Cancelled && e.step == UploadStep::Chunk(0)
    ));
}

#[test]
fn huge_budget_means_no_budget() {
    let clock = FakeClock::new();
    let mut phone = FakePhone::recovery(0x1281, &clock);
    phone.transfer_time = Duration::from_secs(1);
    let options = UploadOptions {
        budget: Budget {
            deadline: Some(Duration::MAX),
            min_throughput: None,
        },
        ..UploadOptions::default()
    };
    let data = file(0x8000 * 3);
    let done = run_upload_cancellable(&mut phone, &data, options, &clock, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(done.sent, data.len() as u64);
    assert_eq!(phone.recovery_side().received, data);
}
