//! Project automation for restation, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! `cargo xtask vm` is the VM bench: a small Debian trixie guest, booted under qemu (TCG), whose
//! kernel enumerates restation's virtual phones as real USB devices (USB/IP, `vhci-hcd`), so
//! the reference tools (usbmuxd, libimobiledevice, irecovery) and restation's libusb backend
//! run against them unchanged. See `docs/vm-bench.md`.
//!
//! `cargo xtask demo-bench` measures `restation demo` at scale (one phone, then 32).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod demo_bench;
mod vm;

#[derive(Parser)]
#[command(name = "xtask", about = "restation project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build (or reuse) the VM bench image, boot it under qemu TCG, run the checks inside it
    /// against `restation sim usbip`, print one PASS/FAIL line per check.
    Vm(VmArgs),
    /// The demo's scale figures: one phone alone, then N phones (wall, CPU, peak RSS, ratios).
    DemoBench(demo_bench::DemoBenchArgs),
}

/// Options of `cargo xtask vm`.
#[derive(clap::Args, Debug)]
pub struct VmArgs {
    /// Cache directory for the image and the runs [default: $RESTATION_VM_CACHE, else
    /// target/vm in the workspace].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Debian mirror for debootstrap [default: $RESTATION_VM_MIRROR, else deb.debian.org].
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// Rebuild the image even if the cache has one for this recipe.
    #[arg(long)]
    rebuild: bool,
    /// Only build (or reuse) the image; do not boot it.
    #[arg(long)]
    image_only: bool,
    /// Build restation with the release profile (slower to build, faster in the guest).
    #[arg(long)]
    release: bool,
    /// Do not build restation; use this binary (it must have the `libusb` feature).
    #[arg(long, value_name = "PATH")]
    restation: Option<PathBuf>,
    /// Deadline for the boot and the guest's checks, in seconds (the image build has its own).
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    timeout: u64,
    /// Echo the guest's serial console (kernel and tools) to stderr as it runs.
    #[arg(long, short)]
    verbose: bool,
    /// Size of the throughput upload (restation vs irecovery, same recovery phone), in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    upload_mib: u64,
    /// Bytes streamed each way through the phone's echo port (restation's mux vs usbmuxd), in
    /// MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    stream_mib: u64,
    /// Keep the wire captures, cut to the device of interest, in DIR as `vm-<name>.pcap`
    /// (`fixtures/traces` holds the committed ones).
    #[arg(long, value_name = "DIR")]
    write_traces: Option<PathBuf>,
}

impl VmArgs {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Vm(args) => vm::run(&args),
        Command::DemoBench(args) => demo_bench::run(&args),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(2)
        }
    }
}
