//! An in-process USB backend: a virtual hub whose ports hold virtual phones.
//!
//! [`VirtualHub`] implements [`usb::UsbBackend`]: `devices()` lists the phones enumerated now,
//! `open()` gives a [`usb::UsbDevice`] handle bound to one enumeration (it answers NO_DEVICE
//! once that enumeration has left the bus, even if the phone is back in another mode), and
//! `watch()` delivers [`usb::HotplugEvent`]s: arrivals and departures, including the
//! re-enumerations after mode changes, when the hub's clock reaches them.
//!
//! Hotplug sinks are called with the hub's locks held: as `usb::HotplugSink` says, they must
//! only enqueue (send on a channel), never call the hub.
//!
//! Each port holds its phone behind its own lock, so many phones are driven from many threads
//! at once; the hotplug bookkeeping has one more lock, taken only when a phone arrives or
//! leaves. Transfers are charged to the hub's [`Clock`] at the link rate (virtual time moves;
//! real time is waited out only with [`crate::clock::RealClock`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use usb::{
    Completion, ConfigurationDescriptor, Control, DeviceDescriptor, DeviceId, DeviceInfo,
    ErrorKind, HotplugEvent, HotplugSink, Operation, PortPath, Speed, Transfer, UsbBackend,
    UsbDevice, UsbError, Watch,
};

use crate::clock::Clock;
use crate::phone::{Answer, Phone, PhoneEvent};

/// A hub operation that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// No port with this index.
    #[error("the hub has {ports} ports; there is no port {index}")]
    NoSuchPort {
        /// Index asked for.
        index: usize,
        /// Ports on the hub.
        ports: usize,
    },
    /// A phone is already plugged there.
    #[error("port {path} already holds a phone")]
    PortBusy {
        /// The port.
        path: PortPath,
    },
}

#[derive(Debug, Clone, Copy)]
struct Present {
    id: DeviceId,
}

struct Slot {
    phone: Option<Phone>,
    full_speed_cable: bool,
    current: Option<Present>,
    /// When the bytes the phone has ready for bulk IN may reach the host (real clocks): the
    /// phone answers a bulk OUT as soon as it is handed over, but its answer cannot come back
    /// before that transfer's end on the link. In order: so many bytes, ready at.
    in_marks: VecDeque<(usize, Instant)>,
}

impl Slot {
    /// Stamps the bulk IN bytes the phone produced since the last stamp as ready at `ready`.
    fn mark_in(&mut self, ready: Instant) {
        let pending = self.phone.as_mut().map_or(0, Phone::in_pending);
        let marked: usize = self.in_marks.iter().map(|m| m.0).sum();
        if pending < marked {
            // Read or dropped some other way (a mode change): stamps no longer line up.
            self.in_marks.clear();
        } else if pending > marked {
            self.in_marks.push_back((pending - marked, ready));
        }
    }

    /// Takes `bytes` off the stamps: when the last of them was ready (`None`: unstamped).
    fn take_in(&mut self, mut bytes: usize) -> Option<Instant> {
        let mut ready = None;
        while bytes > 0 {
            let Some(front) = self.in_marks.front_mut() else {
                break;
            };
            ready = Some(ready.map_or(front.1, |r: Instant| r.max(front.1)));
            if front.0 > bytes {
                front.0 -= bytes;
                break;
            }
            bytes -= front.0;
            self.in_marks.pop_front();
        }
        ready
    }
}

struct Port {
    path: PortPath,
    slot: Mutex<Slot>,
    /// Notified whenever the phone on this port may have something new to say (after any
    /// transfer, timer or plug): a real-time bulk IN read waits on it instead of sleeping.
    changed: Condvar,
    /// When the port's link is free again (real clocks): each transfer is scheduled after
    /// the previous one, so sleep overshoot does not add up transfer after transfer.
    link_free: Mutex<Option<Instant>>,
}

struct Bus {
    sinks: Vec<(u64, HotplugSink)>,
    next_sink: u64,
    present: BTreeMap<DeviceId, (DeviceInfo, usize, u64)>,
    next_address: u8,
}

struct Inner {
    clock: Arc<dyn Clock>,
    ports: Vec<Port>,
    bus: Mutex<Bus>,
    bus_number: u8,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another driver thread must not wedge the whole hub.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    /// Turns the phone's bus events into hotplug events (slot lock held; bus lock inside).
    fn drain(&self, index: usize, slot: &mut Slot) {
        let Some(port) = self.ports.get(index) else {
            return;
        };
        while let Some(event) = slot.phone.as_mut().and_then(Phone::poll_event) {
            let mut bus = lock(&self.bus);
            let hotplug = match event {
                PhoneEvent::Left => {
                    let Some(present) = slot.current.take() else {
                        continue;
                    };
                    bus.present.remove(&present.id);
                    HotplugEvent::Left {
                        id: present.id,
                        port_path: Some(port.path.clone()),
                    }
                }
                PhoneEvent::Arrived { speed, .. } => {
                    let Some(phone) = slot.phone.as_ref() else {
                        continue;
                    };
                    let Ok(descriptor) = DeviceDescriptor::parse(&phone.identity().device) else {
                        continue;
                    };
                    let address = bus.allocate();
                    let id = DeviceId {
                        bus: self.bus_number,
                        address,
                    };
                    let info = DeviceInfo {
                        id,
                        port_path: Some(port.path.clone()),
                        speed,
                        descriptor,
                    };
                    bus.present
                        .insert(id, (info.clone(), index, phone.generation()));
                    slot.current = Some(Present { id });
                    HotplugEvent::Arrived { device: info }
                }
            };
            for (_, sink) in bus.sinks.iter_mut() {
                sink(hotplug.clone());
            }
        }
    }

    fn tick_port(&self, index: usize, now: Instant) {
        if let Some(port) = self.ports.get(index) {
            let mut slot = lock(&port.slot);
            if let Some(phone) = slot.phone.as_mut() {
                if phone.poll_timeout().is_some_and(|t| t <= now) {
                    phone.handle_timeout(now);
                    port.changed.notify_all();
                }
            }
            self.drain(index, &mut slot);
        }
    }

    fn tick(&self) {
        let now = self.clock.now();
        for i in 0..self.ports.len() {
            self.tick_port(i, now);
        }
    }

    fn port_timer(&self, index: usize) -> Option<Instant> {
        let port = self.ports.get(index)?;
        let slot = lock(&port.slot);
        slot.phone.as_ref().and_then(Phone::poll_timeout)
    }
}

impl Bus {
    fn allocate(&mut self) -> u8 {
        for _ in 0..127 {
            let a = self.next_address;
            self.next_address = if a >= 127 { 2 } else { a + 1 };
            if !self.present.keys().any(|id| id.address == a) {
                return a;
            }
        }
        self.next_address
    }
}

/// A hub of virtual phones. Cheap to clone (shared).
#[derive(Clone)]
pub struct VirtualHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VirtualHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualHub")
            .field("ports", &self.inner.ports.len())
            .field("clock", &self.inner.clock)
            .finish()
    }
}

impl VirtualHub {
    /// A hub with `ports` ports behind root port 1 of bus 1: `1-1.1` … `1-1.N` (at most 255).
    pub fn new(ports: usize, clock: Arc<dyn Clock>) -> Self {
        let paths = (1..=ports.min(255))
            .filter_map(|i| PortPath::new(1, &[1, i as u8]).ok())
            .collect();
        Self::with_ports(paths, clock)
    }

    /// A hub with these port paths (a deeper chain, several buses...). Bus numbers in the ids
    /// are those of the first path.
    pub fn with_ports(paths: Vec<PortPath>, clock: Arc<dyn Clock>) -> Self {
        let bus_number = paths.first().map(PortPath::bus).unwrap_or(1);
        let ports = paths
            .into_iter()
            .map(|path| Port {
                path,
                slot: Mutex::new(Slot {
                    in_marks: VecDeque::new(),
                    phone: None,
                    full_speed_cable: false,
                    current: None,
                }),
                changed: Condvar::new(),
                link_free: Mutex::new(None),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                clock,
                ports,
                bus: Mutex::new(Bus {
                    sinks: Vec::new(),
                    next_sink: 0,
                    present: BTreeMap::new(),
                    next_address: 2,
                }),
                bus_number,
            }),
        }
    }

    /// The clock transfers are charged to.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Number of ports.
    pub fn port_count(&self) -> usize {
        self.inner.ports.len()
    }

    /// The path of port `index`.
    pub fn port_path(&self, index: usize) -> Option<&PortPath> {
        self.inner.ports.get(index).map(|p| &p.path)
    }

    fn port(&self, index: usize) -> Result<&Port, HubError> {
        self.inner.ports.get(index).ok_or(HubError::NoSuchPort {
            index,
            ports: self.inner.ports.len(),
        })
    }

    /// Plugs `phone` into port `index`: it enumerates now.
    pub fn plug(&self, index: usize, mut phone: Phone) -> Result<(), HubError> {
        let port = self.port(index)?;
        let mut slot = lock(&port.slot);
        if slot.phone.is_some() {
            return Err(HubError::PortBusy {
                path: port.path.clone(),
            });
        }
        phone.set_cable_full_speed(slot.full_speed_cable);
        phone.plug(self.inner.clock.now());
        slot.phone = Some(phone);
        slot.in_marks.clear();
        self.inner.drain(index, &mut slot);
        Ok(())
    }

    /// Pulls the phone out of port `index` and hands it back.
    pub fn unplug(&self, index: usize) -> Result<Option<Phone>, HubError> {
        let port = self.port(index)?;
        let mut slot = lock(&port.slot);
        if let Some(phone) = slot.phone.as_mut() {
            phone.unplug();
        }
        self.inner.drain(index, &mut slot);
        port.changed.notify_all();
        slot.in_marks.clear();
        Ok(slot.phone.take())
    }

    /// Moves the phone in port `from` to port `to`, as a technician does: it leaves the bus on
    /// `from` and arrives at once on `to` in the mode it was in (a phone running the restore
    /// ramdisk comes back in recovery, as after any pulled cable); a re-enumeration it was
    /// about to make is dropped. `Ok(false)` when `from` holds no phone; `to` must be empty.
    pub fn move_phone(&self, from: usize, to: usize) -> Result<bool, HubError> {
        self.port(from)?;
        let target = self.port(to)?;
        if lock(&target.slot).phone.is_some() {
            return Err(HubError::PortBusy {
                path: target.path.clone(),
            });
        }
        let Some(mut phone) = self.unplug(from)? else {
            return Ok(false);
        };
        let mut slot = lock(&target.slot);
        phone.set_cable_full_speed(slot.full_speed_cable);
        phone.replug(self.inner.clock.now());
        slot.phone = Some(phone);
        slot.in_marks.clear();
        self.inner.drain(to, &mut slot);
        target.changed.notify_all();
        Ok(true)
    }

    /// Marks the cable on port `index` as full speed (a bad cable): the phone's next
    /// enumerations run at 12 Mb/s.
    pub fn set_cable_full_speed(&self, index: usize, full: bool) -> Result<(), HubError> {
        let port = self.port(index)?;
        let mut slot = lock(&port.slot);
        slot.full_speed_cable = full;
        if let Some(phone) = slot.phone.as_mut() {
            phone.set_cable_full_speed(full);
        }
        Ok(())
    }

    /// Runs `f` on the phone in port `index` (to inspect its record, replug it...), then
    /// publishes what it did on the bus. `f` runs under the port's lock: it must not call the
    /// hub back for the same port.
    pub fn with_phone<R>(&self, index: usize, f: impl FnOnce(&mut Phone) -> R) -> Option<R> {
        let port = self.inner.ports.get(index)?;
        let mut slot = lock(&port.slot);
        let r = slot.phone.as_mut().map(f);
        self.inner.drain(index, &mut slot);
        port.changed.notify_all();
        r
    }

    /// Runs every phone's due timers at the clock's now (arrivals after mode changes...).
    pub fn tick(&self) {
        self.inner.tick();
    }

    /// The earliest timer of any phone.
    pub fn next_timer(&self) -> Option<Instant> {
        (0..self.inner.ports.len())
            .filter_map(|i| self.inner.port_timer(i))
            .min()
    }

    /// Moves the clock through every timer due within `horizon` from now (on the virtual
    /// clock this is instant), then to the end of the horizon. Returns the timers run.
    pub fn run_for(&self, horizon: Duration) -> usize {
        let end = self.inner.clock.now() + horizon;
        let mut n = 0;
        while let Some(t) = self.next_timer().filter(|t| *t <= end) {
            self.inner.clock.advance_to(t);
            self.inner.tick();
            n += 1;
        }
        self.inner.clock.advance_to(end);
        self.inner.tick();
        n
    }

    /// Like [`VirtualHub::run_for`] for one port only (what a thread driving that phone does
    /// while it waits for the phone to come back), stopping early when `done` says so.
    pub fn run_port_until(
        &self,
        index: usize,
        horizon: Duration,
        mut done: impl FnMut(&Phone) -> bool,
    ) -> bool {
        let end = self.inner.clock.now() + horizon;
        loop {
            let now = self.inner.clock.now();
            self.inner.tick_port(index, now);
            if self.with_phone(index, |p| done(p)).unwrap_or(false) {
                return true;
            }
            match self.inner.port_timer(index).filter(|t| *t <= end) {
                Some(t) => self.inner.clock.advance_to(t.max(now)),
                // Another thread's tick may have run this port's last timer since the check
                // above (the clock is shared): look once more before giving up.
                None => return self.with_phone(index, |p| done(p)).unwrap_or(false),
            }
        }
    }
}

/// Removes a sink when the watch is dropped, and stops the real-time ticker.
struct WatchGuard {
    inner: Weak<Inner>,
    id: u64,
    stop: Arc<AtomicBool>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(inner) = self.inner.upgrade() {
            lock(&inner.bus).sinks.retain(|(i, _)| *i != self.id);
        }
    }
}

impl UsbBackend for VirtualHub {
    fn devices(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        self.inner.tick();
        let bus = lock(&self.inner.bus);
        Ok(bus
            .present
            .values()
            .map(|(info, _, _)| info.clone())
            .collect())
    }

    fn open(&self, id: DeviceId) -> Result<Box<dyn UsbDevice>, UsbError> {
        let gone = || UsbError::new(ErrorKind::NoDevice, Operation::Open);
        let (info, index, generation) = lock(&self.inner.bus)
            .present
            .get(&id)
            .cloned()
            .ok_or_else(gone)?;
        let port = self.inner.ports.get(index).ok_or_else(gone)?;
        let slot = lock(&port.slot);
        let phone = slot
            .phone
            .as_ref()
            .filter(|p| p.is_on_bus() && p.generation() == generation)
            .ok_or_else(gone)?;
        let identity = phone.identity();
        let op = |index| Operation::GetDescriptor {
            descriptor_type: 2,
            index,
        };
        let configs = identity
            .configurations
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                ConfigurationDescriptor::parse(raw).map_err(|e| UsbError::malformed(op(i as u8), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(SimDevice {
            inner: Arc::clone(&self.inner),
            index,
            generation,
            descriptor: info.descriptor,
            configs,
            speed: info.speed,
            path: port.path.clone(),
        }))
    }

    fn watch(&self, mut sink: HotplugSink) -> Result<Watch, UsbError> {
        let mut bus = lock(&self.inner.bus);
        for (info, _, _) in bus.present.values() {
            sink(HotplugEvent::Arrived {
                device: info.clone(),
            });
        }
        let id = bus.next_sink;
        bus.next_sink += 1;
        bus.sinks.push((id, sink));
        drop(bus);
        let stop = Arc::new(AtomicBool::new(false));
        if !self.inner.clock.is_virtual() {
            // Real time: someone has to run the phones' timers while nobody transfers.
            let weak = Arc::downgrade(&self.inner);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("sim-hub-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                        match weak.upgrade() {
                            Some(inner) => inner.tick(),
                            None => break,
                        }
                    }
                })
                .map_err(|_| UsbError::new(ErrorKind::Other, Operation::Hotplug))?;
        }
        Ok(Watch::new(WatchGuard {
            inner: Arc::downgrade(&self.inner),
            id,
            stop,
        }))
    }
}

/// An open handle on one enumeration of a virtual phone.
struct SimDevice {
    inner: Arc<Inner>,
    index: usize,
    generation: u64,
    descriptor: DeviceDescriptor,
    configs: Vec<ConfigurationDescriptor>,
    speed: Speed,
    path: PortPath,
}

impl SimDevice {
    /// Runs `f` on this enumeration's phone, publishes bus events, charges the time.
    ///
    /// With a real clock, a bulk IN read that finds nothing waits (up to `timeout`) for the
    /// phone to have something, as a libusb read does, instead of sleeping the whole timeout.
    fn with<T>(
        &self,
        op: Operation,
        timeout: Duration,
        mut f: impl FnMut(&mut Phone, Instant) -> Answer<T>,
    ) -> Result<T, UsbError> {
        let port = self
            .inner
            .ports
            .get(self.index)
            .ok_or_else(|| UsbError::new(ErrorKind::NoDevice, op.clone()))?;
        let bulk_in = matches!(op, Operation::BulkIn { .. });
        let real = !self.inner.clock.is_virtual();
        let deadline = Instant::now() + timeout;
        let started = self.inner.clock.now();
        let mut waited = false;
        let (result, end) = {
            let mut slot = lock(&port.slot);
            let (answer, moved) = loop {
                let now = self.inner.clock.now();
                let (answer, moved) = self.attempt(&mut slot, now, &mut f);
                self.inner.drain(self.index, &mut slot);
                let timed_out = matches!(answer.result, Err(ErrorKind::Timeout));
                if !(timed_out && bulk_in) {
                    port.changed.notify_all();
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if !(real && bulk_in && timed_out) || left.is_zero() {
                    break (answer, moved);
                }
                waited = true;
                // Woken by a transfer or timer on this port, or at the deadline. The timer
                // ticker runs every few milliseconds, so a wait never outlives the phone's
                // own timers by more than that.
                slot = port
                    .changed
                    .wait_timeout(slot, left)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
            };
            if !real {
                let took = match answer.result {
                    Err(ErrorKind::Timeout) if waited => answer.took,
                    Err(ErrorKind::Timeout) => answer.took + timeout,
                    _ => answer.took,
                };
                drop(slot);
                self.inner.clock.advance(took);
                return answer.result.map_err(|kind| UsbError::new(kind, op));
            }
            let turnaround = slot
                .phone
                .as_ref()
                .map_or(Duration::ZERO, Phone::turnaround);
            let mut free = lock(&port.link_free);
            let end = match (&answer.result, bulk_in) {
                (Ok(_), true) => {
                    // The read was on the link before the bytes came (or they were ready when
                    // it started); it completes when they may have reached the host. A read
                    // that was pending (issued before its bytes were ready on the link, even
                    // if the phone made them earlier) costs no turnaround, and its few bytes
                    // ride along the queued transfers rather than waiting behind them.
                    let ready = slot.take_in(moved).unwrap_or(started);
                    let wire = answer.took.saturating_sub(turnaround);
                    let pending = waited || ready > started;
                    let fixed = if pending { Duration::ZERO } else { turnaround };
                    let on_wire = started.max(ready) + fixed;
                    let end = on_wire + wire;
                    *free = Some(match *free {
                        Some(f) if f > on_wire => f + wire,
                        _ => end,
                    });
                    end
                }
                (Err(_), true) if waited || answer.took.is_zero() => self.inner.clock.now(),
                _ => {
                    // Real time: the transfer occupies the link from when it started (or from
                    // when the link was free) for `took`. A phone works (hashes,
                    // decompresses) while its bus moves bytes, so its own processing is
                    // inside that time, not added to it.
                    let took = match answer.result {
                        Err(ErrorKind::Timeout) => answer.took + timeout,
                        _ => answer.took,
                    };
                    let end = free.map_or(started, |f| f.max(started)) + took;
                    *free = Some(end);
                    end
                }
            };
            drop(free);
            if matches!(op, Operation::BulkOut { .. }) {
                slot.mark_in(end);
            }
            (answer.result, end)
        };
        self.inner.clock.advance_to(end);
        result.map_err(|kind| UsbError::new(kind, op))
    }

    /// One call of `f` on this enumeration's phone (after its due timers): the answer and the
    /// bytes it moved.
    fn attempt<T>(
        &self,
        slot: &mut Slot,
        now: Instant,
        f: &mut impl FnMut(&mut Phone, Instant) -> Answer<T>,
    ) -> (Answer<T>, usize) {
        match slot.phone.as_mut() {
            Some(phone) => {
                phone.handle_timeout(now);
                if phone.is_on_bus() && phone.generation() == self.generation {
                    let before = phone.bytes_moved();
                    let answer = f(phone, now);
                    let moved = phone.bytes_moved().saturating_sub(before);
                    (answer, usize::try_from(moved).unwrap_or(usize::MAX))
                } else {
                    (
                        Answer {
                            result: Err(ErrorKind::NoDevice),
                            took: Duration::ZERO,
                        },
                        0,
                    )
                }
            }
            None => (
                Answer {
                    result: Err(ErrorKind::NoDevice),
                    took: Duration::ZERO,
                },
                0,
            ),
        }
    }

    /// Hands one queued bulk OUT transfer to the phone now; when it ends on the link. Queued
    /// behind a transfer still on the link, it starts when that one ends, with no turnaround.
    fn submit_out(
        &self,
        endpoint: u8,
        data: &[u8],
        timeout: Duration,
    ) -> (Result<usize, UsbError>, Instant) {
        let op = Operation::BulkOut {
            endpoint,
            length: data.len(),
        };
        let Some(port) = self.inner.ports.get(self.index) else {
            return (
                Err(UsbError::new(ErrorKind::NoDevice, op)),
                self.inner.clock.now(),
            );
        };
        let mut slot = lock(&port.slot);
        let now = self.inner.clock.now();
        let (mut answer, _) = self.attempt(&mut slot, now, &mut |phone, now| match phone
            .transfer(Transfer::BulkOut { endpoint, data }, now)
        {
            Answer {
                result: Ok(Completion::Out { written }),
                took,
            } => Answer {
                result: Ok(written),
                took,
            },
            Answer { result, took } => Answer {
                result: result.and(Err(ErrorKind::Other)),
                took,
            },
        });
        self.inner.drain(self.index, &mut slot);
        port.changed.notify_all();
        // A transfer the phone does not take holds the link until its timeout.
        if matches!(answer.result, Err(ErrorKind::Timeout)) {
            answer.took += timeout;
        }
        let end = if self.inner.clock.is_virtual() {
            self.inner.clock.advance(answer.took);
            self.inner.clock.now()
        } else {
            let turnaround = slot
                .phone
                .as_ref()
                .map_or(Duration::ZERO, Phone::turnaround);
            let mut free = lock(&port.link_free);
            let end = match *free {
                Some(f) if f > now => f + answer.took.saturating_sub(turnaround),
                _ => now + answer.took,
            };
            *free = Some(end);
            end
        };
        slot.mark_in(end);
        (answer.result.map_err(|kind| UsbError::new(kind, op)), end)
    }

    fn perform(&self, transfer: Transfer<'_>, timeout: Duration) -> Result<Completion, UsbError> {
        self.with(transfer.operation(), timeout, |phone, now| {
            phone.transfer(transfer, now)
        })
    }

    fn handle(&self) -> SimDevice {
        SimDevice {
            inner: Arc::clone(&self.inner),
            index: self.index,
            generation: self.generation,
            descriptor: self.descriptor.clone(),
            configs: self.configs.clone(),
            speed: self.speed,
            path: self.path.clone(),
        }
    }

    fn still_here(&self) -> bool {
        self.inner.ports.get(self.index).is_some_and(|port| {
            lock(&port.slot)
                .phone
                .as_ref()
                .is_some_and(|p| p.is_on_bus() && p.generation() == self.generation)
        })
    }
}

fn mismatch(op: Operation) -> UsbError {
    UsbError::new(ErrorKind::Other, op)
}

impl UsbDevice for SimDevice {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        &self.descriptor
    }

    fn configurations(&self) -> &[ConfigurationDescriptor] {
        &self.configs
    }

    fn speed(&self) -> Speed {
        self.speed
    }

    fn port_path(&self) -> Option<&PortPath> {
        Some(&self.path)
    }

    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        self.with(Operation::GetConfiguration, Duration::ZERO, |phone, _| {
            Answer {
                result: Ok(phone.core().active_configuration),
                took: Duration::ZERO,
            }
        })
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError> {
        let setup = Control::new(
            0x00,
            usb::standard_request::SET_CONFIGURATION,
            value.into(),
            0,
        );
        self.perform(
            Transfer::ControlOut { setup, data: &[] },
            Duration::from_secs(1),
        )
        .map(|_| ())
        .map_err(|e| UsbError::new(e.kind(), Operation::SetConfiguration { value }))
    }

    fn claim_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        let op = Operation::ClaimInterface { interface };
        self.with(op, Duration::ZERO, |phone, _| {
            let active = phone.core().active_configuration;
            let ok = phone.identity().has_interface(active, interface, None);
            Answer {
                result: if ok { Ok(()) } else { Err(ErrorKind::NotFound) },
                took: Duration::ZERO,
            }
        })
    }

    fn release_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.with(
            Operation::ReleaseInterface { interface },
            Duration::ZERO,
            |_, _| Answer {
                result: Ok(()),
                took: Duration::ZERO,
            },
        )
    }

    fn set_alternate_setting(
        &mut self,
        interface: u8,
        alternate_setting: u8,
    ) -> Result<(), UsbError> {
        let setup = Control::new(
            0x01,
            usb::standard_request::SET_INTERFACE,
            alternate_setting.into(),
            interface.into(),
        );
        self.perform(
            Transfer::ControlOut { setup, data: &[] },
            Duration::from_secs(1),
        )
        .map(|_| ())
        .map_err(|e| {
            UsbError::new(
                e.kind(),
                Operation::SetAlternateSetting {
                    interface,
                    alternate_setting,
                },
            )
        })
    }

    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        match self.perform(Transfer::ControlIn { setup, length }, timeout)? {
            Completion::In(bytes) => Ok(bytes),
            _ => Err(mismatch(Operation::ControlIn { setup, length })),
        }
    }

    fn control_out(
        &mut self,
        setup: Control,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        match self.perform(Transfer::ControlOut { setup, data }, timeout)? {
            Completion::Out { written } => Ok(written),
            _ => Err(mismatch(Operation::ControlOut {
                setup,
                length: data.len(),
            })),
        }
    }

    fn bulk_in_pipe(&mut self, endpoint: u8) -> Option<Box<dyn usb::BulkInPipe>> {
        // In virtual time a waiting reader thread would race the clock ahead: the caller
        // reads between its writes instead.
        if self.inner.clock.is_virtual() {
            return None;
        }
        Some(Box::new(SimPipe {
            device: self.handle(),
            endpoint,
        }))
    }

    fn bulk_out_queue(&mut self, endpoint: u8) -> Option<Box<dyn usb::BulkOutQueue>> {
        Some(Box::new(SimOutQueue {
            device: self.handle(),
            endpoint,
            submitted: 0,
            in_flight: VecDeque::new(),
            failed: None,
        }))
    }

    fn bulk_in(
        &mut self,
        endpoint: u8,
        length: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        match self.perform(Transfer::BulkIn { endpoint, length }, timeout)? {
            Completion::In(bytes) => Ok(bytes),
            _ => Err(mismatch(Operation::BulkIn { endpoint, length })),
        }
    }

    fn bulk_out(
        &mut self,
        endpoint: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        match self.perform(Transfer::BulkOut { endpoint, data }, timeout)? {
            Completion::Out { written } => Ok(written),
            _ => Err(mismatch(Operation::BulkOut {
                endpoint,
                length: data.len(),
            })),
        }
    }

    fn reset(&mut self) -> Result<(), UsbError> {
        self.perform(Transfer::Reset, Duration::from_secs(1))?;
        if self.still_here() {
            Ok(())
        } else {
            // libusb's answer when a reset made the device re-enumerate as something else.
            Err(UsbError::new(ErrorKind::NotFound, Operation::Reset))
        }
    }
}

/// How many bulk OUT transfers a [`SimOutQueue`] keeps in flight at most.
pub const OUT_QUEUE_LIMIT: usize = 8;

/// Bulk OUT transfers queued on a virtual phone's endpoint: each is handed to the phone when
/// submitted and ends on the link right after the one before it (no turnaround), as a
/// host controller runs queued URBs.
struct SimOutQueue {
    device: SimDevice,
    endpoint: u8,
    /// Transfers submitted so far.
    submitted: u64,
    /// Transfers not reaped yet: their index, when each ends on the link, and its result.
    in_flight: VecDeque<(u64, Instant, Result<usize, UsbError>)>,
    /// The first failure not reported yet.
    failed: Option<usb::QueuedFailure>,
}

impl SimOutQueue {
    /// Reaps the transfers that have ended by now.
    fn retire(&mut self) {
        let now = self.device.inner.clock.now();
        while let Some((_, end, _)) = self.in_flight.front() {
            if *end > now {
                break;
            }
            if let Some((index, _, Err(error))) = self.in_flight.pop_front() {
                self.failed
                    .get_or_insert(usb::QueuedFailure { index, error });
            }
        }
    }

    fn report(&mut self) -> Result<(), usb::QueuedFailure> {
        self.failed.take().map_or(Ok(()), Err)
    }
}

impl usb::BulkOutQueue for SimOutQueue {
    fn endpoint(&self) -> u8 {
        self.endpoint
    }

    fn submit(&mut self, data: Vec<u8>, timeout: Duration) -> Result<(), usb::QueuedFailure> {
        self.retire();
        while self.in_flight.len() >= OUT_QUEUE_LIMIT {
            if let Some((_, end, _)) = self.in_flight.front() {
                self.device.inner.clock.advance_to(*end);
            }
            self.retire();
        }
        // Behind a transfer that failed nothing more reaches the phone: the host learns of
        // the failure when that transfer ends (a timeout: after waiting it out) and stops.
        if let Some(end) = self
            .in_flight
            .iter()
            .find(|(_, _, r)| r.is_err())
            .map(|(_, end, _)| *end)
        {
            self.device.inner.clock.advance_to(end);
            self.retire();
        }
        self.report()?;
        let (result, end) = self.device.submit_out(self.endpoint, &data, timeout);
        self.in_flight.push_back((self.submitted, end, result));
        self.submitted += 1;
        // A transfer that failed at once (the phone is gone) is said at once.
        self.retire();
        self.report()
    }

    fn flush(&mut self) -> Result<(), usb::QueuedFailure> {
        if let Some((_, end, _)) = self.in_flight.back() {
            self.device.inner.clock.advance_to(*end);
        }
        self.retire();
        self.report()
    }

    fn check(&mut self) -> Result<(), usb::QueuedFailure> {
        self.retire();
        self.report()
    }

    fn in_flight(&mut self) -> usize {
        self.retire();
        self.in_flight.len()
    }
}

/// A bulk IN endpoint of a virtual phone read from another thread (real clock only).
struct SimPipe {
    device: SimDevice,
    endpoint: u8,
}

impl usb::BulkInPipe for SimPipe {
    fn endpoint(&self) -> u8 {
        self.endpoint
    }

    fn read(&mut self, length: usize, timeout: Duration) -> Result<Vec<u8>, UsbError> {
        self.device.bulk_in(self.endpoint, length, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::phone::{Mode, Options, RecoveryStage};
    use crate::profile::Profile;

    fn events(hub: &VirtualHub) -> std::sync::mpsc::Receiver<HotplugEvent> {
        let (tx, rx) = std::sync::mpsc::channel();
        let watch = hub.watch(Box::new(move |e| {
            let _ = tx.send(e);
        }));
        // The watch lives as long as the hub in these tests.
        std::mem::forget(watch);
        rx
    }

    #[test]
    fn queued_transfers_follow_each_other_on_the_link_without_turnaround() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::RealClock);
        let hub = VirtualHub::new(1, Arc::clone(&clock));
        let profile = Profile::for_product_type("iPhone14,3", 7).unwrap();
        let options = Options {
            start: Mode::Recovery(RecoveryStage::Iboot),
            ..Options::default()
        };
        // A full-speed cable (1 MB/s): each transfer's link time dwarfs the phone's work on it,
        // even in a debug build, so the next one is always queued before the last one ends.
        hub.set_cable_full_speed(0, true).unwrap();
        hub.plug(0, Phone::new(profile, options, clock.now()))
            .unwrap();
        let id = hub.devices().unwrap()[0].id;
        let generation = hub.with_phone(0, |p| p.generation()).unwrap();
        let turnaround = hub.with_phone(0, |p| p.turnaround()).unwrap();
        let mut dev = hub.open(id).unwrap();
        dev.claim_interface(0).unwrap();
        let sim = SimDevice {
            inner: Arc::clone(&hub.inner),
            index: 0,
            generation,
            descriptor: dev.device_descriptor().clone(),
            configs: dev.configurations().to_vec(),
            speed: dev.speed(),
            path: hub.port_path(0).unwrap().clone(),
        };
        // 40 000 bytes take 40 ms at 1 MB/s: the second and third are queued long before the
        // first ends, so each ends exactly its bytes' time after the one before.
        let chunk = vec![0x5A; 40_000];
        let bytes_time = Duration::from_millis(40);
        let before = clock.now();
        let (first, e1) = sim.submit_out(0x04, &chunk, Duration::from_secs(1));
        let (second, e2) = sim.submit_out(0x04, &chunk, Duration::from_secs(1));
        let (third, e3) = sim.submit_out(0x04, &chunk, Duration::from_secs(1));
        assert_eq!(
            (first.unwrap(), second.unwrap(), third.unwrap()),
            (40_000, 40_000, 40_000)
        );
        assert!(
            e1 >= before + turnaround + bytes_time,
            "the first pays the turnaround"
        );
        assert_eq!(e2 - e1, bytes_time);
        assert_eq!(e3 - e2, bytes_time);
        // A blocking transfer after the queue drained pays the turnaround again.
        clock.advance_to(e3);
        let started = clock.now();
        dev.bulk_out(0x04, &chunk, Duration::from_secs(1)).unwrap();
        assert!(clock.now() >= started + turnaround + bytes_time);
        // Through the trait: the queue reports every transfer done once flushed.
        let mut queue = dev.bulk_out_queue(0x04).unwrap();
        for _ in 0..(OUT_QUEUE_LIMIT + 2) {
            queue.submit(vec![1; 1000], Duration::from_secs(1)).unwrap();
        }
        assert!(queue.in_flight() <= OUT_QUEUE_LIMIT);
        queue.flush().unwrap();
        assert_eq!(queue.in_flight(), 0);
        // A transfer to a phone that left fails, and the queue says so at once.
        hub.unplug(0).unwrap();
        let failure = queue
            .submit(vec![1; 1000], Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(failure.error.kind(), ErrorKind::NoDevice);
        assert_eq!(
            failure.index,
            OUT_QUEUE_LIMIT as u64 + 2,
            "it names the transfer"
        );
    }

    #[test]
    fn bulk_in_stamps_are_taken_in_order() {
        let t0 = Instant::now();
        let (t1, t2) = (t0 + Duration::from_millis(1), t0 + Duration::from_millis(2));
        let mut slot = Slot {
            phone: None,
            full_speed_cable: false,
            current: None,
            in_marks: VecDeque::from([(10, t1), (5, t2)]),
        };
        assert_eq!(slot.take_in(4), Some(t1));
        assert_eq!(
            slot.take_in(8),
            Some(t2),
            "the read reaches into the second stamp"
        );
        assert_eq!(slot.in_marks, VecDeque::from([(3, t2)]));
        assert_eq!(slot.take_in(100), Some(t2));
        assert_eq!(
            slot.take_in(1),
            None,
            "bytes nobody stamped are ready at once"
        );
        // With no phone nothing is pending: the stamps no longer line up and are dropped.
        slot.in_marks.push_back((7, t1));
        slot.mark_in(t2);
        assert!(slot.in_marks.is_empty());
    }

    #[test]
    fn moving_a_phone_reenumerates_it_on_the_other_port_in_its_mode() {
        let clock: Arc<dyn Clock> = ManualClock::new();
        let hub = VirtualHub::new(3, Arc::clone(&clock));
        let profile = Profile::for_product_type("iPhone14,3", 5).unwrap();
        let options = Options {
            start: Mode::Restore,
            ..Options::default()
        };
        hub.plug(0, Phone::new(profile.clone(), options, clock.now()))
            .unwrap();
        let rx = events(&hub);
        let before: Vec<_> = rx.try_iter().collect();
        assert!(matches!(before.as_slice(), [HotplugEvent::Arrived { .. }]));

        assert_eq!(hub.move_phone(0, 2), Ok(true));
        let seen: Vec<_> = rx.try_iter().collect();
        let [HotplugEvent::Left {
            port_path: left, ..
        }, HotplugEvent::Arrived { device }] = seen.as_slice()
        else {
            panic!("expected a departure then an arrival: {seen:?}");
        };
        assert_eq!(left.as_ref(), hub.port_path(0));
        assert_eq!(device.port_path.as_ref(), hub.port_path(2));
        // A phone pulled out of restore mode comes back in recovery, the same phone.
        let (mode, ecid) = hub.with_phone(2, |p| (p.mode(), p.profile().ecid)).unwrap();
        assert_eq!(mode, Mode::Recovery(RecoveryStage::Iboot));
        assert_eq!(ecid, profile.ecid);
        assert!(hub.with_phone(0, |_| ()).is_none(), "port 0 is empty now");
        let present = hub.devices().unwrap();
        assert_eq!(present.len(), 1);
        assert_eq!(present[0].port_path.as_ref(), hub.port_path(2));

        // Nothing to move from an empty port; a busy or missing target is refused.
        assert_eq!(hub.move_phone(0, 1), Ok(false));
        let other = Profile::for_product_type("iPhone14,3", 6).unwrap();
        hub.plug(1, Phone::new(other, Options::default(), clock.now()))
            .unwrap();
        assert!(matches!(
            hub.move_phone(2, 1),
            Err(HubError::PortBusy { .. })
        ));
        assert!(matches!(
            hub.move_phone(2, 7),
            Err(HubError::NoSuchPort { .. })
        ));
        assert!(
            hub.with_phone(2, |_| ()).is_some(),
            "a refused move leaves it"
        );
    }
}
