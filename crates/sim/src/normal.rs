//! Normal mode (iOS), device side: the usbmux interface with lockdownd on port 62078.
//!
//! Each mux connection to 62078 gets its own lockdownd conversation, decoded with
//! `lockdown::DeviceCodec` and answered with typed `lockdown::Reply`s:
//!
//! | request | answer |
//! |---|---|
//! | `QueryType` | `com.apple.mobile.lockdown` (always, even when refusing) |
//! | `GetValue` | no key: the whole domain; a key: its value; unknown → `MissingValue`. The global domain is [`crate::profile::Profile::lockdown_values`]; other domains are [`LockdownStore`] |
//! | `SetValue` / `RemoveValue` | need a session (`SessionInactive`); global keys are read-only (`ImmutableValue` / `RemoveProhibited`) except `DeviceName`; other domains are free |
//! | `StartSession` | a session id; `EnableSessionSSL` false (see [`SESSION_SSL`]); refused per [`Trust`] |
//! | `StopSession` | ack for the running session; `NoRunningSession` / `InvalidSessionID` otherwise |
//! | `StartService` | `InvalidService`: the simulator offers no lockdown service yet |
//! | `Pair` / `ValidatePair` / `Unpair` | ack, or the [`Trust`] refusal |
//! | `EnterRecovery` | ack; once the reply has left, the phone saves `auto-boot false`, leaves the bus and arrives in recovery after `Timings::after_enter_recovery` |
//! | `Goodbye` | ack |
//! | anything else | `Error` with the text `InvalidRequest` |
//!
//! Pairing is not checked (no pair record is needed); a session runs without TLS. Fault
//! points: every transfer is at `normal`; a bulk OUT carrying lockdownd bytes is also at
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
use crate::phone::{Core, Mode, ModeHandler, RecoveryStage, Touches};
use crate::profile::Trust;
use crate::rng::SplitMix64;

/// `EnableSessionSSL` in every `StartSession` reply. The TLS hook: when pairing and TLS land,
/// this becomes a per-profile choice and [`NormalMode`] hands the connection's byte stream to
/// a TLS server session right after the StartSession reply has been queued (the
/// `Request::StartSession` arm of `NormalMode::answer`, marked "TLS hook").
pub const SESSION_SSL: bool = false;

/// How long a phone waits for the host to read the EnterRecovery reply before it reboots
/// anyway.
pub const ENTER_RECOVERY_GRACE: Duration = Duration::from_millis(500);

/// lockdownd's stored values outside the global domain (what `SetValue` wrote), per domain.
/// Kept in the phone's [`Core`], so they survive connections and reboots.
#[derive(Debug, Clone, PartialEq)]
pub struct LockdownStore {
    /// Domain name → its values.
    pub domains: BTreeMap<String, Dictionary>,
}

impl Default for LockdownStore {
    fn default() -> Self {
        let mut battery = Dictionary::new();
        battery.insert("BatteryCurrentCapacity".into(), Value::from(87u64));
        battery.insert("BatteryIsCharging".into(), Value::from(true));
        battery.insert("ExternalConnected".into(), Value::from(true));
        let mut domains = BTreeMap::new();
        domains.insert("com.apple.mobile.battery".to_string(), battery);
        Self { domains }
    }
}

/// Global-domain keys a host may change.
const WRITABLE_GLOBAL_KEYS: [&str; 1] = ["DeviceName"];

#[derive(Debug)]
struct Lockdownd {
    codec: DeviceCodec,
    session: Option<String>,
    outbox: VecDeque<u8>,
}

/// Normal iOS.
#[derive(Debug)]
pub struct NormalMode {
    mux: MuxPort,
    conns: HashMap<ConnId, Lockdownd>,
    sessions: u64,
    /// Set by an answered EnterRecovery: reboot once the reply is out, or at this instant.
    entering_recovery: Option<Instant>,
}

impl NormalMode {
    /// iOS booted: usbmux up, lockdownd listening.
    pub fn new(_core: &mut Core, now: Instant) -> Self {
        Self {
            mux: MuxPort::new(&[LOCKDOWN_PORT], now),
            conns: HashMap::new(),
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
                Event::Accepted { conn, .. } => {
                    self.conns.insert(
                        conn,
                        Lockdownd {
                            codec: DeviceCodec::new(),
                            session: None,
                            outbox: VecDeque::new(),
                        },
                    );
                }
                Event::Readable { conn } => self.read(core, conn, now),
                Event::Closed { conn, .. } => {
                    self.conns.remove(&conn);
                }
                _ => {}
            }
        }
        self.flush();
    }

    fn read(&mut self, core: &mut Core, conn: ConnId, now: Instant) {
        while let Ok(Some(bytes)) = self.mux.device().read(conn, 1 << 16) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.codec.receive(&bytes);
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
            if let Some(c) = self.conns.get_mut(&conn) {
                let mut bytes = Vec::new();
                if c.codec.encode_reply(&reply, &mut bytes).is_ok() {
                    c.outbox.extend(bytes);
                }
            }
        }
    }

    fn flush(&mut self) {
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
        match request {
            Request::QueryType => Reply::QueryType {
                daemon: DaemonType::Lockdown,
                restore_protocol_version: None,
            },
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
            Request::StartSession { .. } => {
                if let Some(kind) = trust_refusal {
                    return Reply::error(&name, kind);
                }
                if session.is_some() {
                    return Reply::error(&name, LockdownError::SessionActive);
                }
                let id = self.next_session_id(core);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = Some(id.clone());
                }
                // TLS hook: with SESSION_SSL true, the connection switches to TLS here.
                Reply::StartSession {
                    session_id: id,
                    enable_session_ssl: SESSION_SSL,
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
            Request::Pair(_) | Request::ValidatePair(_) => match trust_refusal {
                Some(kind) => Reply::error(&name, kind),
                None => Reply::ack(&name),
            },
            Request::Unpair(_) | Request::Goodbye => Reply::ack(&name),
            Request::EnterRecovery => {
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
