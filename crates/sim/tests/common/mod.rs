//! Helpers shared by the conversation tests: a hub on a virtual clock, a hotplug recorder.
#![allow(dead_code)]

pub mod host;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use sim::clock::{Clock, DriverClock, ManualClock};
use sim::hub::VirtualHub;
use sim::phone::{Mode, Options, Phone};
use sim::profile::{Pairing, Profile};
use usb::{DeviceInfo, HotplugEvent, UsbBackend, UsbDevice, Watch};

pub const T: Duration = Duration::from_secs(5);

pub struct Bench {
    pub clock: Arc<ManualClock>,
    pub hub: VirtualHub,
    pub events: mpsc::Receiver<HotplugEvent>,
    _watch: Watch,
}

impl Bench {
    /// A hub of `ports` ports with one phone of `product` in port 0.
    pub fn new(product: &str, seed: u64, options: Options) -> Bench {
        let bench = Bench::empty(4);
        bench.plug(0, product, seed, options);
        bench
    }

    /// As [`Bench::new`], with a phone that lets unpaired hosts in (`Pairing::Lenient`): for
    /// the conversations of test hosts that do not pair (a plain `StartSession`, or
    /// `EnterRecovery` outside a session), which the default phone refuses as real ones do.
    pub fn lenient(product: &str, seed: u64, options: Options) -> Bench {
        let bench = Bench::empty(4);
        let mut profile = Profile::for_product_type(product, seed).unwrap();
        profile.pairing = Pairing::Lenient;
        let phone = Phone::new(profile, options, bench.clock.now());
        bench.hub.plug(0, phone).unwrap();
        bench
    }

    pub fn empty(ports: usize) -> Bench {
        let clock = ManualClock::new();
        let hub = VirtualHub::new(ports, clock.clone() as Arc<dyn Clock>);
        let (tx, events) = mpsc::channel();
        let watch = hub
            .watch(Box::new(move |e| {
                let _ = tx.send(e);
            }))
            .unwrap();
        Bench {
            clock,
            hub,
            events,
            _watch: watch,
        }
    }

    pub fn plug(&self, port: usize, product: &str, seed: u64, options: Options) {
        let profile = Profile::for_product_type(product, seed).unwrap();
        let phone = Phone::new(profile, options, self.clock.now());
        self.hub.plug(port, phone).unwrap();
    }

    /// The device enumerated on `port` now.
    pub fn info(&self, port: usize) -> Option<DeviceInfo> {
        let path = self.hub.port_path(port).cloned();
        self.hub
            .devices()
            .unwrap()
            .into_iter()
            .find(|d| d.port_path == path)
    }

    pub fn open(&self, port: usize) -> Box<dyn UsbDevice> {
        let info = self.info(port).expect("a device on the port");
        self.hub.open(info.id).unwrap()
    }

    /// Every hotplug event delivered so far.
    pub fn drain(&self) -> Vec<HotplugEvent> {
        self.events.try_iter().collect()
    }

    pub fn driver_clock(&self) -> DriverClock {
        DriverClock(self.clock.clone() as Arc<dyn Clock>)
    }

    /// Runs the phone on `port` until it is on the bus in a mode `want` accepts (or 5 virtual
    /// minutes pass).
    pub fn wait_for(&self, port: usize, want: impl Fn(Mode) -> bool) -> bool {
        self.hub
            .run_port_until(port, Duration::from_secs(300), |p| {
                p.is_on_bus() && want(p.mode())
            })
    }
}

pub fn options(start: Mode) -> Options {
    Options {
        start,
        ..Options::default()
    }
}

pub fn options_with(start: Mode, faults: &str) -> Options {
    Options {
        start,
        faults: faults.parse().unwrap(),
        ..Options::default()
    }
}

/// A test image: `len` bytes of a simple pattern.
pub fn image(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

pub fn arrivals(events: &[HotplugEvent]) -> Vec<u16> {
    events
        .iter()
        .filter_map(|e| match e {
            HotplugEvent::Arrived { device } => Some(device.product_id()),
            HotplugEvent::Left { .. } => None,
        })
        .collect()
}

pub fn lefts(events: &[HotplugEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, HotplugEvent::Left { .. }))
        .count()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

impl Bench {
    pub fn clock_advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}
