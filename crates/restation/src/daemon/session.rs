//! One phone's usbmux link, held for as long as the phone stays on the bus in a usbmux mode
//! (normal iOS or the restore ramdisk), with any number of connections over it, as usbmuxd
//! holds one link per phone.
//!
//! A [`Pump`] is the blocking driver of a [`usbmux::Link`] over the phone's mux endpoints:
//! identification uses it directly (connect to lockdownd, one request, close), then
//! [`Pump::into_session`] moves it onto a thread of its own, and the usbmuxd-compatible socket
//! opens [`Stream`]s through the [`MuxSession`] handle. Nothing here sleeps: the thread waits
//! for the next event (bytes from the phone, a request, a client that read or wrote, or the
//! link's own timer) with a deadline.
//!
//! - Where the backend offers a [`usb::BulkInPipe`] (libusb, the real-time virtual hub), a
//!   reader thread keeps a bulk IN read in flight back to back and hands completions over a
//!   bounded channel; when the pump falls behind, the reader waits, and the phone with it.
//! - Otherwise (recorded traces, the virtual hub in virtual time) the pump reads between its
//!   writes, and only while a connection is open or a timer is due.
//! - Each direction of each stream is a bounded channel of chunks: a client that does not
//!   read stops the pump from taking more from that connection, which closes the mux window
//!   towards the phone; a phone that does not read stops the client's writes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as channel;
use tokio::sync::{mpsc, oneshot};
use usb::{BulkInPipe, ErrorKind, UsbDevice, UsbError};
use usbmux::{ConnId, Event, Link};

/// Size of each bulk IN read.
pub const READ_SIZE: usize = 64 * 1024;
/// How long one bulk IN read waits when the pump reads between its writes.
const POLL: Duration = Duration::from_millis(10);
/// How long a reader thread's read waits before it checks whether the session is over.
const PIPE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one bulk OUT write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the VERSION handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes handed to a client per chunk.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered each way per stream.
const STREAM_DEPTH: usize = 16;
/// Completions buffered between a reader thread and the pump.
const USB_DEPTH: usize = 64;
/// How long the session thread waits when nothing at all is due (it wakes on any input).
const IDLE: Duration = Duration::from_secs(1);

/// Why a session or one of its connections could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// USB.
    #[error("USB: {0}")]
    Usb(#[from] UsbError),
    /// The phone has no usbmux interface in any configuration.
    #[error("no usbmux interface (class ff/fe/02) in any configuration")]
    NoMuxInterface,
    /// The mux link failed.
    #[error("usbmux link: {0}")]
    Link(#[from] usbmux::LinkError),
    /// A mux stream operation failed.
    #[error("usbmux stream: {0}")]
    Stream(#[from] usbmux::StreamError),
    /// The phone refused the port.
    #[error("device port {port} refused: {reason}")]
    Refused {
        /// The port.
        port: u16,
        /// The phone's reason.
        reason: String,
    },
    /// Nothing came in time.
    #[error("no answer within {timeout:?} while waiting for {during}")]
    Stalled {
        /// What was awaited.
        during: &'static str,
        /// The budget.
        timeout: Duration,
    },
    /// The session is over (the phone left, or its link failed).
    #[error("the phone's mux session is over")]
    Ended,
}

impl SessionError {
    /// True when the phone left the bus.
    pub fn vanished(&self) -> bool {
        matches!(self, SessionError::Usb(e) if e.kind() == ErrorKind::NoDevice)
    }

    /// True when a USB request failed (not the mux protocol, not a silent phone): the
    /// interface was taken away, the phone left, a transfer broke.
    pub fn usb_failed(&self) -> bool {
        matches!(self, SessionError::Usb(e) if e.kind() != ErrorKind::Timeout)
    }
}

/// The largest mux packet the host sends: usbmux's limit, less one byte when that is a
/// multiple of the endpoint's packet size, so that a full packet never needs a zero-length
/// packet after it (one transfer less per packet of a large stream).
pub fn packet_size(w_max_packet_size: u16) -> usize {
    let limit = usbmux::MAX_PACKET;
    if usbmux::needs_zlp(limit, w_max_packet_size) {
        limit - 1
    } else {
        limit
    }
}

/// A blocking usbmux driver over one opened phone: the handshake, then connections.
pub struct Pump {
    dev: Box<dyn UsbDevice>,
    /// The backend's bulk OUT queue, when it has one: packets go out back to back.
    queue: Option<Box<dyn usb::BulkOutQueue>>,
    link: Link,
    interface: u8,
    ep_out: u8,
    ep_in: u8,
    max_packet: u16,
    events: VecDeque<Event>,
    released: bool,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("interface", &self.interface)
            .field("ep_out", &self.ep_out)
            .field("ep_in", &self.ep_in)
            .finish_non_exhaustive()
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.release();
    }
}

impl Pump {
    /// Claims the mux interface of `dev` (selecting the configuration that has it) and runs
    /// the VERSION handshake. A phone whose mux was already running restarts it.
    pub fn open(mut dev: Box<dyn UsbDevice>) -> Result<Pump, SessionError> {
        let Some(mux) = usb::mux_configuration(dev.configurations()) else {
            return Err(SessionError::NoMuxInterface);
        };
        if dev.active_configuration()? != mux.configuration {
            dev.set_configuration(mux.configuration)?;
        }
        dev.claim_interface(mux.interface)?;
        let queue = dev.bulk_out_queue(mux.endpoint_out);
        let mut pump = Pump {
            dev,
            queue,
            link: Link::with_config(
                usbmux::Config {
                    max_packet: packet_size(mux.out_max_packet_size),
                    // usbmuxd resets connections with an empty RST; only phones give reasons.
                    reset_reasons: false,
                    ..usbmux::Config::default()
                },
                Instant::now(),
            ),
            interface: mux.interface,
            ep_out: mux.endpoint_out,
            ep_in: mux.endpoint_in,
            max_packet: mux.out_max_packet_size.max(1),
            events: VecDeque::new(),
            released: false,
        };
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        while pump.link.header_version().is_none() {
            if let Some(e) = pump.link.error() {
                return Err(SessionError::Link(e.clone()));
            }
            if Instant::now() > deadline {
                return Err(SessionError::Stalled {
                    during: "the mux VERSION handshake",
                    timeout: HANDSHAKE_TIMEOUT,
                });
            }
            pump.step()?;
        }
        Ok(pump)
    }

    fn release(&mut self) {
        if !self.released {
            self.released = true;
            // What is queued goes out before the interface is let go.
            if let Some(mut queue) = self.queue.take() {
                let _ = queue.flush();
            }
            let _ = self.dev.release_interface(self.interface);
        }
    }

    fn write(&mut self, packet: Vec<u8>) -> Result<(), SessionError> {
        let zlp = usbmux::needs_zlp(packet.len(), self.max_packet);
        if let Some(queue) = self.queue.as_mut() {
            queue.submit(packet, WRITE_TIMEOUT).map_err(|f| f.error)?;
            if zlp {
                queue
                    .submit(Vec::new(), WRITE_TIMEOUT)
                    .map_err(|f| f.error)?;
            }
            return Ok(());
        }
        self.dev.bulk_out(self.ep_out, &packet, WRITE_TIMEOUT)?;
        if zlp {
            self.dev.bulk_out(self.ep_out, &[], WRITE_TIMEOUT)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SessionError> {
        while let Some(packet) = self.link.poll_transmit() {
            self.write(packet)?;
        }
        Ok(())
    }

    /// Bytes the phone sent, then the link's timers and events.
    fn input(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.link.handle_input(bytes, Instant::now())?;
        self.timers();
        Ok(())
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.link.poll_timeout().is_some_and(|t| t <= now) {
            self.link.handle_timeout(now);
        }
        while let Some(e) = self.link.poll_event() {
            self.events.push_back(e);
        }
    }

    /// Writes what is queued, reads once (short timeout), collects events.
    fn step(&mut self) -> Result<(), SessionError> {
        self.flush()?;
        if let Some(queue) = self.queue.as_mut() {
            queue.check().map_err(|f| f.error)?;
        }
        match self.dev.bulk_in(self.ep_in, READ_SIZE, POLL) {
            Ok(bytes) => self.input(&bytes)?,
            Err(e) if e.kind() == ErrorKind::Timeout => self.timers(),
            Err(e) => return Err(e.into()),
        }
        self.flush()
    }

    /// Connects to `port` on the phone.
    pub fn connect(&mut self, port: u16, timeout: Duration) -> Result<ConnId, SessionError> {
        let conn = self.link.connect(port, Instant::now())?;
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = self.events.pop_front() {
                match e {
                    Event::Connected { conn: c } if c == conn => return Ok(conn),
                    Event::Refused {
                        conn: c,
                        port,
                        reason,
                    } if c == conn => return Err(SessionError::Refused { port, reason }),
                    Event::ConnectTimedOut { conn: c, .. } if c == conn => {
                        return Err(SessionError::Stalled {
                            during: "the phone's answer to connect",
                            timeout,
                        })
                    }
                    Event::Failed(e) => return Err(SessionError::Link(e)),
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                let _ = self.link.close(conn);
                return Err(SessionError::Stalled {
                    during: "the phone's answer to connect",
                    timeout,
                });
            }
            self.step()?;
        }
    }

    /// Sends all of `data` on `conn`.
    pub fn send_all(
        &mut self,
        conn: ConnId,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), SessionError> {
        let deadline = Instant::now() + timeout;
        let mut rest = data;
        loop {
            let n = self.link.send(conn, rest)?;
            rest = rest.get(n..).unwrap_or_default();
            if rest.is_empty() {
                return self.flush();
            }
            if Instant::now() > deadline {
                return Err(SessionError::Stalled {
                    during: "room to send",
                    timeout,
                });
            }
            self.step()?;
        }
    }

    /// The next bytes the phone sent on `conn`; `None` once it closed and all was read.
    pub fn read(
        &mut self,
        conn: ConnId,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.link.read(conn, CHUNK) {
                Ok(Some(bytes)) => return Ok(Some(bytes.to_vec())),
                Ok(None) => {}
                Err(_) => return Ok(None),
            }
            if let Some(e) = self.link.error() {
                return Err(SessionError::Link(e.clone()));
            }
            if Instant::now() > deadline {
                return Err(SessionError::Stalled {
                    during: "the phone's answer",
                    timeout,
                });
            }
            self.step()?;
        }
    }

    /// Waits until everything sent on `conn` is acknowledged (usbmux closes with an RST,
    /// which drops what is still queued), then closes it. The phone closing first is fine.
    pub fn finish(&mut self, conn: ConnId, timeout: Duration) -> Result<(), SessionError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.link.unacknowledged(conn) {
                Ok(0) | Err(_) => break,
                Ok(_) if Instant::now() > deadline => {
                    return Err(SessionError::Stalled {
                        during: "the phone's acknowledgement of the last bytes",
                        timeout,
                    })
                }
                Ok(_) => self.step()?,
            }
        }
        self.close(conn);
        Ok(())
    }

    /// Closes `conn` at once, dropping what is still queued (errors are ignored).
    pub fn close(&mut self, conn: ConnId) {
        if self.link.close(conn).is_ok() {
            let _ = self.flush();
        }
    }

    /// Moves the pump onto a thread of its own that serves [`Stream`]s until the phone
    /// leaves, the link fails, or every handle and stream is dropped.
    pub fn into_session(mut self, name: String) -> Result<MuxSession, SessionError> {
        // Events of the identification's connections are of no use to the session.
        self.events.clear();
        let (tx, rx) = channel::unbounded::<Input>();
        let (wake_tx, wake_rx) = channel::unbounded::<ConnId>();
        let ended = Arc::new(Ended::default());
        let stop = Arc::new(AtomicBool::new(false));
        let pipe = self.dev.bulk_in_pipe(self.ep_in);
        let (usb_rx, reader) = match pipe {
            Some(pipe) => {
                let (usb_tx, usb_rx) = channel::bounded(USB_DEPTH);
                let stop = Arc::clone(&stop);
                let reader = std::thread::Builder::new()
                    .name(format!("{name}-in"))
                    .spawn(move || read_loop(pipe, &usb_tx, &stop, PIPE_TIMEOUT))
                    .map_err(|_| SessionError::Ended)?;
                (Some(usb_rx), Some(reader))
            }
            None => (None, None),
        };
        let flag = Arc::clone(&ended);
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _enter = span.enter();
                let mut server = Server {
                    pump: self,
                    rx: Some(rx),
                    wake_rx,
                    wake_tx,
                    usb_rx,
                    conns: HashMap::new(),
                    connecting: Vec::new(),
                    shutting_down: false,
                };
                match server.run() {
                    Ok(()) => tracing::debug!("mux session over"),
                    Err(e) if e.vanished() => tracing::debug!("mux session over: phone left"),
                    Err(e) => tracing::info!(error = %e, "mux session ended"),
                }
                // The reader must be gone before anyone else reads the phone.
                stop.store(true, Ordering::Release);
                drop(server);
                if let Some(reader) = reader {
                    let _ = reader.join();
                }
                flag.set();
            })
            .map_err(|_| SessionError::Ended)?;
        Ok(MuxSession { tx, ended })
    }
}

/// Reads the phone's bulk IN back to back into `tx` until `stop` (checked every `timeout`)
/// or a read fails (the error is passed on, then the loop ends).
pub(super) fn read_loop(
    mut pipe: Box<dyn BulkInPipe>,
    tx: &channel::Sender<Result<Vec<u8>, UsbError>>,
    stop: &AtomicBool,
    timeout: Duration,
) {
    while !stop.load(Ordering::Acquire) {
        match pipe.read(READ_SIZE, timeout) {
            Ok(bytes) if bytes.is_empty() => {}
            Ok(bytes) => {
                if tx.send(Ok(bytes)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Timeout => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// What a session's handles ask of its thread.
enum Input {
    Connect {
        port: u16,
        timeout: Duration,
        reply: oneshot::Sender<Result<Stream, SessionError>>,
    },
    /// End the session now (a restore takes the phone over).
    Shutdown,
}

/// Set once a session's thread and its reader are gone and the phone is released.
#[derive(Debug, Default)]
struct Ended {
    done: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Ended {
    fn set(&self) {
        *self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.cv.notify_all();
    }

    fn is_set(&self) -> bool {
        *self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait(&self, within: Duration) -> bool {
        let guard = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, within, |done| !*done)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard
    }
}

/// A handle on a phone's running mux session. Cheap to clone; the session ends when the
/// phone leaves, or when every handle and stream is gone.
#[derive(Debug, Clone)]
pub struct MuxSession {
    tx: channel::Sender<Input>,
    ended: Arc<Ended>,
}

impl MuxSession {
    /// Opens a connection to `port` on the phone.
    pub async fn connect(&self, port: u16, timeout: Duration) -> Result<Stream, SessionError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Input::Connect {
                port,
                timeout,
                reply,
            })
            .map_err(|_| SessionError::Ended)?;
        answer.await.map_err(|_| SessionError::Ended)?
    }

    /// Whether the session still runs.
    pub fn is_alive(&self) -> bool {
        !self.ended.is_set()
    }

    /// Ends the session (its connections are reset) and waits, at most `within`, until its
    /// threads are gone and the phone's interface is released, so that another driver can
    /// take the phone over. True when it ended in time.
    pub fn shutdown(&self, within: Duration) -> bool {
        let _ = self.tx.send(Input::Shutdown);
        self.ended.wait(within)
    }
}

/// One connection to a port on the phone, in two halves that may live on two tasks.
#[derive(Debug)]
pub struct Stream {
    /// Bytes from the phone.
    pub reader: StreamReader,
    /// Bytes for the phone.
    pub writer: StreamWriter,
}

/// The phone's side of a [`Stream`]: what it sent.
#[derive(Debug)]
pub struct StreamReader {
    conn: ConnId,
    rx: mpsc::Receiver<Vec<u8>>,
    wake: channel::Sender<ConnId>,
}

impl StreamReader {
    /// The next bytes from the phone; `None` once the connection is over.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let bytes = self.rx.recv().await;
        // Room again: the session may hand over what it held back.
        let _ = self.wake.send(self.conn);
        bytes
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.rx.close();
        let _ = self.wake.send(self.conn);
    }
}

/// The host's side of a [`Stream`]: what goes to the phone. Dropping it closes the
/// connection once everything sent has gone out.
#[derive(Debug)]
pub struct StreamWriter {
    conn: ConnId,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    wake: channel::Sender<ConnId>,
}

impl StreamWriter {
    /// Queues `bytes` for the phone (waits while the stream's buffer is full).
    pub async fn send(&self, bytes: Vec<u8>) -> Result<(), SessionError> {
        let tx = self.tx.as_ref().ok_or(SessionError::Ended)?;
        tx.send(bytes).await.map_err(|_| SessionError::Ended)?;
        self.wake.send(self.conn).map_err(|_| SessionError::Ended)
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        self.tx.take();
        let _ = self.wake.send(self.conn);
    }
}

/// A connection the session serves.
struct Served {
    to_phone: mpsc::Receiver<Vec<u8>>,
    to_client: Option<mpsc::Sender<Vec<u8>>>,
    /// Taken from the client, not yet accepted by the link.
    outgoing: Vec<u8>,
    /// Read from the link, not yet accepted by the client's channel.
    held: Option<Vec<u8>>,
    client_done_writing: bool,
    /// The phone (or the link) closed it.
    closed_by_phone: bool,
}

struct Connecting {
    conn: ConnId,
    port: u16,
    deadline: Instant,
    timeout: Duration,
    reply: oneshot::Sender<Result<Stream, SessionError>>,
}

struct Server {
    pump: Pump,
    /// Requests from the handles; `None` once every handle is gone.
    rx: Option<channel::Receiver<Input>>,
    /// A stream's client wrote, read, or went away.
    wake_rx: channel::Receiver<ConnId>,
    wake_tx: channel::Sender<ConnId>,
    usb_rx: Option<channel::Receiver<Result<Vec<u8>, UsbError>>>,
    conns: HashMap<ConnId, Served>,
    connecting: Vec<Connecting>,
    shutting_down: bool,
}

impl Server {
    fn busy(&self) -> bool {
        !self.conns.is_empty() || !self.connecting.is_empty()
    }

    fn deadline(&self) -> Instant {
        let mut next = Instant::now() + IDLE;
        if let Some(t) = self.pump.link.poll_timeout() {
            next = next.min(t);
        }
        for c in &self.connecting {
            next = next.min(c.deadline);
        }
        next
    }

    fn run(&mut self) -> Result<(), SessionError> {
        loop {
            if self.shutting_down {
                for conn in self.conns.keys().copied().collect::<Vec<_>>() {
                    let _ = self.pump.link.close(conn);
                }
                self.conns.clear();
                let _ = self.pump.flush();
                return Ok(());
            }
            if self.rx.is_none() && !self.busy() {
                return Ok(());
            }
            let timeout = self.deadline().saturating_duration_since(Instant::now());
            // Reading between writes (no reader thread): one short bulk IN read per turn
            // while there is something to read for, else wait for a request.
            let poll_usb = self.usb_rx.is_none() && self.busy();
            if poll_usb {
                self.pump.step()?;
            } else {
                self.wait(timeout)?;
            }
            self.drain_requests()?;
            while self.wake_rx.try_recv().is_ok() {}
            self.pump.timers();
            self.on_events()?;
            self.expire_connects();
            self.serve_all()?;
            self.pump.flush()?;
        }
    }

    /// Waits for one input of any kind, or the deadline.
    fn wait(&mut self, timeout: Duration) -> Result<(), SessionError> {
        let never_usb = channel::never();
        let never_rx = channel::never();
        let usb_rx = self.usb_rx.as_ref().unwrap_or(&never_usb);
        let rx = self.rx.as_ref().unwrap_or(&never_rx);
        channel::select! {
            recv(usb_rx) -> m => match m {
                Ok(Ok(bytes)) => self.pump.input(&bytes)?,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(SessionError::Ended),
            },
            recv(rx) -> m => match m {
                Ok(input) => self.on_input(input),
                Err(_) => self.rx = None,
            },
            recv(self.wake_rx) -> _ => {},
            default(timeout) => {},
        }
        Ok(())
    }

    fn drain_requests(&mut self) -> Result<(), SessionError> {
        if let Some(usb_rx) = &self.usb_rx {
            let mut got = Vec::new();
            while let Ok(m) = usb_rx.try_recv() {
                got.push(m);
            }
            for m in got {
                self.pump.input(&m?)?;
            }
        }
        while let Some(rx) = &self.rx {
            match rx.try_recv() {
                Ok(input) => self.on_input(input),
                Err(channel::TryRecvError::Empty) => break,
                Err(channel::TryRecvError::Disconnected) => self.rx = None,
            }
        }
        Ok(())
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Shutdown => {
                self.shutting_down = true;
            }
            Input::Connect {
                port,
                timeout,
                reply,
            } => match self.pump.link.connect(port, Instant::now()) {
                Ok(conn) => self.connecting.push(Connecting {
                    conn,
                    port,
                    deadline: Instant::now() + timeout,
                    timeout,
                    reply,
                }),
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
        }
    }

    fn on_events(&mut self) -> Result<(), SessionError> {
        while let Some(event) = self.pump.events.pop_front() {
            match event {
                Event::Connected { conn } => {
                    if let Some(i) = self.connecting.iter().position(|c| c.conn == conn) {
                        let c = self.connecting.swap_remove(i);
                        self.accept(c);
                    }
                }
                Event::Refused { conn, port, reason } => {
                    self.answer(conn, SessionError::Refused { port, reason });
                }
                Event::ConnectTimedOut { conn, .. } => {
                    let timeout = self
                        .connecting
                        .iter()
                        .find(|c| c.conn == conn)
                        .map_or(Duration::ZERO, |c| c.timeout);
                    self.answer(
                        conn,
                        SessionError::Stalled {
                            during: "the phone's answer to connect",
                            timeout,
                        },
                    );
                }
                Event::Closed { conn, reason } => {
                    if let Some(s) = self.conns.get_mut(&conn) {
                        tracing::debug!(?conn, ?reason, "phone closed a connection");
                        s.closed_by_phone = true;
                    } else if let Some(c) = self.connecting.iter().find(|c| c.conn == conn) {
                        let port = c.port;
                        self.answer(
                            conn,
                            SessionError::Refused {
                                port,
                                reason: format!("{reason:?}"),
                            },
                        );
                    }
                }
                Event::Failed(e) => return Err(SessionError::Link(e)),
                Event::Discarded(d) => tracing::debug!(?d, "mux packet discarded"),
                _ => {}
            }
        }
        Ok(())
    }

    fn answer(&mut self, conn: ConnId, error: SessionError) {
        if let Some(i) = self.connecting.iter().position(|c| c.conn == conn) {
            let c = self.connecting.swap_remove(i);
            let _ = c.reply.send(Err(error));
        }
    }

    fn accept(&mut self, c: Connecting) {
        let (to_phone_tx, to_phone) = mpsc::channel(STREAM_DEPTH);
        let (to_client, from_phone) = mpsc::channel(STREAM_DEPTH);
        let stream = Stream {
            reader: StreamReader {
                conn: c.conn,
                rx: from_phone,
                wake: self.wake_tx.clone(),
            },
            writer: StreamWriter {
                conn: c.conn,
                tx: Some(to_phone_tx),
                wake: self.wake_tx.clone(),
            },
        };
        if c.reply.send(Ok(stream)).is_err() {
            // The asker gave up meanwhile.
            self.pump.close(c.conn);
            return;
        }
        self.conns.insert(
            c.conn,
            Served {
                to_phone,
                to_client: Some(to_client),
                outgoing: Vec::new(),
                held: None,
                client_done_writing: false,
                closed_by_phone: false,
            },
        );
    }

    fn expire_connects(&mut self) {
        let now = Instant::now();
        let expired: Vec<ConnId> = self
            .connecting
            .iter()
            .filter(|c| c.deadline <= now)
            .map(|c| c.conn)
            .collect();
        for conn in expired {
            let timeout = self
                .connecting
                .iter()
                .find(|c| c.conn == conn)
                .map_or(Duration::ZERO, |c| c.timeout);
            let _ = self.pump.link.close(conn);
            self.answer(
                conn,
                SessionError::Stalled {
                    during: "the phone's answer to connect",
                    timeout,
                },
            );
        }
    }

    fn serve_all(&mut self) -> Result<(), SessionError> {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            if self.serve(conn)? {
                self.conns.remove(&conn);
            }
        }
        Ok(())
    }

    /// Moves what can move on `conn`; true when it is over.
    fn serve(&mut self, conn: ConnId) -> Result<bool, SessionError> {
        let Some(s) = self.conns.get_mut(&conn) else {
            return Ok(true);
        };
        let link = &mut self.pump.link;
        // Phone → client, as far as the client's channel has room.
        while let Some(tx) = s.to_client.as_ref() {
            let chunk = match s.held.take() {
                Some(chunk) => chunk,
                None => match link.read(conn, CHUNK) {
                    Ok(Some(bytes)) => bytes.to_vec(),
                    Ok(None) => break,
                    Err(_) => {
                        // Closed and drained: the client sees the end of the stream.
                        s.to_client = None;
                        s.closed_by_phone = true;
                        break;
                    }
                },
            };
            match tx.try_send(chunk) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(chunk)) => {
                    s.held = Some(chunk);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // Nobody reads any more: the connection is over.
                    s.to_client = None;
                    s.client_done_writing = true;
                    s.to_phone.close();
                    break;
                }
            }
        }
        // Client → phone, as far as the link takes it.
        if !s.closed_by_phone {
            loop {
                if s.outgoing.is_empty() {
                    match s.to_phone.try_recv() {
                        Ok(bytes) => s.outgoing = bytes,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            s.client_done_writing = true;
                            break;
                        }
                    }
                }
                let n = match link.send(conn, &s.outgoing) {
                    Ok(n) => n,
                    Err(_) => {
                        s.closed_by_phone = true;
                        break;
                    }
                };
                s.outgoing.drain(..n.min(s.outgoing.len()));
                if !s.outgoing.is_empty() {
                    // The phone's window is full: wait for its ACK.
                    break;
                }
            }
        }
        if s.client_done_writing && s.outgoing.is_empty() && !s.closed_by_phone {
            // usbmux closes with an RST, which drops what is queued: close once the phone
            // has acknowledged everything (its ACKs wake this loop).
            if link.unacknowledged(conn).unwrap_or(0) > 0 {
                return Ok(false);
            }
            let _ = link.close(conn);
            return Ok(true);
        }
        Ok(s.closed_by_phone && s.to_client.is_none() && s.held.is_none())
    }
}
