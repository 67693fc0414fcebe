//! What a restore costs beyond moving its bytes: whole restores of virtual phones (real
//! clock, USB 2.0 high-speed link rate), each phone's mode changes made instant, so that the
//! wall time is the bytes on the link plus restation's own overhead (protocol round trips,
//! waits for re-enumeration, personalization through the loopback TSS stand-in over HTTP,
//! its CPU) plus the phone's own checks of the images it boots. The peer figure, from the
//! same run, is the pure transfer time of the same bytes at the link's rate (what the phone
//! says it moved, divided by the rate). Target: overhead under 2 %.
//!
//! The virtual link charges each transfer the host waited for one microframe of turnaround
//! (125 µs) on top of its bytes; a transfer queued behind another one (a queued URB) and a
//! read that was pending when the data came do not pay it.
//!
//! Printed per restore: wall, pure transfer, overhead, the fixed part of it (wall minus pure
//! transfer, in milliseconds: DFU's 2 KiB request/status handshake, recovery commands,
//! personalization, the phone's image checks) and the overhead of the ASR stream alone (its
//! rate against the link's). First three restores with a small OS image (the fixed part
//! shows), then one with an OS image of a more realistic size (`RESTORE_BENCH_BIG`, default
//! 1G; an iOS OS image is 5–10 GB, so the fixed part weighs less still on a real one).
//!
//! Then 8 phones at once (small image), one job thread each: wall time, CPU seconds and
//! peak RSS of the process per concurrent restore (the virtual phones run in the same
//! process, so these figures include them).
//!
//! Run: `cargo bench -p restation --bench restore` (printed, never asserted).
//! `RESTORE_BENCH_OS=64M` sets the small OS image size (default 64M), `RESTORE_BENCH_BIG=0`
//! skips the big one, `RESTORE_BENCH_STEPS=1` prints each restore's slowest steps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipsw::manifest::{BuildManifest, RestoreBehavior};
use restation::daemon::bench::HubPhones;
use restation::daemon::job::{self, Materials};
use restation::daemon::jobs::Personalization;
use restation::daemon::personalize::{ClientTickets, Tss};
use restore::phase::Deadlines;
use restore::plan::{Plan, StartMode, Target};
use sim::clock::{Clock, DriverClock, RealClock};
use sim::hub::VirtualHub;
use sim::phone::{link_rate, Mode, Options, Phone, Timings};
use sim::profile::{DfuStage, Profile};

struct Staged {
    _dir: Dir,
    path: std::path::PathBuf,
    manifest_bytes: Vec<u8>,
    manifest: BuildManifest,
}

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn staged(product_type: &str, os_size: u64, name: &str) -> Staged {
    let dir = std::env::temp_dir().join(format!(
        "restation-bench-restore-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("synth.ipsw");
    let profile = ipsw::profile::profile(product_type).expect("profile");
    ipsw::synth::synthesize(profile, &ipsw::synth::SynthOptions { os_size }, &path)
        .expect("synthesize");
    let (file, archive) = ipsw::archive::Archive::open(&path).expect("open");
    let manifest_bytes = archive
        .read_member(&file, "BuildManifest.plist", 16 << 20)
        .expect("manifest");
    let manifest = BuildManifest::from_bytes(&manifest_bytes).expect("parse");
    Staged {
        _dir: Dir(dir),
        path,
        manifest_bytes,
        manifest,
    }
}

/// Mode changes as fast as the bus allows: the bench measures restation, not the phone.
fn instant_timings() -> Timings {
    Timings {
        after_dfu: Duration::ZERO,
        after_go: Duration::ZERO,
        after_bootx: Duration::ZERO,
        after_reboot: Duration::ZERO,
        after_enter_recovery: Duration::ZERO,
        restore_step: Duration::ZERO,
        dfu_block_busy: Duration::ZERO,
        ..Timings::default()
    }
}

/// One restore from DFU; wall time and the bytes the phone moved.
/// The loopback TSS stand-in and the daemon's personalization pointed at it.
struct Signing {
    runtime: tokio::runtime::Runtime,
    standin: tss::standin::Standin,
    tss: Tss,
}

fn signing() -> Signing {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let standin = runtime
        .block_on(tss::standin::Standin::start())
        .expect("stand-in");
    let client = tss::Client::new(tss::Config {
        url: standin.url(),
        ..tss::Config::default()
    })
    .expect("client");
    let tss = Tss::new(Arc::new(ClientTickets::new(
        client,
        runtime.handle().clone(),
    )));
    Signing {
        runtime,
        standin,
        tss,
    }
}

fn restore_one(
    ipsw: &Staged,
    port: usize,
    hub: &VirtualHub,
    clock: &Arc<dyn Clock>,
    signing: &Signing,
) -> Restored {
    let product_type = "iPhone14,3";
    let profile = Profile::for_product_type(product_type, 900 + port as u64).expect("profile");
    let options = Options {
        start: Mode::Dfu(DfuStage::SecureRom),
        timings: instant_timings(),
        ..Options::default()
    };
    let mut phone = Phone::new(profile.clone(), options, clock.now());
    // The phone boots only images personalized by the stand-in, as a real one.
    phone.set_image_check(Box::new(tss::verify::image_check(
        signing.standin.public_key(),
    )));
    hub.plug(port, phone).expect("plug");
    let plan = Plan::new(
        Target {
            ecid: profile.ecid,
            chip_id: profile.chip_id,
            board_id: profile.board_id,
            product_type: Some(product_type.into()),
            mode: StartMode::Dfu,
        },
        &ipsw.manifest,
        RestoreBehavior::Erase,
    )
    .expect("plan");
    let restore_options = restore::restored::restore_options(
        restore::restored::identity_dict(&ipsw.manifest_bytes, &plan.identity).expect("identity"),
        &plan.product_version,
        plan.behavior,
        profile.imei.is_some(),
        "6F1E2D3C-0000-4000-8000-00000000BE0C",
    );
    let (file, archive) = ipsw::archive::Archive::open(&ipsw.path).expect("open");
    let mut phones = HubPhones {
        hub: hub.clone(),
        port,
    };
    let first = phones.open().expect("the phone");
    let mut personalize = signing.tss.for_plan(&plan).expect("personalization");
    let started = Instant::now();
    let mut marks: Vec<(String, Duration)> = Vec::new();
    let mut stream: Option<(u64, Duration)> = None;
    let mut stream_end: Option<(u64, Duration)> = None;
    let verbose = std::env::var_os("RESTORE_BENCH_STEPS").is_some();
    let status = job::run(
        &plan,
        first,
        &mut phones,
        Materials {
            file: &file,
            archive: &archive,
            personalize: &mut *personalize,
            restore_options,
            pair_records: None,
        },
        &Deadlines::default(),
        &mut DriverClock(Arc::clone(clock)),
        &mut |e| match e {
            job::JobEvent::Step { text, .. } => marks.push((text, started.elapsed())),
            job::JobEvent::Restore(restation::daemon::restoring::RestoreEvent::Image {
                sent,
                total,
            }) => {
                let at = started.elapsed();
                stream.get_or_insert((sent, at));
                stream_end = Some((sent, at));
                if sent == total || sent <= (total / 100) + 131_092 {
                    marks.push((format!("ASR at {sent} of {total}"), at))
                }
            }
            _ => {}
        },
    )
    .expect("restore");
    let wall = started.elapsed();
    if verbose {
        let mut last = Duration::ZERO;
        let mut steps: Vec<(Duration, String)> = Vec::new();
        for (text, at) in marks.iter().rev() {
            let end = if last.is_zero() { wall } else { last };
            steps.push((end.saturating_sub(*at), text.clone()));
            last = *at;
        }
        steps.sort_by_key(|s| std::cmp::Reverse(s.0));
        for (took, text) in steps.iter().take(6) {
            println!("    {:>8.3} s  {text}", took.as_secs_f64());
        }
    }
    assert_eq!(status.status, 0);
    let (moved, transfers) = hub
        .with_phone(port, |p| (p.bytes_moved(), p.transfers()))
        .unwrap_or_default();
    if verbose {
        println!("    {transfers} transfers");
    }
    let _ = hub.unplug(port);
    // The ASR stream's rate, from its first progress report to its last.
    let stream_rate = match (stream, stream_end) {
        (Some((a, t0)), Some((b, t1))) if b > a && t1 > t0 => {
            Some((b - a) as f64 / (t1 - t0).as_secs_f64())
        }
        _ => None,
    };
    Restored {
        wall,
        moved,
        stream_rate,
    }
}

/// One restore's figures.
struct Restored {
    wall: Duration,
    moved: u64,
    /// Image bytes per second while ASR streamed.
    stream_rate: Option<f64>,
}

impl Restored {
    /// Prints the restore's line; its overhead.
    fn report(&self, label: &str, rate: u64) -> f64 {
        let transfer = self.moved as f64 / rate as f64;
        let wall = self.wall.as_secs_f64();
        let overhead = wall / transfer - 1.0;
        let stream = self.stream_rate.map_or("n/a".to_string(), |r| {
            format!("{:+.2} %", (rate as f64 / r - 1.0) * 100.0)
        });
        println!(
            "{label}: wall {wall:>7.3} s, pure transfer of the same {} bytes {transfer:>7.3} s (peer), overhead {:>+6.2} %; fixed part {:>6.1} ms; ASR stream alone {stream}",
            self.moved,
            overhead * 100.0,
            (wall - transfer) * 1000.0,
        );
        overhead
    }
}

fn rusage() -> (f64, u64) {
    // SAFETY: getrusage writes into the struct it is given; RUSAGE_SELF is valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(u.ru_utime) + secs(u.ru_stime), u.ru_maxrss as u64)
}

fn main() {
    let size = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|s| ipsw::synth::parse_size(&s).ok())
            .unwrap_or(default)
    };
    let os_size = size("RESTORE_BENCH_OS", 64 << 20);
    let big_size = size("RESTORE_BENCH_BIG", 1 << 30);
    let ipsw = staged("iPhone14,3", os_size, "small");
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let rate = link_rate(usb::Speed::High);
    println!(
        "restore from DFU, iPhone14,3, {} MiB OS image, link {:.0} MB/s, mode changes instant",
        os_size >> 20,
        rate as f64 / 1e6
    );
    let hub = VirtualHub::new(8, Arc::clone(&clock));
    let signing = signing();
    let mut overheads = Vec::new();
    for round in 0..3 {
        let restored = restore_one(&ipsw, 0, &hub, &clock, &signing);
        overheads.push(restored.report(&format!("round {round}"), rate));
    }
    overheads.sort_by(f64::total_cmp);
    println!(
        "median overhead with a {} MiB OS image {:+.2} % (target under 2 %)",
        os_size >> 20,
        overheads[overheads.len() / 2] * 100.0
    );
    if big_size > 0 {
        let big = staged("iPhone14,3", big_size, "big");
        let restored = restore_one(&big, 0, &hub, &clock, &signing);
        let overhead = restored.report(&format!("{} MiB OS image", big_size >> 20), rate);
        println!(
            "overhead with a {} MiB OS image {:+.2} % (target under 2 %)",
            big_size >> 20,
            overhead * 100.0
        );
    }

    // 8 at once.
    let (cpu0, _) = rusage();
    let started = Instant::now();
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..8)
            .map(|port| {
                let (ipsw, hub, clock, signing) = (&ipsw, &hub, &clock, &signing);
                scope.spawn(move || restore_one(ipsw, port, hub, clock, signing))
            })
            .collect();
        for r in runs {
            let _ = r.join();
        }
    });
    let wall = started.elapsed();
    let (cpu1, maxrss_kib) = rusage();
    let tickets = signing.standin.requests();
    signing.runtime.block_on(signing.standin.shutdown());
    println!("tickets signed by the stand-in: {tickets}");
    println!(
        "8 concurrent restores: wall {:.3} s, CPU {:.2} s ({:.3} s per restore), peak RSS {:.1} MiB ({:.1} MiB per restore; phones in-process)",
        wall.as_secs_f64(),
        cpu1 - cpu0,
        (cpu1 - cpu0) / 8.0,
        maxrss_kib as f64 / 1024.0,
        maxrss_kib as f64 / 1024.0 / 8.0
    );
}
