//! `restation version`: what this build is and which wire protocol versions it speaks.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct VersionInfo {
    restation: &'static str,
    /// usbmux protocol version the host offers in its VERSION packet.
    usbmux_protocol: &'static str,
}

pub fn run(args: &VersionArgs) -> anyhow::Result<ExitCode> {
    let info = VersionInfo {
        restation: env!("CARGO_PKG_VERSION"),
        usbmux_protocol: "2.0",
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("restation {}", info.restation);
        println!("usbmux protocol {}", info.usbmux_protocol);
    }
    Ok(ExitCode::SUCCESS)
}
