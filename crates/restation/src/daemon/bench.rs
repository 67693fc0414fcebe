//! The virtual bench `--sim N` attaches: a [`VirtualHub`] with N phones of mixed models
//! (`sim::profile::PRESETS`) and modes (normal, recovery, DFU in turn), each with its own seed
//! so that two phones of the same model have different ECIDs and serials.

use std::sync::Arc;

use sim::clock::Clock;
use sim::hub::{HubError, VirtualHub};
use sim::phone::{Mode, Options, Phone, RecoveryStage};
use sim::profile::{DfuStage, Profile, ProfileError, PRESETS};

/// Why the virtual bench could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A preset is not in the device table.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// A port refused the phone.
    #[error(transparent)]
    Hub(#[from] HubError),
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
