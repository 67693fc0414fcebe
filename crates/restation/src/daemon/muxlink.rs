//! One usbmuxd-socket `Connect`, bridged to a device port (blocking): opens the phone, claims
//! its mux interface, runs a [`usbmux::Link`] over bulk OUT/IN with short read timeouts,
//! connects to the port, then moves bytes between that mux connection and two channels that
//! the async side of [`super::muxd`] joins to the client's unix socket.
//!
//! The device is held only while the connection lives, so identification and these sessions
//! never fight over the handle for long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use usb::{DeviceId, ErrorKind, UsbBackend, UsbDevice, UsbError};
use usbmux::{ConnId, Event, Link};

const READ_SIZE: usize = 64 * 1024;
/// How long one bulk IN read waits when the phone is silent.
const POLL: Duration = Duration::from_millis(10);
/// How long one bulk OUT write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a resumed mux gets to answer the connect before a fresh handshake is tried.
const RESUME_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the VERSION handshake and the connect may take together.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes taken from the device per `Link::read`.
const READ_CHUNK: usize = 64 * 1024;

/// Why a bridge could not be set up or ended early.
#[derive(Debug, thiserror::Error)]
pub enum MuxLinkError {
    /// USB.
    #[error("USB: {0}")]
    Usb(#[from] UsbError),
    /// The phone has no usbmux interface.
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
}

/// The async side's ends of one bridge.
#[derive(Debug)]
pub struct Bridge {
    /// Bytes for the device port (closing it closes the mux connection).
    pub to_device: mpsc::Sender<Vec<u8>>,
    /// Bytes from the device port (closed when the mux connection is over).
    pub from_device: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Resolves once the pump has closed the mux connection and released the phone.
    pub done: oneshot::Receiver<()>,
}

/// Opens `device` on a blocking thread and connects to `port`; resolves once the phone
/// accepted (the pump keeps running on that thread) or refused.
pub async fn connect(
    backend: Arc<dyn UsbBackend>,
    device: DeviceId,
    port: u16,
) -> Result<Bridge, MuxLinkError> {
    let (to_device, to_device_rx) = mpsc::channel::<Vec<u8>>(16);
    let (from_device_tx, from_device) = mpsc::unbounded_channel::<Vec<u8>>();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let span = tracing::info_span!("muxlink", %device, port);
        let _enter = span.enter();
        run(
            backend.as_ref(),
            device,
            port,
            ready_tx,
            to_device_rx,
            from_device_tx,
        );
        let _ = done_tx.send(());
    });
    match ready_rx.await {
        Ok(Ok(())) => Ok(Bridge {
            to_device,
            from_device,
            done,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(MuxLinkError::Stalled {
            during: "the bridge thread",
            timeout: SETUP_TIMEOUT,
        }),
    }
}

fn run(
    backend: &dyn UsbBackend,
    device: DeviceId,
    port: u16,
    ready: oneshot::Sender<Result<(), MuxLinkError>>,
    to_device: mpsc::Receiver<Vec<u8>>,
    from_device: mpsc::UnboundedSender<Vec<u8>>,
) {
    // First over the running mux (no VERSION), then, if the phone does not answer, with a
    // fresh handshake.
    let attempt = |resume: bool| -> Result<(Pump, ConnId), MuxLinkError> {
        let mut pump = Pump::open(backend.open(device)?, resume)?;
        let timeout = if resume {
            RESUME_TIMEOUT
        } else {
            SETUP_TIMEOUT
        };
        match pump.connect(port, timeout) {
            Ok(conn) => Ok((pump, conn)),
            Err(e) => {
                pump.release();
                Err(e)
            }
        }
    };
    let (mut pump, conn) = match attempt(true) {
        Ok(ok) => ok,
        Err(e @ MuxLinkError::Refused { .. }) => {
            let _ = ready.send(Err(e));
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "resuming the mux failed: new handshake");
            match attempt(false) {
                Ok(ok) => ok,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
    };
    if ready.send(Ok(())).is_err() {
        pump.release();
        return;
    }
    match pump.bridge(conn, to_device, &from_device) {
        Ok(()) => tracing::debug!("mux connection over"),
        Err(e) => tracing::info!(error = %e, "mux connection ended"),
    }
    pump.release();
}

struct Pump {
    dev: Box<dyn UsbDevice>,
    link: Link,
    interface: u8,
    ep_out: u8,
    ep_in: u8,
    max_packet: u16,
}

impl Pump {
    fn open(mut dev: Box<dyn UsbDevice>, resume: bool) -> Result<Self, MuxLinkError> {
        let Some(mux) = usb::mux_configuration(dev.configurations()) else {
            return Err(MuxLinkError::NoMuxInterface);
        };
        let (config, interface) = (mux.configuration, mux.interface);
        let (ep_out, ep_in, max_packet) =
            (mux.endpoint_out, mux.endpoint_in, mux.out_max_packet_size);
        if dev.active_configuration()? != config {
            dev.set_configuration(config)?;
        }
        dev.claim_interface(interface)?;
        let mut link = Link::new(Instant::now());
        let hello: Vec<Vec<u8>> = std::iter::from_fn(|| link.poll_transmit()).collect();
        let mut pump = Pump {
            dev,
            link,
            interface,
            ep_out,
            ep_in,
            max_packet: max_packet.max(1),
        };
        if resume {
            // The phone's mux is already up (identification ran the handshake on this
            // enumeration). A VERSION in v1 framing would be read as a broken v2 header by a
            // phone that does not restart its mux, so ours is answered locally, as a fresh
            // device would answer it, and the link carries on over the running mux.
            let now = Instant::now();
            let mut fresh =
                usbmux::device::Device::new(usbmux::device::DeviceConfig::default(), now);
            for packet in &hello {
                let _ = fresh.handle_input(packet, now);
            }
            while let Some(answer) = fresh.poll_transmit() {
                if let Err(e) = pump.link.handle_input(&answer, now) {
                    pump.release();
                    return Err(e.into());
                }
            }
        } else {
            for packet in &hello {
                if let Err(e) = pump.write(packet) {
                    pump.release();
                    return Err(e);
                }
            }
        }
        let start = Instant::now();
        while pump.link.header_version().is_none() {
            if start.elapsed() > SETUP_TIMEOUT {
                pump.release();
                return Err(MuxLinkError::Stalled {
                    during: "the mux VERSION handshake",
                    timeout: SETUP_TIMEOUT,
                });
            }
            if let Err(e) = pump.step(&mut |_| {}) {
                pump.release();
                return Err(e);
            }
            if let Some(e) = pump.link.error() {
                let e = MuxLinkError::Link(e.clone());
                pump.release();
                return Err(e);
            }
        }
        Ok(pump)
    }

    fn release(&mut self) {
        let _ = self.dev.release_interface(self.interface);
    }

    fn write(&mut self, packet: &[u8]) -> Result<(), MuxLinkError> {
        tracing::trace!(len = packet.len(), head = ?packet.get(..28), "bulk out");
        self.dev.bulk_out(self.ep_out, packet, WRITE_TIMEOUT)?;
        if usbmux::needs_zlp(packet.len(), self.max_packet) {
            self.dev.bulk_out(self.ep_out, &[], WRITE_TIMEOUT)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MuxLinkError> {
        while let Some(packet) = self.link.poll_transmit() {
            self.write(&packet)?;
        }
        Ok(())
    }

    /// Writes what is queued, reads once (short timeout), hands each event to `on_event`.
    fn step(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<(), MuxLinkError> {
        self.flush()?;
        match self.dev.bulk_in(self.ep_in, READ_SIZE, POLL) {
            Ok(bytes) => {
                tracing::trace!(len = bytes.len(), "bulk in");
                self.link.handle_input(&bytes, Instant::now())?
            }
            Err(e) if e.kind() == ErrorKind::Timeout => {}
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        if self.link.poll_timeout().is_some_and(|t| t <= now) {
            self.link.handle_timeout(now);
        }
        while let Some(e) = self.link.poll_event() {
            on_event(e);
        }
        self.flush()
    }

    fn connect(&mut self, port: u16, timeout: Duration) -> Result<ConnId, MuxLinkError> {
        let conn = self.link.connect(port, Instant::now())?;
        let deadline = Instant::now() + timeout;
        let mut outcome: Option<Result<(), MuxLinkError>> = None;
        while Instant::now() <= deadline {
            self.step(&mut |e| match e {
                Event::Connected { conn: c } if c == conn => outcome = Some(Ok(())),
                Event::Discarded(d) => tracing::debug!(?d, "mux packet discarded"),
                Event::Refused {
                    conn: c,
                    port,
                    reason,
                } if c == conn => outcome = Some(Err(MuxLinkError::Refused { port, reason })),
                Event::ConnectTimedOut { conn: c, .. } if c == conn => {
                    outcome = Some(Err(MuxLinkError::Stalled {
                        during: "the device's answer to connect",
                        timeout: SETUP_TIMEOUT,
                    }))
                }
                Event::Closed { conn: c, reason } if c == conn => {
                    outcome = Some(Err(MuxLinkError::Refused {
                        port,
                        reason: format!("{reason:?}"),
                    }))
                }
                Event::Failed(e) => outcome = Some(Err(MuxLinkError::Link(e))),
                _ => {}
            })?;
            if let Some(outcome) = outcome.take() {
                return outcome.map(|()| conn);
            }
        }
        Err(MuxLinkError::Stalled {
            during: "the device's answer to connect",
            timeout: SETUP_TIMEOUT,
        })
    }

    fn bridge(
        &mut self,
        conn: ConnId,
        mut to_device: mpsc::Receiver<Vec<u8>>,
        from_device: &mpsc::UnboundedSender<Vec<u8>>,
    ) -> Result<(), MuxLinkError> {
        let mut pending: Vec<u8> = Vec::new();
        let mut client_gone = false;
        let mut closed = false;
        loop {
            // Client → device, while the send buffer has room.
            while !client_gone && pending.len() < READ_CHUNK {
                match to_device.try_recv() {
                    Ok(bytes) => pending.extend_from_slice(&bytes),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => client_gone = true,
                }
            }
            if !pending.is_empty() && !closed {
                let n = self.link.send(conn, &pending)?;
                pending.drain(..n.min(pending.len()));
            }
            if client_gone && pending.is_empty() {
                let _ = self.link.close(conn);
                return self.flush();
            }
            // Device → client.
            loop {
                match self.link.read(conn, READ_CHUNK) {
                    Ok(Some(bytes)) => {
                        if from_device.send(bytes.to_vec()).is_err() {
                            let _ = self.link.close(conn);
                            return self.flush();
                        }
                    }
                    Ok(None) => break,
                    Err(_) if closed => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            if closed {
                return Ok(());
            }
            let mut failed = None;
            self.step(&mut |e| match e {
                Event::Closed { conn: c, .. } if c == conn => closed = true,
                Event::Failed(e) => failed = Some(e),
                _ => {}
            })?;
            if let Some(e) = failed {
                return Err(MuxLinkError::Link(e));
            }
        }
    }
}
