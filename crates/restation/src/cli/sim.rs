//! `restation sim`: virtual phones from `crates/sim` for tools outside this process.
//!
//! - `restation sim usbip --listen 127.0.0.1:3240 --phone iPhone14,3:normal
//!   --phone iPhone10,3:recovery --phone iPhone7,2:dfu [--seed N] [--events PATH]`: a USB/IP
//!   server exporting one virtual phone per `--phone` as bus IDs `1-1`, `1-2`, ... for a VM
//!   whose kernel attaches them with `vhci-hcd` (`usbip attach -r HOST -b 1-1`). Modes: `normal`,
//!   `recovery`, `dfu`, `port-dfu`, `restore`. Runs until killed.
//!
//! Output (to `--events`, or stdout): one JSON object per line. First one `phone` line per
//! phone with what `irecovery -q` and `ideviceinfo` should report (`ecid`, `cpid`, `bdid` in
//! irecovery's formats, `serial`, `udid`, `product`, the USB serial string of the mode it starts
//! in), then the server's events: `listening`, `mode` (the phone enumerated: `mode`, `pid`),
//! `left`, `attached`, `detached`, `upload` (a file the phone received whole: `mode` recovery
//! or dfu, `bytes`, `sha256`), `protocol_error`. With `--tss-standin ADDR`, a `tss_standin`
//! line (its `url`) comes after the `phone` lines: the phones then check every image's ticket
//! against that stand-in's key, so a restore from another machine (the VM bench's guest) is
//! personalized end to end.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use sim::clock::{Clock, RealClock};
use sim::hub::VirtualHub;
use sim::phone::{Options, Phone, Timings};
use sim::profile::Profile;
use sim::usbip::server::UsbipServer;

use crate::daemon::bench::PhoneSpec;

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Export virtual phones over USB/IP (for a VM's vhci-hcd).
    Usbip(UsbipArgs),
}

#[derive(Debug, Args)]
struct UsbipArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3240")]
    listen: String,
    /// A phone as PRODUCT:MODE (iPhone14,3:normal); repeat for more ports.
    #[arg(long = "phone", value_name = "PRODUCT:MODE", required = true)]
    phones: Vec<PhoneSpec>,
    /// Seed of the phones' identities (ECID, serial, nonces); phone N uses seed + N.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the JSON event lines here instead of stdout.
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// How long a DFU block stays in dfuDNBUSY, in ms (the simulator's default when absent;
    /// 0 answers dfuDNLOAD-IDLE at the first GETSTATUS).
    #[arg(long, value_name = "MS")]
    dfu_busy_ms: Option<u64>,
    /// Run a TSS signing stand-in on ADDR (e.g. 127.0.0.1:8421); the phones then boot only
    /// images personalized by it, as real phones boot only Apple-signed ones. Point the
    /// restoring daemon's `--tss-url` at `http://ADDR/TSS/controller?action=2`.
    #[arg(long, value_name = "ADDR")]
    tss_standin: Option<std::net::SocketAddr>,
}

/// The `phone` line: who each virtual phone is.
#[derive(Debug, Serialize)]
struct PhoneLine<'a> {
    event: &'static str,
    busid: String,
    product: &'a str,
    board: &'a str,
    mode: &'static str,
    pid: u16,
    /// As `irecovery -q` prints it.
    ecid: String,
    ecid_decimal: u64,
    cpid: String,
    bdid: String,
    serial: &'a str,
    udid: &'a str,
    /// The USB serial number string of the starting mode.
    usb_serial: Option<String>,
}

pub fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        SimCommand::Usbip(a) => usbip(a),
    }
}

fn usbip(args: &UsbipArgs) -> anyhow::Result<ExitCode> {
    let mut out: Box<dyn Write> = match &args.events {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let hub = VirtualHub::new(args.phones.len(), Arc::clone(&clock));
    let mut timings = Timings::default();
    if let Some(ms) = args.dfu_busy_ms {
        timings.dfu_block_busy = Duration::from_millis(ms);
    }
    // The stand-in's HTTP server needs a runtime of its own; the USB/IP server runs on threads.
    let standin = match args.tss_standin {
        Some(addr) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("starting the runtime for the TSS stand-in")?;
            let standin = runtime
                .block_on(tss::standin::Standin::start_on(
                    addr,
                    tss::standin::Signer::random(),
                ))
                .with_context(|| format!("starting the TSS stand-in on {addr}"))?;
            Some((runtime, standin))
        }
        None => None,
    };
    for (i, spec) in args.phones.iter().enumerate() {
        let profile =
            Profile::for_product_type(&spec.product_type, args.seed.wrapping_add(i as u64))
                .with_context(|| format!("--phone {}", spec.product_type))?;
        let options = Options {
            start: spec.mode,
            timings,
            ..Options::default()
        };
        let mut phone = Phone::new(profile.clone(), options, clock.now());
        if let Some((_, standin)) = &standin {
            phone.set_image_check(Box::new(tss::verify::image_check(standin.public_key())));
        }
        hub.plug(i, phone)?;
        let (pid, usb_serial) = hub
            .with_phone(i, |p| {
                let id = p.identity();
                (
                    id.product_id(),
                    id.string(id.device[16]).map(str::to_string),
                )
            })
            .unwrap_or_default();
        let line = PhoneLine {
            event: "phone",
            busid: sim::usbip::connection::busid(i),
            product: &profile.product_type,
            board: &profile.board_config,
            mode: spec.mode.name(),
            pid,
            ecid: format!("0x{:016x}", profile.ecid),
            ecid_decimal: profile.ecid,
            cpid: format!("0x{:04x}", profile.chip_id),
            bdid: format!("0x{:02x}", profile.board_id),
            serial: &profile.serial_number,
            udid: &profile.udid,
            usb_serial,
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    }
    if let Some((_, standin)) = &standin {
        let line = serde_json::json!({"event": "tss_standin", "url": standin.url()});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    let (tx, rx) = mpsc::channel();
    let server = UsbipServer::start(args.listen.as_str(), hub, Some(tx))
        .with_context(|| format!("listening on {}", args.listen))?;
    for event in rx {
        writeln!(out, "{}", serde_json::to_string(&event)?)?;
        out.flush()?;
    }
    drop(server);
    if let Some((runtime, standin)) = standin {
        runtime.block_on(standin.shutdown());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::phone::Mode;
    use sim::profile::DfuStage;

    #[test]
    fn phone_specs_parse_product_and_mode() {
        let s: PhoneSpec = "iPhone14,3:normal".parse().unwrap();
        assert_eq!(
            (s.product_type.as_str(), s.mode),
            ("iPhone14,3", Mode::Normal)
        );
        let s: PhoneSpec = "iPhone7,2:dfu".parse().unwrap();
        assert_eq!(s.mode, Mode::Dfu(DfuStage::SecureRom));
        assert!("iPhone7,2".parse::<PhoneSpec>().is_err());
        assert!("iPhone7,2:sideways".parse::<PhoneSpec>().is_err());
        assert!(":recovery".parse::<PhoneSpec>().is_err());
    }
}
