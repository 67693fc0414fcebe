//! Turning what libusb reports (hotplug callbacks, or device lists polled on an interval) into
//! clean [`HotplugEvent`]s: one `Arrived` per device, one `Left` per `Arrived`. Pure code, time
//! passed in; the threads that feed it live in `watch`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::backend::{DeviceId, DeviceInfo, HotplugEvent};

/// The devices announced so far, and the rules that keep the event stream clean:
///
/// - an arrival of a device already announced (same bus, address, port and descriptor) is a
///   duplicate (libusb's enumerate-on-register and a real arrival event can both report it);
/// - a departure of a device not announced is dropped, so each `Left` comes once;
/// - an arrival on a port where another device was announced means that device re-enumerated
///   (new address after a mode change) without its departure being seen yet: a `Left` for the
///   old one comes first;
/// - an arrival at an announced address whose port or descriptor differ is a new device that
///   reused the address: `Left` for the old, then `Arrived`.
///
/// ```
/// use usb::libusb::Presence;
/// # use usb::{DeviceDescriptor, DeviceId, DeviceInfo, HotplugEvent, Speed};
/// # let phone = DeviceInfo {
/// #     id: DeviceId { bus: 1, address: 5 },
/// #     port_path: Some("1-2".parse()?),
/// #     speed: Speed::High,
/// #     descriptor: DeviceDescriptor::parse(&[18, 1, 0, 2, 0, 0, 0, 64, 0xAC, 5, 0xA8, 0x12, 0, 0x15, 1, 2, 3, 4])?,
/// # };
///
/// let mut presence = Presence::default();
/// assert_eq!(presence.arrived(phone.clone()).len(), 1);
/// assert!(presence.arrived(phone.clone()).is_empty()); // duplicate
/// assert_eq!(presence.left(phone.id).len(), 1);
/// assert!(presence.left(phone.id).is_empty()); // Left only once
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Presence {
    present: BTreeMap<DeviceId, DeviceInfo>,
}

fn same_device(a: &DeviceInfo, b: &DeviceInfo) -> bool {
    a.id == b.id && a.port_path == b.port_path && a.descriptor == b.descriptor
}

impl Presence {
    /// The devices announced and not yet departed, by id.
    pub fn present(&self) -> impl Iterator<Item = &DeviceInfo> {
        self.present.values()
    }

    fn remove(&mut self, id: DeviceId) -> Option<HotplugEvent> {
        self.present.remove(&id).map(|old| HotplugEvent::Left {
            id: old.id,
            port_path: old.port_path,
        })
    }

    /// A device was reported present: the events to deliver (none for a duplicate).
    pub fn arrived(&mut self, device: DeviceInfo) -> Vec<HotplugEvent> {
        let mut events = Vec::new();
        if let Some(known) = self.present.get(&device.id) {
            if same_device(known, &device) {
                return events;
            }
            events.extend(self.remove(device.id));
        }
        if let Some(port) = &device.port_path {
            let stale: Vec<DeviceId> = self
                .present
                .values()
                .filter(|d| d.port_path.as_ref() == Some(port))
                .map(|d| d.id)
                .collect();
            for id in stale {
                events.extend(self.remove(id));
            }
        }
        self.present.insert(device.id, device.clone());
        events.push(HotplugEvent::Arrived { device });
        events
    }

    /// A device was reported gone: its `Left`, or nothing if it was never announced or has
    /// already left.
    pub fn left(&mut self, id: DeviceId) -> Vec<HotplugEvent> {
        self.remove(id).into_iter().collect()
    }

    /// A complete list of the devices present now: departures (in id order) first, then
    /// arrivals (in list order).
    pub fn snapshot(&mut self, devices: Vec<DeviceInfo>) -> Vec<HotplugEvent> {
        let gone: Vec<DeviceId> = self
            .present
            .values()
            .filter(|known| !devices.iter().any(|d| same_device(known, d)))
            .map(|known| known.id)
            .collect();
        let mut events: Vec<HotplugEvent> =
            gone.into_iter().filter_map(|id| self.remove(id)).collect();
        for device in devices {
            events.extend(self.arrived(device));
        }
        events
    }
}

/// The polling fallback for a libusb without hotplug support, as a state machine: it says
/// when the next device list is due, and turns each list into events by diffing it against
/// the previous one ([`Presence::snapshot`]).
///
/// ```
/// use std::time::{Duration, Instant};
/// use usb::libusb::Poller;
///
/// let t0 = Instant::now();
/// let mut poller = Poller::new(Duration::from_millis(500));
/// assert!(poller.due(t0)); // the first list is due at once
/// assert!(poller.handle_devices(t0, Vec::new()).is_empty());
/// assert_eq!(poller.poll_at(), Some(t0 + Duration::from_millis(500)));
/// assert!(!poller.due(t0 + Duration::from_millis(499)));
/// ```
#[derive(Debug, Clone)]
pub struct Poller {
    interval: Duration,
    next: Option<Instant>,
    presence: Presence,
}

impl Poller {
    /// A poller listing devices every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: None,
            presence: Presence::default(),
        }
    }

    /// When the next list is due; `None` before the first one (due now).
    pub fn poll_at(&self) -> Option<Instant> {
        self.next
    }

    /// Whether a list is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|at| now >= at)
    }

    /// How long to wait from `now` until the next list is due.
    pub fn wait(&self, now: Instant) -> Duration {
        self.next
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
    }

    /// The devices listed at `now`: the events since the previous list.
    pub fn handle_devices(&mut self, now: Instant, devices: Vec<DeviceInfo>) -> Vec<HotplugEvent> {
        self.next = Some(now + self.interval);
        self.presence.snapshot(devices)
    }

    /// Listing failed at `now`: nothing is concluded (a failed list is not an empty bus); the
    /// next attempt is one interval later.
    pub fn handle_failure(&mut self, now: Instant) {
        self.next = Some(now + self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::DeviceDescriptor;
    use crate::device::Speed;

    fn phone(bus: u8, address: u8, port: &str, product_id: u16) -> DeviceInfo {
        DeviceInfo {
            id: DeviceId { bus, address },
            port_path: Some(port.parse().unwrap()),
            speed: Speed::High,
            descriptor: DeviceDescriptor {
                usb_version: 0x0200,
                class: 0,
                subclass: 0,
                protocol: 0,
                max_packet_size_0: 64,
                vendor_id: 0x05AC,
                product_id,
                device_version: 0,
                manufacturer_index: 1,
                product_index: 2,
                serial_number_index: 3,
                num_configurations: 1,
            },
        }
    }

    /// Events as short text, for readable assertions.
    fn text(events: &[HotplugEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                HotplugEvent::Arrived { device } => format!(
                    "+{} {:04x} @{}",
                    device.id,
                    device.product_id(),
                    device
                        .port_path
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                ),
                HotplugEvent::Left { id, port_path } => format!(
                    "-{} @{}",
                    id,
                    port_path
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                ),
            })
            .collect()
    }

    #[test]
    fn duplicate_arrivals_are_announced_once() {
        let a = phone(1, 5, "1-2", 0x12A8);
        let mut p = Presence::default();
        let mut events = p.arrived(a.clone());
        events.extend(p.arrived(a.clone())); // enumerate on register + real event
        events.extend(p.arrived(a.clone()));
        assert_eq!(text(&events), ["+001:005 12a8 @1-2"]);
        assert_eq!(p.present().count(), 1);
    }

    #[test]
    fn left_is_delivered_once_and_never_for_a_stranger() {
        let a = phone(1, 5, "1-2", 0x12A8);
        let mut p = Presence::default();
        assert!(p.left(a.id).is_empty()); // never announced
        let mut events = p.arrived(a.clone());
        events.extend(p.left(a.id));
        events.extend(p.left(a.id));
        assert_eq!(text(&events), ["+001:005 12a8 @1-2", "-001:005 @1-2"]);
        assert_eq!(p.present().count(), 0);
    }

    #[test]
    fn arrival_and_departure_in_one_batch_stay_in_order() {
        // Plugged and pulled before the event thread drained its queue.
        let a = phone(1, 5, "1-2", 0x12A8);
        let mut p = Presence::default();
        let mut events = Vec::new();
        for step in [Some(a.clone()), None, Some(a.clone()), None] {
            match step {
                Some(d) => events.extend(p.arrived(d)),
                None => events.extend(p.left(a.id)),
            }
        }
        assert_eq!(
            text(&events),
            [
                "+001:005 12a8 @1-2",
                "-001:005 @1-2",
                "+001:005 12a8 @1-2",
                "-001:005 @1-2"
            ]
        );
    }

    #[test]
    fn re_enumeration_at_a_new_address_on_the_same_port() {
        // Normal → recovery: the phone comes back at address 6 on the same port, and the
        // libusb departure of address 5 is seen only afterwards.
        let normal = phone(1, 5, "1-1.3", 0x12A8);
        let recovery = phone(1, 6, "1-1.3", 0x1281);
        let other_slot = phone(1, 7, "1-1.4", 0x12A8);
        let mut p = Presence::default();
        let mut events = p.arrived(normal.clone());
        events.extend(p.arrived(other_slot.clone()));
        events.extend(p.arrived(recovery.clone()));
        events.extend(p.left(normal.id)); // late: already delivered
        assert_eq!(
            text(&events),
            [
                "+001:005 12a8 @1-1.3",
                "+001:007 12a8 @1-1.4",
                "-001:005 @1-1.3",
                "+001:006 1281 @1-1.3"
            ]
        );
        assert_eq!(p.present().count(), 2);
    }

    #[test]
    fn a_reused_address_is_a_new_device() {
        let a = phone(1, 5, "1-2", 0x12A8);
        let b = phone(1, 5, "1-4", 0x1227);
        let mut p = Presence::default();
        let mut events = p.arrived(a);
        events.extend(p.arrived(b));
        assert_eq!(
            text(&events),
            ["+001:005 12a8 @1-2", "-001:005 @1-2", "+001:005 1227 @1-4"]
        );
    }

    #[test]
    fn devices_without_a_port_path_are_not_confused() {
        let mut a = phone(1, 5, "1-2", 0x12A8);
        let mut b = phone(1, 6, "1-3", 0x12A8);
        a.port_path = None;
        b.port_path = None;
        let mut p = Presence::default();
        let mut events = p.arrived(a);
        events.extend(p.arrived(b));
        assert_eq!(text(&events), ["+001:005 12a8 @", "+001:006 12a8 @"]);
    }

    #[test]
    fn poller_diffs_snapshots() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut poller = Poller::new(ms(500));
        assert_eq!(poller.wait(t0), Duration::ZERO);
        let a = phone(1, 5, "1-1.3", 0x12A8);
        let b = phone(2, 3, "2-1", 0x1227);
        let mut log = Vec::new();
        log.push(text(&poller.handle_devices(t0, vec![a.clone()])));
        assert_eq!(poller.wait(t0 + ms(100)), ms(400));
        assert!(poller.due(t0 + ms(500)));
        // Nothing changed.
        log.push(text(&poller.handle_devices(t0 + ms(500), vec![a.clone()])));
        // b arrives.
        log.push(text(
            &poller.handle_devices(t0 + ms(1000), vec![b.clone(), a.clone()]),
        ));
        // A failed list concludes nothing.
        poller.handle_failure(t0 + ms(1500));
        assert_eq!(poller.poll_at(), Some(t0 + ms(2000)));
        // a re-enumerates as recovery at a new address; b leaves.
        let a2 = phone(1, 9, "1-1.3", 0x1281);
        log.push(text(&poller.handle_devices(t0 + ms(2000), vec![a2])));
        // All gone.
        log.push(text(&poller.handle_devices(t0 + ms(2500), Vec::new())));
        assert_eq!(
            log,
            [
                vec!["+001:005 12a8 @1-1.3"],
                vec![],
                vec!["+002:003 1227 @2-1"],
                vec!["-001:005 @1-1.3", "-002:003 @2-1", "+001:009 1281 @1-1.3"],
                vec!["-001:009 @1-1.3"],
            ]
        );
    }

    #[test]
    fn poller_sees_a_swap_at_the_same_address() {
        // Between two lists a phone left and another got the same address.
        let t0 = Instant::now();
        let mut poller = Poller::new(Duration::from_secs(1));
        poller.handle_devices(t0, vec![phone(1, 5, "1-2", 0x12A8)]);
        let events = poller.handle_devices(
            t0 + Duration::from_secs(1),
            vec![phone(1, 5, "1-2", 0x1227)],
        );
        assert_eq!(text(&events), ["-001:005 @1-2", "+001:005 1227 @1-2"]);
    }
}
