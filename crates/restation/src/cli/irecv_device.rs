//! `restation irecv send` and `restation irecv command`: talk to one phone in recovery or DFU
//! directly over USB, without the daemon (what `irecovery -f` and `irecovery -c` do), with the
//! same code a restore job runs.
//!
//! - `restation irecv send FILE [--ecid X | --port P] [--json]`: a DFU download (2 KiB
//!   control transfers, GETSTATUS after each, the DFU suffix, manifestation) to a phone in
//!   DFU, WTF or Port DFU; a bulk upload to endpoint 0x04 to one in recovery.
//! - `restation irecv command "CMD" [--ecid X | --port P]`: one iBoot command (recovery only);
//!   `getenv NAME` prints the value.
//!
//! The phone: the one with `--ecid`, or on `--port` (as `restation devices` shows it), or the
//! only phone in recovery or DFU on the machine. `--sim PRODUCT:MODE` talks to a virtual phone
//! instead (in real time), for trying the commands without one. A daemon watching the same
//! phones does not hold recovery or DFU phones between jobs; do not send to a phone a job is
//! restoring.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use irecv::mode::Mode;
use irecv::recovery::{self, CommandOutcome};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sim::clock::{Clock, RealClock};
use usb::{DeviceId, UsbBackend, UsbDevice};

use crate::daemon::bench::{BenchSpec, PhoneSpec};
use crate::daemon::{self, identify};

/// How long one recovery command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Which phone, and over what.
#[derive(Debug, Args)]
pub struct Target {
    /// The phone by ECID (`0x…`).
    #[arg(long, conflicts_with = "port")]
    ecid: Option<String>,
    /// The phone by the port it is on (`1-1.3`).
    #[arg(long)]
    port: Option<String>,
    /// A virtual phone `PRODUCT:MODE` (e.g. iPhone10,3:recovery) instead of USB.
    #[arg(long, value_name = "PRODUCT:MODE")]
    sim: Option<PhoneSpec>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The file to send (an iBSS, iBEC, a ramdisk: sent as it is).
    file: PathBuf,
    #[command(flatten)]
    target: Target,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CommandArgs {
    /// The command, e.g. "getenv build-version", "setenv auto-boot true", "reboot".
    command: String,
    #[command(flatten)]
    target: Target,
}

/// The phone found.
struct Found {
    backend: Arc<dyn UsbBackend>,
    id: DeviceId,
    mode: Mode,
    ecid: u64,
    port: String,
}

impl Found {
    fn open(&self) -> anyhow::Result<Box<dyn UsbDevice>> {
        self.backend
            .open(self.id)
            .with_context(|| format!("opening the phone {:#x} on {}", self.ecid, self.port))
    }
}

/// What `send --json` prints.
#[derive(Debug, Serialize)]
struct Sent {
    ecid: String,
    port: String,
    mode: String,
    bytes: usize,
    sha256: String,
    seconds: f64,
}

fn backend(target: &Target) -> anyhow::Result<Arc<dyn UsbBackend>> {
    match &target.sim {
        Some(spec) => {
            let clock: Arc<dyn Clock> = Arc::new(RealClock);
            let hub = BenchSpec::Named(vec![spec.clone()])
                .hub(1, clock)
                .context("building the virtual phone")?;
            Ok(Arc::new(hub))
        }
        None => Ok(daemon::real_usb()?),
    }
}

/// The phone in recovery or DFU the target names (or the only one).
fn find(target: &Target) -> anyhow::Result<Found> {
    let backend = backend(target)?;
    let want_ecid = target
        .ecid
        .as_deref()
        .map(super::history::parse_ecid)
        .transpose()
        .context("--ecid")?;
    let mut candidates = Vec::new();
    for info in backend.devices().context("enumerating USB devices")? {
        let Some(Ok(mode)) = irecv::mode::classify(info.vendor_id(), info.product_id()) else {
            continue;
        };
        if !mode.has_iboot_serial() {
            continue;
        }
        let port = info
            .port_path
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| info.id.to_string());
        if target.port.as_ref().is_some_and(|p| *p != port) {
            continue;
        }
        let identity = match identify::identify(&*backend, info.id, mode) {
            Ok(found) => found.identity,
            Err(e) => {
                eprintln!("restation: skipping the {mode} device on {port}: {e}");
                continue;
            }
        };
        let Some(ecid) = identity.ecid else { continue };
        if want_ecid.is_some_and(|want| want != ecid) {
            continue;
        }
        candidates.push(Found {
            backend: Arc::clone(&backend),
            id: info.id,
            mode,
            ecid,
            port,
        });
    }
    match candidates.len() {
        1 => Ok(candidates.remove(0)),
        0 => bail!(
            "no phone in recovery or DFU{}",
            match (&target.ecid, &target.port) {
                (Some(e), _) => format!(" with ECID {e}"),
                (_, Some(p)) => format!(" on port {p}"),
                _ => String::new(),
            }
        ),
        n => bail!(
            "{n} phones in recovery or DFU ({}): name one with --ecid or --port",
            candidates
                .iter()
                .map(|c| format!("{:#x} {} on {}", c.ecid, c.mode, c.port))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn send(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let data =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    if data.is_empty() {
        bail!("{} is empty: there is nothing to send", args.file.display());
    }
    let phone = find(&args.target)?;
    let mut dev = phone.open()?;
    let pid = dev.product_id();
    let bar = ProgressBar::new(data.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bytes:>10}/{total_bytes} [{bar:30}] {binary_bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    if matches!(phone.mode, Mode::Recovery(_)) {
        recovery::claim_interfaces(&mut *dev).context("claiming the recovery interfaces")?;
        recovery::run_upload_cancellable(
            &mut *dev,
            &data,
            recovery::UploadOptions::default(),
            &irecv::dfu::SystemClock,
            &mut |p| {
                bar.set_position(p.sent);
                ControlFlow::Continue(())
            },
        )
        .context("the recovery upload")?;
    } else {
        irecv::dfu::run_download(
            &mut *dev,
            &data,
            irecv::dfu::Options::for_product_id(pid),
            &mut irecv::dfu::SystemClock,
            &mut |p| bar.set_position(p.sent),
        )
        .context("the DFU download")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let sent = Sent {
        ecid: format!("{:#x}", phone.ecid),
        port: phone.port.clone(),
        mode: phone.mode.to_string(),
        bytes: data.len(),
        sha256: hex::encode(Sha256::digest(&data)),
        seconds,
    };
    if args.json {
        println!("{}", serde_json::to_string(&sent)?);
    } else {
        println!(
            "sent {} bytes to {} ({}) on {} in {:.2} s ({:.2} MB/s)",
            sent.bytes,
            sent.ecid,
            sent.mode,
            sent.port,
            seconds,
            sent.bytes as f64 / seconds.max(1e-9) / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn command(args: &CommandArgs) -> anyhow::Result<ExitCode> {
    let text = args.command.trim();
    let command = recovery::Command::new(text).context("the command")?;
    let phone = find(&args.target)?;
    if !matches!(phone.mode, Mode::Recovery(_)) {
        bail!(
            "the phone {:#x} on {} is in {}: iBoot commands go to a phone in recovery",
            phone.ecid,
            phone.port,
            phone.mode
        );
    }
    let mut dev = phone.open()?;
    recovery::claim_interfaces(&mut *dev).context("claiming the recovery interfaces")?;
    if let Some(name) = text.strip_prefix("getenv ") {
        let value = recovery::getenv(&mut *dev, name.trim(), COMMAND_TIMEOUT)?;
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    match recovery::send_command(&mut *dev, &command, COMMAND_TIMEOUT)? {
        CommandOutcome::Accepted => {}
        CommandOutcome::DeviceLeft { .. } => {
            eprintln!("the phone left the bus after `{text}` (as it does for reboot or go)")
        }
    }
    Ok(ExitCode::SUCCESS)
}
