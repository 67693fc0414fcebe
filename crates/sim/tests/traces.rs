//! Recorded conversations with the virtual phone, kept as usbmon pcaps in `fixtures/traces/`,
//! replayed through `usb::trace::Replay` against the same host code that recorded them.
//!
//! The traces are written once by the ignored test `write_traces`
//! (`cargo test -p sim --test traces -- --ignored write_traces`); `fixtures/traces/README.md`
//! says what each holds. The default run replays every one and expects no divergence, and
//! checks that a host that changes one step is caught at that step.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::host::{enter_recovery, identify, restore, RestoreHost};
use common::*;
use irecv::dfu::{self, Options as DfuOptions};
use irecv::recovery::{self, Command};
use sim::clock::{Clock, DriverClock, ManualClock};
use sim::phone::{Mode, Options, RecoveryStage};
use sim::profile::DfuStage;
use usb::trace::{Conversation, Recorder, Replay, Timestamps};
use usb::{
    ConfigurationDescriptor, Control, DeviceDescriptor, PortPath, Speed, UsbDevice, UsbError,
};

/// A conversation: host code run against any device (the hub, a recorder, a replay). Returns
/// a summary of what the host saw.
type Host = fn(&mut dyn UsbDevice, &mut dyn irecv::dfu::Clock) -> Result<String, String>;

struct Trace {
    name: &'static str,
    product: &'static str,
    seed: u64,
    start: Mode,
    host: Host,
}

fn normal_get_value(
    dev: &mut dyn UsbDevice,
    _: &mut dyn irecv::dfu::Clock,
) -> Result<String, String> {
    let v = identify(dev, &["UniqueChipID", "ProductType", "BuildVersion"])
        .map_err(|e| format!("{e:?}"))?;
    Ok(format!("{v:?}"))
}

fn normal_enter_recovery(
    dev: &mut dyn UsbDevice,
    _: &mut dyn irecv::dfu::Clock,
) -> Result<String, String> {
    let gone = enter_recovery(dev).map_err(|e| format!("{e:?}"))?;
    Ok(format!("left: {:?}", gone.usb_kind()))
}

fn recovery_commands(
    dev: &mut dyn UsbDevice,
    _: &mut dyn irecv::dfu::Clock,
) -> Result<String, String> {
    let t = Duration::from_secs(5);
    let e = |e: recovery::RecoveryError| format!("{e:?}");
    recovery::claim_interfaces(dev).map_err(e)?;
    let before = recovery::getenv(dev, "auto-boot", t).map_err(e)?;
    recovery::setenv(dev, "auto-boot", "false", t).map_err(e)?;
    recovery::saveenv(dev, t).map_err(e)?;
    recovery::send_command(dev, &Command::new("bgcolor 255 0 0").unwrap(), t).map_err(e)?;
    let p =
        recovery::run_upload(dev, &image(20_000, 7), &mut |_| {}).map_err(|x| format!("{x:?}"))?;
    recovery::send_command(dev, &Command::new("ramdisk").unwrap(), t).map_err(e)?;
    Ok(format!("auto-boot was {before}, uploaded {}", p.sent))
}

fn dfu_upload(
    dev: &mut dyn UsbDevice,
    clock: &mut dyn irecv::dfu::Clock,
) -> Result<String, String> {
    let f = dfu::run_download(
        dev,
        &image(10_000, 3),
        DfuOptions::dfu(),
        clock,
        &mut |_| {},
    )
    .map_err(|e| format!("{e:?}"))?;
    Ok(format!("{f:?}"))
}

fn short_restore(dev: &mut dyn UsbDevice, _: &mut dyn irecv::dfu::Clock) -> Result<String, String> {
    let host = RestoreHost {
        image: image(40_000, 5),
        build: Some(("22B83".into(), "18.1".into())),
        ..RestoreHost::default()
    };
    let seen = restore(dev, &host).map_err(|e| format!("{e:?}"))?;
    if seen.status != Some(0) {
        return Err(format!("status {:?}", seen.status));
    }
    Ok(format!("{:?} {:?}", seen.requested, seen.status))
}

const TRACES: [Trace; 5] = [
    Trace {
        name: "normal-getvalue",
        product: "iPhone14,3",
        seed: 21,
        start: Mode::Normal,
        host: normal_get_value,
    },
    Trace {
        name: "normal-enter-recovery",
        product: "iPhone10,3",
        seed: 22,
        start: Mode::Normal,
        host: normal_enter_recovery,
    },
    Trace {
        name: "recovery-commands-upload",
        product: "iPhone10,3",
        seed: 23,
        start: Mode::Recovery(RecoveryStage::Iboot),
        host: recovery_commands,
    },
    Trace {
        name: "dfu-upload",
        product: "iPhone10,3",
        seed: 24,
        start: Mode::Dfu(DfuStage::SecureRom),
        host: dfu_upload,
    },
    Trace {
        name: "restore-short",
        product: "iPhone14,3",
        seed: 25,
        start: Mode::Restore,
        host: short_restore,
    },
];

fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/traces"
    ))
}

fn path(name: &str) -> PathBuf {
    dir().join(format!("{name}.pcap"))
}

/// A hub handle as an owned `UsbDevice` (what `Recorder` wraps).
struct Owned(Box<dyn UsbDevice>);

impl UsbDevice for Owned {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        self.0.device_descriptor()
    }
    fn configurations(&self) -> &[ConfigurationDescriptor] {
        self.0.configurations()
    }
    fn speed(&self) -> Speed {
        self.0.speed()
    }
    fn port_path(&self) -> Option<&PortPath> {
        self.0.port_path()
    }
    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        self.0.active_configuration()
    }
    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError> {
        self.0.set_configuration(value)
    }
    fn claim_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.0.claim_interface(interface)
    }
    fn release_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.0.release_interface(interface)
    }
    fn set_alternate_setting(&mut self, interface: u8, alt: u8) -> Result<(), UsbError> {
        self.0.set_alternate_setting(interface, alt)
    }
    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        t: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        self.0.control_in(setup, length, t)
    }
    fn control_out(&mut self, setup: Control, data: &[u8], t: Duration) -> Result<usize, UsbError> {
        self.0.control_out(setup, data, t)
    }
    fn bulk_in(&mut self, endpoint: u8, length: usize, t: Duration) -> Result<Vec<u8>, UsbError> {
        self.0.bulk_in(endpoint, length, t)
    }
    fn bulk_out(&mut self, endpoint: u8, data: &[u8], t: Duration) -> Result<usize, UsbError> {
        self.0.bulk_out(endpoint, data, t)
    }
    fn reset(&mut self) -> Result<(), UsbError> {
        self.0.reset()
    }
}

/// Runs `trace`'s host code against a fresh virtual phone, recording; returns the pcap and
/// the summary.
fn record(trace: &Trace) -> (Vec<u8>, Result<String, String>) {
    let options = Options {
        start: trace.start,
        ..Options::default()
    };
    // The traces' host code does not pair (EnterRecovery outside a session): a lenient phone.
    let bench = Bench::lenient(trace.product, trace.seed, options);
    let dev = Owned(bench.open(0));
    let mut rec = Recorder::new(dev, Vec::new(), Timestamps::Sequential).unwrap();
    let mut clock = bench.driver_clock();
    let summary = (trace.host)(&mut rec, &mut clock);
    assert!(rec.trace_error().is_none());
    let (_, pcap) = rec.into_parts();
    (pcap.unwrap(), summary)
}

fn open_trace(name: &str) -> Option<Replay> {
    let p = path(name);
    let Ok(file) = std::fs::File::open(&p) else {
        eprintln!(
            "SKIP: {} is absent (run the ignored write_traces test)",
            p.display()
        );
        return None;
    };
    let conversation = Conversation::single_from_pcap(std::io::BufReader::new(file)).unwrap();
    Some(Replay::new(conversation).unwrap())
}

fn replay_clock() -> DriverClock {
    DriverClock(ManualClock::new() as Arc<dyn Clock>)
}

/// Writes every trace into `fixtures/traces/`. Run once:
/// `cargo test -p sim --test traces -- --ignored write_traces`.
#[test]
#[ignore]
fn write_traces() {
    std::fs::create_dir_all(dir()).unwrap();
    for trace in &TRACES {
        let (pcap, summary) = record(trace);
        summary.unwrap_or_else(|e| panic!("{}: {e}", trace.name));
        std::fs::write(path(trace.name), &pcap).unwrap();
        eprintln!("{}: {} bytes", trace.name, pcap.len());
    }
}

#[test]
fn recording_is_byte_identical_across_runs() {
    for trace in &TRACES {
        let (a, sa) = record(trace);
        let (b, sb) = record(trace);
        assert_eq!(sa, sb);
        assert!(sa.is_ok(), "{}: {sa:?}", trace.name);
        assert!(a == b, "two recordings of {} differ", trace.name);
        if let Ok(committed) = std::fs::read(path(trace.name)) {
            assert!(
                committed == a,
                "the committed {} is stale: re-run write_traces",
                trace.name
            );
        }
    }
}

#[test]
fn every_committed_trace_replays_green_against_its_host_code() {
    let mut replayed = 0;
    for trace in &TRACES {
        let Some(mut replay) = open_trace(trace.name) else {
            continue;
        };
        let summary = (trace.host)(&mut replay, &mut replay_clock());
        assert!(summary.is_ok(), "{}: {summary:?}", trace.name);
        assert_eq!(replay.finish(), Ok(()), "{}", trace.name);
        replayed += 1;
    }
    if replayed < TRACES.len() {
        eprintln!("SKIP: only {replayed} of {} traces present", TRACES.len());
    }
}

#[test]
fn the_replayed_answers_are_the_phones() {
    let Some(mut replay) = open_trace("normal-getvalue") else {
        return;
    };
    let v = identify(
        &mut replay,
        &["UniqueChipID", "ProductType", "BuildVersion"],
    )
    .unwrap();
    let ecid = sim::profile::Profile::for_product_type("iPhone14,3", 21)
        .unwrap()
        .ecid;
    assert_eq!(v[0].as_unsigned_integer(), Some(ecid));
    assert_eq!(v[1].as_string(), Some("iPhone14,3"));
    assert_eq!(v[2].as_string(), Some("21F90"));
}

#[test]
fn a_host_that_asks_another_key_is_caught_at_that_request() {
    let Some(mut replay) = open_trace("normal-getvalue") else {
        return;
    };
    let err = identify(
        &mut replay,
        &["UniqueChipID", "SerialNumber", "BuildVersion"],
    )
    .unwrap_err();
    assert_eq!(err.usb_kind(), Some(usb::ErrorKind::Other), "{err:?}");
    let d = replay.divergence().cloned().unwrap();
    assert!(d.expected.contains("bulk OUT"), "{d}");
    assert!(d.got.contains("bulk OUT"), "{d}");
    assert_eq!(replay.finish(), Err(d));

    // A host that stops early is reported too.
    let Some(mut early) = open_trace("normal-getvalue") else {
        return;
    };
    let _ = identify(&mut early, &["UniqueChipID"]);
    assert!(early.finish().is_err());
}
