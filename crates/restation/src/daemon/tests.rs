//! The registry driver against the in-process backend (`sim::VirtualHub` on a manual clock):
//! many phones at once, a phone changing mode on its port, same-model phones, a phone that
//! vanishes while being identified. Every wait has a deadline.

use std::sync::Arc;
use std::time::Duration;

use sim::clock::{Clock, ManualClock};
use sim::hub::VirtualHub;
use sim::phone::{Mode as SimMode, Options, Phone};
use sim::profile::DfuStage;
use tokio::sync::oneshot;
use usb::{DeviceId, DeviceInfo, HotplugSink, UsbBackend, UsbDevice, UsbError, Watch};

use super::bench;
use super::registry::{Change, Entry, Key, Registry};
use super::{Daemon, Shared};
use irecv::mode::Mode;

const DEADLINE: Duration = Duration::from_secs(60);

struct Running {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), super::DaemonError>>,
}

impl Running {
    fn start(backend: Arc<dyn UsbBackend>) -> Self {
        let shared = Shared::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let daemon = Daemon::new(backend, Arc::clone(&shared));
        let task = tokio::spawn(daemon.run(async {
            let _ = stopped.await;
        }));
        Running {
            shared,
            stop: Some(stop),
            task,
        }
    }

    async fn wait_for(&self, what: &str, done: impl FnMut(&Registry) -> bool) {
        if tokio::time::timeout(DEADLINE, self.shared.wait_for(done))
            .await
            .is_err()
        {
            let entries: Vec<Entry> = self.shared.registry().entries().cloned().collect();
            panic!("timed out waiting for {what}; registry: {entries:#?}");
        }
    }

    fn entries(&self) -> Vec<Entry> {
        self.shared.registry().entries().cloned().collect()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn present(n: usize) -> impl FnMut(&Registry) -> bool {
    move |r| r.entries().filter(|e| e.present).count() == n
}

fn expected_mode(index: usize) -> Mode {
    match bench::start_mode(index) {
        SimMode::Normal => Mode::Normal,
        SimMode::Dfu(_) => Mode::Dfu,
        _ => Mode::Recovery(irecv::mode::RecoveryId::P1281),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_phones_at_once_are_all_classified_and_identified_without_confusion() {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let hub = bench::hub(32, 32, clock).unwrap();
    let running = Running::start(Arc::new(hub.clone()));
    running.wait_for("32 phones", present(32)).await;

    let entries = running.entries();
    assert_eq!(entries.len(), 32);
    let mut ecids: Vec<u64> = Vec::new();
    for i in 0..32 {
        let profile = bench::profile(i).unwrap();
        let port = hub.port_path(i).unwrap();
        let entry = entries
            .iter()
            .find(|e| e.port.as_ref() == Some(port))
            .unwrap_or_else(|| panic!("nothing on port {port}"));
        // The phone on port i is the one plugged there, not another of the same model.
        assert_eq!(entry.key, Key::Ecid(profile.ecid), "port {port}");
        assert_eq!(entry.mode, expected_mode(i), "port {port}");
        assert_eq!(
            entry.identity.product_type.as_deref(),
            Some(profile.product_type.as_str())
        );
        assert_eq!(
            entry.identity.board_config.as_deref(),
            Some(profile.board_config.as_str())
        );
        if entry.mode != Mode::Dfu {
            // Recovery shows SRNM, lockdown SerialNumber; DFU shows no serial number.
            assert_eq!(
                entry.identity.serial_number.as_deref(),
                Some(profile.serial_number.as_str())
            );
        }
        if entry.mode == Mode::Normal {
            assert_eq!(entry.identity.udid.as_deref(), Some(profile.udid.as_str()));
        }
        assert!(matches!(
            entry.history.as_slice(),
            [h] if matches!(h.change, Change::Arrived { .. })
        ));
        ecids.push(profile.ecid);
    }
    ecids.sort_unstable();
    ecids.dedup();
    assert_eq!(ecids.len(), 32, "the bench gives every phone its own ECID");
    let c = running.shared.registry().counters();
    assert_eq!((c.identify_failed, c.vanished, c.identifying), (0, 0, 0));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_leaving_in_recovery_and_returning_in_dfu_keeps_its_entry() {
    let clock: Arc<dyn Clock> = ManualClock::new();
    // Ports 0 and 3 hold the same model (presets repeat every 3), port 0 in recovery.
    let hub = bench::hub(4, 4, Arc::clone(&clock)).unwrap();
    let running = Running::start(Arc::new(hub.clone()));
    running.wait_for("4 phones", present(4)).await;
    let before = running.entries();
    let ecid = bench::profile(0).unwrap().ecid;
    let key = Key::Ecid(ecid);
    let port = hub.port_path(0).unwrap().clone();
    assert_eq!(
        running.shared.registry().get(&key).map(|e| e.mode),
        Some(Mode::Recovery(irecv::mode::RecoveryId::P1281))
    );

    let mut events = running.shared.subscribe();
    let phone = hub.unplug(0).unwrap().unwrap();
    running
        .wait_for("the phone to leave", |r| {
            r.get(&key).is_some_and(|e| !e.present)
        })
        .await;
    let options = Options {
        start: SimMode::Dfu(DfuStage::SecureRom),
        ..Options::default()
    };
    hub.plug(0, Phone::new(phone.profile().clone(), options, clock.now()))
        .unwrap();
    running
        .wait_for("it to come back in DFU", |r| {
            r.get(&key)
                .is_some_and(|e| e.present && e.mode == Mode::Dfu)
        })
        .await;

    let after = running.entries();
    assert_eq!(after.len(), before.len(), "no new entry");
    let entry = running.shared.registry().get(&key).cloned().unwrap();
    assert_eq!(entry.port.as_ref(), Some(&port));
    let changes: Vec<Change> = entry.history.iter().map(|h| h.change.clone()).collect();
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
    // Listeners saw it go and come back, in order.
    let seen: Vec<(String, Change)> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| (e.id, e.item.change))
        .collect();
    assert_eq!(
        seen,
        vec![
            (key.to_string(), Change::Left),
            (
                key.to_string(),
                Change::ModeChanged {
                    from: Mode::Recovery(irecv::mode::RecoveryId::P1281),
                    to: Mode::Dfu
                }
            ),
        ]
    );
    // What recovery said (the serial number) is kept while DFU does not say it.
    assert_eq!(
        entry.identity.serial_number.as_deref(),
        Some(phone.profile().serial_number.as_str())
    );
    // The other phone of the same model is untouched.
    let twin = running
        .shared
        .registry()
        .get(&Key::Ecid(bench::profile(3).unwrap().ecid))
        .cloned()
        .unwrap();
    assert_eq!(twin.identity.product_type, entry.identity.product_type);
    assert_ne!(twin.key, entry.key);
    assert_eq!(twin.port.as_ref(), hub.port_path(3));
    assert_eq!(twin.history.len(), 1);
    running.stop().await;
}

/// A backend whose phone on one port is pulled out just as the daemon opens it.
struct Vanishing {
    hub: VirtualHub,
    port: usize,
}

impl UsbBackend for Vanishing {
    fn devices(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        self.hub.devices()
    }

    fn open(&self, id: DeviceId) -> Result<Box<dyn UsbDevice>, UsbError> {
        let port = self.hub.port_path(self.port).cloned();
        let on_port = self
            .hub
            .devices()?
            .iter()
            .any(|d| d.id == id && d.port_path == port);
        let mut dev = self.hub.open(id)?;
        if on_port {
            // Opened, then the cable is pulled before the first request.
            let _ = self.hub.unplug(self.port);
            dev.string_descriptor(1, Duration::from_secs(1))?;
        }
        Ok(dev)
    }

    fn watch(&self, sink: HotplugSink) -> Result<Watch, UsbError> {
        self.hub.watch(sink)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_vanishing_while_identified_is_counted_and_the_daemon_goes_on() {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let hub = bench::hub(3, 2, Arc::clone(&clock)).unwrap();
    let running = Running::start(Arc::new(Vanishing {
        hub: hub.clone(),
        port: 1,
    }));
    running
        .wait_for("one identified, one vanished", |r| {
            r.entries().count() == 1 && r.counters().vanished + r.counters().stale >= 1
        })
        .await;
    assert_eq!(
        running.entries()[0].key,
        Key::Ecid(bench::profile(0).unwrap().ecid)
    );
    // The daemon still identifies phones that arrive later.
    hub.plug(2, bench::phone(2, bench::start_mode(2), &clock).unwrap())
        .unwrap();
    running.wait_for("the late phone", present(2)).await;
    assert!(running
        .shared
        .registry()
        .get(&Key::Ecid(bench::profile(2).unwrap().ecid))
        .is_some());
    running.stop().await;
}

/// A backend that garbles two ports: one phone's serial string is junk, another's
/// configuration descriptor cannot be parsed.
struct Garbled {
    hub: VirtualHub,
    junk_serial: usize,
    bad_descriptor: usize,
}

impl Garbled {
    fn port_of(&self, id: DeviceId) -> Option<usize> {
        let info = self.hub.devices().ok()?.into_iter().find(|d| d.id == id)?;
        (0..self.hub.port_count()).find(|&i| self.hub.port_path(i) == info.port_path.as_ref())
    }
}

impl UsbBackend for Garbled {
    fn devices(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        self.hub.devices()
    }

    fn open(&self, id: DeviceId) -> Result<Box<dyn UsbDevice>, UsbError> {
        let port = self.port_of(id);
        if port == Some(self.bad_descriptor) {
            let e = usb::ConfigurationDescriptor::parse(&[9, 2, 0xFF]).unwrap_err();
            let op = usb::Operation::GetDescriptor {
                descriptor_type: 2,
                index: 0,
            };
            return Err(UsbError::malformed(op, e));
        }
        let dev = self.hub.open(id)?;
        if port == Some(self.junk_serial) {
            return Ok(Box::new(Tampered {
                inner: dev,
                junk_serial: true,
                steal_configuration: false,
            }));
        }
        Ok(dev)
    }

    fn watch(&self, sink: HotplugSink) -> Result<Watch, UsbError> {
        self.hub.watch(sink)
    }
}

/// A phone as another party tampers with it: its string descriptors valid UTF-16 but no iBoot
/// serial (`junk_serial`), or its configuration switched to 0 right after the host selects one
/// (`steal_configuration`: what the udev rule of Debian's usbmuxd does on every arrival).
struct Tampered {
    inner: Box<dyn UsbDevice>,
    junk_serial: bool,
    steal_configuration: bool,
}

impl UsbDevice for Tampered {
    fn device_descriptor(&self) -> &usb::DeviceDescriptor {
        self.inner.device_descriptor()
    }
    fn configurations(&self) -> &[usb::ConfigurationDescriptor] {
        self.inner.configurations()
    }
    fn speed(&self) -> usb::Speed {
        self.inner.speed()
    }
    fn port_path(&self) -> Option<&usb::PortPath> {
        self.inner.port_path()
    }
    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        self.inner.active_configuration()
    }
    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError> {
        self.inner.set_configuration(value)?;
        if std::mem::take(&mut self.steal_configuration) {
            self.inner.set_configuration(0)?;
        }
        Ok(())
    }
    fn claim_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.inner.claim_interface(interface)
    }
    fn release_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.inner.release_interface(interface)
    }
    fn set_alternate_setting(&mut self, interface: u8, alt: u8) -> Result<(), UsbError> {
        self.inner.set_alternate_setting(interface, alt)
    }
    fn control_in(
        &mut self,
        setup: usb::Control,
        length: u16,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        let string = setup.request == 6 && setup.value >> 8 == 3 && setup.value & 0xFF != 0;
        if string && self.junk_serial {
            // "\u{FFFD}%$#" in UTF-16LE: a string, but nothing iBoot would say.
            return Ok(vec![10, 3, 0xFD, 0xFF, b'%', 0, b'$', 0, b'#', 0]);
        }
        self.inner.control_in(setup, length, timeout)
    }
    fn control_out(
        &mut self,
        setup: usb::Control,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        self.inner.control_out(setup, data, timeout)
    }
    fn bulk_in(&mut self, ep: u8, length: usize, timeout: Duration) -> Result<Vec<u8>, UsbError> {
        self.inner.bulk_in(ep, length, timeout)
    }
    fn bulk_out(&mut self, ep: u8, data: &[u8], timeout: Duration) -> Result<usize, UsbError> {
        self.inner.bulk_out(ep, data, timeout)
    }
    fn reset(&mut self) -> Result<(), UsbError> {
        self.inner.reset()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_serial_and_a_malformed_descriptor_are_counted_and_the_daemon_goes_on() {
    let clock: Arc<dyn Clock> = ManualClock::new();
    // Port 0: recovery (junk serial), port 1: DFU (bad descriptor), port 2: normal, fine.
    let hub = bench::hub(4, 3, Arc::clone(&clock)).unwrap();
    let running = Running::start(Arc::new(Garbled {
        hub: hub.clone(),
        junk_serial: 0,
        bad_descriptor: 1,
    }));
    running
        .wait_for("one identified, two failed", |r| {
            r.entries().count() == 1 && r.counters().identify_failed == 2
        })
        .await;
    assert_eq!(
        running.entries()[0].key,
        Key::Ecid(bench::profile(2).unwrap().ecid)
    );
    hub.plug(3, bench::phone(3, bench::start_mode(3), &clock).unwrap())
        .unwrap();
    running.wait_for("a later phone", present(2)).await;
    running.stop().await;
}

/// A backend whose phones each get their configuration taken away once, on the first open.
struct ConfigThief {
    hub: VirtualHub,
    /// Opens of each device so far.
    opened: std::sync::Mutex<std::collections::HashMap<DeviceId, usize>>,
}

impl UsbBackend for ConfigThief {
    fn devices(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        self.hub.devices()
    }

    fn open(&self, id: DeviceId) -> Result<Box<dyn UsbDevice>, UsbError> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let n = opened.entry(id).or_default();
        *n += 1;
        let first = *n == 1;
        Ok(Box::new(Tampered {
            inner: self.hub.open(id)?,
            junk_serial: false,
            steal_configuration: first,
        }))
    }

    fn watch(&self, sink: HotplugSink) -> Result<Watch, UsbError> {
        self.hub.watch(sink)
    }
}

/// An iPhone10,3 in restore mode on port 0 and an iPhone14,3 in normal mode on port 1.
fn restore_and_normal() -> VirtualHub {
    let bench = bench::BenchSpec::Named(vec![
        "iPhone10,3:restore".parse().unwrap(),
        "iPhone14,3:normal".parse().unwrap(),
    ]);
    bench.hub(1, ManualClock::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_switched_away_at_arrival_is_selected_again() {
    let hub = restore_and_normal();
    let ecids: Vec<u64> = (0..2)
        .map(|i| hub.with_phone(i, |p| p.profile().ecid).unwrap())
        .collect();
    let thief = Arc::new(ConfigThief {
        hub: hub.clone(),
        opened: Default::default(),
    });
    let running = Running::start(thief.clone());
    running.wait_for("both phones", present(2)).await;
    let entry = |ecid| running.shared.registry().get(&Key::Ecid(ecid)).cloned();
    let restore = entry(ecids[0]).unwrap();
    assert_eq!(restore.mode, Mode::Restore);
    assert_eq!(restore.identity.ecid_pending, None);
    let normal = entry(ecids[1]).unwrap();
    assert_eq!(normal.mode, Mode::Normal);
    assert_eq!(normal.identity.product_type.as_deref(), Some("iPhone14,3"));
    // each phone was opened again after its configuration was taken
    let opened = thief.opened.lock().unwrap().clone();
    assert_eq!(opened.len(), 2);
    assert!(opened.values().all(|&n| n == 2), "{opened:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_mode_phone_is_identified_through_restored_and_keeps_a_mux_session() {
    let hub = restore_and_normal();
    let restore_ecid = hub.with_phone(0, |p| p.profile().ecid).unwrap();
    let running = Running::start(Arc::new(hub.clone()));
    running.wait_for("both phones", present(2)).await;
    let entry = running
        .shared
        .registry()
        .get(&Key::Ecid(restore_ecid))
        .cloned()
        .expect("the restore-mode phone, keyed by the ECID restored gave");
    assert_eq!(entry.mode, Mode::Restore);
    assert_eq!(entry.identity.product_type.as_deref(), Some("iPhone10,3"));
    assert_eq!(entry.port.as_ref(), hub.port_path(0));
    // Both usbmux phones keep their mux session for the usbmuxd socket.
    let sessions = running.shared.sessions().len();
    assert_eq!(sessions, 2);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_shut_down_hands_the_phone_over_to_a_new_link() {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let bench = bench::BenchSpec::Named(vec!["iPhone14,3:normal".parse().unwrap()]);
    let hub = bench.hub(1, Arc::clone(&clock)).unwrap();
    let running = Running::start(Arc::new(hub.clone()));
    running.wait_for("the phone", present(1)).await;
    let (device, session) = {
        let sessions = running.shared.sessions();
        let (device, session) = sessions
            .iter()
            .next()
            .map(|(d, s)| (*d, s.clone()))
            .unwrap();
        (device, session)
    };
    assert!(session.is_alive());
    let ended = tokio::task::spawn_blocking(move || session.shutdown(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(ended, "the session ends and lets go of the phone");
    // A new link (a restore job's) takes the phone over and lockdown answers on it.
    let backend = hub.clone();
    let told = tokio::task::spawn_blocking(move || {
        let mut pump = super::session::Pump::open(backend.open(device).unwrap()).unwrap();
        super::identify::ask_lockdown(&mut pump)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(told, super::identify::Told::Lockdown(_)));
    running.stop().await;
}
