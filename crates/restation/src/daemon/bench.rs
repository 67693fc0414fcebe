//! The virtual bench `--sim N` attaches: a [`VirtualHub`] with N phones of mixed models
//! (`sim::profile::PRESETS`) and modes (normal, recovery, DFU in turn), each with its own seed
//! so that two phones of the same model have different ECIDs and serials. `--sim-profile
//! PRODUCT:MODE` (repeatable) names each phone instead ([`PhoneSpec`]).

use std::str::FromStr;
use std::sync::Arc;

use sim::clock::Clock;
use sim::fault::FaultSpec;
use sim::hub::{HubError, VirtualHub};
use sim::phone::{Mode, Options, Phone, RecoveryStage};
use sim::profile::{DfuStage, Profile, ProfileError, PRESETS};

/// One virtual phone as the command line names it: `PRODUCT:MODE`, e.g. `iPhone14,3:normal`.
/// Modes: `normal`, `recovery`, `dfu`, `port-dfu`, `restore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneSpec {
    /// `iPhone14,3`.
    pub product_type: String,
    /// The mode it starts in.
    pub mode: Mode,
}

/// A phone spec that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneSpecError {
    /// No `:MODE`.
    #[error("{0:?} is not PRODUCT:MODE (e.g. iPhone14,3:normal)")]
    Shape(String),
    /// An unknown mode.
    #[error("mode {0:?} is not one of normal, recovery, dfu, port-dfu, restore")]
    Mode(String),
}

impl FromStr for PhoneSpec {
    type Err = PhoneSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (product, mode) = s
            .rsplit_once(':')
            .filter(|(p, _)| !p.is_empty())
            .ok_or_else(|| PhoneSpecError::Shape(s.chars().take(64).collect()))?;
        let mode = match mode {
            "normal" => Mode::Normal,
            "recovery" => Mode::Recovery(RecoveryStage::Iboot),
            "dfu" => Mode::Dfu(DfuStage::SecureRom),
            "port-dfu" => Mode::Dfu(DfuStage::Port),
            "restore" => Mode::Restore,
            other => return Err(PhoneSpecError::Mode(other.chars().take(32).collect())),
        };
        Ok(PhoneSpec {
            product_type: product.to_string(),
            mode,
        })
    }
}

impl std::fmt::Display for PhoneSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Normal => "normal",
            Mode::Recovery(_) => "recovery",
            Mode::Dfu(DfuStage::Port) => "port-dfu",
            Mode::Dfu(_) => "dfu",
            Mode::Restore => "restore",
        };
        write!(f, "{}:{mode}", self.product_type)
    }
}

/// What a bench is made of: N mixed phones, or named ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchSpec {
    /// `--sim N`.
    Mixed(usize),
    /// `--sim-profile PRODUCT:MODE`, repeated.
    Named(Vec<PhoneSpec>),
}

impl BenchSpec {
    /// How many phones.
    pub fn len(&self) -> usize {
        match self {
            BenchSpec::Mixed(n) => *n,
            BenchSpec::Named(specs) => specs.len(),
        }
    }

    /// Whether the bench is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The phone of port `index`.
    pub fn phone(&self, index: usize, clock: &Arc<dyn Clock>) -> Result<Phone, ProfileError> {
        self.phone_with(index, FaultSpec::default(), clock)
    }

    /// The phone of port `index`, with `faults`.
    fn phone_with(
        &self,
        index: usize,
        faults: FaultSpec,
        clock: &Arc<dyn Clock>,
    ) -> Result<Phone, ProfileError> {
        let named = match self {
            BenchSpec::Named(specs) => specs.get(index),
            BenchSpec::Mixed(_) => None,
        };
        let (profile, start) = match named {
            Some(spec) => (
                Profile::for_product_type(&spec.product_type, 0x5EED_0000 + index as u64)?,
                spec.mode,
            ),
            None => (profile(index)?, start_mode(index)),
        };
        let options = Options {
            start,
            seed: index as u64,
            faults,
            ..Options::default()
        };
        Ok(Phone::new(profile, options, clock.now()))
    }

    /// A hub with one port per phone on `bus` (`1-1.N` style paths), each port holding its
    /// phone.
    pub fn hub(&self, bus: u8, clock: Arc<dyn Clock>) -> Result<VirtualHub, BenchError> {
        self.hub_with_faults(bus, clock, &[])
    }

    /// [`BenchSpec::hub`] with faults given to the phones of some ports (`--sim-fault`).
    pub fn hub_with_faults(
        &self,
        bus: u8,
        clock: Arc<dyn Clock>,
        faults: &[SimFault],
    ) -> Result<VirtualHub, BenchError> {
        self.hub_with_spares(bus, clock, faults, 0)
    }

    /// [`BenchSpec::hub_with_faults`] with `spares` empty ports after the phones' (where a
    /// technician moves a phone whose port the retry ladder suspects).
    pub fn hub_with_spares(
        &self,
        bus: u8,
        clock: Arc<dyn Clock>,
        faults: &[SimFault],
        spares: usize,
    ) -> Result<VirtualHub, BenchError> {
        let phones: Vec<usb::PortPath> = (1..=self.len().min(255))
            .filter_map(|i| usb::PortPath::new(bus, &[1, i as u8]).ok())
            .collect();
        let mut spec_of = vec![FaultSpec::default(); phones.len()];
        for fault in faults {
            let index = fault
                .port_index(&phones)
                .ok_or_else(|| BenchError::FaultPort(fault.port.clone()))?;
            if let Some(spec) = spec_of.get_mut(index) {
                spec.faults.extend(fault.spec.faults.iter().copied());
            }
        }
        let spare = (phones.len() + 1..=(phones.len() + spares).min(255))
            .filter_map(|i| usb::PortPath::new(bus, &[1, i as u8]).ok());
        let paths = phones.iter().cloned().chain(spare).collect();
        let hub = VirtualHub::with_ports(paths, Arc::clone(&clock));
        for (i, faults) in spec_of.into_iter().enumerate() {
            hub.plug(i, self.phone_with(i, faults, &clock)?)?;
        }
        Ok(hub)
    }
}

/// `--sim-fault PORT=SPEC`: faults (in `sim::fault`'s language) for the phone of one port of
/// the virtual bench, the port named by its 1-based index (`2`) or its path (`1-1.2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFault {
    /// The port as written.
    pub port: String,
    /// The faults.
    pub spec: FaultSpec,
}

/// A `--sim-fault` that is not `PORT=SPEC`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimFaultError {
    /// No `=`.
    #[error("{0:?} is not PORT=SPEC (e.g. 1=asr:unplug@50%x1)")]
    Shape(String),
    /// The spec does not parse.
    #[error(transparent)]
    Spec(#[from] sim::fault::FaultSpecError),
}

impl FromStr for SimFault {
    type Err = SimFaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, spec) = s
            .split_once('=')
            .filter(|(p, _)| !p.is_empty())
            .ok_or_else(|| SimFaultError::Shape(s.chars().take(64).collect()))?;
        Ok(SimFault {
            port: port.to_string(),
            spec: spec.parse()?,
        })
    }
}

impl std::fmt::Display for SimFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.port, self.spec)
    }
}

impl SimFault {
    /// The index of the port it names among `paths`.
    pub fn port_index(&self, paths: &[usb::PortPath]) -> Option<usize> {
        match self.port.parse::<usize>() {
            Ok(n) => n.checked_sub(1).filter(|i| *i < paths.len()),
            Err(_) => paths.iter().position(|p| p.to_string() == self.port),
        }
    }
}

/// Waiting for a phone on a virtual hub: running the hub's clock on that port until the phone
/// is back in the awaited mode (a restore job's [`super::job::Phones`] without a daemon: the
/// benchmarks, and tests of whole restores).
#[derive(Clone)]
pub struct HubPhones {
    /// The hub.
    pub hub: VirtualHub,
    /// The phone's port.
    pub port: usize,
}

impl std::fmt::Debug for HubPhones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubPhones")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn mode_is(mode: Mode, awaited: restore::phase::AwaitedMode) -> bool {
    use restore::phase::AwaitedMode as A;
    matches!(
        (mode, awaited),
        (Mode::Normal, A::Normal)
            | (Mode::Recovery(_), A::Recovery)
            | (Mode::Dfu(_), A::Dfu)
            | (Mode::Restore, A::Restore)
    )
}

impl HubPhones {
    /// The phone on the port, opened.
    pub fn open(&self) -> Result<Box<dyn usb::UsbDevice>, usb::UsbError> {
        use usb::UsbBackend;
        let path = self.hub.port_path(self.port).cloned();
        let info = self
            .hub
            .devices()?
            .into_iter()
            .find(|d| d.port_path == path)
            .ok_or_else(|| usb::UsbError::new(usb::ErrorKind::NoDevice, usb::Operation::Open))?;
        self.hub.open(info.id)
    }
}

impl super::job::Phones for HubPhones {
    fn wait_for(
        &mut self,
        ecid: u64,
        mode: restore::phase::AwaitedMode,
        within: std::time::Duration,
    ) -> Result<Box<dyn usb::UsbDevice>, super::job::WaitError> {
        let back = self.hub.run_port_until(self.port, within, |p| {
            p.is_on_bus() && p.profile().ecid == ecid && mode_is(p.mode(), mode)
        });
        if !back {
            return Err(super::job::WaitError::Deadline { mode, within });
        }
        Ok(self.open()?)
    }
}

/// Why the virtual bench could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A preset is not in the device table.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// A port refused the phone.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A `--sim-fault` names a port the bench does not have.
    #[error("--sim-fault names port {0:?}, which the virtual bench does not have")]
    FaultPort(String),
}

/// The start mode of the `index`-th phone: recovery, DFU, normal, in turn.
pub fn start_mode(index: usize) -> Mode {
    match index % 3 {
        0 => Mode::Recovery(RecoveryStage::Iboot),
        1 => Mode::Dfu(DfuStage::SecureRom),
        _ => Mode::Normal,
    }
}

/// The profile of the `index`-th phone (model from the presets in turn, seed from the index).
pub fn profile(index: usize) -> Result<Profile, ProfileError> {
    let product_type = PRESETS
        .get(index % PRESETS.len())
        .copied()
        .unwrap_or("iPhone14,3");
    Profile::for_product_type(product_type, 0x5EED_0000 + index as u64)
}

/// A phone for port `index` starting in `mode`.
pub fn phone(index: usize, mode: Mode, clock: &Arc<dyn Clock>) -> Result<Phone, ProfileError> {
    let options = Options {
        start: mode,
        seed: index as u64,
        ..Options::default()
    };
    Ok(Phone::new(profile(index)?, options, clock.now()))
}

/// A hub with `ports` ports and the first `phones` of them holding a phone.
pub fn hub(ports: usize, phones: usize, clock: Arc<dyn Clock>) -> Result<VirtualHub, BenchError> {
    let hub = VirtualHub::new(ports.max(phones), Arc::clone(&clock));
    for i in 0..phones {
        hub.plug(i, phone(i, start_mode(i), &clock)?)?;
    }
    Ok(hub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_specs_parse_and_print_back() {
        for text in [
            "iPhone14,3:normal",
            "iPhone10,3:recovery",
            "iPhone7,2:dfu",
            "iPhone12,1:port-dfu",
            "iPhone15,2:restore",
        ] {
            let spec: PhoneSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        let spec: PhoneSpec = "iPhone14,3:recovery".parse().unwrap();
        assert_eq!(spec.product_type, "iPhone14,3");
        assert!(matches!(
            "iPhone14,3".parse::<PhoneSpec>(),
            Err(PhoneSpecError::Shape(_))
        ));
        assert!(matches!(
            ":normal".parse::<PhoneSpec>(),
            Err(PhoneSpecError::Shape(_))
        ));
        assert!(matches!(
            "iPhone14,3:asleep".parse::<PhoneSpec>(),
            Err(PhoneSpecError::Mode(_))
        ));
    }

    #[test]
    fn sim_faults_name_a_port_by_index_or_path() {
        let clock: Arc<dyn Clock> = sim::clock::ManualClock::new();
        let bench = BenchSpec::Mixed(2);
        let by_index: SimFault = "2=asr:unplug@50%x1".parse().unwrap();
        let by_path: SimFault = "1-1.1=recovery-upload:io-error".parse().unwrap();
        let hub = bench
            .hub_with_faults(1, Arc::clone(&clock), &[by_index, by_path])
            .unwrap();
        let specs: Vec<String> = (0..2)
            .map(|i| {
                hub.with_phone(i, |p| p.core().faults.spec().to_string())
                    .unwrap()
            })
            .collect();
        assert_eq!(specs, ["recovery-upload:io-error", "asr:unplug@50%x1"]);
        assert!(matches!(
            "asr:unplug".parse::<SimFault>(),
            Err(SimFaultError::Shape(_))
        ));
        assert!(matches!(
            "1=asr:sing".parse::<SimFault>(),
            Err(SimFaultError::Spec(_))
        ));
        let far: SimFault = "3=asr:unplug".parse().unwrap();
        assert!(matches!(
            bench.hub_with_faults(1, clock, &[far]),
            Err(BenchError::FaultPort(_))
        ));
    }

    #[test]
    fn a_named_bench_puts_each_phone_on_its_port_in_its_mode() {
        let clock: Arc<dyn Clock> = sim::clock::ManualClock::new();
        let bench = BenchSpec::Named(vec![
            "iPhone14,3:normal".parse().unwrap(),
            "iPhone10,3:dfu".parse().unwrap(),
        ]);
        let hub = bench.hub(200, clock).unwrap();
        assert_eq!(
            hub.port_path(1).map(ToString::to_string).as_deref(),
            Some("200-1.2")
        );
        let (product, mode) = hub
            .with_phone(1, |p| (p.profile().product_type.clone(), p.mode()))
            .unwrap();
        assert_eq!(product, "iPhone10,3");
        assert!(matches!(mode, Mode::Dfu(DfuStage::SecureRom)));
    }
}
