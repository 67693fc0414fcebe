//! How fast a recovery upload goes through the USB/IP server (loopback TCP, the wire codec,
//! the session, the phone), against the same upload through the in-process hub and a plain
//! memcpy of the same bytes, measured in the same run. The phone's link time is charged to a
//! virtual clock, so this is the server's own cost: the ratio says how far above a USB 2.0
//! link (40 MB/s) the adapter runs.
//!
//! `cargo bench -p sim --bench usbip`.

use std::collections::HashSet;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use sim::clock::{Clock, ManualClock};
use sim::hub::VirtualHub;
use sim::phone::{Mode, Options, Phone, RecoveryStage};
use sim::profile::Profile;
use sim::usbip::wire::{CmdSubmit, Command, OpReply, OpRequest, Return};
use sim::usbip::UsbipServer;
use usb::{Control, Direction, UsbBackend};

const BYTES: usize = 8 << 20;
const CHUNK: usize = 0x8000;

fn hub() -> VirtualHub {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let hub = VirtualHub::new(1, Arc::clone(&clock));
    let options = Options {
        start: Mode::Recovery(RecoveryStage::Iboot),
        ..Options::default()
    };
    let profile = Profile::for_product_type("iPhone10,3", 3).expect("a preset");
    hub.plug(0, Phone::new(profile, options, clock.now()))
        .expect("port 0");
    hub
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    next: u32,
    devid: u32,
    outs: HashSet<u32>,
}

impl Client {
    fn import(addr: std::net::SocketAddr) -> Client {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut out = Vec::new();
        OpRequest::Import {
            busid: "1-1".into(),
        }
        .encode(&mut out)
        .expect("encode");
        stream.write_all(&out).expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let device = loop {
            if let Some((OpReply::Imported(d), n)) = OpReply::decode(&buf).expect("reply") {
                buf.drain(..n);
                break d;
            }
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
        };
        Client {
            stream,
            buf,
            next: 1,
            devid: device.devid(),
            outs: HashSet::new(),
        }
    }

    fn send(&mut self, ep: u8, setup: [u8; 8], data: &[u8]) {
        let seqnum = self.next;
        self.next += 1;
        let mut out = Vec::with_capacity(48 + data.len());
        Command::Submit(CmdSubmit {
            seqnum,
            devid: self.devid,
            direction: Direction::Out,
            ep,
            transfer_flags: 0,
            transfer_buffer_length: data.len() as u32,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup,
            data: data.to_vec(),
            iso: vec![],
        })
        .encode(&mut out)
        .expect("encode");
        self.stream.write_all(&out).expect("write");
        self.outs.insert(seqnum);
    }

    /// Waits for every submitted OUT to complete.
    fn drain(&mut self) {
        let mut chunk = vec![0u8; 1 << 16];
        while !self.outs.is_empty() {
            while let Some((r, n)) =
                Return::decode(&self.buf, |_| Some(Direction::Out)).expect("ret")
            {
                self.buf.drain(..n);
                if let Return::Submit(s) = r {
                    assert_eq!(s.status, 0);
                    self.outs.remove(&s.seqnum);
                }
            }
            if self.outs.is_empty() {
                break;
            }
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// One upload: 0x41, the chunks (a window of 8 in flight, as libusb queues them), done.
    fn upload(&mut self, data: &[u8]) {
        self.send(0, Control::new(0x41, 0, 0, 0).to_setup_packet(0), &[]);
        for (i, c) in data.chunks(CHUNK).enumerate() {
            self.send(4, [0; 8], c);
            if i % 8 == 7 {
                self.drain();
            }
        }
        self.drain();
    }
}

fn main() {
    let data: Vec<u8> = (0..BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    let mut g = c.benchmark_group("usbip");
    g.throughput(Throughput::Bytes(BYTES as u64));

    let server = UsbipServer::start("127.0.0.1:0", hub(), None).expect("server");
    let mut client = Client::import(server.local_addr());
    g.bench_function("recovery upload over USB/IP", |b| {
        b.iter(|| client.upload(black_box(&data)))
    });

    let inproc = hub();
    let id = inproc.devices().expect("devices")[0].id;
    let mut dev = inproc.open(id).expect("open");
    let t = Duration::from_secs(5);
    g.bench_function("recovery upload in-process", |b| {
        b.iter(|| {
            dev.control_out(Control::new(0x41, 0, 0, 0), &[], t)
                .expect("0x41");
            for c in black_box(&data).chunks(CHUNK) {
                dev.bulk_out(0x04, c, t).expect("bulk");
            }
        })
    });
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(BYTES);
            v.extend_from_slice(black_box(&data));
            black_box(v)
        })
    });
    g.finish();

    // The ratios, measured once more outside criterion so they print side by side.
    let time = |f: &mut dyn FnMut()| {
        let t0 = Instant::now();
        for _ in 0..5 {
            f();
        }
        t0.elapsed() / 5
    };
    let usbip = time(&mut || client.upload(&data));
    let local = time(&mut || {
        dev.control_out(Control::new(0x41, 0, 0, 0), &[], t)
            .expect("0x41");
        for c in data.chunks(CHUNK) {
            dev.bulk_out(0x04, c, t).expect("bulk");
        }
    });
    let copy = time(&mut || {
        let mut v = Vec::with_capacity(BYTES);
        v.extend_from_slice(&data);
        black_box(v);
    });
    let mbs = |d: Duration| BYTES as f64 / d.as_secs_f64() / 1e6;
    println!(
        "usbip: {:.0} MB/s over USB/IP, {:.0} MB/s in-process, {:.0} MB/s memcpy; USB/IP is {:.2}x in-process, {:.1}x a 40 MB/s USB 2.0 link",
        mbs(usbip),
        mbs(local),
        mbs(copy),
        mbs(usbip) / mbs(local),
        mbs(usbip) / 40.0
    );
}
