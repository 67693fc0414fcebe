//! How fast the daemon knows who a phone is: the time from a phone's arrival on the bus to
//! its registry entry (ECID, port, mode, model), p50/p99, with 1 and with 32 phones arriving
//! at once, and the daemon's RSS idle and with 32 phones.
//!
//! Phones are the virtual ones of `restation serve --sim` (real clock, in this process); a
//! third of them are in normal mode and are identified through lockdownd over usbmux, the
//! rest through their iBoot/SecureROM serial string.
//!
//! Peer, same run, same phones: libimobiledevice's `ideviceinfo -s -k UniqueChipID` reading
//! the normal-mode phone's ECID through restation's usbmuxd-compatible socket (a process
//! start, a usbmuxd Connect, lockdown QueryType + GetValue). Skipped with a message when the
//! tool is not installed.
//!
//! Run: `cargo bench -p restation --bench identify` (figures are printed, never asserted).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use restation::daemon::registry::Change;
use restation::daemon::{self, bench, Daemon, Shared};
use sim::clock::{Clock, RealClock};
use sim::hub::VirtualHub;
use usb::PortPath;

const ROUNDS_ONE: usize = 20;
const ROUNDS_MANY: usize = 4;
const MANY: usize = 32;
const PEER_RUNS: usize = 10;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Plugs `n` phones at once and waits until every one is identified; latencies per phone.
async fn round(
    hub: &VirtualHub,
    shared: &Arc<Shared>,
    n: usize,
    clock: &Arc<dyn Clock>,
    seed: usize,
) -> Vec<(Duration, bool)> {
    let mut events = shared.subscribe();
    let mut arrived: HashMap<PortPath, (Instant, bool)> = HashMap::new();
    let phones: Vec<_> = (0..n)
        .map(|i| {
            let mode = bench::start_mode(i);
            bench::phone(seed + i, mode, clock).expect("bench phone")
        })
        .collect();
    for (i, phone) in phones.into_iter().enumerate() {
        let normal = matches!(phone.mode(), sim::phone::Mode::Normal);
        let path = hub.port_path(i).expect("port").clone();
        arrived.insert(path, (Instant::now(), normal));
        hub.plug(i, phone).expect("plug");
    }
    let mut latencies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while latencies.len() < n {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => event,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            _ => panic!("only {} of {n} phones identified in 60 s", latencies.len()),
        };
        let now = Instant::now();
        if matches!(event.item.change, Change::Left) {
            continue;
        }
        if let Some(port) = event.item.port.as_ref() {
            if let Some((at, normal)) = arrived.remove(port) {
                latencies.push((now - at, normal));
            }
        }
    }
    for i in 0..n {
        let _ = hub.unplug(i);
    }
    // Wait for the departures so the next round starts from an empty bench.
    let mut left = 0;
    while left < n {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(e)) if matches!(e.item.change, Change::Left) => left += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    latencies
}

fn report(label: &str, samples: &mut [Duration]) -> Duration {
    samples.sort();
    let p50 = percentile(samples, 50.0);
    println!(
        "{label:<44} n={:<4} p50 {:>10}  p99 {:>10}  max {:>10}",
        samples.len(),
        ms(p50),
        ms(percentile(samples, 99.0)),
        ms(samples.last().copied().unwrap_or_default()),
    );
    p50
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

async fn run() {
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let hub = VirtualHub::new(MANY, Arc::clone(&clock));
    let shared = Shared::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let backend: Arc<dyn usb::UsbBackend> = Arc::new(hub.clone());
    let driver =
        tokio::spawn(Daemon::new(Arc::clone(&backend), Arc::clone(&shared)).run(stopped()));
    let dir = std::env::temp_dir().join(format!("restation-bench-identify-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mux_path = dir.join("usbmuxd");
    let muxd = daemon::muxd::Muxd::new(Arc::clone(&shared), backend, dir.join("lockdown"));
    let listener = daemon::muxd::bind(&mux_path).expect("bind the usbmuxd socket");
    let mux_task = tokio::spawn(daemon::muxd::serve(listener, muxd, stopped()));
    let idle = rss_kib();

    println!("arrival → identified (virtual phones, real clock, daemon and phones in one process)");
    let mut one_all = Vec::new();
    let mut one_normal = Vec::new();
    for r in 0..ROUNDS_ONE {
        // Port 0 holds phone `seed`: cycle through the modes (recovery, DFU, normal).
        let seed = r % 3;
        let mode = bench::start_mode(seed);
        let phone = bench::phone(1000 + r, mode, &clock).expect("phone");
        let mut events = shared.subscribe();
        let at = Instant::now();
        hub.plug(0, phone).expect("plug");
        loop {
            let e = events.recv().await.expect("event");
            if !matches!(e.item.change, Change::Left) {
                break;
            }
        }
        let took = at.elapsed();
        one_all.push(took);
        if matches!(mode, sim::phone::Mode::Normal) {
            one_normal.push(took);
        }
        let _ = hub.unplug(0);
        loop {
            let e = events.recv().await.expect("event");
            if matches!(e.item.change, Change::Left) {
                break;
            }
        }
    }
    report("1 phone, all modes", &mut one_all);
    let ours_normal = report(
        "1 phone, normal mode (lockdown over usbmux)",
        &mut one_normal,
    );

    let mut many_all = Vec::new();
    let mut many_normal = Vec::new();
    let mut peak = idle;
    for r in 0..ROUNDS_MANY {
        let got = round(&hub, &shared, MANY, &clock, 2000 + r * MANY).await;
        peak = peak.max(rss_kib());
        for (d, normal) in got {
            many_all.push(d);
            if normal {
                many_normal.push(d);
            }
        }
    }
    report("32 phones at once, all modes", &mut many_all);
    report("32 phones at once, normal mode", &mut many_normal);
    let p99_32 = percentile(&many_all, 99.0);
    println!(
        "target: p99 < 50 ms at 32 phones on 2 cores: {} ({})",
        if p99_32 < Duration::from_millis(50) {
            "met"
        } else {
            "NOT met"
        },
        ms(p99_32)
    );
    println!(
        "RSS (daemon + virtual phones): idle {:.1} MiB, with 32 phones {:.1} MiB (target < 64 MiB)",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    // The peer: ideviceinfo reading the ECID of one normal-mode phone through our socket.
    match tool("ideviceinfo") {
        None => println!(
            "peer: SKIPPED (ideviceinfo not installed: apt-get install libimobiledevice-utils)"
        ),
        Some(ideviceinfo) => {
            let phone = bench::phone(3000 + 2, bench::start_mode(2), &clock).expect("phone");
            let mut events = shared.subscribe();
            hub.plug(0, phone).expect("plug");
            let _ = events.recv().await;
            let udid = shared
                .registry()
                .entries()
                .find(|e| e.present)
                .and_then(|e| e.identity.udid.clone())
                .unwrap_or_default();
            let mut peer = Vec::new();
            for _ in 0..PEER_RUNS {
                let path = mux_path.clone();
                let tool = ideviceinfo.clone();
                let udid = udid.clone();
                let (took, ok) = tokio::task::spawn_blocking(move || {
                    let at = Instant::now();
                    let out = Command::new(tool)
                        .args(["-s", "-u", &udid, "-k", "UniqueChipID"])
                        .env("USBMUXD_SOCKET_ADDRESS", format!("UNIX:{}", path.display()))
                        .output();
                    let ok = out.map(|o| o.status.success() && !o.stdout.is_empty());
                    (at.elapsed(), ok.unwrap_or(false))
                })
                .await
                .expect("peer run");
                if ok {
                    peer.push(took);
                }
            }
            if peer.is_empty() {
                println!("peer: ideviceinfo failed every run");
            } else {
                let theirs = report("peer: ideviceinfo -k UniqueChipID (1 phone)", &mut peer);
                println!(
                    "ratio restation identification / ideviceinfo ECID read (p50, normal mode): {:.2}",
                    ours_normal.as_secs_f64() / theirs.as_secs_f64().max(1e-9)
                );
            }
            let _ = hub.unplug(0);
        }
    }
    let _ = stop_tx.send(true);
    let _ = driver.await;
    let _ = mux_task.await;
    let _ = std::fs::remove_dir_all(&dir);
}
