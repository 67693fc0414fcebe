//! `cargo xtask demo-bench [--devices 32]`: the station's scale figures. Runs `restation demo`
//! twice in the same run: one phone alone (the peer: what one restore costs on this machine
//! now), then a bench of N phones with the default faults and the default queue (8 restores
//! per host controller). Prints wall time, CPU time and peak RSS of each, and the ratios
//! against the single phone, with what a perfect queue would give (N/8 waves of one phone's
//! wall time). Fails when a phone of the big bench did not end as its fault predicts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Options of `cargo xtask demo-bench`.
#[derive(clap::Args, Debug)]
pub struct DemoBenchArgs {
    /// Phones in the big bench.
    #[arg(long, default_value_t = 32)]
    devices: u32,
    /// Restores at once per host controller (the demo's default is 8).
    #[arg(long, default_value_t = 8)]
    per_controller: u32,
    /// The restation binary [default: build target/release/restation].
    #[arg(long, value_name = "PATH")]
    restation: Option<PathBuf>,
}

/// One demo run, measured.
struct Run {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
    summary: Value,
}

pub fn run(args: &DemoBenchArgs) -> Result<bool> {
    let workspace = super::vm::workspace_root();
    let restation = match &args.restation {
        Some(path) => path.clone(),
        None => build(&workspace)?,
    };
    let dir = std::env::temp_dir().join(format!("restation-demo-bench-{}", std::process::id()));
    let dir_arg = dir.to_string_lossy().into_owned();
    // The first run stages the synthetic IPSWs: not part of any figure.
    let models = args.devices.min(3).to_string();
    demo(
        &restation,
        &["--devices", &models, "--no-faults", "--dir", &dir_arg],
    )?;
    let one = demo(
        &restation,
        &["--devices", "1", "--no-faults", "--dir", &dir_arg],
    )?;
    let devices = args.devices.to_string();
    let cap = args.per_controller.to_string();
    let many = demo(
        &restation,
        &[
            "--devices",
            &devices,
            "--max-restores-per-controller",
            &cap,
            "--dir",
            &dir_arg,
        ],
    )?;
    let _ = std::fs::remove_dir_all(&dir);

    let secs = |d: Duration| d.as_secs_f64();
    let n = f64::from(args.devices);
    let waves = f64::from(args.devices.div_ceil(args.per_controller.max(1)));
    println!(
        "demo, 1 phone (peer):  wall {:6.2} s, CPU {:6.2} s, peak RSS {:6.1} MiB",
        secs(one.wall),
        secs(one.cpu),
        one.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "demo, {} phones:       wall {:6.2} s, CPU {:6.2} s, peak RSS {:6.1} MiB ({} restored, {} failed, as predicted: {})",
        args.devices,
        secs(many.wall),
        secs(many.cpu),
        many.peak_rss_kib as f64 / 1024.0,
        many.summary["restored"],
        many.summary["failed"],
        many.summary["as_expected"]
    );
    println!(
        "ratio wall {}/1: {:.2} (a perfect queue of {} at a time: {:.0}); CPU per phone {:.3} s vs {:.3} s alone ({:.2}x)",
        args.devices,
        secs(many.wall) / secs(one.wall),
        args.per_controller,
        waves,
        secs(many.cpu) / n,
        secs(one.cpu),
        secs(many.cpu) / n / secs(one.cpu).max(1e-9)
    );
    Ok(many.summary["as_expected"] == Value::Bool(true))
}

/// `cargo build --release -p restation`; the binary.
fn build(workspace: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("demo-bench: cargo build --release -p restation");
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "-p", "restation"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p restation failed ({status})");
    }
    Ok(workspace.join("target/release/restation"))
}

/// Runs `restation demo --json ARGS` and measures it.
fn demo(restation: &Path, args: &[&str]) -> Result<Run> {
    eprintln!("demo-bench: restation demo {}", args.join(" "));
    let began = Instant::now();
    let child = Command::new(restation)
        .arg("demo")
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", restation.display()))?;
    let pid = i32::try_from(child.id()).context("a child pid beyond i32")?;
    let mut stdout = child.stdout.context("the demo's stdout")?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut text).context("reading the demo's output")?;
    let (status, usage) = wait4(pid)?;
    let wall = began.elapsed();
    if status != 0 {
        bail!(
            "restation demo {} exited with status {status}",
            args.join(" ")
        );
    }
    let summary = text
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["event"] == "summary")
        })
        .context("the demo printed no summary")?;
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok(Run {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        summary,
    })
}

/// Waits for `pid` and returns its exit status and its own resource usage.
fn wait4(pid: i32) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for (std's Child was consumed without
    // waiting); both pointers are to live locals.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if got != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, usage))
}
