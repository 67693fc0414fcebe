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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

use bytes::Bytes;
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            recv_window: 131072,
            send_buffer: 262144,
            ack_delay: Duration::from_millis(30),
            max_packet: MAX_PACKET,
            reset_reasons: true,
        }
    }
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
    /// A packet that was dropped without harming the link.
    Discarded(Discard),
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
    Device { major: u32, minor: u32 },
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
    queue: VecDeque<Bytes>,
    queued: usize,
    blocked: bool,
    rcv_nxt: u32,
    rcv_ack: u32,
    acked: u32,
    recv: VecDeque<Bytes>,
    buffered: usize,
    ack_deadline: Option<Instant>,
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
            queue: VecDeque::new(),
            queued: 0,
            blocked: false,
            rcv_nxt: 0,
            rcv_ack: 0,
            acked: 0,
            recv: VecDeque::new(),
            buffered: 0,
            ack_deadline: None,
        }
    }

    fn sendable(&self, max_payload: usize) -> usize {
        if self.state != ConnState::Established {
            return 0;
        }
        let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
        let window = self.peer_window.saturating_sub(in_flight) as usize;
        window.min(max_payload).min(self.queued)
    }

    fn on_segment(
        &mut self,
        th: &TcpHeader,
        payload: Bytes,
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
        if self.buffered.saturating_add(payload.len()) > window as usize {
            return Err(ConnectionError::WindowOverflow {
                port: self.local,
                window,
                buffered: self.buffered,
                received: payload.len(),
            });
        }
        // Lengths are at most a packet, far below u32::MAX.
        self.rcv_nxt = self.rcv_nxt.wrapping_add(payload.len() as u32);
        self.buffered += payload.len();
        self.recv.push_back(payload);
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
    conns: BTreeMap<ConnId, Conn>,
    ports: HashMap<(u16, u16), ConnId>,
    local_ports: HashMap<u16, usize>,
    listeners: HashSet<u16>,
    next_id: u64,
    next_sport: u16,
    cursor: Option<ConnId>,
    events: VecDeque<Event>,
    now: Instant,
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
            conns: BTreeMap::new(),
            ports: HashMap::new(),
            local_ports: HashMap::new(),
            listeners: HashSet::new(),
            next_id: 0,
            next_sport: 1,
            cursor: None,
            events: VecDeque::new(),
            now,
        };
        if role == Role::Host {
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
            match self.reader.next_packet(self.hv) {
                Ok(None) => return Ok(()),
                Ok(Some(p)) => self.handle_packet(p)?,
                Err(HeaderError::UnknownProtocol { protocol, length }) => {
                    self.events
                        .push_back(Event::Discarded(Discard::UnknownProtocol {
                            protocol,
                            length,
                        }));
                }
                Err(e) => return Err(self.fail(LinkError::Framing(e))),
            }
        }
    }

    fn fail(&mut self, e: LinkError) -> LinkError {
        self.phase = Phase::Dead(e.clone());
        self.out.clear();
        self.ports.clear();
        self.local_ports.clear();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let mut remove = false;
            if let Some(c) = self.conns.get_mut(&id) {
                if c.state != ConnState::Closed {
                    c.state = ConnState::Closed;
                    self.events.push_back(Event::Closed {
                        conn: id,
                        reason: CloseReason::LinkLost,
                    });
                }
                remove = c.buffered == 0;
            }
            if remove {
                self.conns.remove(&id);
            }
        }
        e
    }

    fn discard(&mut self, d: Discard) {
        self.events.push_back(Event::Discarded(d));
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
                    self.events.push_back(Event::Ready {
                        version: HeaderVersion::V2,
                    });
                } else {
                    let phase = self.phase.name();
                    self.discard(Discard::Unexpected { protocol, phase });
                }
                Ok(())
            }
            Message::Control(c) => {
                self.events.push_back(Event::Control(c));
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
                    self.events.push_back(Event::Ready {
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
                    self.events.push_back(Event::Ready {
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
            Role::Device { major, minor } => {
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
                    self.events.push_back(Event::Ready {
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
                    self.queue_tcp(id, TcpFlags::ACK, Vec::new());
                    self.events.push_back(Event::Connected { conn: id });
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
                    self.events.push_back(Event::Refused {
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
                match conn.on_segment(&th, data, window) {
                    Ok(true) => self.events.push_back(Event::Readable { conn: id }),
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
        if matches!(self.role, Role::Device { .. }) && is_syn {
            if self.listeners.contains(&th.dport) {
                self.accept(th);
            } else {
                let reason = format!("nothing listens on port {}", th.dport);
                self.queue_anon_rst(th.dport, th.sport, th.seq.wrapping_add(1), &reason);
            }
            return;
        }
        drop(data);
        if !th.flags.contains(TcpFlags::RST) {
            self.queue_anon_rst(th.dport, th.sport, th.seq, "no such connection");
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
        self.events.push_back(Event::Accepted { conn: id, port });
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
            c.queued = 0;
            drained = c.buffered == 0;
        }
        if drained {
            self.conns.remove(&id);
        }
        self.events.push_back(Event::Closed { conn: id, reason });
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

    fn queue_anon_rst(&mut self, sport: u16, dport: u16, ack: u32, reason: &str) {
        let th = TcpHeader {
            sport,
            dport,
            seq: 0,
            ack,
            flags: TcpFlags::RST,
            window: 0,
        };
        let body = self.reason_bytes(reason);
        self.push_tcp(th, body);
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
        let room = cap.saturating_sub(c.queued);
        let n = room.min(data.len());
        if n < data.len() {
            c.blocked = true;
        }
        if n > 0 {
            c.queue.push_back(Bytes::copy_from_slice(&data[..n]));
            c.queued += n;
        }
        Ok(n)
    }

    pub(crate) fn send_capacity(&self, id: ConnId) -> Result<usize, StreamError> {
        self.lookup(id)?;
        Ok(self
            .conns
            .get(&id)
            .filter(|c| c.state != ConnState::Closed)
            .map(|c| self.config.send_buffer.saturating_sub(c.queued))
            .unwrap_or(0))
    }

    pub(crate) fn read(&mut self, id: ConnId, max: usize) -> Result<Option<Bytes>, StreamError> {
        self.lookup(id)?;
        let window = self.config.recv_window;
        let deadline = self.now + self.config.ack_delay;
        let Some(c) = self.conns.get_mut(&id) else {
            return Err(StreamError::Unknown(id));
        };
        let Some(mut chunk) = c.recv.pop_front() else {
            return Ok(None);
        };
        if chunk.len() > max {
            let rest = chunk.split_off(max);
            c.recv.push_front(rest);
        }
        c.buffered -= chunk.len();
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
            ConnState::Closed => remove = c.buffered == 0,
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
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter(|c| c.state == ConnState::Established)
            .filter_map(|c| c.ack_deadline)
            .min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.phase != Phase::Active {
            return;
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
        let mut left = n;
        while left > 0 {
            let Some(front) = c.queue.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                packet.extend_from_slice(front);
                c.queue.pop_front();
            } else {
                let head = front.split_to(left);
                packet.extend_from_slice(&head);
                left = 0;
            }
        }
        let sent = n - left;
        c.queued -= sent;
        c.snd_nxt = c.snd_nxt.wrapping_add(sent as u32);
        c.acked = c.rcv_ack;
        c.ack_deadline = None;
        if c.blocked && c.queued < cap {
            c.blocked = false;
            self.events.push_back(Event::Writable { conn: id });
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
        c.queued = 1_000_000;
        let in_flight = 50_000u32.wrapping_sub(u32::MAX - 1000);
        assert_eq!(in_flight, 51_001);
        assert_eq!(c.sendable(49116), 49116);
        assert_eq!(c.sendable(usize::MAX), 131072 - 51_001);
        // An ACK that wraps is accepted; one beyond what was sent is not.
        assert_eq!(
            c.on_segment(&ack(u32::MAX - 10, 10), Bytes::new(), 131072),
            Ok(false)
        );
        assert_eq!(c.snd_una, 10);
        assert!(matches!(
            c.on_segment(&ack(u32::MAX - 10, 50_001), Bytes::new(), 131072),
            Err(ConnectionError::AckBeyondSent {
                ack: 50_001,
                sent: 50_000,
                ..
            })
        ));
        // Data whose sequence wraps is in order.
        let got = c.on_segment(&ack(u32::MAX - 10, 10), Bytes::from(vec![1; 20]), 131072);
        assert_eq!(got, Ok(true));
        assert_eq!(c.rcv_nxt, 9);
    }

    #[test]
    fn zero_window_means_nothing_to_send() {
        let mut c = established(1, 1, 1);
        c.queued = 10;
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
