//! Normal mode (iOS), device side: the usbmux interface with lockdownd on port 62078.
//!
//! Each mux connection to 62078 gets its own lockdownd conversation, decoded with
//! `lockdown::DeviceCodec` and answered with typed `lockdown::Reply`s:
//!
//! | request | answer |
//! |---|---|
//! | `QueryType` | `com.apple.mobile.lockdown` (always, even when refusing) |
//! | `GetValue` | no key: the whole domain; a key: its value; unknown → `MissingValue`. The global domain is [`crate::profile::Profile::lockdown_values`]; other domains are [`LockdownStore`]. `DevicePublicKey` (asked by key only) is the phone's [`DeviceKey`] |
//! | `SetValue` / `RemoveValue` | need a session (`SessionInactive`); global keys are read-only (`ImmutableValue` / `RemoveProhibited`) except `DeviceName`; other domains are free |
//! | `StartSession` | a paired HostID: a session id with `EnableSessionSSL` ([`SESSION_SSL`]) and the connection switches to TLS; an unknown one: refused per [`Trust`], then per [`Pairing`] (a plain session, or `InvalidHostID`) |
//! | `StopSession` | ack for the running session; `NoRunningSession` / `InvalidSessionID` otherwise |
//! | `StartService` | `InvalidService`: the simulator offers no lockdown service yet |
//! | `Pair` | the [`Trust`] refusal, or the record checked ([`crate::pairing::accept_pair`]: `MissingPairRecord`, `InvalidPairRecord`) and kept, answered with an `EscrowBag` |
//! | `ValidatePair` | the [`Trust`] refusal; a paired HostID → ack; unknown → ack ([`Pairing::Lenient`]) or `InvalidHostID` |
//! | `Unpair` | forgets the HostID; ack |
//! | `EnterRecovery` | ack ([`Pairing::Required`]: only inside a TLS session, else `SessionInactive`); once the reply has left, the phone saves `auto-boot false`, leaves the bus and arrives in recovery after `Timings::after_enter_recovery` |
//! | `Goodbye` | ack |
//! | anything else | `Error` with the text `InvalidRequest` |
//!
//! Port [`ECHO_PORT`] (7, the classic echo service) sends back every byte it receives, with at
//! most [`ECHO_WINDOW`] bytes waiting to go back (past that it stops reading, and the mux's
//! window holds the host back): a byte stream for throughput figures through a host's mux
//! (the VM bench compares restation's usbmuxd socket with Debian's usbmuxd on it).
//!
//! Pairings live in the phone's [`LockdownStore`] (they survive connections and reboots). A
//! TLS session is a rustls server connection driven sans-IO ([`crate::pairing::TlsSession`]);
//! a TLS failure (wrong client certificate, garbage) resets the connection as lockdownd drops
//! it. Fault points: every transfer is at `normal`; a bulk OUT carrying lockdownd bytes is also at
//! `lockdown`, and one carrying a whole `EnterRecovery` request at `enter-recovery`. A
//! `refuse` there answers the requests in that transfer with `PasswordProtected`
//! (`lockdown`) or `SessionInactive` (`enter-recovery`); `enter-recovery:never-returns`
//! leaves the bus and never arrives in recovery.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use lockdown::{DaemonType, DeviceCodec, ErrorKind as LockdownError, Reply, Request};
use plist::{Dictionary, Value};
use usb::{ErrorKind, Transfer};
use usbmux::{ConnId, Event};

use crate::descriptors::MUX_OUT;
use crate::fault::Point;
use crate::mux_port::{peek_tcp, MuxPort, LOCKDOWN_PORT};
use crate::pairing::{accept_pair, DeviceKey, HostPairing, TlsSession};
use crate::phone::Phone;
use crate::phone::{Core, Mode, ModeHandler, RecoveryStage, Touches};
use crate::profile::{Pairing, Trust};
use crate::rng::SplitMix64;

/// `EnableSessionSSL` in the reply to `StartSession` from a paired host: the connection switches
/// to TLS right after the reply has been queued (the `Request::StartSession` arm of
/// `NormalMode::answer`). Sessions of unpaired hosts ([`Pairing::Lenient`]) stay plain.
pub const SESSION_SSL: bool = true;

/// The simulated user taps "Trust" on the phone's dialog.
pub fn tap_trust(phone: &mut Phone) {
    phone.mode_state_mut().1.profile.trust = Trust::Trusted;
}

/// How long a phone waits for the host to read the EnterRecovery reply before it reboots
/// anyway.
pub const ENTER_RECOVERY_GRACE: Duration = Duration::from_millis(500);

/// The echo service's port (RFC 862's number).
pub const ECHO_PORT: u16 = 7;

/// Most bytes an echo connection holds before it stops reading.
pub const ECHO_WINDOW: usize = 256 * 1024;

/// lockdownd's stored values outside the global domain (what `SetValue` wrote), per domain,
/// and the hosts it is paired with. Kept in the phone's [`Core`], so they survive connections
/// and reboots.
#[derive(Debug, Clone, PartialEq)]
pub struct LockdownStore {
    /// Domain name → its values.
    pub domains: BTreeMap<String, Dictionary>,
    /// HostID → what `Pair` left.
    pub pairings: BTreeMap<String, HostPairing>,
}

impl Default for LockdownStore {
    fn default() -> Self {
        let mut battery = Dictionary::new();
        battery.insert("BatteryCurrentCapacity".into(), Value::from(87u64));
        battery.insert("BatteryIsCharging".into(), Value::from(true));
        battery.insert("ExternalConnected".into(), Value::from(true));
        let mut domains = BTreeMap::new();
        domains.insert("com.apple.mobile.battery".to_string(), battery);
        Self {
            domains,
            pairings: BTreeMap::new(),
        }
    }
}

/// Global-domain keys a host may change.
const WRITABLE_GLOBAL_KEYS: [&str; 1] = ["DeviceName"];

#[derive(Debug)]
struct Lockdownd {
    codec: DeviceCodec,
    session: Option<String>,
    outbox: VecDeque<u8>,
    /// Set by a StartSession that enabled SSL: TLS starts once its reply is queued.
    start_tls: Option<HostPairing>,
    /// The running TLS session: every byte in and out goes through it.
    tls: Option<TlsSession>,
}

impl Lockdownd {
    fn new() -> Self {
        Lockdownd {
            codec: DeviceCodec::new(),
            session: None,
            outbox: VecDeque::new(),
            start_tls: None,
            tls: None,
        }
    }

    /// Queues a reply (encrypted inside a TLS session).
    fn queue(&mut self, bytes: &[u8]) -> Result<(), ()> {
        match &mut self.tls {
            Some(tls) => {
                let mut wire = Vec::new();
                let sent = tls.send(bytes, &mut wire);
                self.outbox.extend(wire);
                sent.map_err(drop)
            }
            None => {
                self.outbox.extend(bytes);
                Ok(())
            }
        }
    }

    /// Takes bytes from the host: straight to the codec, or through TLS.
    fn receive(&mut self, bytes: &[u8]) -> Result<(), ()> {
        match &mut self.tls {
            Some(tls) => {
                let mut plain = Vec::new();
                let mut wire = Vec::new();
                let received = tls.receive(bytes, &mut plain, &mut wire);
                self.outbox.extend(wire);
                self.codec.receive(&plain);
                received.map_err(drop)
            }
            None => {
                self.codec.receive(bytes);
                Ok(())
            }
        }
    }

    fn in_tls_session(&self) -> bool {
        self.session.is_some() && self.tls.as_ref().is_some_and(TlsSession::is_established)
    }
}

/// Normal iOS.
#[derive(Debug)]
pub struct NormalMode {
    mux: MuxPort,
    conns: HashMap<ConnId, Lockdownd>,
    /// Echo connections and the bytes waiting to go back.
    echo: HashMap<ConnId, VecDeque<u8>>,
    sessions: u64,
    /// Set by an answered EnterRecovery: reboot once the reply is out, or at this instant.
    entering_recovery: Option<Instant>,
}

impl NormalMode {
    /// iOS booted: usbmux up, lockdownd listening.
    pub fn new(_core: &mut Core, now: Instant) -> Self {
        Self {
            mux: MuxPort::new(&[LOCKDOWN_PORT, ECHO_PORT], now),
            conns: HashMap::new(),
            echo: HashMap::new(),
            sessions: 0,
            entering_recovery: None,
        }
    }

    /// The mux.
    pub fn mux(&mut self) -> &mut MuxPort {
        &mut self.mux
    }

    /// lockdownd connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Runs the mux's events: new connections, requests, replies.
    fn service(&mut self, core: &mut Core, now: Instant) {
        while let Some(event) = self.mux.poll_event() {
            match event {
                Event::Accepted { conn, port } if port == ECHO_PORT => {
                    self.echo.insert(conn, VecDeque::new());
                }
                Event::Accepted { conn, .. } => {
                    self.conns.insert(conn, Lockdownd::new());
                }
                Event::Readable { conn } if self.echo.contains_key(&conn) => {}
                Event::Readable { conn } => self.read(core, conn, now),
                Event::Closed { conn, .. } => {
                    self.conns.remove(&conn);
                    self.echo.remove(&conn);
                }
                _ => {}
            }
        }
        self.flush();
    }

    fn read(&mut self, core: &mut Core, conn: ConnId, now: Instant) {
        while let Ok(Some(bytes)) = self.mux.device().read(conn, 1 << 16) {
            let ok = match self.conns.get_mut(&conn) {
                Some(c) => c.receive(&bytes).is_ok(),
                None => true,
            };
            if !ok {
                self.drop_connection(conn, "lockdownd: TLS failure");
                return;
            }
        }
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let envelope = match c.codec.poll_request() {
                Ok(Some(envelope)) => envelope,
                Ok(None) => return,
                Err(_) => {
                    // lockdownd drops a connection that sends something it cannot read.
                    let _ = self
                        .mux
                        .device()
                        .reset(conn, "lockdownd: unreadable request");
                    self.conns.remove(&conn);
                    return;
                }
            };
            let reply = self.answer(core, conn, envelope.request, now);
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let mut bytes = Vec::new();
            if c.codec.encode_reply(&reply, &mut bytes).is_ok() && c.queue(&bytes).is_err() {
                self.drop_connection(conn, "lockdownd: TLS failure");
                return;
            }
            // The StartSession reply is out in plaintext: everything after it is TLS.
            if let Some(pairing) = c.start_tls.take() {
                let started = DeviceKey::for_ecid(core.profile.ecid)
                    .ok()
                    .and_then(|key| TlsSession::new(&pairing, &key).ok());
                let Some(tls) = started else {
                    self.drop_connection(conn, "lockdownd: cannot start TLS");
                    return;
                };
                c.tls = Some(tls);
                let early = c.codec.take_buffered();
                if !early.is_empty() && c.receive(&early).is_err() {
                    self.drop_connection(conn, "lockdownd: TLS failure");
                    return;
                }
            }
        }
    }

    /// Flushes what is queued (a TLS alert) and resets the connection.
    fn drop_connection(&mut self, conn: ConnId, why: &str) {
        self.flush();
        let _ = self.mux.device().reset(conn, why);
        self.conns.remove(&conn);
    }

    fn flush(&mut self) {
        self.pump_echo();
        for (conn, c) in self.conns.iter_mut() {
            while !c.outbox.is_empty() {
                let (a, _) = c.outbox.as_slices();
                match self.mux.device().send(*conn, a) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        c.outbox.drain(..n);
                    }
                }
            }
        }
    }

    /// Echo connections: read what fits in the window, send back what the mux takes.
    fn pump_echo(&mut self) {
        let device = self.mux.device();
        for (conn, queue) in self.echo.iter_mut() {
            loop {
                let room = ECHO_WINDOW.saturating_sub(queue.len());
                if room > 0 {
                    if let Ok(Some(bytes)) = device.read(*conn, room) {
                        queue.extend(bytes.iter());
                    }
                }
                let (a, _) = queue.as_slices();
                if a.is_empty() {
                    break;
                }
                match device.send(*conn, a) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        queue.drain(..n);
                    }
                }
            }
        }
    }

    fn next_session_id(&mut self, core: &Core) -> String {
        self.sessions += 1;
        let mut rng = SplitMix64::derive(core.profile.ecid ^ self.sessions, "lockdown/session");
        let b = rng.bytes(16);
        let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    /// lockdownd's answer to one request.
    fn answer(&mut self, core: &mut Core, conn: ConnId, request: Request, now: Instant) -> Reply {
        let name = request.name().to_string();
        let session = self.conns.get(&conn).and_then(|c| c.session.clone());
        if core.refusing && !matches!(request, Request::QueryType) {
            let kind = match request {
                Request::EnterRecovery => LockdownError::SessionInactive,
                _ => LockdownError::PasswordProtected,
            };
            return Reply::error(&name, kind);
        }
        let trust_refusal = match core.profile.trust {
            Trust::Trusted => None,
            Trust::DialogPending => Some(LockdownError::PairingDialogResponsePending),
            Trust::Denied => Some(LockdownError::UserDeniedPairing),
        };
        let strict = core.profile.pairing == Pairing::Required;
        let in_tls = self.conns.get(&conn).is_some_and(Lockdownd::in_tls_session);
        match request {
            Request::QueryType => Reply::QueryType {
                daemon: DaemonType::Lockdown,
                restore_protocol_version: None,
            },
            Request::GetValue { domain, key }
                if domain.is_none() && key.as_deref() == Some("DevicePublicKey") =>
            {
                match DeviceKey::for_ecid(core.profile.ecid) {
                    Ok(device) => Reply::GetValue {
                        domain,
                        key,
                        value: Some(Value::Data(device.public_pem.clone())),
                    },
                    Err(_) => Reply::error(&name, LockdownError::MissingValue),
                }
            }
            Request::GetValue { domain, key } => get_value(core, domain, key),
            Request::SetValue { domain, key, value } => {
                if session.is_none() {
                    return Reply::error(&name, LockdownError::SessionInactive);
                }
                set_value(core, domain, key, value)
            }
            Request::RemoveValue { domain, key } => {
                if session.is_none() {
                    return Reply::error(&name, LockdownError::SessionInactive);
                }
                remove_value(core, domain, key)
            }
            Request::StartSession { host_id, .. } => {
                let pairing = core.lockdown.pairings.get(&host_id).cloned();
                if pairing.is_none() {
                    if let Some(kind) = trust_refusal {
                        return Reply::error(&name, kind);
                    }
                    if strict {
                        return Reply::error(&name, LockdownError::InvalidHostID);
                    }
                }
                if session.is_some() {
                    return Reply::error(&name, LockdownError::SessionActive);
                }
                let id = self.next_session_id(core);
                let tls = pairing.is_some() && SESSION_SSL;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = Some(id.clone());
                    // TLS starts once this reply is queued (see `read`).
                    c.start_tls = pairing.filter(|_| tls);
                }
                Reply::StartSession {
                    session_id: id,
                    enable_session_ssl: tls,
                }
            }
            Request::StopSession { session_id } => match session {
                None => Reply::error(&name, LockdownError::NoRunningSession),
                Some(s) if s != session_id => Reply::error(&name, LockdownError::InvalidSessionID),
                Some(_) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.session = None;
                    }
                    Reply::ack(&name)
                }
            },
            Request::StartService { .. } => Reply::error(&name, LockdownError::InvalidService),
            Request::Pair(pair) => {
                if let Some(kind) = trust_refusal {
                    return Reply::error(&name, kind);
                }
                let Ok(device) = DeviceKey::for_ecid(core.profile.ecid) else {
                    return Reply::error(&name, LockdownError::SavePairRecordFailed);
                };
                let host = pair.pair_record.as_ref().and_then(|r| r.host_id.clone());
                let mut rng = SplitMix64::derive(
                    core.profile.ecid ^ core.lockdown.pairings.len() as u64,
                    &format!("lockdown/escrow/{}", host.unwrap_or_default()),
                );
                match accept_pair(pair.pair_record.as_ref(), &device, rng.bytes(64)) {
                    Ok(pairing) => {
                        let mut fields = Dictionary::new();
                        fields.insert("EscrowBag".into(), Value::Data(pairing.escrow_bag.clone()));
                        core.lockdown
                            .pairings
                            .insert(pairing.host_id.clone(), pairing);
                        Reply::Generic {
                            request: Some(name),
                            result: None,
                            fields,
                        }
                    }
                    Err(kind) => Reply::error(&name, kind),
                }
            }
            Request::ValidatePair(pair) => {
                if let Some(kind) = trust_refusal {
                    return Reply::error(&name, kind);
                }
                let host = pair.pair_record.as_ref().and_then(|r| r.host_id.as_ref());
                let known = host.is_some_and(|h| core.lockdown.pairings.contains_key(h));
                if known || !strict {
                    Reply::ack(&name)
                } else {
                    Reply::error(&name, LockdownError::InvalidHostID)
                }
            }
            Request::Unpair(pair) => {
                if let Some(host) = pair.pair_record.as_ref().and_then(|r| r.host_id.as_ref()) {
                    core.lockdown.pairings.remove(host);
                }
                Reply::ack(&name)
            }
            Request::Goodbye => Reply::ack(&name),
            Request::EnterRecovery => {
                if strict && !in_tls {
                    return Reply::error(&name, LockdownError::SessionInactive);
                }
                self.entering_recovery = Some(now + ENTER_RECOVERY_GRACE);
                Reply::ack(&name)
            }
            _ => Reply::error(&name, LockdownError::Unknown("InvalidRequest".into())),
        }
    }

    /// After an answered EnterRecovery: once the reply has left (or the grace time passed),
    /// save `auto-boot false` and reboot into recovery.
    fn maybe_enter_recovery(&mut self, core: &mut Core, now: Instant) {
        let Some(deadline) = self.entering_recovery else {
            return;
        };
        let sent = self.conns.values().all(|c| c.outbox.is_empty()) && self.mux.flushed();
        if sent || now >= deadline {
            self.entering_recovery = None;
            core.nvram.insert("auto-boot".into(), "false".into());
            core.reenumerate(
                Mode::Recovery(RecoveryStage::Iboot),
                core.timings.after_enter_recovery,
                Some(Point::EnterRecovery),
            );
        }
    }
}

fn global_domain(core: &Core) -> Dictionary {
    let mut d = core.profile.lockdown_values();
    if let Some(stored) = core.lockdown.domains.get("") {
        for (k, v) in stored {
            d.insert(k.clone(), v.clone());
        }
    }
    d
}

fn get_value(core: &Core, domain: Option<String>, key: Option<String>) -> Reply {
    let values = match domain.as_deref() {
        None | Some("") => Some(global_domain(core)),
        Some(d) => core.lockdown.domains.get(d).cloned(),
    };
    let Some(values) = values else {
        return Reply::error("GetValue", LockdownError::MissingValue);
    };
    let value = match &key {
        None => Some(Value::Dictionary(values)),
        Some(k) => values.get(k).cloned(),
    };
    match value {
        Some(value) => Reply::GetValue {
            domain,
            key,
            value: Some(value),
        },
        None => Reply::error("GetValue", LockdownError::MissingValue),
    }
}

fn set_value(core: &mut Core, domain: Option<String>, key: Option<String>, value: Value) -> Reply {
    let name = "SetValue";
    match (domain.as_deref(), key) {
        (None | Some(""), Some(key)) => {
            if !WRITABLE_GLOBAL_KEYS.contains(&key.as_str()) {
                return Reply::error(name, LockdownError::ImmutableValue);
            }
            if key == "DeviceName" {
                match value.as_string() {
                    Some(text) => core.profile.device_name = text.to_string(),
                    None => return Reply::error(name, LockdownError::InvalidResponse),
                }
            }
            Reply::ack(name)
        }
        (None | Some(""), None) => Reply::error(name, LockdownError::SetProhibited),
        (Some(d), Some(key)) => {
            core.lockdown
                .domains
                .entry(d.to_string())
                .or_default()
                .insert(key, value);
            Reply::ack(name)
        }
        (Some(d), None) => match value {
            Value::Dictionary(dict) => {
                core.lockdown.domains.insert(d.to_string(), dict);
                Reply::ack(name)
            }
            _ => Reply::error(name, LockdownError::MissingKey),
        },
    }
}

fn remove_value(core: &mut Core, domain: Option<String>, key: Option<String>) -> Reply {
    let name = "RemoveValue";
    let Some(d) = domain.filter(|d| !d.is_empty()) else {
        return Reply::error(name, LockdownError::RemoveProhibited);
    };
    let removed = match key {
        Some(k) => core
            .lockdown
            .domains
            .get_mut(&d)
            .and_then(|dict| dict.remove(&k))
            .is_some(),
        None => core.lockdown.domains.remove(&d).is_some(),
    };
    if removed {
        Reply::ack(name)
    } else {
        Reply::error(name, LockdownError::MissingValue)
    }
}

/// The `Request` names of the whole lockdown frames at the start of `payload` (4-byte length
/// + plist each). Frames split across packets are not seen.
pub(crate) fn request_names(payload: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = payload;
    while let Some(prefix) = rest.get(..4) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let Some(frame) = rest.get(4..4 + len) else {
            break;
        };
        if let Ok(dict) = lockdown::decode_dictionary(frame) {
            if let Some(name) = dict.get("Request").and_then(Value::as_string) {
                names.push(name.to_string());
            }
        }
        rest = rest.get(4 + len..).unwrap_or(&[]);
    }
    names
}

impl ModeHandler for NormalMode {
    fn in_pending(&mut self) -> usize {
        self.flush();
        self.mux.pending_in()
    }

    fn touches(&self, _core: &Core, transfer: &Transfer<'_>) -> Touches {
        let mut points = vec![Point::Normal];
        if let Transfer::BulkOut {
            endpoint: MUX_OUT,
            data,
        } = transfer
        {
            if let Some(tcp) = peek_tcp(data, self.mux.header_version()) {
                if tcp.dport == LOCKDOWN_PORT && !tcp.payload.is_empty() {
                    points.push(Point::Lockdown);
                    if request_names(tcp.payload)
                        .iter()
                        .any(|n| n == lockdown::names::ENTER_RECOVERY)
                    {
                        points.push(Point::EnterRecovery);
                    }
                }
            }
        }
        Touches { points, span: None }
    }

    fn bulk_out(
        &mut self,
        core: &mut Core,
        endpoint: u8,
        data: &[u8],
        now: Instant,
    ) -> Result<usize, ErrorKind> {
        let r = self.mux.bulk_out(core, endpoint, data, now);
        self.service(core, now);
        r
    }

    fn bulk_in(
        &mut self,
        core: &mut Core,
        endpoint: u8,
        length: usize,
        now: Instant,
    ) -> Result<Vec<u8>, ErrorKind> {
        self.flush();
        let r = self.mux.bulk_in(core, endpoint, length);
        self.maybe_enter_recovery(core, now);
        r
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.mux.poll_timeout(), self.entering_recovery) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, core: &mut Core, now: Instant) {
        self.mux.handle_timeout(now);
        self.service(core, now);
        self.maybe_enter_recovery(core, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::{Options, Phone};
    use crate::profile::Profile;

    fn frame(request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        lockdown::HostCodec::new()
            .encode_request(request, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn request_names_reads_whole_frames_only() {
        let mut two = frame(&Request::QueryType);
        two.extend(frame(&Request::EnterRecovery));
        assert_eq!(request_names(&two), ["QueryType", "EnterRecovery"]);
        assert!(request_names(&two[..two.len() - 1])
            .iter()
            .all(|n| n != "EnterRecovery"));
        assert!(request_names(&[0xFF, 0xFF, 0xFF, 0xFF, 1]).is_empty());
        assert!(request_names(&[]).is_empty());
    }

    #[test]
    fn values_and_their_rules() {
        let profile = Profile::for_product_type("iPhone14,3", 1).unwrap();
        let phone = Phone::new(profile.clone(), Options::default(), Instant::now());
        let mut core_phone = phone;
        let (_, core) = core_phone.mode_state_mut();
        let whole = get_value(core, None, None);
        let Reply::GetValue {
            value: Some(Value::Dictionary(d)),
            ..
        } = whole
        else {
            panic!("{whole:?}")
        };
        assert_eq!(
            d.get("UniqueChipID").and_then(Value::as_unsigned_integer),
            Some(profile.ecid)
        );
        assert_eq!(
            get_value(core, Some("com.nope".into()), None),
            Reply::error("GetValue", LockdownError::MissingValue)
        );
        assert_eq!(
            set_value(core, None, Some("UniqueChipID".into()), Value::from(1u64)),
            Reply::error("SetValue", LockdownError::ImmutableValue)
        );
        assert_eq!(
            set_value(core, None, Some("DeviceName".into()), Value::from("X")),
            Reply::ack("SetValue")
        );
        assert_eq!(core.profile.device_name, "X");
        assert_eq!(
            remove_value(core, None, Some("DeviceName".into())),
            Reply::error("RemoveValue", LockdownError::RemoveProhibited)
        );
        assert_eq!(
            remove_value(core, Some("com.apple.mobile.battery".into()), None),
            Reply::ack("RemoveValue")
        );
        assert_eq!(
            remove_value(core, Some("com.apple.mobile.battery".into()), None),
            Reply::error("RemoveValue", LockdownError::MissingValue)
        );
    }
}
