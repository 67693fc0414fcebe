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
use crate::daemon::{self, api, jobs, merged, personalize, Daemon, Shared};
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
    /// Give the virtual phone of PORT (1-based index or path like 1-1.2) faults in the
    /// virtual phone's fault language (e.g. `1=asr:unplug@50%x1`); repeatable.
    #[arg(long, value_name = "PORT=SPEC")]
    sim_fault: Vec<crate::daemon::bench::SimFault>,
    /// The virtual bench's signing stand-in refuses every build (STATUS 94): for tests.
    #[arg(long, hide = true)]
    sim_tss_refuse: bool,
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
    /// The signing (TSS) server for real phones' tickets [default: Apple's,
    /// http://gs.apple.com/TSS/controller?action=2]. The virtual bench's phones trust only a
    /// loopback stand-in the daemon starts for them.
    #[arg(long, value_name = "URL")]
    tss_url: Option<String>,
    /// The job history: a SQLite file, or a postgres:// URL several stations share [default:
    /// $RESTATION_HISTORY, else /var/lib/restation/history.sqlite with --usb, else in memory].
    #[arg(long, value_name = "PATH|URL")]
    history: Option<PathBuf>,
    /// A CA certificate (PEM) trusted besides the public roots for an https:// TSS server
    /// (a signing proxy of the shop's own).
    #[arg(long, value_name = "PEM")]
    tss_ca: Option<PathBuf>,
    /// Also serve the web dashboard and the API over TCP here (e.g. 127.0.0.1:8080) [default:
    /// off]. Any address but loopback needs a token.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// The token the TCP listener requires: `Authorization: Bearer TOKEN`, or the page opened
    /// as /?token=TOKEN (16+ URL-safe characters). Prefer http_token in the configuration: a
    /// command line is visible to every user of the machine.
    #[arg(long, value_name = "TOKEN")]
    http_token: Option<String>,
    /// Restores run at once per USB host controller; more wait in a queue, oldest first
    /// [default: 8; 0: no limit].
    #[arg(long, value_name = "N")]
    max_restores_per_controller: Option<usize>,
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
    /// The job history (a file or a `postgres://` URL), when named.
    pub history: Option<PathBuf>,
    /// The TSS server for real phones.
    pub tss_url: String,
    /// A CA (PEM) trusted besides the public roots for an `https://` TSS server.
    pub tss_ca: Option<PathBuf>,
    /// The dashboard's TCP listener, if any.
    pub http: Option<std::net::SocketAddr>,
    /// The token it requires.
    pub http_token: Option<String>,
    /// Restores run at once per USB host controller (0: no limit).
    pub per_controller: usize,
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
            tss_url: args
                .tss_url
                .clone()
                .or_else(|| config.tss_url.clone())
                .unwrap_or_else(|| tss::client::DEFAULT_URL.to_string()),
            tss_ca: args.tss_ca.clone().or_else(|| config.tss_ca.clone()),
            history: args
                .history
                .clone()
                .or_else(|| config.history.clone())
                .or_else(|| std::env::var_os(daemon::history::ENV).map(PathBuf::from)),
            http: args.http.or(config.http),
            http_token: args
                .http_token
                .clone()
                .or_else(|| config.http_token.clone()),
            per_controller: args
                .max_restores_per_controller
                .or(config.max_restores_per_controller)
                .unwrap_or(jobs::DEFAULT_PER_CONTROLLER),
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
    let mut bench = None;
    if settings.usb {
        parts.push(daemon::real_usb()?);
    }
    if let Some(spec) = &settings.sim {
        // Beside real USB the bench takes a bus of its own.
        let bus = if settings.usb { merged::SIM_BUS } else { 1 };
        let sim = SimBench::attach(
            spec,
            bus,
            args.sim_speed,
            &args.sim_fault,
            0,
            args.sim_tss_refuse,
            runtime.handle(),
        )?;
        parts.push(Arc::clone(&sim.hub) as Arc<dyn UsbBackend>);
        bench = Some(sim);
    }
    let backend: Arc<dyn UsbBackend> = match parts.len() {
        1 => parts.remove(0),
        _ => Arc::new(merged::Merged::new(parts)),
    };
    let personalization = personalization(&settings, bench.as_ref(), runtime.handle())?;
    // Opened outside the runtime: the PostgreSQL client runs one of its own.
    let history = open_history(&settings)?;
    runtime.block_on(async {
        let station = Station::start(backend, &settings, personalization, history).await?;
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
        station.stop().await
    })?;
    if let Some(sim) = bench {
        runtime.block_on(sim.standin.shutdown());
    }
    Ok(ExitCode::SUCCESS)
}

/// A bench of virtual phones with the loopback signing stand-in their images must come from.
pub(crate) struct SimBench {
    /// The phones.
    pub hub: Arc<sim::hub::VirtualHub>,
    /// The TSS stand-in the phones trust.
    pub standin: tss::standin::Standin,
    /// The phones' ECIDs (their tickets come from the stand-in).
    pub ecids: std::collections::HashSet<u64>,
}

impl SimBench {
    /// Builds the bench on `bus` with `faults` and `spares` empty ports, its phones `speed`
    /// times faster than real time, and starts the stand-in (refusing every build when
    /// `refuse`).
    pub fn attach(
        spec: &BenchSpec,
        bus: u8,
        speed: u32,
        faults: &[crate::daemon::bench::SimFault],
        spares: usize,
        refuse: bool,
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<SimBench> {
        let clock: Arc<dyn Clock> = match speed {
            0 | 1 => Arc::new(RealClock),
            n => Arc::new(ScaledClock::new(n)),
        };
        let hub = spec
            .hub_with_spares(bus, clock, faults, spares)
            .context("building the virtual bench")?;
        // The bench's phones boot only images personalized by the loopback stand-in.
        let standin = runtime
            .block_on(tss::standin::Standin::start())
            .context("starting the TSS stand-in for the virtual bench")?;
        if refuse {
            standin.refuse_all(Some((
                94,
                "This device isn't eligible for the requested build.".into(),
            )));
        }
        let mut ecids = std::collections::HashSet::new();
        for port in 0..hub.port_count() {
            hub.with_phone(port, |phone| {
                ecids.insert(phone.profile().ecid);
                phone.set_image_check(Box::new(tss::verify::image_check(standin.public_key())));
            });
        }
        tracing::info!(phones = spec.len(), bus, tss = %standin.url(), "virtual bench attached");
        Ok(SimBench {
            hub: Arc::new(hub),
            standin,
            ecids,
        })
    }
}

/// Tickets for restores: real phones from the configured TSS server, the virtual bench's
/// from its stand-in.
pub(crate) fn personalization(
    settings: &Settings,
    bench: Option<&SimBench>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Arc<dyn jobs::Personalization>> {
    let tss_at = |url: String| -> anyhow::Result<personalize::Tss> {
        let config = tss::Config {
            url: url.clone(),
            ..tss::Config::default()
        };
        let context = || format!("the TSS server {url}");
        let tickets: Arc<dyn personalize::Tickets> = if url.starts_with("https:") {
            let tls = match &settings.tss_ca {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .with_context(|| format!("reading the TSS CA {}", path.display()))?;
                    tss::tls::TlsConnector::with_extra_ca(&pem)
                }
                None => tss::tls::TlsConnector::webpki(),
            }
            .with_context(context)?;
            let client = tss::Client::with_connector(config, tls).with_context(context)?;
            Arc::new(personalize::ClientTickets::new(client, runtime.clone()))
        } else {
            let client = tss::Client::new(config).with_context(context)?;
            Arc::new(personalize::ClientTickets::new(client, runtime.clone()))
        };
        Ok(personalize::Tss::new(tickets))
    };
    let usb = if settings.usb {
        Some(tss_at(settings.tss_url.clone())?)
    } else {
        None
    };
    let bench = match bench {
        Some(sim) => Some((tss_at(sim.standin.url())?, sim.ecids.clone())),
        None => None,
    };
    Ok(match (usb, bench) {
        (Some(usb), None) => Arc::new(usb),
        (None, Some((bench, _))) => Arc::new(bench),
        (Some(usb), Some((bench, ecids))) => Arc::new(personalize::ByEcid::new(
            ecids,
            Arc::new(bench),
            Arc::new(usb),
        )),
        (None, None) => Arc::new(jobs::NoPersonalization),
    })
}

/// The job history: the configured file or server; a bench of virtual phones alone keeps
/// its history in memory unless one is named (its phones are no shop's record).
pub(crate) fn open_history(
    settings: &Settings,
) -> anyhow::Result<Arc<dyn daemon::history::HistoryStore>> {
    use daemon::history;
    let at = match &settings.history {
        Some(at) => at.clone(),
        None if !settings.usb => {
            return Ok(Arc::new(
                history::History::in_memory().context("an in-memory job history")?,
            ))
        }
        None => PathBuf::from(history::DEFAULT_PATH),
    };
    let store = history::Location::of(&at)
        .open()
        .with_context(|| format!("opening the job history {}", at.display()))?;
    tracing::info!(history = %at.display(), "job history");
    Ok(Arc::from(store))
}

/// The daemon's parts, running: the registry driver, the API socket, the dashboard's TCP
/// listener and the usbmuxd socket when configured, the metrics observer.
pub(crate) struct Station {
    /// What they share.
    pub shared: Arc<Shared>,
    /// Where the dashboard listens, when it does.
    pub http: Option<std::net::SocketAddr>,
    socket: PathBuf,
    usbmuxd: Option<PathBuf>,
    stop: watch::Sender<bool>,
    driver: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

impl Station {
    /// Binds the sockets `settings` name and starts every part on the current runtime.
    pub async fn start(
        backend: Arc<dyn UsbBackend>,
        settings: &Settings,
        personalization: Arc<dyn jobs::Personalization>,
        history: Arc<dyn daemon::history::HistoryStore>,
    ) -> anyhow::Result<Station> {
        let socket = settings.socket.clone();
        let shared = Shared::new();
        shared.set_history(history);
        shared.jobs().set_per_controller(settings.per_controller);
        // The TCP listener's access rule is checked before anything else is bound.
        let http = match settings.http {
            Some(addr) => Some(daemon::tcp::bind(addr, settings.http_token.as_deref()).await?),
            None => None,
        };
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

        let (stop, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        shared.enable_jobs(jobs::JobContext {
            backend: Arc::clone(&backend),
            store: settings.store.clone(),
            personalization,
            deadlines: restore::phase::Deadlines::default(),
            runtime: tokio::runtime::Handle::current(),
            pair_records: Some(settings.pair_records.clone()),
        });
        let daemon = Daemon::new(backend, Arc::clone(&shared));
        let driver = tokio::spawn(daemon.run(stopped()));
        // Jobs the last daemon left unfinished (killed, crashed, power lost) resume once their
        // phones are back; before the API serves, so that no new job takes those phones.
        let resumed = jobs::resume_interrupted(&shared);
        if resumed > 0 {
            tracing::info!(jobs = resumed, "resuming interrupted jobs");
        }
        let mut tasks = vec![(
            "the API server",
            tokio::spawn(api::serve(listener, Arc::clone(&shared), stopped())),
        )];
        let mut http_addr = None;
        if let Some((listener, access)) = http {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(url = %format!("http://{addr}/"), ?access, "serving the dashboard");
                http_addr = Some(addr);
            }
            let shared = Arc::clone(&shared);
            tasks.push((
                "the HTTP listener",
                tokio::spawn(daemon::tcp::serve(listener, access, shared, stopped())),
            ));
        }
        tasks.push((
            "the metrics observer",
            tokio::spawn(daemon::metrics::observe_jobs(
                Arc::clone(&shared),
                stopped(),
            )),
        ));
        let usbmuxd = usbmuxd.map(|(path, listener, muxd)| {
            tasks.push((
                "the usbmuxd socket",
                tokio::spawn(daemon::muxd::serve(listener, muxd, stopped())),
            ));
            path
        });
        Ok(Station {
            shared,
            http: http_addr,
            socket,
            usbmuxd,
            stop,
            driver,
            tasks,
        })
    }

    /// The API socket.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Stops every part, waits for them and removes the sockets.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let driven = self.driver.await.context("the registry driver panicked")?;
        for (name, task) in self.tasks {
            task.await.with_context(|| format!("{name} panicked"))?;
        }
        for path in self.usbmuxd.iter().chain(std::iter::once(&self.socket)) {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(socket = %path.display(), error = %e, "could not remove the socket");
            }
        }
        driven?;
        Ok(())
    }
}

/// Waits for SIGINT or SIGTERM and names it.
pub(crate) async fn wait_for_signal() -> &'static str {
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

pub(crate) fn init_logging() {
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
