//! Throughput of full-size mux TCP packets (49152 bytes on the wire, 49116 of payload)
//! through the real state machines, against a plain memcpy of the same bytes measured in
//! the same run, and against USB 2.0's practical ~40 MB/s.
//!
//! - encode: `Link::send` + `Link::poll_transmit` on the host (one packet per iteration);
//! - decode: `Link::handle_input` fed in 16384-byte reads, as the USB driver does, + `read`;
//! - memcpy: `Vec::extend_from_slice` of the same 49116 bytes.
//!
//! The peer side (a `Device`) drains and acknowledges outside the timed sections, so the
//! windows stay open. `cargo bench -p usbmux` runs it in well under a minute.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use usbmux::device::{Device, DeviceConfig};
use usbmux::{ConnId, Event, Link, MAX_TCP_PAYLOAD};

const READ_CHUNK: usize = 16384;
const USB2_MB_S: f64 = 40.0;

struct Pair {
    host: Link,
    phone: Device,
    host_conn: ConnId,
    phone_conn: ConnId,
    now: Instant,
    payload: Vec<u8>,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let host = Link::new(now);
        let mut phone = Device::new(DeviceConfig::default(), now);
        phone.listen(62078);
        let mut pair = Pair {
            host,
            phone,
            host_conn: ConnId(0),
            phone_conn: ConnId(0),
            now,
            payload: (0..MAX_TCP_PAYLOAD).map(|i| i as u8).collect(),
        };
        pair.pump();
        pair.host_conn = pair.host.connect(62078, now).expect("connect");
        pair.pump();
        while let Some(e) = pair.phone.poll_event() {
            if let Event::Accepted { conn, .. } = e {
                pair.phone_conn = conn;
            }
        }
        pair
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(p) = self.host.poll_transmit() {
                self.phone.handle_input(&p, self.now).expect("phone input");
                moved = true;
            }
            while let Some(p) = self.phone.poll_transmit() {
                self.host.handle_input(&p, self.now).expect("host input");
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    /// Host → phone: returns the time spent in the host's send + poll_transmit.
    fn encode_one(&mut self) -> Duration {
        let t = Instant::now();
        let n = self.host.send(self.host_conn, &self.payload).expect("send");
        let packet = self.host.poll_transmit().expect("a data packet");
        let spent = t.elapsed();
        debug_assert_eq!(n, MAX_TCP_PAYLOAD);
        debug_assert_eq!(packet.len(), 49152);
        self.phone
            .handle_input(&packet, self.now)
            .expect("phone input");
        while let Ok(Some(_)) = self.phone.read(self.phone_conn, usize::MAX) {}
        while self.phone.poll_event().is_some() {}
        while self.host.poll_event().is_some() {}
        self.phone.handle_timeout(self.now + Duration::from_secs(1));
        while let Some(ack) = self.phone.poll_transmit() {
            self.host.handle_input(&ack, self.now).expect("ack");
        }
        black_box(packet);
        spent
    }

    /// Phone → host: returns the time spent in the host's handle_input (16 KiB reads) + read.
    fn decode_one(&mut self) -> Duration {
        self.phone
            .send(self.phone_conn, &self.payload)
            .expect("send");
        let packet = self.phone.poll_transmit().expect("a data packet");
        let t = Instant::now();
        for chunk in packet.chunks(READ_CHUNK) {
            self.host.handle_input(chunk, self.now).expect("host input");
        }
        let mut got = 0;
        while let Ok(Some(b)) = self.host.read(self.host_conn, usize::MAX) {
            got += b.len();
        }
        let spent = t.elapsed();
        debug_assert_eq!(got, MAX_TCP_PAYLOAD);
        while self.host.poll_event().is_some() {}
        self.host.handle_timeout(self.now + Duration::from_secs(1));
        while let Some(ack) = self.host.poll_transmit() {
            self.phone.handle_input(&ack, self.now).expect("ack");
        }
        while self.phone.poll_event().is_some() {}
        spent
    }

    /// The peer: one copy of the same bytes into a fresh buffer, as a packet needs.
    fn memcpy_one(&mut self) -> Duration {
        let t = Instant::now();
        let mut copy = Vec::with_capacity(self.payload.len());
        copy.extend_from_slice(black_box(&self.payload));
        let spent = t.elapsed();
        black_box(copy);
        spent
    }
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("mux_48k_packets");
    group.throughput(Throughput::Bytes(MAX_TCP_PAYLOAD as u64));
    let mut pair = Pair::new();
    group.bench_function("encode_send_poll_transmit", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| pair.encode_one()).sum())
    });
    group.bench_function("decode_handle_input_16k_reads", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| pair.decode_one()).sum())
    });
    group.bench_function("memcpy_peer_baseline", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| pair.memcpy_one()).sum())
    });
    group.finish();
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// One line of figures, measured again after criterion's groups with plain `Instant`s.
fn summary() {
    const N: usize = 4000;
    let mut pair = Pair::new();
    for _ in 0..200 {
        pair.encode_one();
        pair.decode_one();
        pair.memcpy_one();
    }
    // Interleaved, so a change of machine load hits all three alike.
    let (mut enc, mut dec, mut cpy) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..N {
        enc += pair.encode_one();
        dec += pair.decode_one();
        cpy += pair.memcpy_one();
    }
    let bytes = N * MAX_TCP_PAYLOAD;
    let (e, d, m) = (
        mb_per_s(bytes, enc),
        mb_per_s(bytes, dec),
        mb_per_s(bytes, cpy),
    );
    println!(
        "usbmux summary ({N} x {MAX_TCP_PAYLOAD}-byte payloads): encode {e:.0} MB/s, decode {d:.0} MB/s, \
         memcpy {m:.0} MB/s | encode/memcpy {:.3}, decode/memcpy {:.3} | encode/USB2(40 MB/s) {:.1}x, \
         decode/USB2 {:.1}x",
        e / m,
        d / m,
        e / USB2_MB_S,
        d / USB2_MB_S
    );
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    benches(&mut c);
    c.final_summary();
    summary();
}
