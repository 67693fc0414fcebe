//! `restation`: the restore station's one binary. Every job is a subcommand; this file only
//! parses the command line and hands over to the module that owns the job.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Restore station for iPhone repair benches.
#[derive(Debug, Parser)]
#[command(name = "restation", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version and the protocol versions this build speaks.
    Version(cli::version::VersionArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version(args) => cli::version::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("restation: {err:#}");
            ExitCode::from(1)
        }
    }
}
