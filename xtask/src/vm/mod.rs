//! `cargo xtask vm`: build or reuse the guest image, build restation, start the USB/IP server
//! with the bench's virtual phones, boot the guest, collect one PASS/FAIL line per check.
//!
//! Output: the check lines (`PASS|FAIL <name> <figures>`) on stdout, progress on stderr. The
//! last run's directory (`<cache>/run`) keeps the guest's logs, the console, the server's events.

mod image;
mod proc;
mod qemu;
mod server;
mod wire;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::VmArgs;

const GUEST_SCRIPT: &str = include_str!("guest.sh");

/// The check lines, printed as they come.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    names: BTreeSet<String>,
    failed: usize,
    passed: usize,
}

impl Report {
    fn line(&mut self, line: &str) {
        let mut words = line.splitn(3, ' ');
        let status = words.next().unwrap_or_default();
        let name = words.next().unwrap_or_default().to_owned();
        match status {
            "PASS" => self.passed += 1,
            "FAIL" => self.failed += 1,
            _ => return,
        }
        println!("{}", line.trim_end());
        self.names.insert(name);
        self.lines.push(line.to_owned());
    }

    fn pass(&mut self, name: &str, figures: &str) {
        self.line(&format!("PASS {name} {figures}"));
    }

    fn fail(&mut self, name: &str, why: &str) {
        self.line(&format!("FAIL {name} {}", why.replace('\n', " | ")));
    }
}

pub fn run(args: &VmArgs) -> Result<bool> {
    let started = Instant::now();
    let workspace = workspace_root();
    let cache = match (&args.cache, std::env::var_os("RESTATION_VM_CACHE")) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => PathBuf::from(dir),
        (None, None) => workspace.join("target/vm"),
    };
    let cache = image::absolute(&cache)?;
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let mirror = args
        .mirror
        .clone()
        .or_else(|| std::env::var("RESTATION_VM_MIRROR").ok())
        .unwrap_or_else(|| image::MIRROR.to_owned());
    let mut report = Report::default();

    // --- image ---------------------------------------------------------------------------------
    let t = Instant::now();
    let image = match image::ensure(&cache, &mirror, args.rebuild) {
        Ok((image, built)) => {
            let how = match built {
                Some(took) => format!("built in {:.0}s", took.as_secs_f64()),
                None => format!("reused in {:.1}s", t.elapsed().as_secs_f64()),
            };
            let size = fs::metadata(&image.rootfs)
                .map(|m| m.len() >> 20)
                .unwrap_or(0);
            report.pass(
                "image",
                &format!(
                    "debian={} key={} kernel={} rootfs={size}MiB {how} ({})",
                    image::SUITE,
                    image.key,
                    image.kernel_version,
                    image.dir.display()
                ),
            );
            image
        }
        Err(e) => {
            report.fail("image", &format!("{e:#}"));
            return Ok(false);
        }
    };
    if args.image_only {
        return Ok(report.failed == 0);
    }
    if image::which("qemu-system-x86_64").is_none() {
        report.fail(
            "boot",
            "qemu-system-x86_64 not found (apt-get install qemu-system-x86)",
        );
        return Ok(false);
    }

    // --- restation -----------------------------------------------------------------------------
    let t = Instant::now();
    let restation = match &args.restation {
        Some(path) => Ok(path.clone()),
        None => build_restation(&workspace, args.release),
    };
    let restation_error = match &restation {
        Ok(path) => {
            report.pass(
                "restation-build",
                &format!(
                    "{} ({}) in {:.0}s",
                    path.display(),
                    match (&args.restation, args.release) {
                        (Some(_), _) => "given with --restation",
                        (None, true) => "release",
                        (None, false) => "dev",
                    },
                    t.elapsed().as_secs_f64()
                ),
            );
            None
        }
        Err(e) => {
            report.fail("restation-build", &format!("{e:#}"));
            Some(first_line(&format!("{e:#}")))
        }
    };

    // --- the guest's helper: usbmon captures, restation's upload code, a mux stream ----------
    let t = Instant::now();
    let tool = build_guest_tool(&workspace);
    match &tool {
        Ok(path) => report.pass(
            "guest-tool-build",
            &format!(
                "{} (release) in {:.0}s",
                path.display(),
                t.elapsed().as_secs_f64()
            ),
        ),
        Err(e) => report.fail("guest-tool-build", &format!("{e:#}")),
    }

    // --- run directory: the guest script, restation, the server's events ----------------------
    let run = cache.join("run");
    if run.exists() {
        fs::remove_dir_all(&run).with_context(|| format!("removing {}", run.display()))?;
    }
    fs::create_dir_all(run.join("logs"))?;
    fs::write(run.join("guest.sh"), GUEST_SCRIPT)?;
    if let Ok(path) = &restation {
        fs::copy(path, run.join("restation"))
            .with_context(|| format!("copying {} into the run directory", path.display()))?;
    }
    if let Ok(path) = &tool {
        fs::copy(path, run.join("vm-guest-tool"))
            .with_context(|| format!("copying {} into the run directory", path.display()))?;
    }

    // --- the IPSW the guest's restation restores: synthesized and staged on the host ----------
    let t = Instant::now();
    let staged = match &restation {
        Err(_) => Err(anyhow::anyhow!("restation did not build")),
        Ok(path) => stage_restore_ipsw(path, &run),
    };
    let restore_env = match &staged {
        Ok(s) => {
            report.pass(
                "restore-ipsw",
                &format!(
                    "{} {} ({} bytes, id {}) staged into run/store in {:.1}s",
                    RESTORE_PRODUCT,
                    s.build,
                    s.size,
                    &s.id[..12.min(s.id.len())],
                    t.elapsed().as_secs_f64()
                ),
            );
            format!(
                "BENCH_RESTORE_IPSW={}\nBENCH_RESTORE_BUILD={}\nBENCH_RESTORE_ERROR=''\n",
                server::quote(&s.id),
                server::quote(&s.build)
            )
        }
        Err(e) => {
            report.fail("restore-ipsw", &format!("{e:#}"));
            format!(
                "BENCH_RESTORE_IPSW=''\nBENCH_RESTORE_BUILD=''\nBENCH_RESTORE_ERROR={}\n",
                server::quote(&first_line(&format!("{e:#}")))
            )
        }
    };

    // --- the USB/IP server ---------------------------------------------------------------------
    let port = server::free_port()?;
    let tss_port = server::free_port()?;
    let (server, server_error) = match &restation {
        Err(_) => (None, Some("restation did not build".to_owned())),
        Ok(path) => {
            if !server_available(path) {
                let why =
                    "`restation sim usbip` does not exist yet (crates/restation/src/cli/sim.rs)";
                report.fail("usbip-server", why);
                (None, Some(why.to_owned()))
            } else {
                match server::start(path, &run, port, tss_port, Duration::from_secs(30)) {
                    Ok(s) => {
                        let phones: Vec<String> = s
                            .identities
                            .iter()
                            .map(|i| {
                                format!(
                                    "{}={}:0x{:x}",
                                    i.busid,
                                    i.product.as_deref().unwrap_or("?"),
                                    i.ecid.unwrap_or(0)
                                )
                            })
                            .collect();
                        report.pass(
                            "usbip-server",
                            &format!("listen={} {}", s.listen, phones.join(" ")),
                        );
                        (Some(s), None)
                    }
                    Err(e) => {
                        report.fail("usbip-server", &format!("{e:#}"));
                        (None, Some(first_line(&format!("{e:#}"))))
                    }
                }
            }
        }
    };
    let identities = server
        .as_ref()
        .map(|s| s.identities.clone())
        .unwrap_or_default();
    let mut env = server::bench_env(
        port,
        &identities,
        server_error.as_deref(),
        restation_error.as_deref(),
    );
    env.push_str(&bench_extras(args));
    env.push_str(&restore_env);
    // the guest reaches the host's loopback as 10.0.2.2 (qemu's user networking)
    env.push_str(&format!(
        "BENCH_TSS_URL=http://10.0.2.2:{tss_port}/TSS/controller?action=2\n"
    ));
    fs::write(run.join("bench.env"), env)?;

    // --- boot and run the guest's checks -------------------------------------------------------
    eprintln!(
        "vm: booting (TCG, deadline {} s); run directory {}",
        args.timeout().as_secs(),
        run.display()
    );
    let outcome = qemu::boot(&image, &run, args.timeout(), args.verbose, |line| {
        report.line(line)
    });
    let mut server = server;
    if let Some(s) = server.as_mut() {
        s.guard.kill();
    }
    match outcome {
        Ok(o) => {
            // the results file is the record; print what the console may have garbled
            let recorded = fs::read_to_string(run.join("results.txt")).unwrap_or_default();
            for line in recorded.lines() {
                if !report.lines.iter().any(|l| l == line) {
                    report.line(line);
                }
            }
            if o.done && o.exited {
                report.pass(
                    "vm-run",
                    &format!(
                        "guest finished in {:.0}s (boot to power-off under TCG); logs: {}",
                        o.elapsed.as_secs_f64(),
                        run.join("logs").display()
                    ),
                );
            } else {
                report.fail(
                    "vm-run",
                    &format!(
                        "guest {} after {:.0}s (deadline {} s); console: {}",
                        if o.done {
                            "finished but did not power off"
                        } else {
                            "did not finish"
                        },
                        o.elapsed.as_secs_f64(),
                        args.timeout().as_secs(),
                        run.join("logs/console.log").display()
                    ),
                );
            }
        }
        Err(e) => report.fail("vm-run", &format!("{e:#}")),
    }
    upload_figures(&run);

    // --- the wire comparison, on the host ----------------------------------------------------
    if let Some(dir) = &args.write_traces {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (check, verdict) in wire::compare_all(&run.join("wire"), args.write_traces.as_deref()) {
        if verdict.pass {
            report.pass(&check, &verdict.text);
        } else {
            report.fail(&check, &verdict.text);
        }
    }
    eprintln!(
        "vm: {} passed, {} failed, wall time {:.0}s",
        report.passed,
        report.failed,
        started.elapsed().as_secs_f64()
    );
    Ok(report.failed == 0)
}

/// The workspace root (the xtask crate sits in it).
pub(crate) fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_owned()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// `cargo build -p restation --features libusb`; returns the binary.
fn build_restation(workspace: &Path, release: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "-p", "restation", "--features", "libusb"])
        .args(["--message-format", "json-render-diagnostics"]);
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "vm: cargo build -p restation --features libusb{}",
        if release { " --release" } else { "" }
    );
    let (status, stdout) = proc::run_stdout(
        "cargo build -p restation",
        &mut cmd,
        Duration::from_secs(60 * 60),
    )?;
    let messages: Vec<Value> = String::from_utf8_lossy(&stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    if !status.success() {
        // cargo rendered the compiler's diagnostics on stderr already
        bail!("cargo build -p restation --features libusb failed ({status}); the compiler's messages are above");
    }
    let executable = messages
        .iter()
        .filter(|v| v.get("reason").and_then(Value::as_str) == Some("compiler-artifact"))
        .filter(|v| v.pointer("/target/name").and_then(Value::as_str) == Some("restation"))
        .find_map(|v| {
            v.get("executable")
                .and_then(Value::as_str)
                .map(PathBuf::from)
        });
    executable.context("cargo reported no restation executable")
}

/// `xtask/guest-tool` (its own workspace, with the libusb backend) in the release profile;
/// returns the binary.
fn build_guest_tool(workspace: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = workspace.join("xtask/guest-tool/Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--release", "--message-format", "json-render-diagnostics"]);
    // its own workspace would get its own target/ next to it: share the main one
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        cmd.arg("--target-dir").arg(workspace.join("target"));
    }
    eprintln!(
        "vm: cargo build --release --manifest-path {}",
        manifest.display()
    );
    let (status, stdout) = proc::run_stdout(
        "cargo build vm-guest-tool",
        &mut cmd,
        Duration::from_secs(60 * 60),
    )?;
    if !status.success() {
        bail!(
            "cargo build of xtask/guest-tool failed ({status}); the compiler's messages are above"
        );
    }
    String::from_utf8_lossy(&stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("reason").and_then(Value::as_str) == Some("compiler-artifact"))
        .filter(|v| v.pointer("/target/name").and_then(Value::as_str) == Some("vm-guest-tool"))
        .find_map(|v| {
            v.get("executable")
                .and_then(Value::as_str)
                .map(PathBuf::from)
        })
        .context("cargo reported no vm-guest-tool executable")
}

/// The bench's test pattern (the same formula as `xtask/guest-tool`'s `pattern` and
/// `crates/sim/tests/vm_traces.rs`): a 64-bit LCG's high bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x5245_5354_4154_494f;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

/// Sizes of the wire comparison's uploads: small enough to keep as fixtures. The DFU one
/// leaves room for the suffix in its last 2048-byte block; the recovery one is a multiple of
/// the 512-byte packet size, so the transfer must end with a zero-length packet.
pub const WIRE_DFU_BYTES: usize = 5000;
pub const WIRE_RECOVERY_BYTES: usize = 10_240;

/// bench.env lines for the wire captures and the throughput figures.
fn bench_extras(args: &VmArgs) -> String {
    use sha2::{Digest, Sha256};
    let upload = pattern((args.upload_mib as usize) << 20);
    format!(
        "BENCH_WIRE_DFU_BYTES={WIRE_DFU_BYTES}\nBENCH_WIRE_RECOVERY_BYTES={WIRE_RECOVERY_BYTES}\nBENCH_UPLOAD_MIB={}\nBENCH_UPLOAD_SHA256={}\nBENCH_STREAM_MIB={}\nBENCH_RESTATION_PROFILE={}\n",
        args.upload_mib,
        hex::encode(Sha256::digest(&upload)),
        args.stream_mib,
        match (&args.restation, args.release) {
            (Some(p), _) if p.components().any(|c| c.as_os_str() == "release") => "release",
            (Some(p), _) if p.components().any(|c| c.as_os_str() == "debug") => "dev",
            (Some(_), _) => "given",
            (None, true) => "release",
            (None, false) => "dev",
        }
    )
}

/// The model and OS image size of the IPSW the guest restores (the RESTORE phone's model).
const RESTORE_PRODUCT: &str = "iPhone10,3";
const RESTORE_OS_SIZE: &str = "16M";

/// What `restation ipsw stage --json` said about the restore's IPSW.
struct Staged {
    id: String,
    build: String,
    size: u64,
}

/// `restation ipsw synth` of the RESTORE phone's model into the run directory, then `restation
/// ipsw stage --store run/store` (the guest's daemon reads that store over 9p: staging hashes
/// every member, which would take minutes under TCG). The synthesized file is removed after.
fn stage_restore_ipsw(restation: &Path, run: &Path) -> Result<Staged> {
    let ipsw = run.join("restore.ipsw");
    let deadline = Duration::from_secs(300);
    let mut synth = Command::new(restation);
    synth
        .args(["ipsw", "synth", "--profile", RESTORE_PRODUCT, "--os-size"])
        .arg(RESTORE_OS_SIZE)
        .arg(&ipsw);
    let (status, _) = proc::run_stdout("restation ipsw synth", &mut synth, deadline)?;
    if !status.success() {
        bail!("restation ipsw synth --profile {RESTORE_PRODUCT} failed ({status})");
    }
    let mut stage = Command::new(restation);
    stage
        .args(["ipsw", "stage", "--json", "--store"])
        .arg(run.join("store"))
        .arg(&ipsw);
    let (status, stdout) = proc::run_stdout("restation ipsw stage", &mut stage, deadline)?;
    if !status.success() {
        bail!("restation ipsw stage failed ({status})");
    }
    fs::remove_file(&ipsw).with_context(|| format!("removing {}", ipsw.display()))?;
    let record: Value =
        serde_json::from_slice(&stdout).context("restation ipsw stage --json printed no record")?;
    let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(Staged {
        id: text("id").context("the staged record has no id")?,
        build: text("product_build_version").context("the staged record has no build")?,
        size: record.get("size").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Whether this restation has the `sim usbip` subcommand.
fn server_available(restation: &Path) -> bool {
    Command::new(restation)
        .args(["sim", "usbip", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The server's upload events, as figures on stderr (the checks compare hashes in the guest).
fn upload_figures(run: &Path) {
    for line in proc::lines_of(&run.join("events.jsonl")) {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v.get("event").and_then(Value::as_str) == Some("upload") {
                eprintln!("vm: host saw upload {line}");
            }
        }
    }
}
