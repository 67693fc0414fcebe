//! The host side of the mux link to one device.

use std::time::Instant;

use bytes::Bytes;

use crate::header::HeaderVersion;
use crate::mux::{Config, ConnId, Core, Event, LinkError, Role, Stats, StreamError};

/// The host's end of the mux link with one device: the VERSION/SETUP handshake, then many
/// TCP-like connections to device ports. Sans-IO, in the style of `quinn-proto`: feed it the
/// bytes read from bulk IN with [`Link::handle_input`], write what [`Link::poll_transmit`]
/// returns to bulk OUT (one mux packet each), react to [`Link::poll_event`], and call
/// [`Link::handle_timeout`] when [`Link::poll_timeout`] says so.
///
/// The VERSION packet that opens the handshake is queued by [`Link::new`]. With a v2
/// device the host then sends SETUP with `tx_seq = 0, rx_seq = 0xFFFF`, counts `tx_seq` up
/// by one per packet, and, as usbmuxd does, copies the `rx_seq` field of each header it
/// receives into the `rx_seq` it sends.
///
/// Connections: [`Link::connect`] is allowed once `Event::Ready` has been seen. Data the
/// device sends is acknowledged as the application [`Link::read`]s it (usbmuxd's rule), with
/// a constant advertised window of `Config::recv_window`; a device that sends beyond it gets
/// its connection reset with [`crate::ConnectionError::WindowOverflow`].
///
/// Memory held stays bounded whatever the device sends: about twice `recv_window` plus twice
/// `send_buffer` per connection, and fixed caps on queued events and RSTs (see [`Stats`]).
#[derive(Debug)]
pub struct Link {
    core: Core,
}

impl Link {
    /// A link with default [`Config`]; the VERSION request is waiting in `poll_transmit`.
    pub fn new(now: Instant) -> Link {
        Link::with_config(Config::default(), now)
    }

    /// A link with explicit tunables.
    pub fn with_config(config: Config, now: Instant) -> Link {
        Link {
            core: Core::new(Role::Host, config, now),
        }
    }

    /// The header layout in use once the handshake is done (`None` before, or when dead).
    pub fn header_version(&self) -> Option<HeaderVersion> {
        self.core.header_version()
    }

    /// The error that killed the link, if it is dead.
    pub fn error(&self) -> Option<&LinkError> {
        self.core.error()
    }

    /// What was dropped to keep memory bounded against a misbehaving device.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Bytes read from bulk IN (any cut: several packets or part of one).
    ///
    /// An `Err` means the whole link is lost (bad magic, impossible length, unsupported
    /// version); every connection gets a `Closed { reason: LinkLost }` event.
    /// Problems confined to one connection are `Closed { reason: Error(..) }` events instead.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), LinkError> {
        self.core.handle_input(bytes, now)
    }

    /// The next mux packet to write to bulk OUT.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.core.poll_transmit()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// When [`Link::handle_timeout`] must be called next, if ever: a deferred ACK, the
    /// handshake deadline (`Config::handshake_timeout` after [`Link::new`]) or a connect
    /// deadline (`Config::connect_timeout` after [`Link::connect`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Sends the deferred ACKs that are due, gives up connects the device did not answer
    /// in time (`Event::ConnectTimedOut`), and fails the link if the handshake is overdue
    /// (`Event::Failed(LinkError::HandshakeTimeout { .. })`, also in [`Link::error`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now)
    }

    /// Opens a connection to device port `dport` (sends SYN). The answer comes as
    /// `Event::Connected` or `Event::Refused`. Data may be sent before the answer; it
    /// leaves once the connection is up.
    pub fn connect(&mut self, dport: u16, now: Instant) -> Result<ConnId, StreamError> {
        self.core.connect(dport, now)
    }

    /// Queues `data` on `conn`; returns how many bytes were taken (fewer than offered when
    /// the send buffer is full: wait for `Event::Writable`). Queued bytes leave in packets of
    /// at most 49116 bytes, and never beyond the window the device advertised.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, StreamError> {
        self.core.send(conn, data)
    }

    /// How many bytes `send` would take now.
    pub fn send_capacity(&self, conn: ConnId) -> Result<usize, StreamError> {
        self.core.send_capacity(conn)
    }

    /// Bytes sent on `conn` that the device has not acknowledged yet: queued here, or on
    /// their way. A connection is closed gracefully once this is 0, since [`Link::close`]
    /// (an RST, as usbmux has no FIN) drops what is still queued.
    pub fn unacknowledged(&self, conn: ConnId) -> Result<usize, StreamError> {
        self.core.unacknowledged(conn)
    }

    /// Up to `max` received bytes (`Ok(None)` when none are waiting, and always when `max`
    /// is 0: nothing is read then). Reading is what acknowledges data to the device, which
    /// opens its window again.
    pub fn read(&mut self, conn: ConnId, max: usize) -> Result<Option<Bytes>, StreamError> {
        self.core.read(conn, max)
    }

    /// Closes `conn` with an RST; unsent and unread data is dropped. Closing a connection
    /// that is already gone is not an error.
    pub fn close(&mut self, conn: ConnId) -> Result<(), StreamError> {
        self.core.close(conn, "closed by host")
    }
}
