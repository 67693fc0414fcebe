//! The usbmux interface of a phone in normal or restore mode: a `usbmux::device::Device` bound
//! to bulk OUT 0x04 / bulk IN 0x85 of configurations 3 and 4.
//!
//! Bytes the host writes go to the mux; each bulk IN returns (part of) one mux packet, as a
//! USB transfer ends at a short packet; with nothing to send, a read times out.

use std::collections::VecDeque;
use std::time::Instant;

use usb::ErrorKind;
use usbmux::device::{Device, DeviceConfig};
use usbmux::{Event, Header, HeaderVersion, Protocol, TcpHeader, TCP_HEADER_LEN};

use crate::descriptors::{MUX_IN, MUX_INTERFACE, MUX_OUT};
use crate::phone::Core;

/// lockdownd's port (and restored's, in restore mode).
pub const LOCKDOWN_PORT: u16 = 62078;

/// ASR's port in restore mode.
pub const ASR_PORT: u16 = 12345;

/// What one bulk OUT transfer carries for a TCP port, read without touching the mux state
/// (fault points are decided before the mux sees the bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPeek<'a> {
    /// Destination (device) port.
    pub dport: u16,
    /// Source (host) port.
    pub sport: u16,
    /// Stream bytes in the packet.
    pub payload: &'a [u8],
}

/// Reads the TCP header of the mux packet at the start of `data` (hosts write one mux packet
/// per transfer). `None` before the handshake, for non-TCP packets, or for bytes that do not
/// parse.
pub fn peek_tcp(data: &[u8], version: Option<HeaderVersion>) -> Option<TcpPeek<'_>> {
    let version = version?;
    let header = Header::decode(data, version).ok()?;
    if header.protocol != Protocol::Tcp {
        return None;
    }
    let start = header.header_len();
    let end = usize::try_from(header.length).ok()?.min(data.len());
    let tcp = data.get(start..end)?;
    let th = TcpHeader::decode(tcp).ok()?;
    Some(TcpPeek {
        dport: th.dport,
        sport: th.sport,
        payload: tcp.get(TCP_HEADER_LEN..).unwrap_or(&[]),
    })
}

/// The mux on its two bulk endpoints.
#[derive(Debug)]
pub struct MuxPort {
    device: Box<Device>,
    outgoing: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
}

impl MuxPort {
    /// A mux waiting for the host's VERSION, listening on `ports`.
    pub fn new(ports: &[u16], now: Instant) -> Self {
        let mut device = Box::new(Device::new(DeviceConfig::default(), now));
        for p in ports {
            device.listen(*p);
        }
        Self {
            device,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The mux device (to send, read, reset connections).
    pub fn device(&mut self) -> &mut Device {
        &mut self.device
    }

    /// Header layout once the handshake is done.
    pub fn header_version(&self) -> Option<HeaderVersion> {
        self.device.header_version()
    }

    /// Whether everything the mux has to say has been handed to the host (nothing queued for
    /// bulk IN).
    pub fn flushed(&mut self) -> bool {
        while let Some(p) = self.device.poll_transmit() {
            self.outgoing.push_back(p);
        }
        self.outgoing.is_empty()
    }

    /// Bytes queued for bulk IN (every packet the mux has to send, pulled out of it).
    pub fn pending_in(&mut self) -> usize {
        self.flushed();
        self.outgoing.iter().map(Vec::len).sum()
    }

    /// The next mux event (`Accepted`, `Readable`, ...).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front().or_else(|| self.device.poll_event())
    }

    fn usable(core: &Core) -> bool {
        matches!(core.active_configuration, 3 | 4)
    }

    /// Bulk OUT: bytes for the mux.
    pub fn bulk_out(
        &mut self,
        core: &Core,
        endpoint: u8,
        data: &[u8],
        now: Instant,
    ) -> Result<usize, ErrorKind> {
        if endpoint != MUX_OUT || !Self::usable(core) {
            return Err(ErrorKind::NotFound);
        }
        if !data.is_empty() {
            // A mux protocol error kills the mux, not the USB transfer.
            let _ = self.device.handle_input(data, now);
        }
        Ok(data.len())
    }

    /// Bulk IN: the next mux packet (or its next part).
    pub fn bulk_in(
        &mut self,
        core: &Core,
        endpoint: u8,
        length: usize,
    ) -> Result<Vec<u8>, ErrorKind> {
        if endpoint != MUX_IN || !Self::usable(core) {
            return Err(ErrorKind::NotFound);
        }
        if self.outgoing.is_empty() {
            if let Some(p) = self.device.poll_transmit() {
                self.outgoing.push_back(p);
            }
        }
        let Some(mut packet) = self.outgoing.pop_front() else {
            return Err(ErrorKind::Timeout);
        };
        if packet.len() > length {
            let rest = packet.split_off(length);
            self.outgoing.push_front(rest);
        }
        Ok(packet)
    }

    /// When the mux's timers (delayed ACKs) are due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.device.poll_timeout()
    }

    /// Runs the mux's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.device.handle_timeout(now)
    }

    /// The interface number the mux lives on.
    pub fn interface() -> u8 {
        MUX_INTERFACE
    }
}
