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
