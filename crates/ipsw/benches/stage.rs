//! Staging throughput against its peers, measured in one run on one file with a warm page
//! cache: `sha1sum FILE`, `sha256sum FILE`, then `Store::stage_file` (copy into a store on the
//! same disk + SHA-1 + SHA-256 of the whole file + every component digest, fsync, rename), and
//! `Store::verify` (the same pass without the copy). Prints wall times and the ratios.
//!
//! ```text
//! cargo bench -p ipsw --bench stage                      # synthesizes a 2 GiB IPSW
//! BENCH_OS_SIZE=4G cargo bench -p ipsw --bench stage      # bigger (zip64)
//! cargo bench -p ipsw --bench stage -- /path/to/file.ipsw # an existing IPSW
//! ```
//! `BENCH_DIR` picks the work folder (default: the system temp dir); `BENCH_RUNS` the
//! repetitions (best of, default 2).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ipsw::{StageOptions, Store, VerifyOutcome};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let t = Instant::now();
    let mut out = f();
    let mut best = t.elapsed();
    for _ in 1..runs {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed());
    }
    (best, out)
}

fn tool(name: &str, file: &Path) -> Option<String> {
    let o = Command::new(name).arg(file).output().ok()?;
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned()
    })
}

fn main() {
    let arg = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let work = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("restation-bench"));
    std::fs::create_dir_all(&work).expect("bench work folder");
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let file = match arg {
        Some(p) => PathBuf::from(p),
        None => {
            let size = ipsw::synth::parse_size(
                &std::env::var("BENCH_OS_SIZE").unwrap_or_else(|_| "2G".into()),
            )
            .expect("BENCH_OS_SIZE");
            let out = work.join(format!("bench-iPhone14,3-{size}.ipsw"));
            if !out.exists() {
                let t = Instant::now();
                let profile = ipsw::profile::profile("iPhone14,3").expect("profile");
                ipsw::synth::synthesize(
                    profile,
                    &ipsw::synth::SynthOptions { os_size: size },
                    &out,
                )
                .expect("synth");
                eprintln!(
                    "synthesized {} in {:.1}s",
                    out.display(),
                    t.elapsed().as_secs_f64()
                );
            }
            out
        }
    };
    let len = std::fs::metadata(&file).expect("bench file").len();
    let gib = len as f64 / f64::from(1u32 << 30);
    let cpu_sha_ni = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.contains("sha_ni"))
        .unwrap_or(false);
    println!(
        "file {} ({len} bytes, {gib:.2} GiB), cpus {}, sha_ni {cpu_sha_ni}, best of {runs}",
        file.display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Single-thread hash speeds in memory (shows whether SHA-NI is in use).
    let buf = vec![0x5Au8; 256 << 20];
    for alg in ipsw::Algorithm::ALL {
        let t = Instant::now();
        std::hint::black_box(alg.digest(&buf));
        let s = t.elapsed().as_secs_f64();
        println!("in-memory {alg:<6} one thread: {:>6.0} MiB/s", 256.0 / s);
    }
    drop(buf);

    // Warm the page cache.
    {
        use std::io::Read;
        let mut f = std::fs::File::open(&file).expect("open");
        let mut buf = vec![0u8; 8 << 20];
        while f.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
    }
    let (t_sha1, sha1) = best(runs, || tool("sha1sum", &file));
    let (t_sha256, sha256) = best(runs, || tool("sha256sum", &file));

    let store_root = work.join("store");
    let (t_stage, staged) = best(runs, || {
        let _ = std::fs::remove_dir_all(&store_root);
        let store = Store::open(&store_root).expect("store");
        store
            .stage_file(&file, &StageOptions::default())
            .expect("stage")
    });
    let store = Store::open(&store_root).expect("store");
    let (t_verify, outcome) = best(runs, || {
        store.verify(&staged.record.id, None).expect("verify")
    });
    assert!(
        matches!(outcome, VerifyOutcome::Intact(_)),
        "verify failed: {outcome:?}"
    );
    if let Some(s) = &sha1 {
        assert_eq!(s, &staged.record.sha1, "sha1sum disagrees");
    }
    if let Some(s) = &sha256 {
        assert_eq!(s, &staged.record.sha256, "sha256sum disagrees");
    }
    let _ = std::fs::remove_dir_all(&store_root);

    let line = |name: &str, t: Duration| {
        let s = t.as_secs_f64();
        println!(
            "{name:<58} {s:>7.3} s  {:>7.0} MiB/s",
            len as f64 / s / f64::from(1u32 << 20)
        );
    };
    line("sha1sum", t_sha1);
    line("sha256sum", t_sha256);
    line(
        &format!(
            "stage (copy+fsync, sha1+sha256, {} component digests)",
            staged.record.components_checked
        ),
        t_stage,
    );
    line("verify (same pass, no copy)", t_verify);
    let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratio stage/sha256sum  {:.3}  (target <= 1.1)",
        r(t_stage, t_sha256)
    );
    println!("ratio stage/sha1sum    {:.3}", r(t_stage, t_sha1));
    println!("ratio verify/sha256sum {:.3}", r(t_verify, t_sha256));
}
