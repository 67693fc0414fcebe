//! `restation devices [--json] [--socket PATH]`: the phones the daemon sees, from its API.
//! `restation devices --direct [--sim N]`: scan once without a daemon (enumerate, identify).
//!
//! Text output is a table: port, mode, model, ECID, speed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use clap::Args;
use sim::clock::{Clock, ManualClock};
use usb::UsbBackend;

use crate::daemon::registry::{Arrival, Entry, Registry};
use crate::daemon::{self, api, bench, identify};

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The daemon's API socket [default: $XDG_RUNTIME_DIR/restation.sock, else
    /// /run/restation/restation.sock].
    #[arg(long, value_name = "PATH", conflicts_with = "direct")]
    socket: Option<PathBuf>,
    /// Scan without a daemon: enumerate and identify once.
    #[arg(long)]
    direct: bool,
    /// With --direct: scan a virtual bench of N phones instead of USB.
    #[arg(long, value_name = "N", requires = "direct")]
    sim: Option<usize>,
    /// With --direct: scan real USB (libusb; the default when --sim is not given).
    #[arg(long, requires = "direct", conflicts_with = "sim")]
    usb: bool,
}

pub fn run(args: &DevicesArgs) -> anyhow::Result<ExitCode> {
    let entries = if args.direct {
        match args.sim {
            Some(phones) => {
                let clock: Arc<dyn Clock> = ManualClock::new();
                let hub =
                    bench::hub(phones, phones, clock).context("building the virtual bench")?;
                scan(&hub)?
            }
            None => scan(daemon::real_usb()?.as_ref())?,
        }
    } else {
        // The daemon's socket: --socket, else the configuration file's, else the default.
        let socket = match &args.socket {
            Some(path) => path.clone(),
            None => super::config::Config::load(None)?
                .socket
                .unwrap_or_else(api::default_socket_path),
        };
        let body = super::http::get(&socket, "/devices")?;
        serde_json::from_slice::<Vec<Entry>>(&body)
            .context("the daemon's /devices answer is not a device list")?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", table(&entries));
    }
    Ok(ExitCode::SUCCESS)
}

/// Enumerates `backend` once and identifies every phone on it.
fn scan(backend: &dyn UsbBackend) -> anyhow::Result<Vec<Entry>> {
    let mut registry = Registry::new();
    for info in backend.devices().context("enumerating USB devices")? {
        let id = info.id;
        if let Arrival::Identify { ticket, mode } = registry.arrived(info) {
            let result = identify::identify(backend, id, mode).map(|found| found.identity);
            if let Err(e) = &result {
                eprintln!("restation: device {id}: {e}");
            }
            registry.identified(ticket, result, SystemTime::now());
        }
    }
    Ok(registry.entries().cloned().collect())
}

/// The aligned text table, in port order (the way the bench is laid out).
fn table(entries: &[Entry]) -> String {
    let mut entries: Vec<&Entry> = entries.iter().collect();
    entries.sort_by(|a, b| a.port.cmp(&b.port).then_with(|| a.key.cmp(&b.key)));
    let mut rows = vec![[
        "PORT".to_string(),
        "MODE".to_string(),
        "MODEL".to_string(),
        "ECID".to_string(),
        "SPEED".to_string(),
    ]];
    for e in entries {
        let port = match (&e.port, e.present) {
            (Some(p), true) => p.to_string(),
            (Some(p), false) => format!("({p})"),
            (None, _) => "-".to_string(),
        };
        let mode = if e.present {
            e.mode.to_string()
        } else {
            format!("gone ({})", e.mode)
        };
        let model = match (&e.identity.name, &e.identity.product_type) {
            (Some(n), Some(p)) => format!("{n} ({p})"),
            (Some(n), None) => n.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => "?".to_string(),
        };
        let ecid = match e.identity.ecid {
            Some(ecid) => irecv::serial::format_ecid(ecid),
            None => "pending".to_string(),
        };
        rows.push([port, mode, model, ecid, e.speed.to_string()]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_scan_of_a_virtual_bench_names_every_phone_in_an_aligned_table() {
        let clock: Arc<dyn Clock> = ManualClock::new();
        let hub = bench::hub(3, 3, clock).unwrap();
        let entries = scan(&hub).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(entries.iter().all(|e| e.identity.ecid.is_some()));
        let text = table(&entries);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let ecid_col = lines[0].find("ECID").unwrap();
        assert!(lines[1..]
            .iter()
            .all(|l| l.get(ecid_col..ecid_col + 2) == Some("0x")));
    }
}
