//! Several USB backends seen as one: `restation serve --usb --sim N` watches real USB and a
//! virtual bench side by side. Each device belongs to the backend that reported it; the
//! virtual bench sits on its own bus number ([`SIM_BUS`]) so ids never collide with real
//! buses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use usb::{
    DeviceId, DeviceInfo, ErrorKind, HotplugEvent, HotplugSink, Operation, UsbBackend, UsbDevice,
    UsbError, Watch,
};

/// The bus number of a virtual bench that runs beside real USB (real buses are numbered from 1
/// by the kernel and stay far below it).
pub const SIM_BUS: u8 = 200;

/// Backends side by side.
pub struct Merged {
    parts: Vec<Arc<dyn UsbBackend>>,
    owners: Arc<Mutex<HashMap<DeviceId, usize>>>,
}

impl std::fmt::Debug for Merged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merged")
            .field("parts", &self.parts.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Merged {
    /// One backend made of `parts`.
    pub fn new(parts: Vec<Arc<dyn UsbBackend>>) -> Self {
        Self {
            parts,
            owners: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl UsbBackend for Merged {
    fn devices(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        let mut all = Vec::new();
        let mut owners = HashMap::new();
        for (i, part) in self.parts.iter().enumerate() {
            for info in part.devices()? {
                owners.insert(info.id, i);
                all.push(info);
            }
        }
        lock(&self.owners).extend(owners);
        Ok(all)
    }

    fn open(&self, id: DeviceId) -> Result<Box<dyn UsbDevice>, UsbError> {
        let owner = lock(&self.owners).get(&id).copied();
        match owner.and_then(|i| self.parts.get(i)) {
            Some(part) => part.open(id),
            None => {
                // Not seen through a watch or a listing yet: ask each part.
                let mut last = UsbError::new(ErrorKind::NoDevice, Operation::Open);
                for part in &self.parts {
                    match part.open(id) {
                        Ok(dev) => return Ok(dev),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    fn watch(&self, sink: HotplugSink) -> Result<Watch, UsbError> {
        let sink = Arc::new(Mutex::new(sink));
        let mut watches = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            let sink = Arc::clone(&sink);
            let owners = Arc::clone(&self.owners);
            // Like every sink: only bookkeeping and an enqueue, never a call into a backend.
            watches.push(part.watch(Box::new(move |event: HotplugEvent| {
                match &event {
                    HotplugEvent::Arrived { device } => {
                        lock(&owners).insert(device.id, i);
                    }
                    HotplugEvent::Left { id, .. } => {
                        lock(&owners).remove(id);
                    }
                }
                (lock(&sink))(event);
            }))?);
        }
        Ok(Watch::new(watches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::clock::{Clock, ManualClock};
    use sim::hub::VirtualHub;
    use usb::PortPath;

    fn hub(bus: u8, phones: usize, clock: &Arc<dyn Clock>) -> VirtualHub {
        let paths = (1..=4)
            .map(|i| PortPath::new(bus, &[1, i]).unwrap())
            .collect();
        let hub = VirtualHub::with_ports(paths, Arc::clone(clock));
        for i in 0..phones {
            let phone = super::super::bench::phone(
                i + usize::from(bus),
                super::super::bench::start_mode(i),
                clock,
            )
            .unwrap();
            hub.plug(i, phone).unwrap();
        }
        hub
    }

    #[test]
    fn two_benches_side_by_side_are_one_backend_and_each_device_opens_on_its_own() {
        let clock: Arc<dyn Clock> = ManualClock::new();
        let real_like = hub(1, 2, &clock);
        let sim = hub(SIM_BUS, 3, &clock);
        let merged = Merged::new(vec![Arc::new(real_like.clone()), Arc::new(sim)]);
        let (tx, rx) = std::sync::mpsc::channel();
        let _watch = merged
            .watch(Box::new(move |e| {
                let _ = tx.send(e);
            }))
            .unwrap();
        let arrived: Vec<DeviceInfo> = rx
            .try_iter()
            .filter_map(|e| match e {
                HotplugEvent::Arrived { device } => Some(device),
                HotplugEvent::Left { .. } => None,
            })
            .collect();
        assert_eq!(arrived.len(), 5);
        assert_eq!(arrived.iter().filter(|d| d.id.bus == SIM_BUS).count(), 3);
        for info in &arrived {
            let dev = merged.open(info.id).unwrap();
            assert_eq!(dev.port_path(), info.port_path.as_ref());
        }
        assert_eq!(merged.devices().unwrap().len(), 5);
        // A departure on one part reaches the one sink.
        real_like.unplug(0).unwrap();
        assert!(rx
            .try_iter()
            .any(|e| matches!(e, HotplugEvent::Left { id, .. } if id.bus == 1)));
    }
}
