//! `restation serve`'s insides: the device registry ([`registry`], sans-IO), identification of
//! one opened phone ([`identify`], blocking), the thin tokio driver that joins them to a
//! [`usb::UsbBackend`] ([`Daemon`]), the local HTTP API on a unix socket ([`api`]), the
//! usbmuxd-compatible socket ([`muxd`], bridging `Connect` over the phone's mux [`session`]),
//! and the virtual bench that `--sim N` plugs in ([`bench`]).
//!
//! The hotplug sink only enqueues into a channel; devices are opened and identified on
//! `spawn_blocking` threads, and their results come back to the driver through another
//! channel, so the registry is only ever touched by the driver task and the API readers.

pub mod api;
pub mod bench;
pub mod dashboard;
pub mod entry;
pub mod failure;
pub mod history;
pub mod identify;
pub mod identify_button;
pub mod job;
pub mod jobs;
pub mod merged;
pub mod metrics;
pub mod muxd;
pub mod overlap;
pub mod personalize;
pub mod port_health;
pub mod registry;
pub mod restoring;
pub mod session;
pub mod tcp;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::{broadcast, mpsc, watch};
use usb::{DeviceId, HotplugEvent, UsbBackend, UsbError};

use identify::{IdentifyError, Identity};
use registry::{Arrival, Event, Registry, Ticket};
use session::MuxSession;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The backend refused to deliver hotplug events.
    #[error("cannot watch USB hotplug events: {0}")]
    Watch(#[source] UsbError),
    /// libusb could not be initialised.
    #[cfg(feature = "libusb")]
    #[error("cannot open real USB (libusb): {0}")]
    Usb(#[source] UsbError),
    /// This build has no libusb backend.
    #[cfg(not(feature = "libusb"))]
    #[error(
        "this build has no real USB backend: rebuild with `--features libusb`, or use --sim N"
    )]
    NoLibusb,
}

/// The real USB backend (libusb: Apple devices only, hotplug or polling).
pub fn real_usb() -> Result<Arc<dyn UsbBackend>, DaemonError> {
    #[cfg(feature = "libusb")]
    {
        let backend = usb::libusb::RusbBackend::new().map_err(DaemonError::Usb)?;
        Ok(Arc::new(backend))
    }
    #[cfg(not(feature = "libusb"))]
    {
        Err(DaemonError::NoLibusb)
    }
}

/// What the driver and the API share: the registry, the event stream, and a version counter
/// that moves with every change (tests and clients wait on it, with a deadline).
#[derive(Debug)]
pub struct Shared {
    registry: Mutex<Registry>,
    events: broadcast::Sender<Event>,
    version: watch::Sender<u64>,
    /// API requests answered with a 4xx, and connections that were not HTTP.
    api_refused: AtomicU64,
    /// usbmuxd-socket clients that sent something that was not the protocol.
    usbmuxd_malformed: AtomicU64,
    /// The running mux session of each usbmux-mode phone on the bus.
    sessions: Mutex<HashMap<DeviceId, MuxSession>>,
    /// Restore jobs.
    jobs: jobs::Jobs,
    /// How to start jobs (set by the daemon that can run them).
    job_context: std::sync::OnceLock<jobs::JobContext>,
    /// Where finished and running jobs are kept across restarts.
    history: HistorySlot,
    /// What `/metrics` shows beyond the registry and the jobs.
    metrics: metrics::Metrics,
    /// What the attempts said about each port ([`port_health`]).
    ports: port_health::Ports,
}

/// Where jobs are kept, once the daemon opened it.
#[derive(Default)]
struct HistorySlot(std::sync::OnceLock<Arc<dyn history::HistoryStore>>);

impl std::fmt::Debug for HistorySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "HistorySlot(kept)"
        } else {
            "HistorySlot(none)"
        })
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            registry: Mutex::new(Registry::new()),
            events: broadcast::channel(1024).0,
            version: watch::channel(0).0,
            api_refused: AtomicU64::new(0),
            usbmuxd_malformed: AtomicU64::new(0),
            sessions: Mutex::new(HashMap::new()),
            jobs: jobs::Jobs::default(),
            job_context: std::sync::OnceLock::new(),
            history: HistorySlot::default(),
            metrics: metrics::Metrics::default(),
            ports: port_health::Ports::default(),
        }
    }
}

impl Shared {
    /// A new, empty state.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The registry (briefly: never hold it across an await).
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The mux sessions of the phones on the bus, by USB device (briefly, as the registry).
    pub fn sessions(&self) -> MutexGuard<'_, HashMap<DeviceId, MuxSession>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The restore jobs.
    pub fn jobs(&self) -> &jobs::Jobs {
        &self.jobs
    }

    /// The counters and histograms of `/metrics` (phase durations, bytes sent).
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Lets this daemon run restore jobs (once; later calls are ignored).
    pub fn enable_jobs(&self, ctx: jobs::JobContext) {
        let _ = self.job_context.set(ctx);
    }

    /// Keeps every job in `store` (once; later calls are ignored), and reads the ports'
    /// health back from it.
    pub fn set_history(&self, store: Arc<dyn history::HistoryStore>) {
        if self.history.0.set(Arc::clone(&store)).is_ok() {
            self.ports.load(store);
        }
    }

    /// The ports' health ([`port_health`]).
    pub fn ports(&self) -> &port_health::Ports {
        &self.ports
    }

    /// The job history, when one is kept.
    pub fn history(&self) -> Option<&Arc<dyn history::HistoryStore>> {
        self.history.0.get()
    }

    /// How jobs are started, when they can be.
    pub fn job_context(&self) -> Option<&jobs::JobContext> {
        self.job_context.get()
    }

    /// Waits until `found` gives something for the registry (checked after every change).
    pub async fn wait_for_entry<T>(&self, mut found: impl FnMut(&Registry) -> Option<T>) -> T {
        let mut rx = self.version.subscribe();
        loop {
            if let Some(t) = found(&self.registry()) {
                return t;
            }
            if rx.changed().await.is_err() {
                // The daemon is going away: nothing will change any more.
                return std::future::pending().await;
            }
        }
    }

    /// Live events (arrived, mode-changed, left).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Waits until `done` holds for the registry (checked after every change).
    #[cfg(test)]
    pub async fn wait_for(&self, mut done: impl FnMut(&Registry) -> bool) {
        let mut rx = self.version.subscribe();
        loop {
            if done(&self.registry()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn publish(&self, mut registry: MutexGuard<'_, Registry>) {
        while let Some(event) = registry.poll_event() {
            tracing::info!(id = %event.id, change = ?event.item.change, "device");
            // No listener is fine.
            let _ = self.events.send(event);
        }
        drop(registry);
        // Entries or counters moved: a change for waiters either way.
        self.version.send_modify(|v| *v += 1);
    }
}

struct Identified {
    ticket: Ticket,
    device: DeviceId,
    result: Result<Identity, IdentifyError>,
    session: Option<MuxSession>,
}

/// The registry driver: hotplug events in, identification on blocking threads, results back.
pub struct Daemon {
    backend: Arc<dyn UsbBackend>,
    shared: Arc<Shared>,
}

impl Daemon {
    /// A driver for `backend` that records into `shared`.
    pub fn new(backend: Arc<dyn UsbBackend>, shared: Arc<Shared>) -> Self {
        Self { backend, shared }
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let (hotplug_tx, mut hotplug_rx) = mpsc::unbounded_channel::<HotplugEvent>();
        // The sink runs inside the backend's callback: it only enqueues.
        let _watch = self
            .backend
            .watch(Box::new(move |event| {
                let _ = hotplug_tx.send(event);
            }))
            .map_err(DaemonError::Watch)?;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Identified>();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                Some(event) = hotplug_rx.recv() => self.on_hotplug(event, &done_tx),
                Some(done) = done_rx.recv() => self.on_identified(done),
            }
        }
    }

    fn on_hotplug(&self, event: HotplugEvent, done_tx: &mpsc::UnboundedSender<Identified>) {
        match event {
            HotplugEvent::Arrived { device } => {
                let id = device.id;
                let port = device.port_path.clone();
                let arrival = self.shared.registry().arrived(device);
                match arrival {
                    Arrival::Ignore => {
                        tracing::debug!(device = %id, "not a phone (or already known): ignored");
                        self.shared.publish(self.shared.registry());
                    }
                    Arrival::Identify { ticket, mode } => {
                        let backend = Arc::clone(&self.backend);
                        let done_tx = done_tx.clone();
                        let port = port.map(|p| p.to_string()).unwrap_or_default();
                        tokio::task::spawn_blocking(move || {
                            let span = tracing::info_span!("identify", device = %id, port, %mode);
                            let _enter = span.enter();
                            let found = identify::identify(&*backend, id, mode);
                            let (result, session) = match found {
                                Ok(found) => {
                                    // The mux link identification ran stays up for the
                                    // usbmuxd socket's connections.
                                    let session = found.pump.and_then(|pump| {
                                        pump.into_session(format!("mux-{id}"))
                                            .map_err(
                                                |e| tracing::warn!(error = %e, "no mux session"),
                                            )
                                            .ok()
                                    });
                                    (Ok(found.identity), session)
                                }
                                Err(e) => (Err(e), None),
                            };
                            let _ = done_tx.send(Identified {
                                ticket,
                                device: id,
                                result,
                                session,
                            });
                        });
                    }
                }
            }
            HotplugEvent::Left { id, .. } => {
                self.shared.sessions().remove(&id);
                let mut registry = self.shared.registry();
                registry.left(id, SystemTime::now());
                self.shared.publish(registry);
            }
        }
    }

    fn on_identified(&self, done: Identified) {
        match &done.result {
            Err(e) if e.vanished() => {
                tracing::warn!(error = %e, "phone left while being identified")
            }
            Err(e) => tracing::warn!(error = %e, "identification failed"),
            Ok(identity) => {
                if let Some(why) = &identity.ecid_pending {
                    tracing::warn!(
                        device = %done.device,
                        udid = identity.udid.as_deref().unwrap_or("?"),
                        why = %why,
                        "no ECID from the phone"
                    );
                }
            }
        }
        let mut registry = self.shared.registry();
        let known = registry
            .identified(done.ticket, done.result, SystemTime::now())
            .is_some();
        if let (true, Some(session)) = (known, done.session) {
            self.shared.sessions().insert(done.device, session);
        }
        self.shared.publish(registry);
    }
}
