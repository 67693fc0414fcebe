//! The threaded driver: a TCP listener whose connections run [`Connection`]s against the
//! ports of a [`VirtualHub`].
//!
//! Threads: one accepts; each connection has a reader (socket → channel) and a worker that
//! owns the [`Connection`] and blocks on its channel; one *bus* thread runs the phones' timers
//! (it waits on a condition variable until the earliest timer of any phone, or until a worker
//! says something moved), reports what the phones did as [`ServerEvent`]s (arrivals in a mode,
//! departures, completed uploads) and tells the workers of a port when its phone changed, so
//! pending reads complete and a departed enumeration closes its connection. Nothing sleeps to
//! wait; the only sleeping is the link time the phones' answers take, charged to the hub's
//! clock as [`crate::hub`] does for in-process transfers.
//!
//! Meant for [`crate::clock::RealClock`]. With a virtual clock nothing runs the timers by
//! itself: advance the clock, then call [`UsbipServer::kick`].

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::check::ImageKind;
use crate::hub::VirtualHub;
use crate::phone::Phone;

use super::connection::{busid, Connection, ConnectionEvent, HubPorts};

/// What the server saw, one JSON object each for the VM bench's log (`"event"` names the
/// variant in snake case).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Accepting connections.
    Listening {
        /// The bound address.
        addr: String,
    },
    /// A client imported a phone.
    Attached {
        /// Bus ID.
        busid: String,
        /// The client.
        peer: String,
        /// The phone's mode (`normal`, `recovery`, `dfu`, ...).
        mode: String,
        /// `idProduct`.
        pid: u16,
    },
    /// An import ended.
    Detached {
        /// Bus ID.
        busid: String,
        /// The client.
        peer: String,
        /// Why (`re-enumerated`, `peer closed`, ...).
        reason: String,
    },
    /// A phone enumerated in a mode.
    Mode {
        /// Bus ID.
        busid: String,
        /// The mode.
        mode: String,
        /// `idProduct`.
        pid: u16,
    },
    /// A phone left the bus.
    Left {
        /// Bus ID.
        busid: String,
    },
    /// A phone received a whole file: a recovery-mode upload (as it arrived) or a DFU download
    /// (at manifestation, suffix excluded).
    Upload {
        /// Bus ID.
        busid: String,
        /// `recovery` or `dfu`.
        mode: String,
        /// Bytes.
        bytes: u64,
        /// SHA-256, lowercase hex.
        sha256: String,
    },
    /// A client sent bytes that are not USB/IP; its connection was closed.
    ProtocolError {
        /// The client.
        peer: String,
        /// The typed error, as text.
        error: String,
    },
}

enum Message {
    Input(Vec<u8>),
    Eof,
    Bus,
}

struct Worker {
    id: u64,
    port: Option<usize>,
    tx: SyncSender<Message>,
    stream: TcpStream,
}

struct Shared {
    ports: HubPorts,
    events: Option<mpsc::Sender<ServerEvent>>,
    stop: AtomicBool,
    dirty: Mutex<bool>,
    wake: Condvar,
    workers: Mutex<Vec<Worker>>,
    next_worker: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn emit(&self, event: ServerEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    /// Something moved: the bus thread looks again.
    fn poke(&self) {
        *lock(&self.dirty) = true;
        self.wake.notify_all();
    }

    fn hub(&self) -> &VirtualHub {
        self.ports.hub()
    }
}

/// A USB/IP server exporting every port of a [`VirtualHub`] as bus IDs `1-1`, `1-2`, ...
pub struct UsbipServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for UsbipServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsbipServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl UsbipServer {
    /// Listens on `addr` and serves the ports of `hub`; [`ServerEvent`]s go to `events`.
    pub fn start(
        addr: impl ToSocketAddrs,
        hub: VirtualHub,
        events: Option<mpsc::Sender<ServerEvent>>,
    ) -> std::io::Result<UsbipServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            ports: HubPorts::new(hub),
            events,
            stop: AtomicBool::new(false),
            dirty: Mutex::new(false),
            wake: Condvar::new(),
            workers: Mutex::new(Vec::new()),
            next_worker: AtomicU64::new(0),
        });
        shared.emit(ServerEvent::Listening {
            addr: addr.to_string(),
        });
        let bus = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("usbip-bus".into())
                .spawn(move || bus_loop(&shared))?
        };
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("usbip-accept".into())
                .spawn(move || accept_loop(&shared, listener))?
        };
        Ok(UsbipServer {
            addr,
            shared,
            threads: vec![bus, accept],
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hub served.
    pub fn hub(&self) -> &VirtualHub {
        self.shared.hub()
    }

    /// Makes the bus thread look at the phones now (after advancing a virtual clock, or after
    /// changing a phone from outside).
    pub fn kick(&self) {
        self.shared.poke();
    }

    /// Stops accepting, closes every connection, and waits for the server's own threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.poke();
        // Unblocks `accept`.
        let _ = TcpStream::connect(self.addr);
        for w in lock(&self.shared.workers).iter() {
            let _ = w.stream.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for UsbipServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(shared);
        let _ = std::thread::Builder::new()
            .name("usbip-conn".into())
            .spawn(move || serve(&shared, stream));
    }
}

fn read_loop(mut stream: TcpStream, tx: SyncSender<Message>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Message::Eof);
                return;
            }
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default().to_vec();
                if tx.send(Message::Input(chunk)).is_err() {
                    return;
                }
            }
        }
    }
}

fn serve(shared: &Arc<Shared>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let (Ok(reader), Ok(handle)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    let (tx, rx) = mpsc::sync_channel(64);
    let id = shared.next_worker.fetch_add(1, Ordering::SeqCst);
    lock(&shared.workers).push(Worker {
        id,
        port: None,
        tx: tx.clone(),
        stream: handle,
    });
    if shared.stop.load(Ordering::SeqCst) {
        let _ = stream.shutdown(Shutdown::Both);
    }
    let spawned = std::thread::Builder::new()
        .name("usbip-read".into())
        .spawn(move || read_loop(reader, tx));
    let (attached, reason) = match spawned {
        Ok(_) => work(shared, stream, &rx, id, &peer),
        Err(_) => (None, "no reader thread"),
    };
    lock(&shared.workers).retain(|w| w.id != id);
    if let Some(busid) = attached {
        shared.emit(ServerEvent::Detached {
            busid,
            peer,
            reason: reason.to_string(),
        });
    }
    shared.poke();
}

/// Runs one connection until it ends; returns the bus ID it had imported and why it ended.
fn work(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    rx: &Receiver<Message>,
    id: u64,
    peer: &str,
) -> (Option<String>, &'static str) {
    let clock = Arc::clone(shared.hub().clock());
    let mut conn = Connection::new();
    let mut attached = None;
    let reason = loop {
        let Ok(message) = rx.recv() else {
            break "reader gone";
        };
        let now = clock.now();
        match message {
            Message::Input(bytes) => {
                if let Err(e) = conn.handle_input(&bytes, &shared.ports, now) {
                    shared.emit(ServerEvent::ProtocolError {
                        peer: peer.to_string(),
                        error: e.to_string(),
                    });
                }
            }
            Message::Bus => conn.handle_bus(&shared.ports, now),
            Message::Eof => break "peer closed",
        }
        let took = conn.take_link_time();
        if !took.is_zero() {
            clock.advance(took);
        }
        let mut gone = false;
        while let Some(event) = conn.poll_event() {
            match event {
                ConnectionEvent::Imported {
                    port,
                    busid,
                    mode,
                    product_id,
                } => {
                    if let Some(w) = lock(&shared.workers).iter_mut().find(|w| w.id == id) {
                        w.port = Some(port);
                    }
                    shared.emit(ServerEvent::Attached {
                        busid: busid.clone(),
                        peer: peer.to_string(),
                        mode: mode.name().to_string(),
                        pid: product_id,
                    });
                    attached = Some(busid);
                }
                ConnectionEvent::Gone { .. } => gone = true,
                ConnectionEvent::DevList { .. } | ConnectionEvent::ImportRefused { .. } => {}
            }
        }
        let mut failed = false;
        while let Some(bytes) = conn.poll_transmit() {
            if stream.write_all(&bytes).is_err() {
                failed = true;
                break;
            }
        }
        shared.poke();
        if failed {
            break "write failed";
        }
        if gone {
            break "re-enumerated";
        }
        if conn.is_done() {
            break "done";
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    conn.close(&shared.ports);
    (attached, reason)
}

/// What the bus thread last saw of a port.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    generation: u64,
    on_bus: bool,
    uploads: usize,
    received: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reports what changed on one phone since `seen`; true when its enumeration changed.
fn observe(shared: &Shared, port: usize, phone: &Phone, seen: &mut Seen) -> bool {
    let id = busid(port);
    let on_bus = phone.is_on_bus();
    let generation = phone.generation();
    let moved = generation != seen.generation;
    if seen.on_bus && (!on_bus || moved) {
        shared.emit(ServerEvent::Left { busid: id.clone() });
    }
    if on_bus && moved {
        shared.emit(ServerEvent::Mode {
            busid: id.clone(),
            mode: phone.mode().name().to_string(),
            pid: phone.identity().product_id(),
        });
    }
    let record = &phone.core().record;
    for u in record.uploads.iter().skip(seen.uploads) {
        if let ImageKind::Dfu(_) = u.kind {
            shared.emit(ServerEvent::Upload {
                busid: id.clone(),
                mode: "dfu".to_string(),
                bytes: u.size,
                sha256: hex(&u.sha256),
            });
        }
    }
    for r in record.received.iter().skip(seen.received) {
        shared.emit(ServerEvent::Upload {
            busid: id.clone(),
            mode: "recovery".to_string(),
            bytes: r.size,
            sha256: hex(&r.sha256),
        });
    }
    let changed = moved || on_bus != seen.on_bus;
    *seen = Seen {
        generation,
        on_bus,
        uploads: record.uploads.len(),
        received: record.received.len(),
    };
    changed
}

fn bus_loop(shared: &Arc<Shared>) {
    let hub = shared.hub().clone();
    let clock = Arc::clone(hub.clock());
    let mut seen = vec![Seen::default(); hub.port_count()];
    while !shared.stop.load(Ordering::SeqCst) {
        let now = clock.now();
        let mut wake = Vec::new();
        for (port, seen) in seen.iter_mut().enumerate() {
            let due = hub
                .with_phone(port, |p| {
                    let due = p.poll_timeout().is_some_and(|t| t <= now);
                    if due {
                        p.handle_timeout(now);
                    }
                    due
                })
                .unwrap_or(false);
            let changed = hub
                .with_phone(port, |p| observe(shared, port, p, seen))
                .unwrap_or(false);
            if due || changed {
                wake.push(port);
            }
        }
        for w in lock(&shared.workers).iter() {
            if w.port.is_some_and(|p| wake.contains(&p)) {
                match w.tx.try_send(Message::Bus) {
                    Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
                }
            }
        }
        // A timer that stays due after it ran (a mode's bug) must not spin this thread: the
        // wait is at least a millisecond.
        let deadline = if clock.is_virtual() {
            None
        } else {
            hub.next_timer()
                .map(|t| t.max(now + std::time::Duration::from_millis(1)))
        };
        let mut dirty = lock(&shared.dirty);
        while !*dirty && !shared.stop.load(Ordering::SeqCst) {
            match deadline {
                None => {
                    dirty = shared
                        .wake
                        .wait(dirty)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Some(t) => {
                    let now = clock.now();
                    if t <= now {
                        break;
                    }
                    dirty = shared
                        .wake
                        .wait_timeout(dirty, t - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
        *dirty = false;
    }
}
