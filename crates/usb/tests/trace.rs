//! Trace record and replay: a conversation recorded through `Recorder` replays green through
//! `Replay`, and a host that does something else is caught at the first difference.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use usb::trace::{
    read_records, Conversation, EventType, Outcome, Record, Recorder, Replay, ReplayBackend,
    Request, Timestamps, TraceError, XferType,
};
use usb::{
    ConfigurationDescriptor, Control, DeviceDescriptor, ErrorKind, Operation, PortPath, Speed,
    UsbBackend, UsbDevice, UsbError,
};

const T: Duration = Duration::from_secs(1);

/// A device in the shape of a phone in recovery mode: commands on control OUT, `getenv`
/// answers on control IN, uploads on bulk OUT 0x04, log lines on bulk IN 0x81. It stalls the
/// `reboot` command like a phone leaving the bus.
struct Recovery {
    descriptor: DeviceDescriptor,
    configs: Vec<ConfigurationDescriptor>,
    last_command: Vec<u8>,
    uploaded: usize,
}

impl Recovery {
    fn new() -> Self {
        let bytes = [
            9, 2, 41, 0, 2, 1, 0, 0x80, 250, // configuration
            9, 4, 0, 0, 1, 0xFE, 1, 2, 0, // interface 0
            7, 5, 0x04, 2, 0, 2, 0, // bulk OUT 0x04
            9, 4, 1, 0, 1, 0xFF, 0xFF, 0x51, 0, // interface 1
            7, 5, 0x81, 2, 0, 2, 0, // bulk IN 0x81
        ];
        Recovery {
            descriptor: DeviceDescriptor {
                usb_version: 0x0200,
                class: 0,
                subclass: 0,
                protocol: 0,
                max_packet_size_0: 64,
                vendor_id: 0x05ac,
                product_id: 0x1281,
                device_version: 0,
                manufacturer_index: 2,
                product_index: 3,
                serial_number_index: 4,
                num_configurations: 1,
            },
            configs: vec![ConfigurationDescriptor::parse(&bytes).unwrap()],
            last_command: Vec::new(),
            uploaded: 0,
        }
    }
}

impl UsbDevice for Recovery {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        &self.descriptor
    }
    fn configurations(&self) -> &[ConfigurationDescriptor] {
        &self.configs
    }
    fn speed(&self) -> Speed {
        Speed::High
    }
    fn port_path(&self) -> Option<&PortPath> {
        None
    }
    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        Ok(1)
    }
    fn set_configuration(&mut self, _: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn claim_interface(&mut self, _: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn release_interface(&mut self, _: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn set_alternate_setting(&mut self, _: u8, _: u8) -> Result<(), UsbError> {
        Ok(())
    }
    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        _: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        let answer = if self.last_command.starts_with(b"getenv build-version") {
            b"19E258\0".to_vec()
        } else {
            Vec::new()
        };
        let _ = setup;
        Ok(answer[..answer.len().min(usize::from(length))].to_vec())
    }
    fn control_out(&mut self, setup: Control, data: &[u8], _: Duration) -> Result<usize, UsbError> {
        if setup.request == 1 && data.starts_with(b"reboot") {
            return Err(UsbError::new(
                ErrorKind::Pipe,
                Operation::ControlOut {
                    setup,
                    length: data.len(),
                },
            ));
        }
        self.last_command = data.to_vec();
        Ok(data.len())
    }
    fn bulk_in(&mut self, _: u8, _: usize, _: Duration) -> Result<Vec<u8>, UsbError> {
        Ok(format!("received {} bytes\n", self.uploaded).into_bytes())
    }
    fn bulk_out(&mut self, _: u8, data: &[u8], _: Duration) -> Result<usize, UsbError> {
        self.uploaded += data.len();
        Ok(data.len())
    }
    fn reset(&mut self) -> Result<(), UsbError> {
        Ok(())
    }
}

fn command(request: u8) -> Control {
    Control::new(0x40, request, 0, 0)
}

/// The host side of a short recovery session; returns what it observed.
fn session(dev: &mut dyn UsbDevice) -> Vec<String> {
    let mut seen = Vec::new();
    dev.set_configuration(1).unwrap();
    dev.claim_interface(0).unwrap();
    dev.control_out(command(0), b"setenv auto-boot false\0", T)
        .unwrap();
    dev.control_out(command(0), b"getenv build-version\0", T)
        .unwrap();
    let v = dev.control_in(Control::new(0xC0, 0, 0, 0), 255, T).unwrap();
    seen.push(String::from_utf8_lossy(&v).into_owned());
    dev.control_out(Control::new(0x41, 0, 0, 0), &[], T)
        .unwrap();
    for chunk in [vec![0xAA; 0x8000], vec![0xBB; 0x200]] {
        dev.bulk_out(0x04, &chunk, T).unwrap();
    }
    dev.bulk_out(0x04, &[], T).unwrap(); // zero-length packet: 0x200 is a multiple of 512
    let log = dev.bulk_in(0x81, 512, T).unwrap();
    seen.push(String::from_utf8_lossy(&log).into_owned());
    let err = dev.control_out(command(1), b"reboot\0", T).unwrap_err();
    seen.push(err.kind().to_string());
    seen
}

fn record_session() -> (Vec<u8>, Vec<String>) {
    let mut pcap = Vec::new();
    let mut rec = Recorder::new(Recovery::new(), &mut pcap, Timestamps::Sequential).unwrap();
    let seen = session(&mut rec);
    assert!(rec.trace_error().is_none());
    drop(rec);
    (pcap, seen)
}

#[test]
fn a_recorded_session_replays_green() {
    let (pcap, live) = record_session();
    let conversation = Conversation::single_from_pcap(&pcap[..]).unwrap();
    let mut replay = Replay::new(conversation).unwrap();
    assert_eq!(replay.device_descriptor().product_id, 0x1281);
    assert_eq!(replay.configurations().len(), 1);
    let replayed = session(&mut replay);
    assert_eq!(replayed, live);
    assert_eq!(live[0], "19E258\0");
    assert_eq!(live[2], "pipe");
    replay.finish().unwrap();
}

#[test]
fn the_file_has_the_usbmon_layout() {
    let (pcap, _) = record_session();
    assert_eq!(
        &pcap[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian pcap magic"
    );
    assert_eq!(u32::from_le_bytes(pcap[20..24].try_into().unwrap()), 220);
    let records = read_records(&pcap[..]).unwrap();
    // Enumeration reads, then submit/complete pairs.
    assert_eq!(records[0].event, EventType::Submit);
    assert_eq!(records[0].setup, Some([0x80, 6, 0, 1, 0, 0, 18, 0]));
    assert_eq!(records[1].event, EventType::Complete);
    assert_eq!(records[1].data.len(), 18);
    let upload = records
        .iter()
        .find(|r| {
            r.xfer_type == XferType::Bulk && r.endpoint == 0x04 && r.event == EventType::Submit
        })
        .unwrap();
    assert_eq!(upload.length, 0x8000);
    let zlp = records
        .iter()
        .filter(|r| r.endpoint == 0x04 && r.event == EventType::Submit)
        .nth(2)
        .unwrap();
    assert_eq!(zlp.length, 0, "the zero-length packet is a URB of its own");
    let stall = records.last().unwrap();
    assert_eq!((stall.event, stall.status), (EventType::Complete, -32));
    // Same conversation, same bytes.
    assert_eq!(record_session().0, pcap);
}

#[test]
fn the_first_difference_is_reported() {
    let (pcap, _) = record_session();
    let mut replay = Replay::new(Conversation::single_from_pcap(&pcap[..]).unwrap()).unwrap();
    replay.set_configuration(1).unwrap();
    replay
        .control_out(command(0), b"setenv auto-boot false\0", T)
        .unwrap();
    let err = replay
        .control_out(command(0), b"getenv boot-args\0", T)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other);
    let d = replay.divergence().unwrap().clone();
    assert!(d.expected.contains("control OUT 0x40/0"), "{d}");
    assert!(d.got.contains("[17 bytes:"), "{d}");
    // Everything after the divergence fails too, and finish reports the same place.
    assert!(replay.bulk_in(0x81, 512, T).is_err());
    assert_eq!(replay.finish(), Err(d));
}

#[test]
fn a_host_that_stops_early_is_caught() {
    let (pcap, _) = record_session();
    let mut replay = Replay::new(Conversation::single_from_pcap(&pcap[..]).unwrap()).unwrap();
    replay
        .control_out(command(0), b"setenv auto-boot false\0", T)
        .unwrap();
    let d = replay.finish().unwrap_err();
    assert!(
        d.expected.contains("getenv") || d.expected.contains("control OUT"),
        "{d}"
    );
    assert!(d.got.contains("stopped"), "{d}");
}

#[test]
fn streams_may_interleave_differently_but_not_reorder_within() {
    let (pcap, _) = record_session();
    let c = Conversation::single_from_pcap(&pcap[..]).unwrap();
    // Reading the log line before the commands is a different interleaving: allowed.
    let mut replay = Replay::new(c.clone()).unwrap();
    assert!(replay.bulk_in(0x81, 512, T).is_ok());
    // Sending the second upload chunk first reorders one stream: a divergence.
    let mut replay = Replay::new(c).unwrap();
    assert!(replay.bulk_out(0x04, &[0xBB; 0x200], T).is_err());
    assert!(replay.divergence().is_some());
}

#[test]
fn housekeeping_is_answered_not_compared() {
    let (pcap, _) = record_session();
    let mut replay = Replay::new(Conversation::single_from_pcap(&pcap[..]).unwrap()).unwrap();
    // Not in the recording at this point, but standard requests never diverge.
    replay.set_alternate_setting(1, 1).unwrap();
    let dev = replay
        .control_in(Control::get_descriptor(1, 0, 0), 18, T)
        .unwrap();
    assert_eq!(dev.len(), 18);
    assert_eq!(session(&mut replay)[0], "19E258\0");
    replay.finish().unwrap();
}

#[test]
fn replay_backend_lists_opens_and_collects_divergences() {
    let (pcap, _) = record_session();
    let backend = ReplayBackend::new(Conversation::from_pcap(&pcap[..]).unwrap()).unwrap();
    let devices = backend.devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].product_id(), 0x1281);
    let mut dev = backend.open(devices[0].id).unwrap();
    assert_eq!(session(dev.as_mut())[0], "19E258\0");
    assert!(backend.divergences().is_empty());
    let mut dev = backend.open(devices[0].id).unwrap();
    let _ = dev.bulk_out(0x04, b"something else", T);
    assert_eq!(backend.divergences().len(), 1);
}

#[test]
fn broken_files_are_typed_errors() {
    let (pcap, _) = record_session();
    assert!(matches!(
        read_records(&pcap[..10]),
        Err(TraceError::Pcap(_))
    ));
    let mut other_link = pcap.clone();
    other_link[20..24].copy_from_slice(&1u32.to_le_bytes()); // Ethernet
    assert!(matches!(
        read_records(&other_link[..]),
        Err(TraceError::LinkType { found: 1 })
    ));
    let mut bad_record = pcap.clone();
    bad_record[24 + 16 + 8] = b'Z'; // event type of the first record
    assert!(matches!(
        read_records(&bad_record[..]),
        Err(TraceError::Record { index: 0, .. })
    ));
    let mut no_descriptor = Conversation::single_from_pcap(&pcap[..]).unwrap();
    no_descriptor.exchanges.retain(|e| !e.request.is_standard());
    assert!(matches!(
        Replay::new(no_descriptor),
        Err(TraceError::NoDeviceDescriptor)
    ));
}

#[test]
fn failures_and_missing_completions_replay_as_errors() {
    let (pcap, _) = record_session();
    let mut c = Conversation::single_from_pcap(&pcap[..]).unwrap();
    let last = c.exchanges.last_mut().unwrap();
    assert_eq!(last.outcome, Outcome::Failed(ErrorKind::Pipe));
    last.outcome = Outcome::Missing;
    assert!(matches!(last.request, Request::ControlOut { .. }));
    let mut replay = Replay::new(c).unwrap();
    let mut seen = Vec::new();
    replay.set_configuration(1).unwrap();
    replay
        .control_out(command(0), b"setenv auto-boot false\0", T)
        .unwrap();
    replay
        .control_out(command(0), b"getenv build-version\0", T)
        .unwrap();
    seen.push(
        replay
            .control_in(Control::new(0xC0, 0, 0, 0), 255, T)
            .unwrap(),
    );
    replay
        .control_out(Control::new(0x41, 0, 0, 0), &[], T)
        .unwrap();
    replay.bulk_out(0x04, &[0xAA; 0x8000], T).unwrap();
    replay.bulk_out(0x04, &[0xBB; 0x200], T).unwrap();
    replay.bulk_out(0x04, &[], T).unwrap();
    // Asking for fewer bytes than the recording delivered is babble.
    assert_eq!(
        replay.bulk_in(0x81, 4, T).unwrap_err().kind(),
        ErrorKind::Overflow
    );
    let err = replay.control_out(command(1), b"reboot\0", T).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

/// A bulk read that its timeout unlinked after bytes came: libusb returns those bytes, so the
/// replay does too; one unlinked empty stays a timeout, and another failure with bytes stays
/// that failure.
#[test]
fn a_read_unlinked_after_bytes_came_returned_them() {
    let read = |id: u64, event: EventType, status: i32, data: &[u8]| Record {
        id,
        event,
        xfer_type: XferType::Bulk,
        endpoint: 0x85,
        device: 3,
        bus: 1,
        setup: None,
        timestamp: Duration::from_millis(id),
        status,
        length: if event == EventType::Submit {
            65536
        } else {
            data.len() as u32
        },
        data: data.to_vec(),
        interval: 0,
        start_frame: 0,
        xfer_flags: 0,
        ndesc: 0,
    };
    let records = [
        read(1, EventType::Submit, -115, &[]),
        read(1, EventType::Complete, -2, b"syn-ack"),
        read(2, EventType::Submit, -115, &[]),
        read(2, EventType::Complete, -104, &[]),
        read(3, EventType::Submit, -115, &[]),
        read(3, EventType::Complete, -32, b"stalled"),
    ];
    let c = Conversation::from_records(&records);
    let outcomes: Vec<&Outcome> = c[0].exchanges.iter().map(|e| &e.outcome).collect();
    assert_eq!(
        outcomes,
        [
            &Outcome::In(b"syn-ack".to_vec()),
            &Outcome::Failed(ErrorKind::Timeout),
            &Outcome::Failed(ErrorKind::Pipe),
        ]
    );
}

fn record_strategy() -> impl Strategy<Value = Record> {
    (
        any::<u64>(),
        prop_oneof![
            Just(EventType::Submit),
            Just(EventType::Complete),
            Just(EventType::Error)
        ],
        prop_oneof![
            Just(XferType::Isochronous),
            Just(XferType::Interrupt),
            Just(XferType::Control),
            Just(XferType::Bulk)
        ],
        any::<(u8, u8, u16)>(),
        proptest::option::of(any::<[u8; 8]>()),
        (0u64..1 << 40, 0u32..1_000_000),
        any::<(i32, u32)>(),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<(i32, i32, u32, u32)>(),
    )
        .prop_map(
            |(
                id,
                event,
                xfer_type,
                (endpoint, device, bus),
                setup,
                (sec, usec),
                (status, length),
                data,
                (interval, start_frame, xfer_flags, ndesc),
            )| Record {
                id,
                event,
                xfer_type,
                endpoint,
                device,
                bus,
                setup,
                timestamp: Duration::new(sec, usec * 1000),
                status,
                length,
                data,
                interval,
                start_frame,
                xfer_flags,
                ndesc,
            },
        )
}

proptest! {
    #[test]
    fn records_round_trip(r in record_strategy()) {
        prop_assert_eq!(Record::parse(&r.to_bytes()), Ok(r));
    }
}

/// Writes seeds for the `usbmon_record` and `usbmon_pcap` fuzz targets from recorded sessions.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_trace_seed_corpus() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let (pcap, _) = record_session();
    let records = read_records(&pcap[..]).unwrap();
    let dir = base.join("usbmon_record");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, r) in records.iter().enumerate().take(12) {
        std::fs::write(dir.join(format!("seed-{i:02}")), r.to_bytes()).unwrap();
    }
    std::fs::write(dir.join("seed-truncated"), &records[0].to_bytes()[..40]).unwrap();
    let dir = base.join("usbmon_pcap");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("seed-session"), &pcap).unwrap();
    std::fs::write(dir.join("seed-header-only"), &pcap[..24]).unwrap();
    std::fs::write(dir.join("seed-cut"), &pcap[..pcap.len() / 2]).unwrap();
    let mut other = pcap.clone();
    other[20] = 1;
    std::fs::write(dir.join("seed-other-link"), other).unwrap();
    let mut big = pcap;
    big[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(dir.join("seed-huge-caplen"), big).unwrap();
}
