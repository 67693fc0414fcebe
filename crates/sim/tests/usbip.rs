//! USB/IP: the wire codec's round trips, and whole conversations with a small test-only client
//! (what the guest's `vhci-hcd` does) over a real loopback socket against `UsbipServer`.

use std::collections::HashMap;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use sim::clock::{Clock, RealClock};
use sim::descriptors;
use sim::hub::VirtualHub;
use sim::phone::{Mode, Options, Phone, RecoveryStage, Timings};
use sim::profile::{DfuStage, Profile};
use sim::usbip::wire::{
    errno, import_status, transfer_flags, CmdSubmit, CmdUnlink, Command, ExportedDevice,
    IsoPacketDescriptor, OpReply, OpRequest, RetSubmit, RetUnlink, Return, UsbDevice, UsbInterface,
    WireError, MAX_TRANSFER_LENGTH, NOT_ISO,
};
use sim::usbip::{ServerEvent, UsbipServer};
use usb::{Control, Direction};

const WAIT: Duration = Duration::from_secs(10);

// ---- the wire codec -----------------------------------------------------------------------

fn device_strategy() -> impl Strategy<Value = UsbDevice> {
    (
        (
            "[ -~]{0,255}",
            "[a-z0-9.:-]{0,31}",
            any::<u32>(),
            any::<u32>(),
        ),
        (any::<u32>(), any::<u16>(), any::<u16>(), any::<u16>()),
        any::<[u8; 6]>(),
    )
        .prop_map(
            |((path, busid, busnum, devnum), (speed, v, p, bcd), b)| UsbDevice {
                path,
                busid,
                busnum,
                devnum,
                speed,
                id_vendor: v,
                id_product: p,
                bcd_device: bcd,
                device_class: b[0],
                device_subclass: b[1],
                device_protocol: b[2],
                configuration_value: b[3],
                num_configurations: b[4],
                num_interfaces: b[5],
            },
        )
}

fn exported_strategy() -> impl Strategy<Value = ExportedDevice> {
    (
        device_strategy(),
        prop::collection::vec(any::<(u8, u8, u8)>(), 0..6),
    )
        .prop_map(|(mut device, ifs)| {
            device.num_interfaces = ifs.len() as u8;
            ExportedDevice {
                device,
                interfaces: ifs
                    .into_iter()
                    .map(|(class, subclass, protocol)| UsbInterface {
                        class,
                        subclass,
                        protocol,
                    })
                    .collect(),
            }
        })
}

fn iso_strategy() -> impl Strategy<Value = (u32, Vec<IsoPacketDescriptor>)> {
    prop_oneof![
        Just((0u32, Vec::new())),
        Just((NOT_ISO, Vec::new())),
        prop::collection::vec(any::<[u32; 4]>(), 1..5).prop_map(|v| {
            let iso: Vec<_> = v
                .into_iter()
                .map(
                    |[offset, length, actual_length, status]| IsoPacketDescriptor {
                        offset,
                        length,
                        actual_length,
                        status,
                    },
                )
                .collect();
            (iso.len() as u32, iso)
        }),
    ]
}

fn submit_strategy() -> impl Strategy<Value = CmdSubmit> {
    (
        (any::<u32>(), any::<u32>(), any::<bool>(), 0u8..16),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<[u8; 8]>()),
        prop::collection::vec(any::<u8>(), 0..600),
        0..=MAX_TRANSFER_LENGTH,
        iso_strategy(),
    )
        .prop_map(
            |((seqnum, devid, is_in, ep), (flags, start, interval, setup), data, in_len, iso)| {
                let (direction, length, data) = if is_in {
                    (Direction::In, in_len, Vec::new())
                } else {
                    (Direction::Out, data.len() as u32, data)
                };
                CmdSubmit {
                    seqnum,
                    devid,
                    direction,
                    ep,
                    transfer_flags: flags,
                    transfer_buffer_length: length,
                    start_frame: start,
                    number_of_packets: iso.0,
                    interval,
                    setup,
                    data,
                    iso: iso.1,
                }
            },
        )
}

fn ret_strategy() -> impl Strategy<Value = (RetSubmit, Direction)> {
    (
        (any::<u32>(), any::<i32>(), any::<u32>(), any::<u32>()),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..600),
        0..=MAX_TRANSFER_LENGTH,
        iso_strategy(),
    )
        .prop_map(
            |((seqnum, status, start, errors), is_in, data, out_len, iso)| {
                let (direction, actual, data) = if is_in {
                    (Direction::In, data.len() as u32, data)
                } else {
                    (Direction::Out, out_len, Vec::new())
                };
                (
                    RetSubmit {
                        seqnum,
                        status,
                        actual_length: actual,
                        start_frame: start,
                        number_of_packets: iso.0,
                        error_count: errors,
                        data,
                        iso: iso.1,
                    },
                    direction,
                )
            },
        )
}

/// Every strict prefix asks for more bytes; the whole message decodes to itself.
fn stream_check<T: std::fmt::Debug + PartialEq>(
    bytes: &[u8],
    value: &T,
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, WireError>,
) {
    for cut in [0, 1, 3, 7, 8, 47, bytes.len().saturating_sub(1)] {
        if cut < bytes.len() {
            assert_eq!(decode(&bytes[..cut]).unwrap(), None, "prefix of {cut}");
        }
    }
    let mut two = bytes.to_vec();
    two.extend_from_slice(bytes);
    let (first, n) = decode(&two).unwrap().unwrap();
    assert_eq!((&first, n), (value, bytes.len()));
    let (second, m) = decode(&two[n..]).unwrap().unwrap();
    assert_eq!((&second, m), (value, bytes.len()));
}

proptest! {
    #[test]
    fn op_requests_round_trip(busid in "[a-z0-9.:-]{0,31}", list in any::<bool>()) {
        let request = if list { OpRequest::DevList } else { OpRequest::Import { busid } };
        let mut bytes = Vec::new();
        request.encode(&mut bytes).unwrap();
        stream_check(&bytes, &request, OpRequest::decode);
    }

    #[test]
    fn devlist_replies_round_trip(devices in prop::collection::vec(exported_strategy(), 0..4)) {
        let reply = OpReply::DevList { devices };
        let mut bytes = Vec::new();
        reply.encode(&mut bytes).unwrap();
        stream_check(&bytes, &reply, OpReply::decode);
    }

    #[test]
    fn import_replies_round_trip(device in device_strategy(), status in 1u32..) {
        let ok = OpReply::Imported(device);
        let mut bytes = Vec::new();
        ok.encode(&mut bytes).unwrap();
        prop_assert_eq!(bytes.len(), 8 + 312);
        stream_check(&bytes, &ok, OpReply::decode);
        let refused = OpReply::ImportRefused { status };
        let mut bytes = Vec::new();
        refused.encode(&mut bytes).unwrap();
        prop_assert_eq!(bytes.len(), 8);
        prop_assert_eq!(OpReply::decode(&bytes).unwrap(), Some((refused, 8)));
    }

    #[test]
    fn submits_round_trip(cmd in submit_strategy()) {
        let cmd = Command::Submit(cmd);
        let mut bytes = Vec::new();
        cmd.encode(&mut bytes).unwrap();
        stream_check(&bytes, &cmd, Command::decode);
    }

    #[test]
    fn unlinks_round_trip(seqnum in any::<u32>(), devid in any::<u32>(), target in any::<u32>(), status in any::<i32>()) {
        let cmd = Command::Unlink(CmdUnlink { seqnum, devid, unlink_seqnum: target });
        let mut bytes = Vec::new();
        cmd.encode(&mut bytes).unwrap();
        prop_assert_eq!(bytes.len(), 48);
        stream_check(&bytes, &cmd, Command::decode);
        let ret = Return::Unlink(RetUnlink { seqnum, status });
        let mut bytes = Vec::new();
        ret.encode(&mut bytes).unwrap();
        prop_assert_eq!(bytes.len(), 48);
        stream_check(&bytes, &ret, |b| Return::decode(b, |_| None));
    }

    #[test]
    fn ret_submits_round_trip((ret, direction) in ret_strategy()) {
        let seqnum = ret.seqnum;
        let ret = Return::Submit(ret);
        let mut bytes = Vec::new();
        ret.encode(&mut bytes).unwrap();
        stream_check(&bytes, &ret, |b| Return::decode(b, |s| (s == seqnum).then_some(direction)));
    }

    #[test]
    fn any_bytes_decode_or_fail_typed(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        // Never a panic; a decoded message never claims more bytes than it had.
        for r in [
            OpRequest::decode(&bytes).map(|o| o.map(|(_, n)| n)),
            OpReply::decode(&bytes).map(|o| o.map(|(_, n)| n)),
            Command::decode(&bytes).map(|o| o.map(|(_, n)| n)),
            Return::decode(&bytes, |_| Some(Direction::In)).map(|o| o.map(|(_, n)| n)),
        ] {
            if let Ok(Some(n)) = r {
                prop_assert!(n <= bytes.len());
            }
        }
    }
}

#[test]
fn encoders_refuse_what_does_not_fit() {
    let long = OpRequest::Import {
        busid: "x".repeat(32),
    };
    assert_eq!(
        long.encode(&mut Vec::new()),
        Err(WireError::FieldTooLong {
            field: "busid",
            length: 32,
            max: 31
        })
    );
    assert_eq!(
        OpReply::ImportRefused { status: 0 }.encode(&mut Vec::new()),
        Err(WireError::ZeroRefusal)
    );
    let mut huge = Vec::new();
    Command::Unlink(CmdUnlink {
        seqnum: 1,
        devid: 0,
        unlink_seqnum: 0,
    })
    .encode(&mut huge)
    .unwrap();
    huge[3] = 1; // now a SUBMIT, OUT, with a length field of 0: fine
    huge[24..28].copy_from_slice(&(MAX_TRANSFER_LENGTH + 1).to_be_bytes());
    assert_eq!(
        Command::decode(&huge),
        Err(WireError::TransferTooLong {
            field: "transfer_buffer_length",
            length: MAX_TRANSFER_LENGTH + 1
        })
    );
}

// ---- a test-only USB/IP client ------------------------------------------------------------

enum Got {
    Return(Return),
    Eof,
    Nothing,
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    next: u32,
    devid: u32,
    directions: HashMap<u32, Direction>,
    device: UsbDevice,
}

fn op(addr: SocketAddr, request: OpRequest) -> (TcpStream, OpReply) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = Vec::new();
    request.encode(&mut bytes).unwrap();
    stream.write_all(&bytes).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((reply, n)) = OpReply::decode(&buf).unwrap() {
            assert_eq!(n, buf.len(), "nothing after the reply yet");
            return (stream, reply);
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the reply");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn devlist(addr: SocketAddr) -> Vec<ExportedDevice> {
    let (mut stream, reply) = op(addr, OpRequest::DevList);
    let OpReply::DevList { devices } = reply else {
        panic!("{reply:?}")
    };
    // The server closes after a device list.
    assert_eq!(stream.read(&mut [0u8; 16]).unwrap(), 0);
    devices
}

fn import(addr: SocketAddr, busid: &str) -> Result<Client, u32> {
    let (stream, reply) = op(
        addr,
        OpRequest::Import {
            busid: busid.into(),
        },
    );
    match reply {
        OpReply::Imported(device) => Ok(Client {
            stream,
            buf: Vec::new(),
            next: 1,
            devid: device.devid(),
            directions: HashMap::new(),
            device,
        }),
        OpReply::ImportRefused { status } => Err(status),
        other => panic!("{other:?}"),
    }
}

impl Client {
    fn submit(
        &mut self,
        direction: Direction,
        ep: u8,
        setup: [u8; 8],
        length: u32,
        data: Vec<u8>,
        flags: u32,
    ) -> u32 {
        let seqnum = self.next;
        self.next += 1;
        let cmd = CmdSubmit {
            seqnum,
            devid: self.devid,
            direction,
            ep,
            transfer_flags: flags
                | if direction == Direction::In {
                    transfer_flags::DIR_IN
                } else {
                    0
                },
            transfer_buffer_length: length,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup,
            data,
            iso: vec![],
        };
        let mut bytes = Vec::new();
        Command::Submit(cmd).encode(&mut bytes).unwrap();
        self.stream.write_all(&bytes).unwrap();
        self.directions.insert(seqnum, direction);
        seqnum
    }

    fn unlink(&mut self, target: u32) -> u32 {
        let seqnum = self.next;
        self.next += 1;
        let mut bytes = Vec::new();
        Command::Unlink(CmdUnlink {
            seqnum,
            devid: self.devid,
            unlink_seqnum: target,
        })
        .encode(&mut bytes)
        .unwrap();
        self.stream.write_all(&bytes).unwrap();
        seqnum
    }

    fn read_within(&mut self, wait: Duration) -> Got {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let directions = &self.directions;
            if let Some((r, n)) =
                Return::decode(&self.buf, |s| directions.get(&s).copied()).unwrap()
            {
                self.buf.drain(..n);
                if let Return::Submit(s) = &r {
                    self.directions.remove(&s.seqnum);
                }
                return Got::Return(r);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) => {
                    return Got::Nothing
                }
                Err(_) => return Got::Eof,
            }
        }
    }

    fn read(&mut self) -> Return {
        match self.read_within(WAIT) {
            Got::Return(r) => r,
            Got::Eof => panic!("connection closed"),
            Got::Nothing => panic!("no answer within {WAIT:?}"),
        }
    }

    fn ret(&mut self, seqnum: u32) -> RetSubmit {
        match self.read() {
            Return::Submit(r) if r.seqnum == seqnum => r,
            other => panic!("expected RET_SUBMIT {seqnum}, got {other:?}"),
        }
    }

    fn control_in(&mut self, setup: Control, length: u16) -> RetSubmit {
        let s = self.submit(
            Direction::In,
            0,
            setup.to_setup_packet(length),
            u32::from(length),
            vec![],
            0,
        );
        self.ret(s)
    }

    fn control_out(&mut self, setup: Control, data: &[u8]) -> RetSubmit {
        let s = self.submit(
            Direction::Out,
            0,
            setup.to_setup_packet(data.len() as u16),
            data.len() as u32,
            data.to_vec(),
            0,
        );
        self.ret(s)
    }

    fn bulk_out(&mut self, ep: u8, data: &[u8]) -> RetSubmit {
        let s = self.submit(
            Direction::Out,
            ep,
            [0; 8],
            data.len() as u32,
            data.to_vec(),
            0,
        );
        self.ret(s)
    }

    fn descriptor(&mut self, ty: u8, index: u8, language: u16, length: u16) -> Vec<u8> {
        let r = self.control_in(Control::get_descriptor(ty, index, language), length);
        assert_eq!(r.status, 0, "GET_DESCRIPTOR {ty}/{index}");
        r.data
    }

    fn string(&mut self, index: u8) -> String {
        usb::string::decode(&self.descriptor(3, index, 0x0409, 255)).unwrap()
    }
}

// ---- the server under test ----------------------------------------------------------------

struct Bench {
    server: UsbipServer,
    hub: VirtualHub,
    events: Receiver<ServerEvent>,
    seen: Vec<ServerEvent>,
}

fn fast_timings() -> Timings {
    Timings {
        after_dfu: Duration::from_millis(100),
        after_reboot: Duration::from_millis(150),
        ..Timings::default()
    }
}

fn bench(phones: &[(&str, Mode)]) -> Bench {
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let hub = VirtualHub::new(phones.len(), clock.clone());
    for (i, (product, mode)) in phones.iter().enumerate() {
        let profile = Profile::for_product_type(product, 40 + i as u64).unwrap();
        let options = Options {
            start: *mode,
            timings: fast_timings(),
            ..Options::default()
        };
        hub.plug(i, Phone::new(profile, options, clock.now()))
            .unwrap();
    }
    let (tx, events) = mpsc::channel();
    let server = UsbipServer::start("127.0.0.1:0", hub.clone(), Some(tx)).unwrap();
    Bench {
        server,
        hub,
        events,
        seen: Vec::new(),
    }
}

impl Bench {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn profile(&self, port: usize) -> Profile {
        self.hub.with_phone(port, |p| p.profile().clone()).unwrap()
    }

    /// Waits for an event `want` accepts (events before it are kept in `seen`).
    fn wait_for(&mut self, what: &str, want: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
        if let Some(e) = self.seen.iter().find(|e| want(e)) {
            return e.clone();
        }
        let end = Instant::now() + WAIT;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if want(&e) {
                        return e;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {what} event; saw {:?}", self.seen)
    }
}

const RECOVERY: Mode = Mode::Recovery(RecoveryStage::Iboot);
const DFU: Mode = Mode::Dfu(DfuStage::SecureRom);

fn sha_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- conversations ------------------------------------------------------------------------

#[test]
fn recovery_phone_enumerates_answers_commands_and_takes_an_upload() {
    let mut b = bench(&[("iPhone14,3", RECOVERY)]);
    let profile = b.profile(0);
    let identity = descriptors::recovery(&profile);
    b.wait_for("listening", |e| matches!(e, ServerEvent::Listening { .. }));
    b.wait_for("mode", |e| {
        matches!(e, ServerEvent::Mode { busid, mode, pid: 0x1281 } if busid == "1-1" && mode == "recovery")
    });

    let list = devlist(b.addr());
    assert_eq!(list.len(), 1);
    let d = &list[0];
    assert_eq!(
        (
            d.device.busid.as_str(),
            d.device.id_vendor,
            d.device.id_product
        ),
        ("1-1", 0x05AC, 0x1281)
    );
    assert_eq!((d.device.speed, d.device.configuration_value), (3, 1));
    assert_eq!(
        d.interfaces,
        [
            UsbInterface {
                class: 0xFE,
                subclass: 1,
                protocol: 2
            },
            UsbInterface {
                class: 0xFF,
                subclass: 0xFF,
                protocol: 0x51
            },
        ]
    );

    let mut c = import(b.addr(), "1-1").unwrap();
    assert_eq!(c.device.id_product, 0x1281);
    b.wait_for(
        "attached",
        |e| matches!(e, ServerEvent::Attached { busid, .. } if busid == "1-1"),
    );
    // What the kernel reads at enumeration: 64 bytes of device descriptor first.
    assert_eq!(c.descriptor(1, 0, 0, 64), identity.device);
    let head = c.descriptor(2, 0, 0, 9);
    let total = u16::from_le_bytes([head[2], head[3]]);
    assert_eq!(c.descriptor(2, 0, 0, total), identity.configurations[0]);
    assert_eq!(c.descriptor(3, 0, 0, 255), [4, 3, 0x09, 0x04]);
    // String 1 carries the nonces, 4 the iBoot serial, as on a real phone (not 1/2/3).
    assert_eq!(c.string(1), profile.nonce_string());
    assert!(c.string(1).starts_with("NONC:"));
    assert_eq!(c.string(4), profile.recovery_serial());
    assert_eq!(c.string(2), "Apple Inc.");
    let r = c.control_out(Control::new(0x00, 9, 1, 0), &[]);
    assert_eq!((r.status, r.actual_length), (0, 0));
    // A descriptor the phone does not have stalls.
    let r = c.control_in(Control::get_descriptor(3, 42, 0x0409), 255);
    assert_eq!(r.status, -errno::EPIPE);

    // irecovery -c "getenv build-version".
    let command = b"getenv build-version\0";
    let r = c.control_out(Control::new(0x40, 0, 0, 0), command);
    assert_eq!((r.status, r.actual_length), (0, command.len() as u32));
    let r = c.control_in(Control::new(0xC0, 0, 0, 0), 255);
    assert_eq!(r.status, 0);
    let mut expected = profile.iboot_version.as_bytes().to_vec();
    expected.push(0);
    assert_eq!(r.data, expected);

    // irecovery -f: 0x41, then 32 KiB chunks on bulk OUT 0x04, the last one short.
    let file: Vec<u8> = (0..(0x8000 + 1000u32))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let r = c.control_out(Control::new(0x41, 0, 0, 0), &[]);
    assert_eq!(r.status, 0);
    for chunk in file.chunks(0x8000) {
        let r = c.bulk_out(0x04, chunk);
        assert_eq!((r.status, r.actual_length), (0, chunk.len() as u32));
    }
    let want = sha_hex(&file);
    b.wait_for("upload", |e| {
        matches!(e, ServerEvent::Upload { busid, mode, bytes, sha256 }
            if busid == "1-1" && mode == "recovery" && *bytes == file.len() as u64 && *sha256 == want)
    });
    let received = b
        .hub
        .with_phone(0, |p| p.core().record.received.clone())
        .unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].sha256.to_vec(), Sha256::digest(&file).to_vec());
}

#[test]
fn dfu_phone_answers_getstatus_takes_a_download_and_boots_at_the_reset() {
    let mut b = bench(&[("iPhone7,2", DFU)]);
    let mut c = import(b.addr(), "1-1").unwrap();
    assert_eq!(c.device.id_product, 0x1227);
    let status = |c: &mut Client| {
        let r = c.control_in(Control::new(0xA1, 3, 0, 0), 6);
        assert_eq!((r.status, r.data.len()), (0, 6));
        r.data
    };
    assert_eq!(status(&mut c)[4], 2, "dfuIDLE");

    // Blocks of 2 KiB as libirecovery sends them: the payload is a whole number of blocks, so
    // the last one has no room for the 16-byte suffix, which goes alone right after it, with
    // no GETSTATUS in between.
    let payload: Vec<u8> = (0..3 * 0x800u32).map(|i| (i % 253) as u8).collect();
    let suffix = irecv::dfu::suffix(&payload);
    let mut packets: Vec<Vec<u8>> = payload.chunks(0x800).map(<[u8]>::to_vec).collect();
    let wait_idle = |c: &mut Client, what: &str| {
        let mut state = status(c)[4];
        let end = Instant::now() + WAIT;
        while state != 5 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2)); // bwPollTimeout
            state = status(c)[4];
        }
        assert_eq!(state, 5, "dfuDNLOAD-IDLE after {what}");
    };
    let last = packets.pop().unwrap();
    for (i, block) in packets.iter().enumerate() {
        let r = c.control_out(Control::new(0x21, 1, i as u16, 0), block);
        assert_eq!(r.status, 0, "DNLOAD {i}");
        wait_idle(&mut c, &format!("block {i}"));
    }
    let r = c.control_out(Control::new(0x21, 1, 2, 0), &last);
    assert_eq!(r.status, 0, "last block");
    let r = c.control_out(Control::new(0x21, 1, 2, 0), &suffix);
    assert_eq!(r.status, 0, "the suffix alone, still in dfuDNLOAD-SYNC");
    wait_idle(&mut c, "the suffix");
    let r = c.control_out(Control::new(0x21, 1, 0, 0), &[]);
    assert_eq!(r.status, 0);
    assert_eq!(status(&mut c)[4], 7, "dfuMANIFEST");
    assert_eq!(status(&mut c)[4], 8, "dfuMANIFEST-WAIT-RESET");
    let want = sha_hex(&payload);
    b.wait_for("dfu upload", |e| {
        matches!(e, ServerEvent::Upload { mode, bytes: 6144, sha256, .. } if mode == "dfu" && *sha256 == want)
    });

    // libusb_reset_device: vhci resets the port itself; the server sees the kernel's
    // 64-byte device descriptor read, resets the phone, which boots iBSS and leaves.
    let r = c.control_in(Control::get_descriptor(1, 0, 0), 64);
    assert_eq!(r.status, -errno::ENODEV);
    assert!(matches!(c.read_within(WAIT), Got::Eof), "connection closed");
    b.wait_for(
        "left",
        |e| matches!(e, ServerEvent::Left { busid } if busid == "1-1"),
    );
    b.wait_for(
        "recovery",
        |e| matches!(e, ServerEvent::Mode { mode, .. } if mode == "recovery"),
    );
    let c = import(b.addr(), "1-1").unwrap();
    assert_eq!(c.device.id_product, 0x1281);
}

fn usbmux_client(b: &Bench) -> Client {
    let mut c = import(b.addr(), "1-1").unwrap();
    assert_eq!(c.device.id_product, 0x12A8);
    // usbmuxd picks the configuration with the mux interface.
    let r = c.control_out(Control::new(0x00, 9, 4, 0), &[]);
    assert_eq!(r.status, 0);
    c
}

#[test]
fn normal_phone_usbmux_version_over_bulk_with_a_pending_read() {
    let b = bench(&[("iPhone14,3", Mode::Normal)]);
    let mut c = usbmux_client(&b);
    // usbmuxd keeps reads in flight on 0x85: nothing to read yet, so it stays pending.
    let read = c.submit(Direction::In, 5, [0; 8], 16384, vec![], 0);
    assert!(matches!(
        c.read_within(Duration::from_millis(200)),
        Got::Nothing
    ));

    let now = Instant::now();
    let mut link = usbmux::Link::new(now);
    let version = link.poll_transmit().expect("a VERSION packet");
    let write = c.submit(Direction::Out, 4, [0; 8], version.len() as u32, version, 0);
    let mut answered = HashMap::new();
    for _ in 0..2 {
        let Return::Submit(r) = c.read() else {
            panic!()
        };
        answered.insert(r.seqnum, r);
    }
    assert_eq!(answered[&write].status, 0);
    let reply = &answered[&read];
    assert_eq!(reply.status, 0);
    assert!(!reply.data.is_empty());
    link.handle_input(&reply.data, now).unwrap();
    assert!(link.header_version().is_some(), "VERSION answered");
}

#[test]
fn unlinking_a_pending_read_cancels_it() {
    let b = bench(&[("iPhone14,3", Mode::Normal)]);
    let mut c = usbmux_client(&b);
    let read = c.submit(Direction::In, 5, [0; 8], 16384, vec![], 0);
    let unlink = c.unlink(read);
    match c.read() {
        Return::Unlink(r) => assert_eq!((r.seqnum, r.status), (unlink, -errno::ECONNRESET)),
        other => panic!("{other:?}"),
    }
    // Already gone: status 0. And the cancelled read never completes.
    let again = c.unlink(read);
    match c.read() {
        Return::Unlink(r) => assert_eq!((r.seqnum, r.status), (again, 0)),
        other => panic!("{other:?}"),
    }
    let mut link = usbmux::Link::new(Instant::now());
    let version = link.poll_transmit().unwrap();
    let r = {
        let s = c.submit(Direction::Out, 4, [0; 8], version.len() as u32, version, 0);
        c.ret(s)
    };
    assert_eq!(r.status, 0);
    assert!(matches!(
        c.read_within(Duration::from_millis(200)),
        Got::Nothing
    ));
    // A new read gets the VERSION answer the cancelled one would have had.
    let read = c.submit(Direction::In, 5, [0; 8], 16384, vec![], 0);
    let r = c.ret(read);
    assert!(r.status == 0 && !r.data.is_empty());
}

#[test]
fn a_mode_change_closes_the_import_and_the_new_enumeration_is_importable() {
    let mut b = bench(&[("iPhone10,3", RECOVERY)]);
    let mut c = import(b.addr(), "1-1").unwrap();
    assert_eq!(c.device.id_product, 0x1281);
    let r = c.control_out(Control::new(0x40, 1, 0, 0), b"reboot\0");
    assert_eq!(r.status, 0);
    assert!(
        matches!(c.read_within(WAIT), Got::Eof),
        "the guest sees the disconnect"
    );
    b.wait_for("detached", |e| {
        matches!(e, ServerEvent::Detached { busid, reason, .. } if busid == "1-1" && reason == "re-enumerated")
    });
    b.wait_for("normal", |e| {
        matches!(e, ServerEvent::Mode { busid, mode, pid: 0x12A8 } if busid == "1-1" && mode == "normal")
    });
    // What the VM's attach loop does: list, then import the same bus ID again.
    let list = devlist(b.addr());
    assert_eq!(list[0].device.id_product, 0x12A8);
    assert_eq!(list[0].device.num_configurations, 4);
    let mut c = import(b.addr(), "1-1").unwrap();
    assert_eq!(c.device.id_product, 0x12A8);
    let d = c.descriptor(1, 0, 0, 18);
    assert_eq!(u16::from_le_bytes([d[10], d[11]]), 0x12A8);
}

#[test]
fn junk_gets_a_typed_error_and_the_server_keeps_serving() {
    let mut b = bench(&[("iPhone14,3", RECOVERY), ("iPhone7,2", DFU)]);
    let mut junk = TcpStream::connect(b.addr()).unwrap();
    junk.set_read_timeout(Some(WAIT)).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(junk.read(&mut [0u8; 64]).unwrap(), 0, "closed");
    let e = b.wait_for("protocol error", |e| {
        matches!(e, ServerEvent::ProtocolError { .. })
    });
    let ServerEvent::ProtocolError { error, .. } = e else {
        unreachable!()
    };
    assert_eq!(error, WireError::Version { found: 0x4745 }.to_string());

    // Others are served: a list, an import, a busy port, an unknown bus ID.
    assert_eq!(devlist(b.addr()).len(), 2);
    let mut c = import(b.addr(), "1-2").unwrap();
    assert_eq!(c.device.id_product, 0x1227);
    assert_eq!(import(b.addr(), "1-2").err(), Some(import_status::BUSY));
    assert_eq!(
        import(b.addr(), "9-9").err(),
        Some(import_status::NOT_AVAILABLE)
    );

    // Junk after an import ends that import only, and frees the port.
    c.stream.write_all(&[0xFF; 48]).unwrap();
    assert!(matches!(c.read_within(WAIT), Got::Eof));
    let e = b.wait_for(
        "second protocol error",
        |e| matches!(e, ServerEvent::ProtocolError { error, .. } if error.contains("URB command")),
    );
    drop(e);
    let mut again = import(b.addr(), "1-2").unwrap();
    let r = again.control_in(Control::new(0xA1, 3, 0, 0), 6);
    assert_eq!(r.status, 0);
    let mut rec = import(b.addr(), "1-1").unwrap();
    assert_eq!(rec.string(1), b.profile(0).nonce_string());
}
