//! The device side of the mux link: what an iPhone does on its end of the USB pipes.
//!
//! Used by the simulated phone (and the conversation tests): it answers VERSION, takes
//! SETUP, accepts SYNs on listening ports up to `max_connections` (and resets the others),
//! and carries data with the same windows and acknowledgements as the host side.

use std::time::Instant;

use bytes::Bytes;

use crate::header::HeaderVersion;
use crate::message::Control;
use crate::mux::{Config, ConnId, Core, Event, LinkError, Role, Stats, StreamError};

/// Device-side tunables.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Mux version answered to the host's VERSION: 2 (v2 headers after SETUP) or 1.
    pub major: u32,
    /// Minor version answered.
    pub minor: u32,
    /// Connections held at once (open, or closed with data still unread); SYNs beyond it
    /// are refused with RST. Default 64.
    pub max_connections: usize,
    /// Windows, buffers and ACK timing (shared with the host side; the handshake and
    /// connect timeouts are host-only and ignored here).
    pub link: Config,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            major: 2,
            minor: 0,
            max_connections: 64,
            link: Config::default(),
        }
    }
}

/// The device's end of a mux link. Same sans-IO shape as [`crate::Link`]; bytes from the
/// host go to [`Device::handle_input`], and [`Device::poll_transmit`] yields what the
/// device writes to its bulk IN endpoint.
#[derive(Debug)]
pub struct Device {
    core: Core,
}

impl Device {
    /// A device waiting for the host's VERSION.
    pub fn new(config: DeviceConfig, now: Instant) -> Device {
        let role = Role::Device {
            major: config.major,
            minor: config.minor,
            max_connections: config.max_connections,
        };
        Device {
            core: Core::new(role, config.link, now),
        }
    }

    /// Header layout once the handshake is complete.
    pub fn header_version(&self) -> Option<HeaderVersion> {
        self.core.header_version()
    }

    /// The error that killed the link, if it is dead.
    pub fn error(&self) -> Option<&LinkError> {
        self.core.error()
    }

    /// What was dropped or refused to keep memory bounded against a misbehaving host.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Accept connections to `port` (as lockdownd does on 62078).
    pub fn listen(&mut self, port: u16) {
        self.core.listen(port)
    }

    /// Stop accepting connections to `port` (existing ones live on).
    pub fn unlisten(&mut self, port: u16) {
        self.core.unlisten(port)
    }

    /// Bytes the host wrote to bulk OUT.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), LinkError> {
        self.core.handle_input(bytes, now)
    }

    /// The next packet for the host.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.core.poll_transmit()
    }

    /// The next event (`Ready`, `Accepted`, `Readable`, `Writable`, `Closed`...).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// When [`Device::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Sends deferred ACKs that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now)
    }

    /// Queues data for the host; see [`crate::Link::send`].
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, StreamError> {
        self.core.send(conn, data)
    }

    /// How many bytes `send` would take now.
    pub fn send_capacity(&self, conn: ConnId) -> Result<usize, StreamError> {
        self.core.send_capacity(conn)
    }

    /// Up to `max` bytes received from the host (`Ok(None)` when none wait, or `max` is 0).
    pub fn read(&mut self, conn: ConnId, max: usize) -> Result<Option<Bytes>, StreamError> {
        self.core.read(conn, max)
    }

    /// Resets `conn`, with `reason` as the RST text.
    pub fn reset(&mut self, conn: ConnId, reason: &str) -> Result<(), StreamError> {
        self.core.close(conn, reason)
    }

    /// Sends a CONTROL message (log line) to the host.
    pub fn send_control(&mut self, control: &Control) {
        self.core.send_control(control)
    }
}
