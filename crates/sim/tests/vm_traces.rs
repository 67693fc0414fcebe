//! Kernel-recorded traces from the VM bench (`fixtures/traces/vm-*.pcap`), replayed without
//! the VM.
//!
//! `cargo xtask vm --write-traces fixtures/traces` keeps them: usbmon captures (the binary
//! `/dev/usbmonN` interface, link type 220) made in a Debian guest whose kernel enumerated the
//! virtual phones of `restation sim usbip` over USB/IP, cut to the device of interest.
//! `fixtures/traces/README.md` says which command wrote each.
//!
//! - restation's own host code (vm-guest-tool's `upload`: `irecv::dfu::run_download`, and
//!   `irecv::recovery::claim_interfaces` + `run_upload_cancellable`) is replayed through
//!   `usb::trace::Replay` against the same functions with the same file: no divergence, and
//!   nothing recorded left over.
//! - a peer's requests (libirecovery's uploads) are sent to a virtual phone with the identity
//!   the bench's phone had (same product, same seed): it must answer every one as the phone in
//!   the VM did.
//! - lockdown through a usbmux daemon (Debian's usbmuxd, restation's socket): every lockdown
//!   request `ideviceinfo` sent is sent again to a virtual phone with the bench phone's identity
//!   and its reply must be byte for byte the recorded one.

mod common;

use std::time::{Duration, Instant};

use common::host::MuxDriver;
use common::*;
use sim::phone::{Mode, RecoveryStage};
use sim::profile::DfuStage;
use usb::trace::{Conversation, EventType, Outcome, Replay, Request, XferType};
use usb::UsbDevice;

/// The bench's phones (`xtask/src/vm/server.rs`, `PORTS`): `restation sim usbip` gives phone N
/// the seed N.
const RECOVERY: (&str, u64) = ("iPhone10,3", 1);
const NORMAL: (&str, u64) = ("iPhone14,3", 0);
const NORMAL2: (&str, u64) = ("iPhone10,3", 3);
const DFU3: (&str, u64) = ("iPhone7,2", 5);

/// Sizes of the uploads the bench recorded (`xtask/src/vm/mod.rs`).
const WIRE_DFU_BYTES: usize = 5000;
const WIRE_RECOVERY_BYTES: usize = 10_240;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../fixtures/traces/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn conversation(name: &str) -> Conversation {
    Conversation::single_from_pcap(&fixture(name)[..]).unwrap()
}

/// The bench's test pattern (the same formula as `xtask/guest-tool`'s `pattern`).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x5245_5354_4154_494f;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

/// A clock that jumps instead of sleeping.
struct JumpClock(Instant);

impl irecv::dfu::Clock for JumpClock {
    fn now(&self) -> Instant {
        self.0
    }
    fn wait_until(&mut self, instant: Instant) {
        self.0 = self.0.max(instant);
    }
}

#[test]
fn restation_dfu_upload_replays_against_the_same_host_code() {
    let mut replay = Replay::new(conversation("vm-wire-dfu-restation.pcap")).unwrap();
    let options = irecv::dfu::Options::for_product_id(replay.product_id());
    let done = irecv::dfu::run_download(
        &mut replay,
        &pattern(WIRE_DFU_BYTES),
        options,
        &mut JumpClock(Instant::now()),
        &mut |_| {},
    );
    assert!(done.is_ok(), "{done:?}; {:?}", replay.finish());
    replay.finish().unwrap();
}

#[test]
fn restation_recovery_upload_replays_against_the_same_host_code() {
    let mut replay = Replay::new(conversation("vm-wire-recovery-restation.pcap")).unwrap();
    irecv::recovery::claim_interfaces(&mut replay).unwrap();
    let sent = irecv::recovery::run_upload_cancellable(
        &mut replay,
        &pattern(WIRE_RECOVERY_BYTES),
        irecv::recovery::UploadOptions::default(),
        &JumpClock(Instant::now()),
        &mut |_| std::ops::ControlFlow::Continue(()),
    );
    assert!(sent.is_ok(), "{sent:?}; {:?}", replay.finish());
    replay.finish().unwrap();
}

#[test]
fn a_replay_catches_a_host_that_sends_another_file() {
    let mut replay = Replay::new(conversation("vm-wire-recovery-restation.pcap")).unwrap();
    irecv::recovery::claim_interfaces(&mut replay).unwrap();
    let mut other = pattern(WIRE_RECOVERY_BYTES);
    other[700] ^= 1;
    let sent = irecv::recovery::run_upload_cancellable(
        &mut replay,
        &other,
        irecv::recovery::UploadOptions::default(),
        &JumpClock(Instant::now()),
        &mut |_| std::ops::ControlFlow::Continue(()),
    );
    assert!(sent.is_err());
    let d = replay.finish().unwrap_err();
    assert!(d.expected.contains("bulk OUT"), "{d}");
}

/// Sends every recorded request to `dev` (the virtual clock following the recorded times) and
/// checks the phone answers as recorded. Standard requests other than descriptor reads are
/// the kernel's business (addressing, configuration) and are not sent. A device descriptor
/// with another product id is the phone's next enumeration (after a DFU manifest the host
/// resets the port, which is not a URB): the comparison ends there. Returns how many were
/// compared.
fn answers_as_recorded(bench: &Bench, dev: &mut dyn UsbDevice, conv: &Conversation) -> usize {
    let t = Duration::from_secs(5);
    let mut last = conv
        .exchanges
        .first()
        .map(|e| e.submitted)
        .unwrap_or_default();
    let mut compared = 0;
    for (i, e) in conv.exchanges.iter().enumerate() {
        bench.clock_advance(e.submitted.saturating_sub(last));
        last = last.max(e.submitted);
        if e.outcome == Outcome::Missing {
            continue;
        }
        if let (Request::ControlIn { setup, .. }, Outcome::In(d)) = (&e.request, &e.outcome) {
            let next_enumeration = setup.request == 6
                && setup.value == 0x0100
                && d.get(10..12) != Some(&dev.product_id().to_le_bytes()[..]);
            if next_enumeration {
                break;
            }
        }
        let got = match &e.request {
            Request::ControlIn { setup, .. } if e.request.is_standard() && setup.request != 6 => {
                continue
            }
            Request::ControlOut { .. } if e.request.is_standard() => continue,
            Request::ControlIn { setup, length } => {
                dev.control_in(*setup, *length, t).map(Outcome::In)
            }
            Request::ControlOut { setup, data } => dev
                .control_out(*setup, data, t)
                .map(|n| Outcome::Out { written: n as u32 }),
            Request::BulkOut { endpoint, data } => dev
                .bulk_out(*endpoint, data, t)
                .map(|n| Outcome::Out { written: n as u32 }),
            Request::BulkIn { endpoint, length } => {
                dev.bulk_in(*endpoint, *length as usize, t).map(Outcome::In)
            }
        }
        .unwrap_or_else(|err| Outcome::Failed(err.kind()));
        // After the phone left the bus (a DFU manifest resets it) the kernel's status words
        // vary (ENODEV, EPROTO, ESHUTDOWN); a failure answers a failure.
        let same = match (&got, &e.outcome) {
            (Outcome::Failed(_), Outcome::Failed(_)) => true,
            (a, b) => a == b,
        };
        assert!(
            same,
            "exchange {i} ({}): the virtual phone answered {got:?}, the recording has {:?}",
            e.request, e.outcome
        );
        compared += 1;
    }
    compared
}

#[test]
fn libirecovery_dfu_upload_gets_the_recorded_answers() {
    let conv = conversation("vm-wire-dfu-irecovery.pcap");
    let bench = Bench::new(DFU3.0, DFU3.1, options(Mode::Dfu(DfuStage::SecureRom)));
    let mut dev = bench.open(0);
    let n = answers_as_recorded(&bench, dev.as_mut(), &conv);
    assert!(n >= 6, "only {n} exchanges compared");
    // the USB reset libirecovery sent after the manifest (not a URB, so not in the trace):
    // the phone takes the image, as the one in the VM did
    let _ = dev.reset();
    assert!(bench.wait_for(0, |m| matches!(m, Mode::Recovery(_))));
    let uploads = bench
        .hub
        .with_phone(0, |p| p.core().record.uploads.clone())
        .unwrap();
    let want = sha256(&pattern(WIRE_DFU_BYTES));
    assert!(
        uploads.iter().any(|r| r.sha256 == want && r.accepted),
        "the phone did not take the recorded file: {uploads:?}"
    );
}

#[test]
fn libirecovery_recovery_upload_gets_the_recorded_answers() {
    let conv = conversation("vm-wire-recovery-irecovery.pcap");
    let bench = Bench::new(
        RECOVERY.0,
        RECOVERY.1,
        options(Mode::Recovery(RecoveryStage::Iboot)),
    );
    let mut dev = bench.open(0);
    irecv::recovery::claim_interfaces(dev.as_mut()).unwrap();
    let n = answers_as_recorded(&bench, dev.as_mut(), &conv);
    assert!(n >= 3, "only {n} exchanges compared");
    let received = bench
        .hub
        .with_phone(0, |p| p.core().record.received.clone())
        .unwrap();
    let want = sha256(&pattern(WIRE_RECOVERY_BYTES));
    assert!(
        received.iter().any(|r| r.sha256 == want),
        "the phone did not receive the recorded file: {received:?}"
    );
}

/// The lockdown frames of a recorded usbmux conversation: (to the device?, frame bytes), in
/// the order they completed on the wire.
fn lockdown_frames(name: &str) -> Vec<(bool, Vec<u8>)> {
    let records = usb::trace::read_records(&fixture(name)[..]).unwrap();
    // per direction: bytes not yet a whole mux packet
    let mut pending = [Vec::new(), Vec::new()];
    // per (direction, host port): stream bytes not yet a whole lockdown frame
    let mut streams: std::collections::BTreeMap<(bool, u16), Vec<u8>> = Default::default();
    let mut frames = Vec::new();
    for r in &records {
        if r.xfer_type != XferType::Bulk || r.data.is_empty() {
            continue;
        }
        let to_device = match (r.event, r.is_in()) {
            (EventType::Submit, false) => true,
            (EventType::Complete, true) => false,
            _ => continue,
        };
        let buf = &mut pending[usize::from(to_device)];
        buf.extend_from_slice(&r.data);
        while buf.len() >= 8 {
            let length = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
            assert!(length >= 8, "{name}: not a mux packet");
            if buf.len() < length {
                break;
            }
            let packet: Vec<u8> = buf.drain(..length).collect();
            let protocol = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
            let header = if packet.get(8..12) == Some(&[0xfe, 0xed, 0xfa, 0xce][..]) {
                16
            } else {
                8
            };
            if protocol != 6 || packet.len() < header + 20 {
                continue;
            }
            let tcp = &packet[header..];
            let (sport, dport) = (
                u16::from_be_bytes([tcp[0], tcp[1]]),
                u16::from_be_bytes([tcp[2], tcp[3]]),
            );
            let (host_port, device_port) = if to_device {
                (sport, dport)
            } else {
                (dport, sport)
            };
            if device_port != lockdown::PORT {
                continue;
            }
            let payload = &tcp[usize::from(tcp[12] >> 4) * 4..];
            let stream = streams.entry((to_device, host_port)).or_default();
            stream.extend_from_slice(payload);
            while stream.len() >= 4 {
                let len = u32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]) as usize;
                if stream.len() < 4 + len {
                    break;
                }
                frames.push((to_device, stream.drain(..4 + len).collect()));
            }
        }
    }
    frames
}

/// Sends each recorded request frame to a virtual phone of the same identity on one lockdown
/// connection and checks each reply frame is the recorded one, byte for byte. Returns the
/// request names.
fn phone_replies_as_recorded(name: &str, phone: (&str, u64)) -> Vec<String> {
    let frames = lockdown_frames(name);
    let requests: Vec<&Vec<u8>> = frames.iter().filter(|f| f.0).map(|f| &f.1).collect();
    let replies: Vec<&Vec<u8>> = frames.iter().filter(|f| !f.0).map(|f| &f.1).collect();
    assert!(!requests.is_empty(), "{name}: no lockdown request recorded");
    assert_eq!(
        requests.len(),
        replies.len(),
        "{name}: a request without its reply"
    );
    let bench = Bench::new(phone.0, phone.1, options(Mode::Normal));
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let conn = mux.connect(lockdown::PORT).unwrap();
    let mut names = Vec::new();
    for (request, recorded) in requests.iter().zip(&replies) {
        let dict: plist::Dictionary = plist::from_bytes(&request[4..]).unwrap();
        names.push(
            dict.get("Request")
                .and_then(plist::Value::as_string)
                .unwrap_or("?")
                .to_string(),
        );
        mux.send(conn, request).unwrap();
        let mut reply = Vec::new();
        while reply.len() < 4
            || reply.len()
                < 4 + u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize
        {
            reply.extend(mux.recv(conn).unwrap());
        }
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(recorded),
            "{name}: the reply to {} differs",
            names.last().unwrap()
        );
    }
    names
}

#[test]
fn lockdown_through_usbmuxd_gets_the_recorded_replies() {
    let names = phone_replies_as_recorded("vm-wire-lockdown-usbmuxd.pcap", NORMAL);
    assert!(names.iter().any(|n| n == "GetValue"), "{names:?}");
}

#[test]
fn lockdown_through_restation_gets_the_recorded_replies() {
    let names = phone_replies_as_recorded("vm-wire-lockdown-restation.pcap", NORMAL2);
    assert!(names.iter().any(|n| n == "GetValue"), "{names:?}");
}

#[test]
fn ideviceinfo_asks_the_same_through_both_daemons() {
    let requests = |name| -> Vec<Vec<u8>> {
        lockdown_frames(name)
            .into_iter()
            .filter(|f| f.0)
            .map(|f| f.1)
            .collect()
    };
    assert_eq!(
        requests("vm-wire-lockdown-usbmuxd.pcap"),
        requests("vm-wire-lockdown-restation.pcap")
    );
}
