//! The virtual hub as a `usb::UsbBackend`: hotplug events across re-enumerations, handles bound
//! to one enumeration, ports, and 32 phones driven from 32 threads at once.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use irecv::dfu::{self, Options as DfuOptions};
use irecv::recovery;
use sim::clock::{Clock, DriverClock, ManualClock};
use sim::hub::{HubError, VirtualHub};
use sim::phone::{Mode, Options, Phone};
use sim::profile::{DfuStage, Profile, PRESETS};
use usb::{ErrorKind, HotplugEvent, UsbBackend};

#[test]
fn hotplug_events_follow_re_enumeration_and_old_ids_die() {
    let bench = Bench::new("iPhone10,3", 1, options(Mode::Dfu(DfuStage::SecureRom)));
    let first = bench.info(0).unwrap();
    assert_eq!(
        first.port_path.as_ref().map(|p| p.to_string()).as_deref(),
        Some("1-1.1")
    );
    let mut dev = bench.hub.open(first.id).unwrap();
    let mut clock = bench.driver_clock();
    dfu::run_download(
        dev.as_mut(),
        &image(6000, 1),
        DfuOptions::dfu(),
        &mut clock,
        &mut |_| {},
    )
    .unwrap();
    // Nothing arrives before the hub's time reaches the arrival.
    bench.hub.tick();
    let events = bench.drain();
    assert!(
        matches!(
            events.as_slice(),
            [HotplugEvent::Arrived { .. }, HotplugEvent::Left { .. }]
        ),
        "{events:?}"
    );
    assert!(bench.hub.devices().unwrap().is_empty());
    assert_eq!(
        bench.hub.open(first.id).err().map(|e| e.kind()),
        Some(ErrorKind::NoDevice)
    );
    bench.hub.run_for(Duration::from_secs(5));
    let events = bench.drain();
    let [HotplugEvent::Arrived { device }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(device.product_id(), 0x1281);
    assert_eq!(device.port_path, first.port_path, "same slot");
    assert_ne!(device.id, first.id, "new address");
    // The old handle stays dead even though the phone is back.
    assert_eq!(
        dev.active_configuration().unwrap_err().kind(),
        ErrorKind::NoDevice
    );

    // A new watch first hears about what is present.
    let (tx, rx) = std::sync::mpsc::channel();
    let _w = bench
        .hub
        .watch(Box::new(move |e| tx.send(e).unwrap()))
        .unwrap();
    let now: Vec<_> = rx.try_iter().collect();
    assert!(matches!(now.as_slice(), [HotplugEvent::Arrived { device: d }] if d.id == device.id));

    // Unplugging hands the phone back, with its record.
    let phone = bench.hub.unplug(0).unwrap().unwrap();
    assert_eq!(phone.core().record.uploads.len(), 1);
    assert!(matches!(
        bench.drain().as_slice(),
        [HotplugEvent::Left { .. }]
    ));
    assert!(matches!(
        bench.hub.unplug(9),
        Err(HubError::NoSuchPort { .. })
    ));
}

#[test]
fn a_port_holds_one_phone() {
    let bench = Bench::empty(2);
    bench.plug(0, "iPhone7,2", 1, Options::default());
    let p = Profile::for_product_type("iPhone7,2", 2).unwrap();
    let phone = Phone::new(p, Options::default(), bench.clock.now());
    assert!(matches!(
        bench.hub.plug(0, phone),
        Err(HubError::PortBusy { .. })
    ));
    let deep = VirtualHub::with_ports(vec!["1-1.3.2.2".parse().unwrap()], ManualClock::new());
    assert_eq!(deep.port_path(0).unwrap().to_string(), "1-1.3.2.2");
}

/// One thread's work: DFU (twice on A12+) → recovery → env + upload + ramdisk.
fn restore_to_ramdisk(hub: &VirtualHub, clock: &Arc<dyn Clock>, port: usize) -> (u64, usize) {
    let path = hub.port_path(port).cloned();
    let find = || {
        hub.devices()
            .unwrap()
            .into_iter()
            .find(|d| d.port_path == path)
            .unwrap()
    };
    let mut driver = DriverClock(Arc::clone(clock));
    // The 32 threads share one virtual clock and each moves it while it waits (DFU polls):
    // another thread's waits can carry the clock past a short horizon before this phone's
    // timer even runs, so the horizon is generous; the wait still ends at the phone's event.
    let wait = |want: &dyn Fn(Mode) -> bool| {
        let back = hub.run_port_until(port, Duration::from_secs(24 * 3600), |p| {
            p.is_on_bus() && want(p.mode())
        });
        assert!(
            back,
            "{:?}",
            hub.with_phone(port, |p| (p.mode(), p.core().record.arrivals.clone()))
        );
    };
    for stage in 0..2 {
        let info = find();
        if info.product_id() != 0x1227 {
            break;
        }
        let mut dev = hub.open(info.id).unwrap();
        let img = image(32 * 1024 + port, stage);
        dfu::run_download(
            dev.as_mut(),
            &img,
            // The shared clock also moves while other threads wait: no deadline may be
            // measured on it here.
            DfuOptions {
                block_deadline: Duration::from_secs(24 * 3600),
                manifest_deadline: Duration::from_secs(24 * 3600),
                budget: irecv::budget::Budget::UNLIMITED,
                ..DfuOptions::dfu()
            },
            &mut driver,
            &mut |_| {},
        )
        .unwrap();
        wait(&|m| m != Mode::Dfu(DfuStage::SecureRom));
    }
    wait(&|m| matches!(m, Mode::Recovery(_)));
    let mut dev = hub.open(find().id).unwrap();
    recovery::claim_interfaces(dev.as_mut()).unwrap();
    recovery::setenv(dev.as_mut(), "auto-boot", "false", T).unwrap();
    assert_eq!(
        recovery::getenv(dev.as_mut(), "auto-boot", T).unwrap(),
        "false"
    );
    recovery::run_upload(dev.as_mut(), &image(64 * 1024, 9), &mut |_| {}).unwrap();
    recovery::send_command(dev.as_mut(), &recovery::Command::new("ramdisk").unwrap(), T).unwrap();
    hub.with_phone(port, |p| (p.profile().ecid, p.core().record.uploads.len()))
        .unwrap()
}

#[test]
fn thirty_two_phones_from_thirty_two_threads() {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let hub = VirtualHub::new(32, Arc::clone(&clock));
    for port in 0..32 {
        let product = PRESETS[port % PRESETS.len()];
        let profile = Profile::for_product_type(product, port as u64).unwrap();
        let phone = Phone::new(
            profile,
            options(Mode::Dfu(DfuStage::SecureRom)),
            clock.now(),
        );
        hub.plug(port, phone).unwrap();
    }
    assert_eq!(hub.devices().unwrap().len(), 32);
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|port| {
            let (hub, clock, barrier) = (hub.clone(), Arc::clone(&clock), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                restore_to_ramdisk(&hub, &clock, port)
            })
        })
        .collect();
    let results: Vec<(u64, usize)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let wall = started.elapsed();
    let ecids: std::collections::HashSet<u64> = results.iter().map(|r| r.0).collect();
    assert_eq!(ecids.len(), 32, "each thread drove its own phone");
    for (port, (_, uploads)) in results.iter().enumerate() {
        let a12 = PRESETS[port % PRESETS.len()] == "iPhone14,3";
        assert_eq!(*uploads, if a12 { 3 } else { 2 }, "port {port}");
    }
    assert_eq!(hub.devices().unwrap().len(), 32);
    eprintln!("32 phones: {wall:?} wall time");
    // Generous: the whole run is ~6 MiB of transfers on a virtual clock.
    assert!(wall < Duration::from_secs(60), "{wall:?}");
}

#[test]
fn real_clock_hub_delivers_arrivals_by_itself() {
    use sim::clock::RealClock;
    use sim::phone::Timings;
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let hub = VirtualHub::new(1, Arc::clone(&clock));
    let (tx, rx) = std::sync::mpsc::channel();
    let _watch = hub.watch(Box::new(move |e| tx.send(e).unwrap())).unwrap();
    let options = Options {
        start: Mode::Dfu(DfuStage::SecureRom),
        timings: Timings {
            after_dfu: Duration::from_millis(30),
            ..Timings::default()
        },
        ..Options::default()
    };
    let profile = Profile::for_product_type("iPhone10,3", 1).unwrap();
    hub.plug(0, Phone::new(profile, options, clock.now()))
        .unwrap();
    let info = hub.devices().unwrap().remove(0);
    let mut dev = hub.open(info.id).unwrap();
    let mut driver = DriverClock(Arc::clone(&clock));
    dfu::run_download(
        dev.as_mut(),
        &image(4096, 1),
        DfuOptions::dfu(),
        &mut driver,
        &mut |_| {},
    )
    .unwrap();
    // Nobody ticks the hub: the watch's ticker runs the arrival timer in real time.
    let mut seen = Vec::new();
    while let Ok(e) = rx.recv_timeout(Duration::from_secs(5)) {
        let done = matches!(&e, HotplugEvent::Arrived { device } if device.product_id() == 0x1281);
        seen.push(e);
        if done {
            break;
        }
    }
    assert_eq!(arrivals(&seen), [0x1227, 0x1281], "{seen:?}");
}
