//! `restation serve [--usb] [--sim N | --sim-profile P:M ...] [--socket PATH]`: the daemon.
//! Watches the USB backend, keeps the device registry (keyed by ECID), and serves the local
//! API on a unix socket until SIGINT or SIGTERM.
//!
//! Backends: `--usb` watches real USB through libusb (in builds with `--features libusb`);
//! `--sim N` attaches a virtual bench of N phones (mixed models and modes) on a real clock,
//! `--sim-profile PRODUCT:MODE` (repeatable) names each phone. Both at once put the virtual
//! bench on bus 200 beside the real buses. Settings also come from the configuration file
//! ([`super::config`]); the command line wins.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use sim::clock::{Clock, RealClock, ScaledClock};
use tokio::sync::watch;
use usb::UsbBackend;

use super::config::Config;
use crate::daemon::bench::{BenchSpec, PhoneSpec};
use crate::daemon::{self, api, jobs, merged, Daemon, Shared};
use crate::sdnotify;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Attach N virtual phones (mixed models; recovery, DFU and normal mode in turn).
    #[arg(long, value_name = "N", conflicts_with = "sim_profile")]
    sim: Option<usize>,
    /// Attach a virtual phone `PRODUCT:MODE` (e.g. iPhone14,3:normal; modes normal, recovery,
    /// dfu, port-dfu, restore); repeat for more.
    #[arg(long, value_name = "PRODUCT:MODE")]
    sim_profile: Vec<PhoneSpec>,
    /// Run the virtual phones N times faster than real time (their reboots and restore
    /// steps; 1 is real time).
    #[arg(long, value_name = "N", default_value_t = 1)]
    sim_speed: u32,
    /// Watch real USB (libusb; builds with `--features libusb`); with --sim, both.
    #[arg(long)]
    usb: bool,
    /// The configuration file [default: /etc/restation/restation.toml when present].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The API socket [default: $XDG_RUNTIME_DIR/restation.sock, else
    /// /run/restation/restation.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also serve a usbmuxd-compatible socket here (libimobiledevice's tools work through it
    /// with `USBMUXD_SOCKET_ADDRESS=UNIX:PATH`).
    #[arg(long, value_name = "PATH")]
    usbmuxd_socket: Option<PathBuf>,
    /// Pair records and SystemConfiguration.plist for the usbmuxd socket [default:
    /// /var/lib/lockdown].
    #[arg(long, value_name = "DIR")]
    pair_records: Option<PathBuf>,
    /// The IPSW store restores read from [default: $RESTATION_STORE, else the user's cache].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
}

/// The settings in force: command line over configuration file over defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The API socket.
    pub socket: PathBuf,
    /// The usbmuxd-compatible socket, if served.
    pub usbmuxd_socket: Option<PathBuf>,
    /// Pair records.
    pub pair_records: PathBuf,
    /// Watch real USB.
    pub usb: bool,
    /// The virtual bench, if any.
    pub sim: Option<BenchSpec>,
    /// The IPSW store.
    pub store: PathBuf,
}

impl Settings {
    /// Merges `args` over `config`.
    pub fn new(args: &ServeArgs, config: &Config) -> anyhow::Result<Settings> {
        let sim = if !args.sim_profile.is_empty() {
            Some(BenchSpec::Named(args.sim_profile.clone()))
        } else if let Some(n) = args.sim {
            Some(BenchSpec::Mixed(n))
        } else if !config.sim_profile.is_empty() {
            let specs = config
                .sim_profile
                .iter()
                .map(|s| s.parse::<PhoneSpec>())
                .collect::<Result<Vec<_>, _>>()
                .context("sim_profile in the configuration")?;
            Some(BenchSpec::Named(specs))
        } else {
            config.sim.filter(|n| *n > 0).map(BenchSpec::Mixed)
        };
        let usb = args.usb || config.usb.unwrap_or(false);
        if !usb && sim.is_none() {
            anyhow::bail!(
                "nothing to watch: give --usb (real USB), --sim N or --sim-profile PRODUCT:MODE \
                 (or set usb/sim in {})",
                super::config::DEFAULT_PATH
            );
        }
        Ok(Settings {
            socket: args
                .socket
                .clone()
                .or_else(|| config.socket.clone())
                .unwrap_or_else(api::default_socket_path),
            usbmuxd_socket: args
                .usbmuxd_socket
                .clone()
                .or_else(|| config.usbmuxd_socket.clone()),
            pair_records: args
                .pair_records
                .clone()
                .or_else(|| config.pair_records.clone())
                .unwrap_or_else(|| PathBuf::from(daemon::muxd::DEFAULT_PAIR_RECORDS)),
            usb,
            sim,
            store: args
                .store
                .clone()
                .or_else(|| config.store.clone())
                .unwrap_or_else(ipsw::store::Store::default_root),
        })
    }
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = Config::load(args.config.as_deref())?;
    let settings = Settings::new(args, &config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("restation")
        .build()
        .context("starting the tokio runtime")?;
    let mut parts: Vec<Arc<dyn UsbBackend>> = Vec::new();
    if settings.usb {
        parts.push(daemon::real_usb()?);
    }
    if let Some(bench) = &settings.sim {
        let clock: Arc<dyn Clock> = match args.sim_speed {
            0 | 1 => Arc::new(RealClock),
            n => Arc::new(ScaledClock::new(n)),
        };
        // Beside real USB the bench takes a bus of its own.
        let bus = if settings.usb { merged::SIM_BUS } else { 1 };
        let hub = bench
            .hub(bus, clock)
            .context("building the virtual bench")?;
        tracing::info!(phones = bench.len(), bus, "virtual bench attached");
        parts.push(Arc::new(hub));
    }
    let backend: Arc<dyn UsbBackend> = match parts.len() {
        1 => parts.remove(0),
        _ => Arc::new(merged::Merged::new(parts)),
    };
    runtime.block_on(serve(backend, &settings))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(backend: Arc<dyn UsbBackend>, settings: &Settings) -> anyhow::Result<()> {
    let socket = settings.socket.clone();
    let shared = Shared::new();
    let listener = api::bind(&socket)?;
    let usbmuxd = match &settings.usbmuxd_socket {
        Some(path) => {
            let listener = daemon::muxd::bind(path)?;
            tracing::info!(socket = %path.display(), pair_records = %settings.pair_records.display(), "serving usbmuxd");
            let muxd = daemon::muxd::Muxd::new(
                Arc::clone(&shared),
                Arc::clone(&backend),
                settings.pair_records.clone(),
            );
            Some((path.clone(), listener, muxd))
        }
        None => None,
    };
    tracing::info!(socket = %socket.display(), "serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    // Restores: phones on real USB boot only personalized images, which need a TSS server;
    // the virtual bench's phones check nothing and take the images as shipped.
    let personalization: Arc<dyn jobs::Personalization> = if settings.usb {
        Arc::new(jobs::NoPersonalization)
    } else {
        Arc::new(jobs::AsShipped)
    };
    shared.enable_jobs(jobs::JobContext {
        backend: Arc::clone(&backend),
        store: settings.store.clone(),
        personalization,
        deadlines: restore::phase::Deadlines::default(),
        runtime: tokio::runtime::Handle::current(),
    });
    let daemon = Daemon::new(backend, Arc::clone(&shared));
    let driver = tokio::spawn(daemon.run(stopped()));
    let server = tokio::spawn(api::serve(listener, Arc::clone(&shared), stopped()));
    let usbmuxd = usbmuxd.map(|(path, listener, muxd)| {
        (
            path,
            tokio::spawn(daemon::muxd::serve(listener, muxd, stopped())),
        )
    });
    // Under systemd (Type=notify) the unit becomes active now that the API answers.
    match sdnotify::notify("READY=1") {
        Ok(sent) => tracing::debug!(sent, "readiness notification"),
        Err(e) => tracing::warn!(error = %e, "could not notify systemd of readiness"),
    }

    let signal = wait_for_signal().await;
    tracing::info!(signal, "shutting down");
    if let Err(e) = sdnotify::notify("STOPPING=1") {
        tracing::warn!(error = %e, "could not notify systemd of the shutdown");
    }
    let _ = stop_tx.send(true);
    let driven = driver.await.context("the registry driver panicked")?;
    server.await.context("the API server panicked")?;
    if let Some((path, task)) = usbmuxd {
        task.await.context("the usbmuxd socket panicked")?;
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(socket = %path.display(), error = %e, "could not remove the socket");
        }
    }
    if let Err(e) = std::fs::remove_file(&socket) {
        tracing::warn!(socket = %socket.display(), error = %e, "could not remove the socket");
    }
    driven?;
    Ok(())
}

/// Waits for SIGINT or SIGTERM and names it.
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESTATION_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn settings(args: &[&str], config: &str) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))?;
        Settings::new(&cli.serve, &Config::parse(config)?)
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_something_must_be_watched() {
        let s = settings(&["--sim", "3"], "socket = \"/x.sock\"\nusb = true").unwrap();
        assert_eq!(s.socket, PathBuf::from("/x.sock"));
        assert!(
            s.usb,
            "usb from the file, the bench from the command line: both"
        );
        assert_eq!(s.sim, Some(BenchSpec::Mixed(3)));
        let s = settings(&["--socket", "/y.sock", "--usb"], "socket = \"/x.sock\"").unwrap();
        assert_eq!(s.socket, PathBuf::from("/y.sock"));
        assert_eq!(s.sim, None);
        let s = settings(&[], "sim_profile = [\"iPhone14,3:normal\"]").unwrap();
        assert_eq!(
            s.sim,
            Some(BenchSpec::Named(vec!["iPhone14,3:normal".parse().unwrap()]))
        );
        assert_eq!(s.pair_records, PathBuf::from("/var/lib/lockdown"));
        assert!(settings(&[], "").is_err(), "nothing to watch");
        assert!(settings(&[], "sim_profile = [\"iPhone14,3\"]").is_err());
        assert!(settings(&["--sim", "2", "--sim-profile", "iPhone14,3:dfu"], "").is_err());
        let s = settings(
            &[
                "--sim-profile",
                "iPhone14,3:dfu",
                "--sim-profile",
                "iPhone7,2:normal",
            ],
            "",
        )
        .unwrap();
        assert_eq!(s.sim.map(|b| b.len()), Some(2));
    }
}
