//! The engine behind [`crate::Link`] (host side) and [`crate::device::Device`] (device side):
//! handshake, v2 sequence numbers, and the TCP-like connections with their windows.
//!
//! Wire rules followed here (from usbmuxd's behaviour):
//! - connect is SYN (seq 0, ack 0) → SYN|ACK → ACK; anything else answering a SYN is a refusal;
//! - closes are RST (never FIN), optionally carrying a reason text as payload;
//! - a receiver acknowledges what its application has *read*, and advertises a constant
//!   window (`win >> 8` on the wire), so a sender may have at most `window` bytes beyond the
//!   last acknowledgement; the receiver checks that and resets a connection that overflows it;
//! - acknowledgements ride on data packets, or go out alone when `ack_delay` (30 ms) expires,
//!   or at once when half a window has been read;
//! - USB is reliable: there is no retransmission, a sequence gap is a protocol error.
//!
//! Memory is bounded against a hostile peer: received data is copied into one contiguous
//! buffer per connection (at most twice the window is allocated), RSTs answering stray
//! segments are coalesced per port pair and capped, `Discarded` and `Readable` events are
//! coalesced, queued CONTROL text is capped (oldest dropped), and the device side accepts at
//! most `max_connections`. What was dropped is counted in [`Stats`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use crate::frame::{FrameReader, Packet};
use crate::header::{Header, HeaderError, HeaderVersion, Protocol, Sequence, MAX_PACKET};
use crate::message::{
    Control, Message, MessageError, Setup, TcpFlags, TcpHeader, Version, TCP_HEADER_LEN,
};

/// Identifies one connection on a link (never reused on that link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Tunables of a link. The defaults are usbmuxd's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Receive window advertised on every connection (bytes; sent as `>> 8`). Default 131072.
    pub recv_window: u32,
    /// Bytes `send` accepts per connection before the peer's window lets them out.
    /// Default 262144.
    pub send_buffer: usize,
    /// Longest an acknowledgement of read data waits for a data packet to ride on.
    /// Default 30 ms.
    pub ack_delay: Duration,
    /// Largest packet sent, header included. Default 49152 (TCP payload 49116 with v2).
    pub max_packet: usize,
    /// Whether RSTs this side sends carry a reason text. Default true.
    pub reset_reasons: bool,
    /// (host) How long the device may take to answer VERSION before the link fails with
    /// [`LinkError::HandshakeTimeout`]. Default 5 s. The device side waits for its host
    /// as long as it takes.
    pub handshake_timeout: Duration,
    /// (host) How long the device may take to answer a SYN before the connection is given
    /// up with [`Event::ConnectTimedOut`]. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            recv_window: 131072,
            send_buffer: 262144,
            ack_delay: Duration::from_millis(30),
            max_packet: MAX_PACKET,
            reset_reasons: true,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// At most this many RSTs answering segments for no connection wait to be sent; more are
/// dropped (and one per port pair is enough).
pub(crate) const MAX_PENDING_RESETS: usize = 256;
/// At most this many `Event::Discarded` wait to be polled; more are only counted.
pub(crate) const MAX_PENDING_DISCARDS: usize = 64;
/// At most this many bytes of CONTROL text wait to be polled; the oldest are dropped.
pub(crate) const MAX_CONTROL_BYTES: usize = 256 * 1024;
/// At most this many `Event::Control` wait to be polled; the oldest are dropped.
pub(crate) const MAX_CONTROL_EVENTS: usize = 1024;
/// (device) While this many packets wait in the output queue (bulk IN is not being
/// drained), new connections are refused rather than answered with a SYN|ACK.
pub(crate) const MAX_OUT_BACKLOG: usize = 1024;
/// (device) While this many events wait to be polled, new connections are refused too
/// (each connection a host opens and resets leaves an `Accepted` and a `Closed`).
pub(crate) const MAX_EVENT_BACKLOG: usize = 4096;
/// Smallest allocation of a connection's byte queues.
const MIN_QUEUE_ALLOC: usize = 4096;

/// What this side dropped or refused to stay within its memory bounds, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets discarded without harm (each one is, or would have been, an
    /// [`Event::Discarded`]).
    pub discarded: u64,
    /// [`Event::Discarded`] not queued because 64 were already waiting to be polled.
    pub discard_events_dropped: u64,
    /// [`Event::Control`] dropped, oldest first, because more than 256 KiB of text or 1024
    /// messages were waiting to be polled.
    pub controls_dropped: u64,
    /// RSTs for segments to no connection that were not queued: one for the same port pair
    /// was already waiting, or 256 were.
    pub resets_coalesced: u64,
    /// (device) SYNs to a listening port refused with RST: `max_connections` reached, or
    /// the output or event queue backed up (1024 packets, 4096 events).
    pub connections_refused: u64,
    /// (device) Times a host's new VERSION restarted the mux (every connection dropped).
    pub restarts: u64,
}

/// Something that happened on the link; drain with `poll_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The VERSION handshake finished; `version` is the header layout now in use.
    Ready {
        /// Header layout.
        version: HeaderVersion,
    },
    /// (host) The device accepted a connection.
    Connected {
        /// Which.
        conn: ConnId,
    },
    /// (host) The device answered the SYN with something other than SYN|ACK.
    Refused {
        /// Which.
        conn: ConnId,
        /// Device port asked for.
        port: u16,
        /// The RST text from the device, or what came instead of SYN|ACK.
        reason: String,
    },
    /// (device) The host opened a connection to a listening port.
    Accepted {
        /// Which.
        conn: ConnId,
        /// Local (device) port.
        port: u16,
    },
    /// Data is waiting on `conn`; take it with `read`.
    Readable {
        /// Which.
        conn: ConnId,
    },
    /// `conn`'s send buffer has room again after a short `send`.
    Writable {
        /// Which.
        conn: ConnId,
    },
    /// The connection is over. Data already received stays readable until drained.
    Closed {
        /// Which.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A CONTROL message from the peer.
    Control(Control),
    /// A packet that was dropped without harming the link. At most 64 wait to be polled;
    /// the rest are only counted in [`Stats::discarded`].
    Discarded(Discard),
    /// (host) The device did not answer the SYN within `Config::connect_timeout`; the
    /// connection is gone (an RST was sent in case the SYN arrives late).
    ConnectTimedOut {
        /// Which.
        conn: ConnId,
        /// Device port asked for.
        port: u16,
    },
    /// The whole link failed (also returned by the `handle_input` call that caused it, if
    /// any); every open connection gets `Closed { reason: LinkLost }`.
    Failed(LinkError),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent RST; `reason` is the text it carried (may be empty).
    Reset {
        /// RST payload text.
        reason: String,
    },
    /// The peer broke the protocol on this connection; this side sent RST.
    Error(ConnectionError),
    /// The whole link failed.
    LinkLost,
}

/// A packet dropped without harm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discard {
    /// Protocol number not known; skipped by its length.
    UnknownProtocol {
        /// Protocol number.
        protocol: u32,
        /// Packet length.
        length: u32,
    },
    /// Payload too short for its protocol.
    Malformed {
        /// Protocol of the packet.
        protocol: Protocol,
        /// What was wrong.
        error: MessageError,
    },
    /// A packet that makes no sense in the current phase (e.g. TCP before the handshake).
    Unexpected {
        /// Protocol of the packet.
        protocol: Protocol,
        /// Phase of the link.
        phase: &'static str,
    },
    /// TCP for no known connection (answered with RST unless it was one).
    StrayTcp {
        /// Sender's port.
        sport: u16,
        /// Receiver's port.
        dport: u16,
        /// Flags.
        flags: TcpFlags,
    },
}

/// A protocol violation on one connection: the connection is reset, the link lives on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectionError {
    /// The peer sent more than the window this side advertised.
    #[error("peer overflowed the {window}-byte window on port {port}: {buffered} bytes unread, {received} more arrived")]
    WindowOverflow {
        /// Local port.
        port: u16,
        /// Advertised window.
        window: u32,
        /// Bytes held unread.
        buffered: usize,
        /// Bytes in the packet.
        received: usize,
    },
    /// Data did not start where the previous data ended (USB does not reorder).
    #[error("sequence gap on port {port}: expected seq {expected}, got {got}")]
    OutOfOrder {
        /// Local port.
        port: u16,
        /// Expected sequence number.
        expected: u32,
        /// Received.
        got: u32,
    },
    /// The peer acknowledged bytes never sent.
    #[error("peer acknowledged {ack} on port {port} but only {sent} was sent")]
    AckBeyondSent {
        /// Local port.
        port: u16,
        /// Ack received.
        ack: u32,
        /// Our next sequence number.
        sent: u32,
    },
    /// Flags that make no sense on an established connection.
    #[error("unexpected TCP flags {flags} on established connection (port {port})")]
    UnexpectedFlags {
        /// Local port.
        port: u16,
        /// Flags received.
        flags: TcpFlags,
    },
}

/// A failure of the whole link: every connection on it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LinkError {
    /// The packet stream cannot be cut into packets any more (bad magic, bad length...).
    #[error("mux framing lost: {0}")]
    Framing(#[from] HeaderError),
    /// The peer's VERSION is not 1 or 2.
    #[error("peer speaks mux version {major}.{minor}; only 1 and 2 are supported")]
    UnsupportedVersion {
        /// Major.
        major: u32,
        /// Minor.
        minor: u32,
    },
    /// The VERSION packet of the handshake is malformed.
    #[error("malformed VERSION in handshake: {0}")]
    BadVersion(MessageError),
    /// (host) The device did not answer VERSION in time.
    #[error("no VERSION answer from the device within {waited:?}")]
    HandshakeTimeout {
        /// `Config::handshake_timeout`.
        waited: Duration,
    },
    /// The link failed earlier; this is the original error.
    #[error("link is down: {0}")]
    Dead(Box<LinkError>),
}

/// Misuse of a connection id, or a connection that cannot take the call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamError {
    /// Never existed on this link.
    #[error("{0} does not exist on this link")]
    Unknown(ConnId),
    /// Existed, but is closed (and drained).
    #[error("{0} is closed")]
    Closed(ConnId),
    /// The handshake is not finished.
    #[error("the mux handshake is not finished")]
    NotReady,
    /// Every source port is in use.
    #[error("no free source port")]
    NoFreePort,
    /// The link failed.
    #[error("link is down: {0}")]
    LinkDown(LinkError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Host,
    Device {
        major: u32,
        minor: u32,
        max_connections: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Hello,
    AwaitSetup,
    Active,
    Dead(LinkError),
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Hello => "version handshake",
            Phase::AwaitSetup => "waiting for SETUP",
            Phase::Active => "active",
            Phase::Dead(_) => "dead",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    SynSent,
    Established,
    Closed,
}

#[derive(Debug)]
struct Conn {
    local: u16,
    remote: u16,
    state: ConnState,
    snd_nxt: u32,
    snd_una: u32,
    peer_window: u32,
    /// Bytes `send` took that have not left yet.
    queue: ByteQueue,
    blocked: bool,
    rcv_nxt: u32,
    rcv_ack: u32,
    acked: u32,
    /// Bytes received and not read yet.
    recv: ByteQueue,
    /// An `Event::Readable` for this connection waits to be polled.
    readable_pending: bool,
    ack_deadline: Option<Instant>,
    connect_deadline: Option<Instant>,
}

/// A FIFO of bytes in one contiguous buffer. Its allocation stays within twice the bound the
/// caller enforces on `len`, however the bytes arrive: in many
/// 1-byte pieces or few large ones. Reads hand out views (`split_to`), so the buffer is
/// reused in place once the reader drops them.
#[derive(Debug, Default)]
struct ByteQueue {
    buf: BytesMut,
}

impl ByteQueue {
    fn len(&self) -> usize {
        self.buf.len()
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends `data`; callers keep `len()` within `bound`.
    fn push(&mut self, data: &[u8], bound: usize) {
        if data.is_empty() {
            return;
        }
        let spare = self.buf.capacity() - self.buf.len();
        if spare < data.len() && !self.buf.try_reclaim(data.len()) {
            // Grow by doubling (amortised O(1) per byte) but never past twice the bound:
            // at that size a fresh buffer has room for at least `bound` more bytes, so the
            // copy below happens at most once per `bound` bytes received.
            let need = self.buf.len() + data.len();
            let limit = bound.saturating_mul(2).max(need);
            let cap = need
                .saturating_mul(2)
                .max(MIN_QUEUE_ALLOC)
                .min(limit)
                .max(need);
            let mut fresh = BytesMut::with_capacity(cap);
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        self.buf.extend_from_slice(data);
    }

    /// Takes up to `max` bytes from the front.
    fn take(&mut self, max: usize) -> Bytes {
        let n = max.min(self.buf.len());
        self.buf.split_to(n).freeze()
    }

    /// The first `n` bytes (fewer if fewer are held).
    fn front(&self, n: usize) -> &[u8] {
        self.buf.get(..n).unwrap_or(&self.buf)
    }

    /// Drops the first `n` bytes.
    fn advance(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.advance(n);
    }

    /// Drops everything and frees the buffer.
    fn clear(&mut self) {
        self.buf = BytesMut::new();
    }
}

impl Conn {
    fn new(local: u16, remote: u16, state: ConnState) -> Conn {
        Conn {
            local,
            remote,
            state,
            snd_nxt: 0,
            snd_una: 0,
            peer_window: 0,
            queue: ByteQueue::default(),
            blocked: false,
            rcv_nxt: 0,
            rcv_ack: 0,
            acked: 0,
            recv: ByteQueue::default(),
            readable_pending: false,
            ack_deadline: None,
            connect_deadline: None,
        }
    }

    fn sendable(&self, max_payload: usize) -> usize {
        if self.state != ConnState::Established {
            return 0;
        }
        let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
        let window = self.peer_window.saturating_sub(in_flight) as usize;
        window.min(max_payload).min(self.queue.len())
    }

    fn on_segment(
        &mut self,
        th: &TcpHeader,
        payload: &[u8],
        window: u32,
    ) -> Result<bool, ConnectionError> {
        let outstanding = self.snd_nxt.wrapping_sub(self.snd_una);
        let advance = th.ack.wrapping_sub(self.snd_una);
        if advance > outstanding {
            return Err(ConnectionError::AckBeyondSent {
                port: self.local,
                ack: th.ack,
                sent: self.snd_nxt,
            });
        }
        self.snd_una = th.ack;
        self.peer_window = th.window_bytes();
        if payload.is_empty() {
            return Ok(false);
        }
        if th.seq != self.rcv_nxt {
            return Err(ConnectionError::OutOfOrder {
                port: self.local,
                expected: self.rcv_nxt,
                got: th.seq,
            });
        }
        if self.recv.len().saturating_add(payload.len()) > window as usize {
            return Err(ConnectionError::WindowOverflow {
                port: self.local,
                window,
                buffered: self.recv.len(),
                received: payload.len(),
            });
        }
        // Lengths are at most a packet, far below u32::MAX.
        self.rcv_nxt = self.rcv_nxt.wrapping_add(payload.len() as u32);
        // Copied: a view would keep the frame reader's whole buffer alive.
        self.recv.push(payload, window as usize);
        Ok(true)
    }
}

#[derive(Debug)]
struct Outgoing {
    protocol: Protocol,
    body: Vec<u8>,
    force_v1: bool,
}

/// The sans-IO mux engine, host or device role.
#[derive(Debug)]
pub(crate) struct Core {
    role: Role,
    config: Config,
    phase: Phase,
    reader: FrameReader,
    hv: HeaderVersion,
    tx_seq: u16,
    rx_seq: u16,
    out: VecDeque<Outgoing>,
    /// RSTs answering segments for no connection, at most one per port pair.
    resets: VecDeque<AnonReset>,
    reset_pairs: HashSet<(u16, u16)>,
    conns: BTreeMap<ConnId, Conn>,
    ports: HashMap<(u16, u16), ConnId>,
    local_ports: HashMap<u16, usize>,
    listeners: HashSet<u16>,
    next_id: u64,
    next_sport: u16,
    cursor: Option<ConnId>,
    /// Events but `Control`, each with its place in the order of all events.
    events: VecDeque<(u64, Event)>,
    /// `Control` events, kept apart so the oldest can be dropped.
    controls: VecDeque<(u64, Control)>,
    control_bytes: usize,
    event_seq: u64,
    pending_discards: usize,
    handshake_deadline: Option<Instant>,
    stats: Stats,
    now: Instant,
}

/// Why an RST goes to a port pair with no connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetWhy {
    /// A segment for no known connection.
    NoConnection,
    /// (device) A SYN to a port nothing listens on.
    NotListening,
    /// (device) A SYN beyond `max_connections` or while output is backed up.
    TooManyConnections,
}

#[derive(Debug, Clone, Copy)]
struct AnonReset {
    sport: u16,
    dport: u16,
    ack: u32,
    why: ResetWhy,
}

impl Core {
    pub(crate) fn new(role: Role, mut config: Config, now: Instant) -> Core {
        let min_packet = crate::header::V2_LEN + TCP_HEADER_LEN + 1;
        config.max_packet = config
            .max_packet
            .clamp(min_packet, crate::header::MAX_INCOMING_PACKET);
        let mut core = Core {
            role,
            config,
            phase: Phase::Hello,
            reader: FrameReader::new(),
            hv: HeaderVersion::V1,
            tx_seq: 0,
            rx_seq: 0,
            out: VecDeque::new(),
            resets: VecDeque::new(),
            reset_pairs: HashSet::new(),
            conns: BTreeMap::new(),
            ports: HashMap::new(),
            local_ports: HashMap::new(),
            listeners: HashSet::new(),
            next_id: 0,
            next_sport: 1,
            cursor: None,
            events: VecDeque::new(),
            controls: VecDeque::new(),
            control_bytes: 0,
            event_seq: 0,
            pending_discards: 0,
            handshake_deadline: None,
            stats: Stats::default(),
            now,
        };
        if role == Role::Host {
            core.handshake_deadline = now.checked_add(core.config.handshake_timeout);
            core.out.push_back(Outgoing {
                protocol: Protocol::Version,
                body: Version::HOST.encode().to_vec(),
                force_v1: true,
            });
        }
        core
    }

    pub(crate) fn header_version(&self) -> Option<HeaderVersion> {
        (self.phase == Phase::Active).then_some(self.hv)
    }

    pub(crate) fn error(&self) -> Option<&LinkError> {
        match &self.phase {
            Phase::Dead(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    fn max_payload(&self) -> usize {
        self.config
            .max_packet
            .saturating_sub(self.hv.len() + TCP_HEADER_LEN)
    }

    // ---- input -------------------------------------------------------------------------

    pub(crate) fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), LinkError> {
        self.now = now;
        if let Phase::Dead(e) = &self.phase {
            return Err(LinkError::Dead(Box::new(e.clone())));
        }
        self.reader.push(bytes);
        loop {
            // A host that (re)starts sends VERSION in v1 framing whatever the link was doing;
            // a phone restarts its mux on it, so the device side reads it as such.
            let hv = match self.role {
                Role::Device { .. }
                    if self.hv == HeaderVersion::V2 && self.reader.starts_with_version() =>
                {
                    HeaderVersion::V1
                }
                _ => self.hv,
            };
            match self.reader.next_packet(hv) {
                Ok(None) => return Ok(()),
                Ok(Some(p)) => self.handle_packet(p)?,
                Err(HeaderError::UnknownProtocol { protocol, length }) => {
                    self.discard(Discard::UnknownProtocol { protocol, length });
                }
                Err(e) => return Err(self.fail(LinkError::Framing(e))),
            }
        }
    }

    fn fail(&mut self, e: LinkError) -> LinkError {
        self.phase = Phase::Dead(e.clone());
        self.out.clear();
        self.resets.clear();
        self.reset_pairs.clear();
        self.ports.clear();
        self.local_ports.clear();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let mut remove = false;
            if let Some(c) = self.conns.get_mut(&id) {
                if c.state != ConnState::Closed {
                    c.state = ConnState::Closed;
                    c.queue.clear();
                    self.events.push_back((
                        self.event_seq,
                        Event::Closed {
                            conn: id,
                            reason: CloseReason::LinkLost,
                        },
                    ));
                    self.event_seq += 1;
                }
                remove = c.recv.is_empty();
            }
            if remove {
                self.conns.remove(&id);
            }
        }
        self.push_event(Event::Failed(e.clone()));
        e
    }

    /// (device) A new VERSION from the host: every connection of the old mux is gone (the
    /// host that sent it knows none of them) and the handshake starts again.
    fn restart(&mut self) {
        self.stats.restarts += 1;
        self.out.clear();
        self.resets.clear();
        self.reset_pairs.clear();
        self.ports.clear();
        self.local_ports.clear();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.remove(&id) {
                if c.state != ConnState::Closed {
                    self.push_event(Event::Closed {
                        conn: id,
                        reason: CloseReason::LinkLost,
                    });
                }
            }
        }
        self.cursor = None;
        self.hv = HeaderVersion::V1;
        self.tx_seq = 0;
        self.rx_seq = 0;
        self.phase = Phase::Hello;
    }

    fn push_event(&mut self, e: Event) {
        self.events.push_back((self.event_seq, e));
        self.event_seq += 1;
    }

    fn discard(&mut self, d: Discard) {
        self.stats.discarded += 1;
        if self.pending_discards >= MAX_PENDING_DISCARDS {
            self.stats.discard_events_dropped += 1;
            return;
        }
        self.pending_discards += 1;
        self.push_event(Event::Discarded(d));
    }

    /// Queues a CONTROL event, dropping the oldest ones beyond the caps.
    fn push_control(&mut self, c: Control) {
        self.control_bytes += c.text.len();
        self.controls.push_back((self.event_seq, c));
        self.event_seq += 1;
        while self.control_bytes > MAX_CONTROL_BYTES || self.controls.len() > MAX_CONTROL_EVENTS {
            let Some((_, old)) = self.controls.pop_front() else {
                break;
            };
            self.control_bytes -= old.text.len();
            self.stats.controls_dropped += 1;
        }
    }

    fn readable(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.readable_pending {
            c.readable_pending = true;
            self.push_event(Event::Readable { conn: id });
        }
    }

    fn handle_packet(&mut self, p: Packet) -> Result<(), LinkError> {
        if let Some(seq) = p.header.seq {
            // usbmuxd (host) copies the rx_seq field of what it receives; a device answers
            // with the last tx_seq it saw from the host.
            self.rx_seq = match self.role {
                Role::Host => seq.rx_seq,
                Role::Device { .. } => seq.tx_seq,
            };
        }
        let protocol = p.header.protocol;
        let msg = match Message::decode(protocol, p.payload) {
            Ok(m) => m,
            Err(error) => {
                if protocol == Protocol::Version && self.phase == Phase::Hello {
                    return Err(self.fail(LinkError::BadVersion(error)));
                }
                self.discard(Discard::Malformed { protocol, error });
                return Ok(());
            }
        };
        match msg {
            Message::Version(v) => self.on_version(v),
            Message::Setup(_) => {
                if matches!(self.role, Role::Device { .. }) && self.phase == Phase::AwaitSetup {
                    self.phase = Phase::Active;
                    self.push_event(Event::Ready {
                        version: HeaderVersion::V2,
                    });
                } else {
                    let phase = self.phase.name();
                    self.discard(Discard::Unexpected { protocol, phase });
                }
                Ok(())
            }
            Message::Control(c) => {
                self.push_control(c);
                Ok(())
            }
            Message::Tcp(th, data) => {
                if self.phase == Phase::Active {
                    self.on_tcp(th, data);
                } else {
                    let phase = self.phase.name();
                    self.discard(Discard::Unexpected { protocol, phase });
                }
                Ok(())
            }
        }
    }

    fn on_version(&mut self, v: Version) -> Result<(), LinkError> {
        if matches!(self.role, Role::Device { .. })
            && matches!(self.phase, Phase::AwaitSetup | Phase::Active)
        {
            self.restart();
        }
        if self.phase != Phase::Hello {
            let phase = self.phase.name();
            self.discard(Discard::Unexpected {
                protocol: Protocol::Version,
                phase,
            });
            return Ok(());
        }
        match self.role {
            Role::Host => match v.major {
                1 => {
                    self.phase = Phase::Active;
                    self.handshake_deadline = None;
                    self.push_event(Event::Ready {
                        version: HeaderVersion::V1,
                    });
                }
                2 => {
                    self.hv = HeaderVersion::V2;
                    self.tx_seq = 0;
                    self.rx_seq = 0xFFFF;
                    self.out.push_back(Outgoing {
                        protocol: Protocol::Setup,
                        body: Setup::default().encode().to_vec(),
                        force_v1: false,
                    });
                    self.phase = Phase::Active;
                    self.handshake_deadline = None;
                    self.push_event(Event::Ready {
                        version: HeaderVersion::V2,
                    });
                }
                major => {
                    return Err(self.fail(LinkError::UnsupportedVersion {
                        major,
                        minor: v.minor,
                    }))
                }
            },
            Role::Device { major, minor, .. } => {
                self.out.push_back(Outgoing {
                    protocol: Protocol::Version,
                    body: Version {
                        major,
                        minor,
                        pad: 0,
                    }
                    .encode()
                    .to_vec(),
                    force_v1: true,
                });
                if major >= 2 {
                    self.hv = HeaderVersion::V2;
                    self.tx_seq = 0;
                    self.phase = Phase::AwaitSetup;
                } else {
                    self.phase = Phase::Active;
                    self.push_event(Event::Ready {
                        version: HeaderVersion::V1,
                    });
                }
            }
        }
        Ok(())
    }

    fn on_tcp(&mut self, th: TcpHeader, data: Bytes) {
        let key = (th.dport, th.sport);
        let Some(&id) = self.ports.get(&key) else {
            self.on_stray(th, data);
            return;
        };
        let window = self.config.recv_window;
        let Some(conn) = self.conns.get_mut(&id) else {
            self.ports.remove(&key);
            return;
        };
        match conn.state {
            ConnState::SynSent => {
                if th.flags == TcpFlags::SYN_ACK {
                    conn.state = ConnState::Established;
                    conn.snd_una = conn.snd_nxt;
                    conn.peer_window = th.window_bytes();
                    conn.rcv_nxt = th.seq.wrapping_add(1);
                    conn.rcv_ack = conn.rcv_nxt;
                    conn.connect_deadline = None;
                    self.queue_tcp(id, TcpFlags::ACK, Vec::new());
                    self.push_event(Event::Connected { conn: id });
                } else {
                    let port = conn.remote;
                    let was_rst = th.flags.contains(TcpFlags::RST);
                    let reason = if was_rst {
                        reason_text(&data)
                    } else {
                        format!("device answered SYN with {}", th.flags)
                    };
                    if !was_rst {
                        self.queue_rst_for(id, "connection refused");
                    }
                    self.remove_conn(id);
                    self.push_event(Event::Refused {
                        conn: id,
                        port,
                        reason,
                    });
                }
            }
            ConnState::Established => {
                if th.flags.contains(TcpFlags::RST) {
                    self.close_by_peer(
                        id,
                        CloseReason::Reset {
                            reason: reason_text(&data),
                        },
                    );
                    return;
                }
                let bad_flags = TcpFlags(TcpFlags::SYN.0 | TcpFlags::FIN.0);
                if !th.flags.contains(TcpFlags::ACK) || th.flags.0 & bad_flags.0 != 0 {
                    let e = ConnectionError::UnexpectedFlags {
                        port: conn.local,
                        flags: th.flags,
                    };
                    self.reset_with_error(id, e);
                    return;
                }
                match conn.on_segment(&th, &data, window) {
                    Ok(true) => self.readable(id),
                    Ok(false) => {}
                    Err(e) => self.reset_with_error(id, e),
                }
            }
            ConnState::Closed => {}
        }
    }

    fn on_stray(&mut self, th: TcpHeader, data: Bytes) {
        let is_syn = th.flags.contains(TcpFlags::SYN)
            && !th.flags.contains(TcpFlags::ACK)
            && !th.flags.contains(TcpFlags::RST);
        if let (
            Role::Device {
                max_connections, ..
            },
            true,
        ) = (self.role, is_syn)
        {
            let ack = th.seq.wrapping_add(1);
            if !self.listeners.contains(&th.dport) {
                self.queue_anon_rst(th.dport, th.sport, ack, ResetWhy::NotListening);
            } else if self.conns.len() >= max_connections
                || self.out.len() >= MAX_OUT_BACKLOG
                || self.events.len() >= MAX_EVENT_BACKLOG
            {
                self.stats.connections_refused += 1;
                self.queue_anon_rst(th.dport, th.sport, ack, ResetWhy::TooManyConnections);
            } else {
                self.accept(th);
            }
            return;
        }
        drop(data);
        if !th.flags.contains(TcpFlags::RST) {
            self.queue_anon_rst(th.dport, th.sport, th.seq, ResetWhy::NoConnection);
        }
        self.discard(Discard::StrayTcp {
            sport: th.sport,
            dport: th.dport,
            flags: th.flags,
        });
    }

    fn accept(&mut self, th: TcpHeader) {
        let id = self.alloc_id();
        let mut conn = Conn::new(th.dport, th.sport, ConnState::Established);
        conn.snd_nxt = 1;
        conn.snd_una = 0;
        conn.peer_window = th.window_bytes();
        conn.rcv_nxt = th.seq.wrapping_add(1);
        conn.rcv_ack = conn.rcv_nxt;
        self.insert_conn(id, conn);
        let port = th.dport;
        let syn_ack = TcpHeader {
            sport: th.dport,
            dport: th.sport,
            seq: 0,
            ack: th.seq.wrapping_add(1),
            flags: TcpFlags::SYN_ACK,
            window: TcpHeader::window_field(self.config.recv_window),
        };
        if let Some(c) = self.conns.get_mut(&id) {
            c.acked = c.rcv_ack;
        }
        self.push_tcp(syn_ack, Vec::new());
        self.push_event(Event::Accepted { conn: id, port });
    }

    // ---- connection bookkeeping -----------------------------------------------------------

    fn alloc_id(&mut self) -> ConnId {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        id
    }

    fn insert_conn(&mut self, id: ConnId, conn: Conn) {
        self.ports.insert((conn.local, conn.remote), id);
        *self.local_ports.entry(conn.local).or_insert(0) += 1;
        self.conns.insert(id, conn);
    }

    /// Takes the connection off the wire (ports maps) without dropping buffered data.
    fn unwire(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(&id) else { return };
        let key = (c.local, c.remote);
        if self.ports.get(&key) == Some(&id) {
            self.ports.remove(&key);
            if let Some(n) = self.local_ports.get_mut(&key.0) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.local_ports.remove(&key.0);
                }
            }
        }
    }

    fn remove_conn(&mut self, id: ConnId) {
        self.unwire(id);
        self.conns.remove(&id);
    }

    fn close_by_peer(&mut self, id: ConnId, reason: CloseReason) {
        self.unwire(id);
        let mut drained = true;
        if let Some(c) = self.conns.get_mut(&id) {
            c.state = ConnState::Closed;
            c.queue.clear();
            drained = c.recv.is_empty();
        }
        if drained {
            self.conns.remove(&id);
        }
        self.push_event(Event::Closed { conn: id, reason });
    }

    fn reset_with_error(&mut self, id: ConnId, e: ConnectionError) {
        let text = e.to_string();
        self.queue_rst_for(id, &text);
        self.close_by_peer(id, CloseReason::Error(e));
    }

    fn queue_rst_for(&mut self, id: ConnId, reason: &str) {
        if let Some(c) = self.conns.get(&id) {
            let th = TcpHeader {
                sport: c.local,
                dport: c.remote,
                seq: c.snd_nxt,
                ack: c.rcv_ack,
                flags: TcpFlags::RST,
                window: TcpHeader::window_field(self.config.recv_window),
            };
            let body = self.reason_bytes(reason);
            self.push_tcp(th, body);
        }
    }

    /// Queues an RST to a port pair with no connection: at most one per pair, at most
    /// [`MAX_PENDING_RESETS`] in all, encoded only when sent.
    fn queue_anon_rst(&mut self, sport: u16, dport: u16, ack: u32, why: ResetWhy) {
        if self.resets.len() >= MAX_PENDING_RESETS || !self.reset_pairs.insert((sport, dport)) {
            self.stats.resets_coalesced += 1;
            return;
        }
        self.resets.push_back(AnonReset {
            sport,
            dport,
            ack,
            why,
        });
    }

    fn encode_anon_rst(&mut self, r: AnonReset) -> Vec<u8> {
        let th = TcpHeader {
            sport: r.sport,
            dport: r.dport,
            seq: 0,
            ack: r.ack,
            flags: TcpFlags::RST,
            window: 0,
        };
        // Strays get a bare RST, as usbmuxd sends; refusals say why.
        let reason = match (r.why, self.role) {
            (ResetWhy::NoConnection, _) => String::new(),
            (ResetWhy::NotListening, _) => format!("nothing listens on port {}", r.sport),
            (
                ResetWhy::TooManyConnections,
                Role::Device {
                    max_connections, ..
                },
            ) => format!("too many connections (limit {max_connections})"),
            (ResetWhy::TooManyConnections, Role::Host) => String::new(),
        };
        let data = self.reason_bytes(&reason);
        let seq = self.next_seq(false);
        let header = Header::new(Protocol::Tcp, TCP_HEADER_LEN + data.len(), seq);
        let mut packet = Vec::with_capacity(header.length as usize);
        header.encode_into(&mut packet);
        th.encode_into(&mut packet);
        packet.extend_from_slice(&data);
        packet
    }

    fn reason_bytes(&self, reason: &str) -> Vec<u8> {
        if self.config.reset_reasons {
            reason.as_bytes().to_vec()
        } else {
            Vec::new()
        }
    }

    fn push_tcp(&mut self, th: TcpHeader, data: Vec<u8>) {
        let mut body = Vec::with_capacity(TCP_HEADER_LEN + data.len());
        th.encode_into(&mut body);
        body.extend_from_slice(&data);
        self.out.push_back(Outgoing {
            protocol: Protocol::Tcp,
            body,
            force_v1: false,
        });
    }

    /// Queues a header-only segment for `id` with its current numbers, and records the ack.
    fn queue_tcp(&mut self, id: ConnId, flags: TcpFlags, data: Vec<u8>) {
        let window = TcpHeader::window_field(self.config.recv_window);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let th = TcpHeader {
            sport: c.local,
            dport: c.remote,
            seq: c.snd_nxt,
            ack: c.rcv_ack,
            flags,
            window,
        };
        c.acked = c.rcv_ack;
        c.ack_deadline = None;
        self.push_tcp(th, data);
    }

    fn lookup(&self, id: ConnId) -> Result<(), StreamError> {
        if self.conns.contains_key(&id) {
            Ok(())
        } else if id.0 < self.next_id {
            Err(StreamError::Closed(id))
        } else {
            Err(StreamError::Unknown(id))
        }
    }

    // ---- application calls ------------------------------------------------------------------

    pub(crate) fn connect(&mut self, dport: u16, now: Instant) -> Result<ConnId, StreamError> {
        self.now = now;
        match &self.phase {
            Phase::Dead(e) => return Err(StreamError::LinkDown(e.clone())),
            Phase::Active => {}
            _ => return Err(StreamError::NotReady),
        }
        let mut sport = None;
        for _ in 0..=u16::MAX {
            let candidate = self.next_sport;
            self.next_sport = self.next_sport.wrapping_add(1);
            if candidate != 0 && !self.local_ports.contains_key(&candidate) {
                sport = Some(candidate);
                break;
            }
        }
        let sport = sport.ok_or(StreamError::NoFreePort)?;
        let id = self.alloc_id();
        let mut conn = Conn::new(sport, dport, ConnState::SynSent);
        conn.snd_nxt = 1;
        conn.connect_deadline = now.checked_add(self.config.connect_timeout);
        let syn = TcpHeader {
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags: TcpFlags::SYN,
            window: TcpHeader::window_field(self.config.recv_window),
        };
        self.insert_conn(id, conn);
        self.push_tcp(syn, Vec::new());
        Ok(id)
    }

    pub(crate) fn listen(&mut self, port: u16) {
        self.listeners.insert(port);
    }

    pub(crate) fn unlisten(&mut self, port: u16) {
        self.listeners.remove(&port);
    }

    pub(crate) fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, StreamError> {
        if let Phase::Dead(e) = &self.phase {
            if !self.conns.contains_key(&id) {
                return Err(StreamError::LinkDown(e.clone()));
            }
        }
        self.lookup(id)?;
        let cap = self.config.send_buffer;
        let Some(c) = self.conns.get_mut(&id) else {
            return Err(StreamError::Unknown(id));
        };
        if c.state == ConnState::Closed {
            return Err(StreamError::Closed(id));
        }
        let room = cap.saturating_sub(c.queue.len());
        let n = room.min(data.len());
        if n < data.len() {
            c.blocked = true;
        }
        c.queue.push(data.get(..n).unwrap_or(&[]), cap);
        Ok(n)
    }

    pub(crate) fn send_capacity(&self, id: ConnId) -> Result<usize, StreamError> {
        self.lookup(id)?;
        Ok(self
            .conns
            .get(&id)
            .filter(|c| c.state != ConnState::Closed)
            .map(|c| self.config.send_buffer.saturating_sub(c.queue.len()))
            .unwrap_or(0))
    }

    pub(crate) fn unacknowledged(&self, id: ConnId) -> Result<usize, StreamError> {
        self.lookup(id)?;
        Ok(self
            .conns
            .get(&id)
            .filter(|c| c.state != ConnState::Closed)
            .map(|c| c.queue.len() + c.snd_nxt.wrapping_sub(c.snd_una) as usize)
            .unwrap_or(0))
    }

    pub(crate) fn read(&mut self, id: ConnId, max: usize) -> Result<Option<Bytes>, StreamError> {
        self.lookup(id)?;
        let window = self.config.recv_window;
        let deadline = self.now + self.config.ack_delay;
        let Some(c) = self.conns.get_mut(&id) else {
            return Err(StreamError::Unknown(id));
        };
        if max == 0 || c.recv.is_empty() {
            return Ok(None);
        }
        let chunk = c.recv.take(max);
        c.rcv_ack = c.rcv_ack.wrapping_add(chunk.len() as u32);
        let mut ack_now = false;
        let mut remove = false;
        match c.state {
            ConnState::Established => {
                let pending = c.rcv_ack.wrapping_sub(c.acked);
                if pending >= window / 2 {
                    ack_now = true;
                } else if pending > 0 && c.ack_deadline.is_none() {
                    c.ack_deadline = Some(deadline);
                }
            }
            ConnState::Closed => remove = c.recv.is_empty(),
            ConnState::SynSent => {}
        }
        if ack_now {
            self.queue_tcp(id, TcpFlags::ACK, Vec::new());
        }
        if remove {
            self.conns.remove(&id);
        }
        Ok(Some(chunk))
    }

    pub(crate) fn close(&mut self, id: ConnId, reason: &str) -> Result<(), StreamError> {
        match self.lookup(id) {
            Err(StreamError::Closed(_)) => return Ok(()),
            other => other?,
        }
        let open = self
            .conns
            .get(&id)
            .map(|c| c.state != ConnState::Closed)
            .unwrap_or(false);
        if open && !matches!(self.phase, Phase::Dead(_)) {
            self.queue_rst_for(id, reason);
        }
        self.remove_conn(id);
        Ok(())
    }

    pub(crate) fn send_control(&mut self, control: &Control) {
        self.out.push_back(Outgoing {
            protocol: Protocol::Control,
            body: control.encode(),
            force_v1: false,
        });
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        let control_first = match (self.events.front(), self.controls.front()) {
            (Some((e, _)), Some((c, _))) => c < e,
            (None, Some(_)) => true,
            _ => false,
        };
        if control_first {
            let (_, c) = self.controls.pop_front()?;
            self.control_bytes -= c.text.len();
            return Some(Event::Control(c));
        }
        let (_, e) = self.events.pop_front()?;
        match &e {
            Event::Discarded(_) => self.pending_discards = self.pending_discards.saturating_sub(1),
            Event::Readable { conn } => {
                if let Some(c) = self.conns.get_mut(conn) {
                    c.readable_pending = false;
                }
            }
            _ => {}
        }
        Some(e)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(|c| match c.state {
            ConnState::Established => c.ack_deadline,
            ConnState::SynSent => c.connect_deadline,
            ConnState::Closed => None,
        });
        let handshake = match self.phase {
            Phase::Hello => self.handshake_deadline,
            _ => None,
        };
        conns.chain(handshake).min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.phase == Phase::Hello && self.handshake_deadline.is_some_and(|d| d <= now) {
            let waited = self.config.handshake_timeout;
            self.fail(LinkError::HandshakeTimeout { waited });
            return;
        }
        if self.phase != Phase::Active {
            return;
        }
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == ConnState::SynSent)
            .filter(|(_, c)| c.connect_deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let port = self.conns.get(&id).map(|c| c.remote).unwrap_or(0);
            self.queue_rst_for(id, "connect timed out");
            self.remove_conn(id);
            self.push_event(Event::ConnectTimedOut { conn: id, port });
        }
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == ConnState::Established)
            .filter(|(_, c)| c.ack_deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let pending = self
                .conns
                .get(&id)
                .map(|c| c.rcv_ack != c.acked)
                .unwrap_or(false);
            if pending {
                self.queue_tcp(id, TcpFlags::ACK, Vec::new());
            } else if let Some(c) = self.conns.get_mut(&id) {
                c.ack_deadline = None;
            }
        }
    }

    // ---- output -------------------------------------------------------------------------------

    fn next_seq(&mut self, force_v1: bool) -> Option<Sequence> {
        if force_v1 || self.hv == HeaderVersion::V1 {
            return None;
        }
        let seq = Sequence {
            tx_seq: self.tx_seq,
            rx_seq: self.rx_seq,
        };
        self.tx_seq = self.tx_seq.wrapping_add(1);
        Some(seq)
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if matches!(self.phase, Phase::Dead(_)) {
            return None;
        }
        if let Some(o) = self.out.pop_front() {
            let seq = self.next_seq(o.force_v1);
            let header = Header::new(o.protocol, o.body.len(), seq);
            let mut packet = Vec::with_capacity(header.length as usize);
            header.encode_into(&mut packet);
            packet.extend_from_slice(&o.body);
            return Some(packet);
        }
        if let Some(r) = self.resets.pop_front() {
            self.reset_pairs.remove(&(r.sport, r.dport));
            return Some(self.encode_anon_rst(r));
        }
        if self.phase != Phase::Active {
            return None;
        }
        let max_payload = self.max_payload();
        let start = self.cursor;
        let pick = {
            let after = match start {
                Some(c) => self.conns.range((Bound::Excluded(c), Bound::Unbounded)),
                None => self.conns.range(..),
            };
            let before = match start {
                Some(c) => self.conns.range(..=c),
                None => self.conns.range(..ConnId(0)),
            };
            after
                .chain(before)
                .find(|(_, c)| c.sendable(max_payload) > 0)
                .map(|(id, c)| (*id, c.sendable(max_payload)))
        };
        let (id, n) = pick?;
        self.cursor = Some(id);
        let window = TcpHeader::window_field(self.config.recv_window);
        let cap = self.config.send_buffer;
        let seq = self.next_seq(false);
        let c = self.conns.get_mut(&id)?;
        let th = TcpHeader {
            sport: c.local,
            dport: c.remote,
            seq: c.snd_nxt,
            ack: c.rcv_ack,
            flags: TcpFlags::ACK,
            window,
        };
        let header = Header::new(Protocol::Tcp, TCP_HEADER_LEN + n, seq);
        let mut packet = Vec::with_capacity(header.length as usize);
        header.encode_into(&mut packet);
        th.encode_into(&mut packet);
        let data = c.queue.front(n);
        let sent = data.len();
        packet.extend_from_slice(data);
        c.queue.advance(sent);
        c.snd_nxt = c.snd_nxt.wrapping_add(sent as u32);
        c.acked = c.rcv_ack;
        c.ack_deadline = None;
        let writable = c.blocked && c.queue.len() < cap;
        if writable {
            c.blocked = false;
            self.push_event(Event::Writable { conn: id });
        }
        Some(packet)
    }
}

fn reason_text(data: &[u8]) -> String {
    let mut t = data;
    while let Some((last, rest)) = t.split_last() {
        if *last == 0 || *last == b'\n' {
            t = rest;
        } else {
            break;
        }
    }
    String::from_utf8_lossy(t).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn established(snd_una: u32, snd_nxt: u32, rcv_nxt: u32) -> Conn {
        let mut c = Conn::new(1, 62078, ConnState::Established);
        c.snd_una = snd_una;
        c.snd_nxt = snd_nxt;
        c.peer_window = 131072;
        c.rcv_nxt = rcv_nxt;
        c.rcv_ack = rcv_nxt;
        c
    }

    fn ack(seq: u32, ack: u32) -> TcpHeader {
        TcpHeader {
            sport: 62078,
            dport: 1,
            seq,
            ack,
            flags: TcpFlags::ACK,
            window: 512,
        }
    }

    #[test]
    fn sequence_numbers_wrap_past_4_gib() {
        // A restore image is larger than 4 GiB: seq/ack arithmetic must wrap.
        let mut c = established(u32::MAX - 1000, 50_000, u32::MAX - 10);
        c.queue.push(&vec![0; 1_000_000], 1_000_000);
        let in_flight = 50_000u32.wrapping_sub(u32::MAX - 1000);
        assert_eq!(in_flight, 51_001);
        assert_eq!(c.sendable(49116), 49116);
        assert_eq!(c.sendable(usize::MAX), 131072 - 51_001);
        // An ACK that wraps is accepted; one beyond what was sent is not.
        assert_eq!(
            c.on_segment(&ack(u32::MAX - 10, 10), &[], 131072),
            Ok(false)
        );
        assert_eq!(c.snd_una, 10);
        assert!(matches!(
            c.on_segment(&ack(u32::MAX - 10, 50_001), &[], 131072),
            Err(ConnectionError::AckBeyondSent {
                ack: 50_001,
                sent: 50_000,
                ..
            })
        ));
        // Data whose sequence wraps is in order.
        let got = c.on_segment(&ack(u32::MAX - 10, 10), &[1; 20], 131072);
        assert_eq!(got, Ok(true));
        assert_eq!(c.rcv_nxt, 9);
    }

    #[test]
    fn zero_window_means_nothing_to_send() {
        let mut c = established(1, 1, 1);
        c.queue.push(&[7; 10], 10);
        c.peer_window = 0;
        assert_eq!(c.sendable(49116), 0);
        c.peer_window = 256;
        assert_eq!(c.sendable(49116), 10);
        c.state = ConnState::SynSent;
        assert_eq!(c.sendable(49116), 0);
    }

    #[test]
    fn connect_before_handshake_is_refused() {
        let mut core = Core::new(Role::Host, Config::default(), Instant::now());
        assert_eq!(
            core.connect(62078, Instant::now()),
            Err(StreamError::NotReady)
        );
    }
}
