//! `restation`: the restore station's one binary. Every job is a subcommand; this file only
//! parses the command line and hands over to the module that owns the job.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use restation::cli;

/// Restore station for iPhone repair benches.
#[derive(Debug, Parser)]
#[command(name = "restation", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole station on virtual phones: restores a bench of them at once, live, and ends
    /// with a summary table (no iPhone needed).
    Demo(cli::demo::DemoArgs),
    /// Print the version and the protocol versions this build speaks.
    Version(cli::version::VersionArgs),
    /// Decode what a phone in recovery/DFU says about itself (serial string, USB mode).
    Irecv(cli::irecv::IrecvArgs),
    /// Inspect IPSWs, select build identities, and stage firmware into the verified store.
    Ipsw(cli::ipsw::IpswArgs),
    /// Run the daemon: watch USB, keep the device registry, serve the local API.
    Serve(Box<cli::serve::ServeArgs>),
    /// List the phones the daemon sees (or scan once with --direct).
    Devices(cli::devices::DevicesArgs),
    /// Restore a phone through the daemon, following its progress.
    Restore(cli::restore::RestoreArgs),
    /// Virtual phones for other tools (a USB/IP server for the VM bench).
    Sim(cli::sim::SimArgs),
    /// What a restore error number means (4013, 3194, ...) and what to do; the whole table
    /// without a number.
    Explain(cli::explain::ExplainArgs),
    /// The jobs this station ran, from the history file: a table, JSON lines or CSV.
    History(cli::history::HistoryArgs),
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cli::demo::run(&args),
        Command::Version(args) => cli::version::run(&args),
        Command::Irecv(args) => cli::irecv::run(&args),
        Command::Ipsw(args) => cli::ipsw::run(&args),
        Command::Serve(args) => cli::serve::run(&args),
        Command::Devices(args) => cli::devices::run(&args),
        Command::Restore(args) => cli::restore::run(&args),
        Command::Sim(args) => cli::sim::run(&args),
        Command::Explain(args) => cli::explain::run(&args),
        Command::History(args) => cli::history::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("restation: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Makes a closed stdout end the process quietly, as it does for every Unix command-line tool
/// (`restation ipsw inspect X | head`). Rust ignores SIGPIPE by default, which turns a closed
/// pipe into a panic inside `println!`.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
