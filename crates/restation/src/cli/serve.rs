//! `restation serve [--sim N] [--socket PATH]`: the daemon. Watches the USB backend, keeps the
//! device registry (keyed by ECID), and serves the local API on a unix socket until SIGINT or
//! SIGTERM.
//!
//! Backend: `--sim N` attaches a virtual bench of N phones (mixed models and modes) on a real
//! clock; `--usb` watches real USB through libusb (in builds with `--features libusb`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use sim::clock::{Clock, RealClock};
use tokio::sync::watch;
use usb::UsbBackend;

use crate::daemon::{self, api, bench, Daemon, Shared};
use crate::sdnotify;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Attach N virtual phones (mixed models; recovery, DFU and normal mode in turn).
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "usb",
        conflicts_with = "usb"
    )]
    sim: Option<usize>,
    /// Watch real USB (libusb; builds with `--features libusb`).
    #[arg(long)]
    usb: bool,
    /// The API socket [default: $XDG_RUNTIME_DIR/restation.sock, else
    /// /run/restation/restation.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also serve a usbmuxd-compatible socket here (libimobiledevice's tools work through it
    /// with `USBMUXD_SOCKET_ADDRESS=UNIX:PATH`).
    #[arg(long, value_name = "PATH")]
    usbmuxd_socket: Option<PathBuf>,
    /// Pair records and SystemConfiguration.plist for the usbmuxd socket.
    #[arg(long, value_name = "DIR", default_value = daemon::muxd::DEFAULT_PAIR_RECORDS)]
    pair_records: PathBuf,
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let socket = args.socket.clone().unwrap_or_else(api::default_socket_path);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("restation")
        .build()
        .context("starting the tokio runtime")?;
    let backend: Arc<dyn UsbBackend> = match args.sim {
        Some(phones) => {
            let clock: Arc<dyn Clock> = Arc::new(RealClock);
            let hub = bench::hub(phones, phones, clock).context("building the virtual bench")?;
            tracing::info!(phones, "virtual bench attached");
            Arc::new(hub)
        }
        None => daemon::real_usb()?,
    };
    runtime.block_on(serve(backend, socket, args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    backend: Arc<dyn UsbBackend>,
    socket: PathBuf,
    args: &ServeArgs,
) -> anyhow::Result<()> {
    let shared = Shared::new();
    let listener = api::bind(&socket)?;
    let usbmuxd = match &args.usbmuxd_socket {
        Some(path) => {
            let listener = daemon::muxd::bind(path)?;
            tracing::info!(socket = %path.display(), pair_records = %args.pair_records.display(), "serving usbmuxd");
            let muxd = daemon::muxd::Muxd::new(
                Arc::clone(&shared),
                Arc::clone(&backend),
                args.pair_records.clone(),
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
