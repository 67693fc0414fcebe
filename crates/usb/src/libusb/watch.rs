//! The two event threads behind [`crate::UsbBackend::watch`]: libusb hotplug, and the polling
//! fallback. Both feed the pure [`Presence`] / [`Poller`] and hand clean events to the sink.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Instant;

use rusb::UsbContext;

use super::hotplug::{Poller, Presence};
use super::open::OpenPolicy;
use crate::backend::{DeviceId, DeviceInfo, HotplugSink, Watch};
use crate::error::{ErrorKind, Operation, UsbError};

/// What the libusb callback saw, queued for the event thread.
#[derive(Debug)]
pub(crate) enum Observed {
    Arrived(DeviceInfo),
    Left(DeviceId),
}

/// The libusb hotplug callback: it only enqueues. It reads what libusb already holds about the
/// device (bus, address, ports, speed, cached descriptor: no I/O) and never opens it; opening
/// inside the callback is what makes libusb answer Busy.
struct Enqueue {
    tx: Sender<Observed>,
}

impl rusb::Hotplug<rusb::Context> for Enqueue {
    fn device_arrived(&mut self, device: rusb::Device<rusb::Context>) {
        if let Some(info) = super::device_info(&device) {
            let _ = self.tx.send(Observed::Arrived(info));
        }
    }

    fn device_left(&mut self, device: rusb::Device<rusb::Context>) {
        let _ = self.tx.send(Observed::Left(DeviceId {
            bus: device.bus_number(),
            address: device.address(),
        }));
    }
}

/// Stops an event thread when the [`Watch`] holding it is dropped: closes the stop channel,
/// wakes libusb's event loop, and waits for the thread (unless dropped from the thread itself,
/// i.e. from inside the sink).
struct EventThread {
    stop: Option<Sender<()>>,
    context: Option<rusb::Context>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for EventThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(context) = &self.context {
            context.interrupt_handle_events();
        }
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn spawn_error() -> UsbError {
    UsbError::new(ErrorKind::Other, Operation::Hotplug)
}

/// Whether the stop channel says to stop (closed, or a value sent).
fn stopped(stop: &Receiver<()>) -> bool {
    !matches!(stop.try_recv(), Err(TryRecvError::Empty))
}

/// Watches with libusb hotplug: a callback filtered to Apple's vendor id that only enqueues,
/// registered with enumeration so devices already present arrive first, and a thread running
/// `handle_events` with a timeout that applies [`Presence`] and calls the sink.
///
/// When libusb refuses the registration, the sink comes back with the error, so the caller
/// can fall back to polling.
pub(crate) fn hotplug(
    context: &rusb::Context,
    policy: &OpenPolicy,
    mut sink: HotplugSink,
) -> Result<Watch, (UsbError, HotplugSink)> {
    let (tx, queue) = mpsc::channel();
    let registration = match rusb::HotplugBuilder::new()
        .vendor_id(crate::APPLE_VENDOR_ID)
        .enumerate(true)
        .register(context, Box::new(Enqueue { tx }))
    {
        Ok(registration) => registration,
        Err(e) => return Err((super::convert::usb_error(e, Operation::Hotplug), sink)),
    };
    let (stop_tx, stop) = mpsc::channel::<()>();
    let events = context.clone();
    let wait = policy.event_wait;
    let thread = std::thread::Builder::new()
        .name("usb-hotplug".into())
        .spawn(move || {
            // Deregistered when the thread ends, after the last handle_events.
            let _registration = registration;
            let mut presence = Presence::default();
            loop {
                while let Ok(observed) = queue.try_recv() {
                    let out = match observed {
                        Observed::Arrived(device) => presence.arrived(device),
                        Observed::Left(id) => presence.left(id),
                    };
                    out.into_iter().for_each(&mut sink);
                }
                if stopped(&stop) {
                    return;
                }
                match events.handle_events(Some(wait)) {
                    Ok(()) | Err(rusb::Error::Interrupted) => {}
                    // Do not spin on a failing event loop: wait for the stop signal instead.
                    Err(_) => match stop.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    },
                }
            }
        });
    // The sink went into the closure: a thread that could not start leaves nothing to return.
    let thread = thread.map_err(|_| (spawn_error(), Box::new(|_| {}) as HotplugSink))?;
    Ok(Watch::new(EventThread {
        stop: Some(stop_tx),
        context: Some(context.clone()),
        thread: Some(thread),
    }))
}

/// Watches by listing devices every `policy.poll_interval` (libusb without hotplug support):
/// a [`Poller`] turns each list into events; between lists the thread waits on its stop
/// channel, so dropping the watch ends it at once.
pub(crate) fn polling(
    list: impl Fn() -> Result<Vec<DeviceInfo>, UsbError> + Send + 'static,
    policy: &OpenPolicy,
    mut sink: HotplugSink,
) -> Result<Watch, UsbError> {
    let (stop_tx, stop) = mpsc::channel::<()>();
    let interval = policy.poll_interval;
    let thread = std::thread::Builder::new()
        .name("usb-poll".into())
        .spawn(move || {
            let mut poller = Poller::new(interval);
            loop {
                let now = Instant::now();
                if poller.due(now) {
                    match list() {
                        Ok(devices) => poller
                            .handle_devices(now, devices)
                            .into_iter()
                            .for_each(&mut sink),
                        Err(_) => poller.handle_failure(now),
                    }
                }
                match stop.recv_timeout(poller.wait(Instant::now())) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .map_err(|_| spawn_error())?;
    Ok(Watch::new(EventThread {
        stop: Some(stop_tx),
        context: None,
        thread: Some(thread),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::HotplugEvent;
    use crate::descriptor::DeviceDescriptor;
    use crate::device::Speed;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn phone(address: u8, port: &str) -> DeviceInfo {
        DeviceInfo {
            id: DeviceId { bus: 1, address },
            port_path: Some(port.parse().unwrap()),
            speed: Speed::High,
            descriptor: DeviceDescriptor::parse(&[
                18, 1, 0, 2, 0, 0, 0, 64, 0xAC, 5, 0xA8, 0x12, 0x02, 0x15, 1, 2, 3, 4,
            ])
            .unwrap(),
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn polling_thread_reports_changes_and_stops_when_dropped() {
        let bus = Arc::new(Mutex::new(vec![phone(5, "1-2")]));
        let listed = Arc::clone(&bus);
        let lists = Arc::new(Mutex::new(0u32));
        let counter = Arc::clone(&lists);
        let (tx, rx) = mpsc::channel();
        let policy = OpenPolicy {
            poll_interval: Duration::from_millis(5),
            ..OpenPolicy::default()
        };
        let watch = polling(
            move || {
                *counter.lock().unwrap() += 1;
                Ok(listed.lock().unwrap().clone())
            },
            &policy,
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        )
        .unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            HotplugEvent::Arrived {
                device: phone(5, "1-2")
            }
        );
        // The phone re-enumerates at a new address on the same port.
        *bus.lock().unwrap() = vec![phone(6, "1-2")];
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            HotplugEvent::Left {
                id: DeviceId { bus: 1, address: 5 },
                port_path: Some("1-2".parse().unwrap())
            }
        );
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            HotplugEvent::Arrived {
                device: phone(6, "1-2")
            }
        );
        // Dropping the watch joins the thread: the sink (and its sender) is gone afterwards,
        // and no list is taken any more.
        drop(watch);
        assert_eq!(rx.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected));
        let after = *lists.lock().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(*lists.lock().unwrap(), after);
    }

    #[test]
    fn a_failed_list_is_not_an_empty_bus() {
        let fail = Arc::new(Mutex::new(false));
        let failing = Arc::clone(&fail);
        let (tx, rx) = mpsc::channel();
        let policy = OpenPolicy {
            poll_interval: Duration::from_millis(5),
            ..OpenPolicy::default()
        };
        let _watch = polling(
            move || {
                if *failing.lock().unwrap() {
                    Err(UsbError::new(ErrorKind::Io, Operation::Enumerate))
                } else {
                    Ok(vec![phone(5, "1-2")])
                }
            },
            &policy,
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        )
        .unwrap();
        assert!(matches!(
            rx.recv_timeout(WAIT).unwrap(),
            HotplugEvent::Arrived { .. }
        ));
        *fail.lock().unwrap() = true;
        // Several failed lists: no Left for a phone that may well still be there.
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(50)),
            Err(RecvTimeoutError::Timeout)
        );
    }

    #[test]
    fn dropping_the_watch_from_inside_the_sink_does_not_deadlock() {
        let slot: Arc<Mutex<Option<Watch>>> = Arc::new(Mutex::new(None));
        let inside = Arc::clone(&slot);
        let (tx, rx) = mpsc::channel();
        let policy = OpenPolicy {
            poll_interval: Duration::from_millis(5),
            ..OpenPolicy::default()
        };
        // A new address at every list, so every list brings events.
        let address = std::sync::atomic::AtomicU8::new(1);
        let watch = polling(
            move || {
                let a = address.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100 + 1;
                Ok(vec![phone(a, "1-2")])
            },
            &policy,
            Box::new(move |_| {
                // The consumer decides to stop watching from inside the sink.
                drop(inside.lock().unwrap().take());
                let _ = tx.send(());
            }),
        )
        .unwrap();
        *slot.lock().unwrap() = Some(watch);
        // The first event may come before the watch is stored: wait for one with it stored.
        let deadline = Instant::now() + WAIT;
        while slot.lock().unwrap().is_some() && Instant::now() < deadline {
            if rx.recv_timeout(Duration::from_millis(10)).is_err() {
                continue;
            }
        }
        assert!(slot.lock().unwrap().is_none());
    }
}
