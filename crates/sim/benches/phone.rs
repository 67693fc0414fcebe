//! How fast the simulator moves a phone's uploads, against a plain memcpy of the same bytes
//! measured in the same run, and against the 40 MB/s a real USB 2.0 link carries: the ratio
//! says how many phones at full link speed one core can simulate.
//!
//! - recovery: `irecv::recovery::run_upload` of 8 MiB through the virtual hub (0x8000-byte bulk
//!   chunks, the phone appending them), then `ramdisk` (SHA-256 of the image, as recorded);
//! - dfu: `irecv::dfu::run_download` of 512 KiB (0x800-byte DNLOAD blocks, GETSTATUS polls,
//!   suffix + CRC check at manifest), then the phone re-enumerates; a new phone each time;
//! - memcpy: `Vec::extend_from_slice` of the same bytes.
//!
//! `cargo bench -p sim` runs it in well under a minute.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use irecv::{dfu, recovery};
use sim::clock::{Clock, DriverClock, ManualClock};
use sim::hub::VirtualHub;
use sim::phone::{Mode, Options, Phone, RecoveryStage};
use sim::profile::{DfuStage, Profile};
use usb::{UsbBackend, UsbDevice};

const RECOVERY_BYTES: usize = 8 << 20;
const DFU_BYTES: usize = 512 << 10;
const USB2_MB_S: f64 = 40.0;

struct Rig {
    clock: Arc<dyn Clock>,
    hub: VirtualHub,
    seed: u64,
}

impl Rig {
    fn new() -> Rig {
        let clock: Arc<dyn Clock> = ManualClock::new();
        Rig {
            hub: VirtualHub::new(1, Arc::clone(&clock)),
            clock,
            seed: 0,
        }
    }

    fn phone(&mut self, start: Mode) -> Box<dyn UsbDevice> {
        let _ = self.hub.unplug(0);
        self.seed += 1;
        let profile = Profile::for_product_type("iPhone14,3", self.seed).expect("preset");
        let options = Options {
            start,
            ..Options::default()
        };
        self.hub
            .plug(0, Phone::new(profile, options, self.clock.now()))
            .expect("plug");
        let id = self.hub.devices().expect("devices")[0].id;
        self.hub.open(id).expect("open")
    }

    fn recovery_one(&mut self, data: &[u8]) -> Duration {
        let mut dev = self.phone(Mode::Recovery(RecoveryStage::Ibec));
        let t = Instant::now();
        recovery::run_upload(dev.as_mut(), data, &mut |_| {}).expect("upload");
        let ramdisk = recovery::Command::new("ramdisk").expect("command");
        recovery::send_command(dev.as_mut(), &ramdisk, Duration::from_secs(1)).expect("ramdisk");
        t.elapsed()
    }

    fn dfu_one(&mut self, data: &[u8]) -> Duration {
        let mut dev = self.phone(Mode::Dfu(DfuStage::SecureRom));
        let mut clock = DriverClock(Arc::clone(&self.clock));
        let t = Instant::now();
        dfu::run_download(
            dev.as_mut(),
            data,
            dfu::Options::dfu(),
            &mut clock,
            &mut |_| {},
        )
        .expect("download");
        t.elapsed()
    }
}

fn memcpy_one(data: &[u8]) -> Duration {
    let t = Instant::now();
    let mut copy = Vec::with_capacity(data.len());
    copy.extend_from_slice(black_box(data));
    let spent = t.elapsed();
    black_box(copy);
    spent
}

fn benches(c: &mut Criterion, rig: &mut Rig, big: &[u8], small: &[u8]) {
    let mut group = c.benchmark_group("recovery_upload_8MiB");
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("sim_hub", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.recovery_one(big)).sum())
    });
    group.bench_function("memcpy_peer_baseline", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| memcpy_one(big)).sum())
    });
    group.finish();
    let mut group = c.benchmark_group("dfu_download_512KiB");
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("sim_hub", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.dfu_one(small)).sum())
    });
    group.bench_function("memcpy_peer_baseline", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| memcpy_one(small)).sum())
    });
    group.finish();
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// One line of figures, measured again with plain `Instant`s, interleaved.
fn summary(rig: &mut Rig, big: &[u8], small: &[u8]) {
    const N: usize = 20;
    let (mut rec, mut dfu_t, mut cpy_big, mut cpy_small) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    for _ in 0..N {
        rec += rig.recovery_one(big);
        cpy_big += memcpy_one(big);
        dfu_t += rig.dfu_one(small);
        cpy_small += memcpy_one(small);
    }
    let r = mb_per_s(N * big.len(), rec);
    let d = mb_per_s(N * small.len(), dfu_t);
    let mb = mb_per_s(N * big.len(), cpy_big);
    let ms = mb_per_s(N * small.len(), cpy_small);
    println!(
        "sim summary ({N} rounds): recovery upload {r:.0} MB/s (memcpy {mb:.0} MB/s, ratio {:.3}), \
         DFU download {d:.0} MB/s (memcpy {ms:.0} MB/s, ratio {:.3}) | vs a real USB 2.0 link \
         (40 MB/s): recovery {:.1}x, DFU {:.1}x",
        r / mb,
        d / ms,
        r / USB2_MB_S,
        d / USB2_MB_S
    );
}

fn main() {
    let big: Vec<u8> = (0..RECOVERY_BYTES).map(|i| (i * 31) as u8).collect();
    let small: Vec<u8> = (0..DFU_BYTES).map(|i| (i * 7) as u8).collect();
    let mut rig = Rig::new();
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    benches(&mut c, &mut rig, &big, &small);
    c.final_summary();
    summary(&mut rig, &big, &small);
}
