//! The device registry, sans-IO: hotplug arrivals and departures and identification results
//! go in with the time, entries and [`Event`]s come out. It never opens a device, never reads
//! a clock and never blocks; the daemon's driver does the USB work and feeds the results back.
//!
//! Entries are keyed by ECID, the one identity that survives every mode change, so a phone
//! that leaves in recovery and comes back in DFU is the same entry. A normal-mode phone whose
//! ECID lockdown did not give is keyed by its UDID until then.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use irecv::mode::Mode;
use serde::{Deserialize, Serialize};
use usb::{DeviceId, DeviceInfo, PortPath, Speed};

use super::identify::Identity;

/// What an entry is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Key {
    /// The chip's ECID.
    Ecid(u64),
    /// A UDID, while the ECID is pending.
    Udid(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Ecid(e) => f.write_str(&irecv::serial::format_ecid(*e)),
            Key::Udid(u) => write!(f, "udid:{u}"),
        }
    }
}

impl Key {
    /// Parses what [`Key`]'s `Display` prints (`0x1a2b...`, a bare hex ECID, or `udid:...`).
    pub fn parse(text: &str) -> Option<Key> {
        if let Some(udid) = text.strip_prefix("udid:") {
            return Some(Key::Udid(udid.to_string()));
        }
        let hex = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        u64::from_str_radix(hex, 16).ok().map(Key::Ecid)
    }

    fn of(identity: &Identity) -> Option<Key> {
        identity
            .ecid
            .map(Key::Ecid)
            .or_else(|| identity.udid.clone().map(Key::Udid))
    }
}

/// Milliseconds since the Unix epoch (what the API shows).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One change in a phone's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "change")]
pub enum Change {
    /// It arrived (first time, or back in the mode it left in).
    Arrived {
        /// Its mode.
        mode: Mode,
    },
    /// It came back in another mode.
    ModeChanged {
        /// The mode it was last seen in.
        from: Mode,
        /// The mode it is in now.
        to: Mode,
    },
    /// It left the bus.
    Left,
}

/// A [`Change`] with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What changed.
    #[serde(flatten)]
    pub change: Change,
    /// Where.
    pub port: Option<PortPath>,
}

/// One phone the registry knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key, as text (`0x1a2b...` or `udid:...`).
    pub id: String,
    /// The key.
    pub key: Key,
    /// Whether it is on the bus now.
    pub present: bool,
    /// Where it is (or was last seen).
    pub port: Option<PortPath>,
    /// Its mode now (or when last seen).
    pub mode: Mode,
    /// Link speed.
    pub speed: Speed,
    /// Bus/address while present.
    pub device: Option<DeviceId>,
    /// Which enumeration `device` is: it grows with every arrival the registry sees, so an
    /// enumeration stays told apart from a later one that got the same recycled address.
    #[serde(default)]
    pub arrival: u64,
    /// Who it is.
    pub identity: Identity,
    /// What happened to it, oldest first (at most [`HISTORY_LIMIT`] items).
    pub history: Vec<HistoryItem>,
}

/// History items kept per entry.
pub const HISTORY_LIMIT: usize = 256;

/// What the registry tells its listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Entry id (`0x1a2b...`).
    pub id: String,
    /// What happened.
    #[serde(flatten)]
    pub item: HistoryItem,
}

/// Counters for the things that went wrong or were ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Arrivals of devices that are not phones (other vendors, T2, Apple keyboards...).
    pub ignored: u64,
    /// Identifications that failed (garbage serial, lockdown framing, USB errors).
    pub identify_failed: u64,
    /// Phones that left before they were identified.
    pub vanished: u64,
    /// Results that came for an arrival that is no longer current (stale tickets).
    pub stale: u64,
    /// Arrivals being identified right now.
    pub identifying: u64,
}

/// Handle for one arrival that needs identifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// What the driver must do after an arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Open the device and identify it, then call [`Registry::identified`] with the ticket.
    Identify {
        /// Hand it back with the result.
        ticket: Ticket,
        /// The mode its product id says.
        mode: Mode,
    },
    /// Not a phone, or already known: nothing to do.
    Ignore,
}

#[derive(Debug, Clone)]
struct Pending {
    ticket: Ticket,
    info: DeviceInfo,
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Attached {
    Identifying(Pending),
    Known(Key),
}

/// The registry.
#[derive(Debug, Default)]
pub struct Registry {
    entries: BTreeMap<Key, Entry>,
    attached: HashMap<DeviceId, Attached>,
    next_ticket: u64,
    events: VecDeque<Event>,
    counters: Counters,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A device enumerated.
    pub fn arrived(&mut self, info: DeviceInfo) -> Arrival {
        let mode = match irecv::mode::classify(info.vendor_id(), info.product_id()) {
            Some(Ok(mode)) => mode,
            _ => {
                self.counters.ignored += 1;
                return Arrival::Ignore;
            }
        };
        if let Some(Attached::Known(_)) = self.attached.get(&info.id) {
            // A duplicate arrival for a device already identified.
            return Arrival::Ignore;
        }
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.attached.insert(
            info.id,
            Attached::Identifying(Pending { ticket, info, mode }),
        );
        Arrival::Identify { ticket, mode }
    }

    /// The identification of `ticket` finished. Returns the entry's key when it was recorded.
    pub fn identified(
        &mut self,
        ticket: Ticket,
        result: Result<Identity, super::identify::IdentifyError>,
        now: SystemTime,
    ) -> Option<Key> {
        let Some((id, pending)) = self.attached.iter().find_map(|(id, a)| match a {
            Attached::Identifying(p) if p.ticket == ticket => Some((*id, p.clone())),
            _ => None,
        }) else {
            self.counters.stale += 1;
            return None;
        };
        let identity = match result {
            Ok(identity) => identity,
            Err(e) => {
                if e.vanished() {
                    self.counters.vanished += 1;
                } else {
                    self.counters.identify_failed += 1;
                }
                self.attached.remove(&id);
                return None;
            }
        };
        let Some(key) = Key::of(&identity) else {
            self.counters.identify_failed += 1;
            self.attached.remove(&id);
            return None;
        };
        // The restore ramdisk enumerates with a normal-mode product id; restored told.
        let mode = if identity.restore_os {
            Mode::Restore
        } else {
            pending.mode
        };
        self.adopt_udid_entry(&key, &identity);
        let port = pending.info.port_path.clone();
        let change = match self.entries.get(&key) {
            Some(e) if e.mode != mode => Change::ModeChanged {
                from: e.mode,
                to: mode,
            },
            _ => Change::Arrived { mode },
        };
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            id: key.to_string(),
            key: key.clone(),
            present: true,
            port: None,
            mode,
            speed: pending.info.speed,
            device: None,
            arrival: 0,
            identity: Identity::default(),
            history: Vec::new(),
        });
        entry.present = true;
        entry.arrival = ticket.0;
        entry.port = port.clone();
        entry.mode = mode;
        entry.speed = pending.info.speed;
        entry.device = Some(id);
        merge(&mut entry.identity, identity);
        let item = HistoryItem {
            at_ms: unix_ms(now),
            change,
            port,
        };
        push_history(entry, item.clone());
        self.events.push_back(Event {
            id: key.to_string(),
            item,
        });
        self.attached.insert(id, Attached::Known(key.clone()));
        Some(key)
    }

    /// A phone first known by its UDID (its ECID was pending) now has an ECID: its entry
    /// moves under the ECID, history and all, so it stays one entry.
    fn adopt_udid_entry(&mut self, key: &Key, identity: &Identity) {
        let (Key::Ecid(_), Some(udid)) = (key, identity.udid.as_ref()) else {
            return;
        };
        let old_key = Key::Udid(udid.clone());
        let Some(mut old) = self.entries.remove(&old_key) else {
            return;
        };
        for a in self.attached.values_mut() {
            if matches!(a, Attached::Known(k) if *k == old_key) {
                *a = Attached::Known(key.clone());
            }
        }
        match self.entries.get_mut(key) {
            Some(entry) => {
                old.history.append(&mut entry.history);
                entry.history = old.history;
                merge(&mut entry.identity, old.identity);
            }
            None => {
                old.id = key.to_string();
                old.key = key.clone();
                self.entries.insert(key.clone(), old);
            }
        }
    }

    /// A device left the bus.
    pub fn left(&mut self, id: DeviceId, now: SystemTime) {
        match self.attached.remove(&id) {
            None => {}
            Some(Attached::Identifying(_)) => self.counters.vanished += 1,
            Some(Attached::Known(key)) => {
                // The same phone may already be back under a new address (a late departure
                // from a polling backend): only the current attachment's departure counts.
                let current = |e: &&mut Entry| e.device == Some(id);
                if let Some(entry) = self.entries.get_mut(&key).filter(current) {
                    entry.present = false;
                    entry.device = None;
                    let item = HistoryItem {
                        at_ms: unix_ms(now),
                        change: Change::Left,
                        port: entry.port.clone(),
                    };
                    push_history(entry, item.clone());
                    self.events.push_back(Event {
                        id: key.to_string(),
                        item,
                    });
                }
            }
        }
    }

    /// The next event for listeners.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Every entry, present or not, ordered by key.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// One entry.
    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The counters, with the number of arrivals being identified now.
    pub fn counters(&self) -> Counters {
        let identifying = self
            .attached
            .values()
            .filter(|a| matches!(a, Attached::Identifying(_)))
            .count();
        Counters {
            identifying: identifying as u64,
            ..self.counters
        }
    }
}

fn push_history(entry: &mut Entry, item: HistoryItem) {
    if entry.history.len() >= HISTORY_LIMIT {
        entry.history.remove(0);
    }
    entry.history.push(item);
}

/// Keeps what an earlier mode told about the phone when the new mode says less (DFU has no
/// serial number, recovery has no UDID).
fn merge(old: &mut Identity, new: Identity) {
    fn keep<T>(old: &mut Option<T>, new: Option<T>) {
        if new.is_some() {
            *old = new;
        }
    }
    keep(&mut old.ecid, new.ecid);
    keep(&mut old.udid, new.udid);
    keep(&mut old.serial_number, new.serial_number);
    keep(&mut old.product_type, new.product_type);
    keep(&mut old.board_config, new.board_config);
    keep(&mut old.name, new.name);
    keep(&mut old.chip_id, new.chip_id);
    keep(&mut old.board_id, new.board_id);
    keep(&mut old.product_version, new.product_version);
    old.ecid_pending = new.ecid_pending;
}

#[cfg(test)]
mod tests {
    use super::*;
    use usb::DeviceDescriptor;

    fn info(address: u8, pid: u16, port: &str) -> DeviceInfo {
        let mut raw = [18, 1, 0, 2, 0, 0, 0, 64, 0xAC, 0x05, 0, 0, 0, 0, 1, 2, 3, 1];
        raw[10..12].copy_from_slice(&pid.to_le_bytes());
        DeviceInfo {
            id: DeviceId { bus: 1, address },
            port_path: Some(port.parse().unwrap()),
            speed: Speed::High,
            descriptor: DeviceDescriptor::parse(&raw).unwrap(),
        }
    }

    fn ecid(e: u64) -> Identity {
        Identity {
            ecid: Some(e),
            ..Identity::default()
        }
    }

    fn ticket(a: Arrival) -> Ticket {
        match a {
            Arrival::Identify { ticket, .. } => ticket,
            Arrival::Ignore => panic!("expected Identify"),
        }
    }

    #[test]
    fn recovery_then_dfu_is_one_entry_with_a_mode_change() {
        let mut r = Registry::new();
        let now = SystemTime::now();
        let t = ticket(r.arrived(info(2, 0x1281, "1-1.3")));
        assert_eq!(r.identified(t, Ok(ecid(7)), now), Some(Key::Ecid(7)));
        r.left(DeviceId { bus: 1, address: 2 }, now);
        let t = ticket(r.arrived(info(5, 0x1227, "1-1.3")));
        r.identified(t, Ok(ecid(7)), now);
        let entries: Vec<_> = r.entries().collect();
        assert_eq!(entries.len(), 1);
        let e = entries[0];
        assert_eq!((e.mode, e.present), (Mode::Dfu, true));
        let changes: Vec<_> = e.history.iter().map(|h| h.change.clone()).collect();
        assert_eq!(
            changes,
            vec![
                Change::Arrived {
                    mode: Mode::Recovery(irecv::mode::RecoveryId::P1281)
                },
                Change::Left,
                Change::ModeChanged {
                    from: Mode::Recovery(irecv::mode::RecoveryId::P1281),
                    to: Mode::Dfu
                },
            ]
        );
        assert_eq!(std::iter::from_fn(|| r.poll_event()).count(), 3);
    }

    #[test]
    fn a_udid_entry_moves_under_the_ecid_once_known_and_restore_mode_comes_from_restored() {
        let mut r = Registry::new();
        let now = SystemTime::now();
        // Normal mode, lockdown unreachable: known by UDID only.
        let t = ticket(r.arrived(info(2, 0x12A8, "1-1.2")));
        let pending = Identity {
            udid: Some("00008110-001A2B3C4D5E6F70".into()),
            ecid_pending: Some("lockdown timed out".into()),
            ..Identity::default()
        };
        let udid_key = Key::Udid("00008110-001A2B3C4D5E6F70".into());
        assert_eq!(r.identified(t, Ok(pending), now), Some(udid_key.clone()));
        r.left(DeviceId { bus: 1, address: 2 }, now);
        // Back with the same product id, but restored answers: restore mode, with the ECID.
        let t = ticket(r.arrived(info(3, 0x12A8, "1-1.2")));
        let restored = Identity {
            udid: Some("00008110-001A2B3C4D5E6F70".into()),
            restore_os: true,
            ..ecid(0x1A2B)
        };
        assert_eq!(r.identified(t, Ok(restored), now), Some(Key::Ecid(0x1A2B)));
        let entries: Vec<_> = r.entries().collect();
        assert_eq!(entries.len(), 1, "one phone, one entry");
        let e = entries[0];
        assert_eq!(e.key, Key::Ecid(0x1A2B));
        assert_eq!(e.mode, Mode::Restore);
        assert_eq!(e.identity.ecid_pending, None);
        assert!(r.get(&udid_key).is_none());
        let changes: Vec<_> = e.history.iter().map(|h| h.change.clone()).collect();
        assert_eq!(
            changes,
            vec![
                Change::Arrived { mode: Mode::Normal },
                Change::Left,
                Change::ModeChanged {
                    from: Mode::Normal,
                    to: Mode::Restore
                },
            ]
        );
    }

    #[test]
    fn non_phones_stale_tickets_and_vanished_arrivals_are_counted() {
        let mut r = Registry::new();
        let now = SystemTime::now();
        assert_eq!(r.arrived(info(2, 0x8600, "1-2")), Arrival::Ignore);
        let t = ticket(r.arrived(info(3, 0x1227, "1-3")));
        r.left(DeviceId { bus: 1, address: 3 }, now);
        assert_eq!(r.identified(t, Ok(ecid(1)), now), None);
        let c = r.counters();
        assert_eq!((c.ignored, c.vanished, c.stale), (1, 1, 1));
        assert_eq!(r.entries().count(), 0);
    }

    #[test]
    fn a_phone_back_at_a_recycled_address_is_a_new_enumeration() {
        // Addresses run 1..=127 per bus: on a busy bench a phone comes back at an address it
        // had before, and a restore waiting for its next enumeration must see a new one.
        let mut r = Registry::new();
        let now = SystemTime::now();
        let t = ticket(r.arrived(info(2, 0x1281, "1-1.3")));
        r.identified(t, Ok(ecid(7)), now);
        let first = r.get(&Key::Ecid(7)).map(|e| (e.device, e.arrival)).unwrap();
        r.left(DeviceId { bus: 1, address: 2 }, now);
        let t = ticket(r.arrived(info(2, 0x1281, "1-1.3")));
        r.identified(t, Ok(ecid(7)), now);
        let second = r.get(&Key::Ecid(7)).map(|e| (e.device, e.arrival)).unwrap();
        assert_eq!(first.0, second.0, "the same address");
        assert!(
            second.1 > first.1,
            "a later arrival: {first:?} then {second:?}"
        );
    }

    #[test]
    fn a_late_departure_of_an_old_address_does_not_hide_the_phone_back_at_a_new_one() {
        let mut r = Registry::new();
        let now = SystemTime::now();
        let t = ticket(r.arrived(info(2, 0x1281, "1-1.3")));
        r.identified(t, Ok(ecid(7)), now);
        let t = ticket(r.arrived(info(9, 0x1227, "1-1.3")));
        r.identified(t, Ok(ecid(7)), now);
        r.left(DeviceId { bus: 1, address: 2 }, now);
        let e = r.get(&Key::Ecid(7)).unwrap();
        assert!(e.present);
        assert_eq!(e.device, Some(DeviceId { bus: 1, address: 9 }));
        assert_eq!(e.mode, Mode::Dfu);
    }

    #[test]
    fn keys_round_trip_through_text() {
        for key in [Key::Ecid(0x1a2b), Key::Udid("00008110-001A".into())] {
            assert_eq!(Key::parse(&key.to_string()), Some(key));
        }
        assert_eq!(Key::parse("zz"), None);
    }
}
