//! The plan of one restore: which build identity of the staged IPSW fits the phone, and the
//! ordered steps that take the phone from the mode it is in to a restored phone.
//!
//! A plan is made before anything is sent, so that an IPSW that does not fit the phone is
//! refused at once, with the reason a technician can act on (wrong model, no identity for
//! this board, a component missing from the manifest), not halfway through a restore.

use std::fmt;

use ipsw::manifest::{BuildIdentity, BuildManifest, Component, DeviceMatch, RestoreBehavior};
use serde::Serialize;

use crate::phase::Phase;

/// The mode a phone is in when its restore is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartMode {
    /// iOS is running (lockdownd): the phone is sent to recovery first.
    Normal,
    /// Recovery mode answered by the installed iBoot: iBEC is sent and started first.
    RecoveryIboot,
    /// Recovery mode answered by iBEC (e.g. after a failed attempt): the restore stage.
    RecoveryIbec,
    /// SecureROM DFU.
    Dfu,
}

impl fmt::Display for StartMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartMode::Normal => "normal",
            StartMode::RecoveryIboot => "recovery (iBoot)",
            StartMode::RecoveryIbec => "recovery (iBEC)",
            StartMode::Dfu => "DFU",
        })
    }
}

/// Who the phone is, as far as a plan needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The chip's ECID.
    pub ecid: u64,
    /// `CPID` / `ApChipID`.
    pub chip_id: u32,
    /// `BDID` / `ApBoardID`.
    pub board_id: u32,
    /// `iPhone14,3`, when known (normal mode says it; recovery/DFU through the device table).
    pub product_type: Option<String>,
    /// Where it starts.
    pub mode: StartMode,
}

/// How the boot chain gets from DFU to iBEC on this chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generation {
    /// Before A12: iBSS sent over DFU comes back as recovery mode (iBSS stage); iBEC is then
    /// uploaded there and started with `go`.
    IbssToRecovery,
    /// A12 and later: iBSS comes back in DFU mode; iBEC is sent over DFU as well.
    IbssToDfu,
}

impl Generation {
    /// The generation of chip `chip_id` (A12 is 0x8020; later chips count up from there;
    /// the A7, 0x8960, is older).
    pub fn of_chip(chip_id: u32) -> Generation {
        if (0x8020..0x9000).contains(&chip_id) && chip_id != 0x8960 {
            Generation::IbssToDfu
        } else {
            Generation::IbssToRecovery
        }
    }
}

/// How a component reaches the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// DFU download (SecureROM or iBSS's DFU).
    Dfu,
    /// Recovery-mode upload, then this iBoot command consumes it (`go`, `ramdisk`, `bootx`...).
    Recovery(&'static str),
}

/// One step of a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// lockdown `EnterRecovery` (normal mode; needs a paired session).
    EnterRecovery,
    /// Send a personalized component.
    Send {
        /// The manifest key (`iBSS`, `RestoreRamDisk`...).
        component: String,
        /// How.
        delivery: Delivery,
    },
    /// An iBoot command without an upload.
    Command {
        /// The command line.
        text: String,
    },
    /// Read the ApNonce again; a changed nonce needs a new ticket before the next send.
    RefreshNonce,
    /// Wait for the same ECID to come back in `phase`'s mode, within `phase`'s deadline.
    Await {
        /// What is awaited.
        phase: Phase,
    },
    /// restored: `StartRestore`, the message loop (data requests answered from the IPSW,
    /// ASR for the OS image), the final status.
    Restore,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::EnterRecovery => f.write_str("EnterRecovery"),
            Step::Send {
                component,
                delivery: Delivery::Dfu,
            } => write!(f, "send {component} (DFU)"),
            Step::Send {
                component,
                delivery: Delivery::Recovery(command),
            } => write!(f, "send {component}, then `{command}`"),
            Step::Command { text } => write!(f, "`{text}`"),
            Step::RefreshNonce => f.write_str("read the nonce again"),
            Step::Await { phase } => write!(f, "wait: {phase}"),
            Step::Restore => f.write_str("restored + ASR"),
        }
    }
}

/// Why a restore cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The IPSW is for other models.
    #[error(
        "this IPSW is for {supported} and the phone is an {product_type}: stage the IPSW for {product_type}"
    )]
    WrongModel {
        /// The phone.
        product_type: String,
        /// `SupportedProductTypes`.
        supported: String,
    },
    /// No build identity for the phone's chip and board, or none with this behavior.
    #[error("{0}")]
    NoIdentity(String),
    /// A component the steps need is not in the chosen identity.
    #[error("build identity {identity} has no {component}, which a restore from {mode} needs")]
    MissingComponent {
        /// The component.
        component: &'static str,
        /// The identity (`Customer Erase Install (IPSW)` for `d64ap`).
        identity: String,
        /// The phone's mode.
        mode: StartMode,
    },
}

/// The plan: the identity chosen and the steps in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The phone.
    pub target: Target,
    /// Erase or Update.
    pub behavior: RestoreBehavior,
    /// The build identity chosen.
    pub identity: BuildIdentity,
    /// `ProductVersion` of the IPSW (`15.4.1`).
    pub product_version: String,
    /// `ProductBuildVersion` (`19E258`): what the phone reports after the restore.
    pub build_version: String,
    /// How DFU gets to iBEC on this chip.
    pub generation: Generation,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// `boot-args` for the restore ramdisk.
pub fn boot_args(behavior: RestoreBehavior) -> &'static str {
    match behavior {
        RestoreBehavior::Erase => "rd=md0 nand-enable-reformat=1 -progress",
        RestoreBehavior::Update => "rd=md0 -progress",
    }
}

impl Plan {
    /// Plans the restore of `target` to `manifest` with `behavior`.
    pub fn new(
        target: Target,
        manifest: &BuildManifest,
        behavior: RestoreBehavior,
    ) -> Result<Plan, PlanError> {
        if let Some(product_type) = &target.product_type {
            let listed = manifest
                .supported_product_types
                .iter()
                .any(|p| p.eq_ignore_ascii_case(product_type));
            if !listed && !manifest.supported_product_types.is_empty() {
                return Err(PlanError::WrongModel {
                    product_type: product_type.clone(),
                    supported: manifest.supported_product_types.join(", "),
                });
            }
        }
        let device = DeviceMatch::Chip {
            cpid: target.chip_id,
            bdid: target.board_id,
        };
        let identity = manifest
            .select(&device, behavior)
            .map_err(|e| PlanError::NoIdentity(e.to_string()))?
            .clone();
        let generation = Generation::of_chip(target.chip_id);
        let steps = steps(&target, &identity, generation, behavior)?;
        Ok(Plan {
            target,
            behavior,
            identity,
            product_version: manifest.product_version.clone(),
            build_version: manifest.product_build_version.clone(),
            generation,
            steps,
        })
    }

    /// The components the plan sends, in order (what a ticket must cover before the first
    /// send; restore-mode data requests add more later).
    pub fn components(&self) -> impl Iterator<Item = &str> + '_ {
        self.steps.iter().filter_map(|s| match s {
            Step::Send { component, .. } => Some(component.as_str()),
            _ => None,
        })
    }

    /// The plan as text, one step a line.
    pub fn describe(&self) -> String {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{:>2}. {s}\n", i + 1))
            .collect()
    }
}

fn need<'a>(
    identity: &'a BuildIdentity,
    name: &'static str,
    mode: StartMode,
) -> Result<&'a Component, PlanError> {
    identity
        .component(name)
        .filter(|c| c.path.is_some())
        .ok_or_else(|| PlanError::MissingComponent {
            component: name,
            identity: format!(
                "{} for {}",
                identity.info.variant, identity.info.device_class
            ),
            mode,
        })
}

fn send(component: &str, delivery: Delivery) -> Step {
    Step::Send {
        component: component.to_string(),
        delivery,
    }
}

fn command(text: &str) -> Step {
    Step::Command {
        text: text.to_string(),
    }
}

fn steps(
    target: &Target,
    identity: &BuildIdentity,
    generation: Generation,
    behavior: RestoreBehavior,
) -> Result<Vec<Step>, PlanError> {
    let mode = target.mode;
    // Every path needs these; refuse early when one is missing.
    for name in [
        "iBEC",
        "RestoreRamDisk",
        "RestoreDeviceTree",
        "RestoreKernelCache",
    ] {
        need(identity, name, mode)?;
    }
    let mut steps = Vec::new();
    // 1. To iBEC.
    match mode {
        StartMode::Normal => {
            steps.push(Step::EnterRecovery);
            steps.push(Step::Await {
                phase: Phase::EnterRecovery,
            });
            steps.push(send("iBEC", Delivery::Recovery("go")));
            steps.push(Step::Await {
                phase: Phase::IbecBoot,
            });
        }
        StartMode::RecoveryIboot => {
            steps.push(send("iBEC", Delivery::Recovery("go")));
            steps.push(Step::Await {
                phase: Phase::IbecBoot,
            });
        }
        StartMode::RecoveryIbec => {}
        StartMode::Dfu => {
            need(identity, "iBSS", mode)?;
            steps.push(send("iBSS", Delivery::Dfu));
            match generation {
                Generation::IbssToRecovery => {
                    steps.push(Step::Await {
                        phase: Phase::IbssBootRecovery,
                    });
                    steps.push(Step::RefreshNonce);
                    steps.push(send("iBEC", Delivery::Recovery("go")));
                }
                Generation::IbssToDfu => {
                    steps.push(Step::Await {
                        phase: Phase::IbssBootDfu,
                    });
                    steps.push(Step::RefreshNonce);
                    steps.push(send("iBEC", Delivery::Dfu));
                }
            }
            steps.push(Step::Await {
                phase: Phase::IbecBoot,
            });
        }
    }
    // 2. iBEC: what iBoot loads itself, the environment, the logo, the ramdisk and its
    // companions, then the kernel with `bootx`.
    for c in &identity.components {
        if c.is_loaded_by_iboot && !c.is_loaded_by_iboot_stage1 && c.path.is_some() {
            steps.push(send(&c.name, Delivery::Recovery("firmware")));
        }
    }
    steps.push(command("setenv auto-boot false"));
    steps.push(command("saveenv"));
    let logo = ["RestoreLogo", "AppleLogo"]
        .into_iter()
        .find(|n| identity.component(n).is_some_and(|c| c.path.is_some()));
    if let Some(logo) = logo {
        steps.push(send(logo, Delivery::Recovery("setpicture 4")));
        steps.push(command("bgcolor 0 0 0"));
    }
    steps.push(send("RestoreRamDisk", Delivery::Recovery("ramdisk")));
    steps.push(send("RestoreDeviceTree", Delivery::Recovery("devicetree")));
    if identity
        .component("RestoreSEP")
        .is_some_and(|c| c.path.is_some())
    {
        steps.push(send("RestoreSEP", Delivery::Recovery("rsepfirmware")));
    }
    steps.push(command(&format!(
        "setenv boot-args {}",
        boot_args(behavior)
    )));
    steps.push(send("RestoreKernelCache", Delivery::Recovery("bootx")));
    steps.push(Step::Await {
        phase: Phase::RamdiskBoot,
    });
    // 3. restored, then the phone reboots into the new iOS.
    steps.push(Step::Restore);
    steps.push(Step::Await {
        phase: Phase::FinalReboot,
    });
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a12_is_the_first_chip_whose_ibss_comes_back_in_dfu() {
        assert_eq!(Generation::of_chip(0x7000), Generation::IbssToRecovery); // A8
        assert_eq!(Generation::of_chip(0x8015), Generation::IbssToRecovery); // A11
        assert_eq!(Generation::of_chip(0x8020), Generation::IbssToDfu); // A12
        assert_eq!(Generation::of_chip(0x8110), Generation::IbssToDfu); // A15
        assert_eq!(Generation::of_chip(0x8960), Generation::IbssToRecovery); // A7
    }

    #[test]
    fn boot_args_reformat_only_when_erasing() {
        assert!(boot_args(RestoreBehavior::Erase).contains("nand-enable-reformat=1"));
        assert!(!boot_args(RestoreBehavior::Update).contains("reformat"));
    }
}
