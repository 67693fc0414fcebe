//! One restore, carried out: a [`restore::plan::Plan`]'s steps run against the phone
//! (blocking; the daemon gives each job a thread of its own).
//!
//! Each step talks to the phone as it is now: lockdown `EnterRecovery` over its mux link,
//! DFU downloads and recovery uploads through `irecv`'s engines, iBoot commands, restored and
//! ASR through [`super::restoring`]. Between steps the phone leaves and comes back in another
//! mode: every such wait is [`Phones::wait_for`] the same ECID in the expected mode, with the
//! phase's deadline from the one table ([`Deadlines`]); nothing sleeps.

use std::ops::ControlFlow;
use std::time::Duration;

use irecv::dfu::Clock;
use plist::Dictionary;
use restore::phase::{AwaitedMode, Deadlines, Phase};
use restore::plan::{Delivery, Plan, StartMode, Step};
use usb::UsbDevice;

use super::entry::{self, EntryError, Prompt};
use super::restoring::{
    self, FinalStatus, Personalize, PersonalizeError, RestoreEvent, RestoreModeError, SourceError,
    StagedSource,
};
use super::session::{Pump, SessionError};

/// How long one iBoot command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the phone comes back after it leaves the bus.
pub trait Phones {
    /// Waits until the phone `ecid` is on the bus in `mode`, at most `within`, and opens it.
    fn wait_for(
        &mut self,
        ecid: u64,
        mode: AwaitedMode,
        within: Duration,
    ) -> Result<Box<dyn UsbDevice>, WaitError>;
}

/// A wait that ended without the phone.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed.
    #[error("the phone did not come back in {mode:?} mode within {within:?}")]
    Deadline {
        /// The mode awaited.
        mode: AwaitedMode,
        /// The deadline.
        within: Duration,
    },
    /// It came back in another mode than expected.
    #[error("the phone came back in {got} mode instead of {expected:?}")]
    OtherMode {
        /// Awaited.
        expected: AwaitedMode,
        /// What it is in.
        got: String,
    },
    /// It came back but could not be opened.
    #[error("the phone came back but cannot be opened: {0}")]
    Open(#[from] usb::UsbError),
    /// It came back but its mux session would not let go of it.
    #[error("the phone came back but cannot be taken over: {0}")]
    Takeover(String),
}

/// What a job reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// Step `index` (0-based) of `total` starts.
    Step {
        /// Which.
        index: usize,
        /// Of.
        total: usize,
        /// What it does.
        text: String,
        /// The phase it belongs to.
        phase: Phase,
    },
    /// A component going to the phone: fraction sent.
    Upload {
        /// The component.
        component: String,
        /// 0.0..=1.0.
        fraction: f64,
    },
    /// Restore mode.
    Restore(RestoreEvent),
    /// The technician must act at the phone (tap Trust, unlock it), or no longer (`None`).
    Operator(Option<Prompt>),
}

/// Why a job stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A wait for the phone failed.
    #[error("{phase}: {source}")]
    Wait {
        /// The waiting phase.
        phase: Phase,
        /// Why.
        source: WaitError,
    },
    /// A component could not be read.
    #[error("{0}")]
    Component(#[from] SourceError),
    /// A component could not be personalized (no ticket, a refused build, an altered image).
    #[error("personalization: {0}")]
    Personalize(Box<PersonalizeError>),
    /// A DFU download failed.
    #[error("DFU download of {component}: {source}")]
    Dfu {
        /// The component.
        component: String,
        /// The engine's error.
        source: irecv::dfu::DownloadError,
    },
    /// A recovery-mode upload or command failed.
    #[error("recovery mode ({what}): {source}")]
    Recovery {
        /// What was being done.
        what: String,
        /// The engine's error.
        source: irecv::recovery::RecoveryError,
    },
    /// lockdown (normal mode).
    #[error("lockdown: {0}")]
    Lockdown(#[from] EntryError),
    /// The mux link.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Restore mode.
    #[error(transparent)]
    RestoreMode(#[from] RestoreModeError),
    /// restored's final status was not 0.
    #[error("restore failed with status {}{}", .0.status, .0.amr_error.map(|a| format!(" (AMRError {a})")).unwrap_or_default())]
    Failed(FinalStatus),
    /// The plan ends in a step this runner cannot do with what it was given.
    #[error("step {0} needs a phone handle and there is none")]
    NoPhone(String),
    /// The phone enumerated below high speed: the cable or port has damaged data lines.
    /// Found before any transfer to that enumeration, so nothing was sent over it.
    #[error(
        "{phase}: the phone enumerated at {speed} speed; every iPhone is high speed: a \
         cable or port problem"
    )]
    LinkSpeed {
        /// The phase the enumeration belongs to.
        phase: Phase,
        /// The speed it enumerated at.
        speed: usb::Speed,
    },
}

impl From<PersonalizeError> for JobError {
    fn from(e: PersonalizeError) -> Self {
        JobError::Personalize(Box::new(e))
    }
}

impl JobError {
    /// The phase the failure happened in.
    pub fn phase(&self, current: Phase) -> Phase {
        match self {
            JobError::Wait { phase, .. } | JobError::LinkSpeed { phase, .. } => *phase,
            JobError::Personalize(_) => Phase::Personalize,
            _ => current,
        }
    }
}

/// What a job needs besides the phone: the staged IPSW, personalization, and restored's
/// options.
pub struct Materials<'a> {
    /// The staged IPSW, opened.
    pub file: &'a std::fs::File,
    /// Its layout.
    pub archive: &'a ipsw::archive::Archive,
    /// Personalization (tickets and stitched images).
    pub personalize: &'a mut dyn Personalize,
    /// `RestoreOptions` for `StartRestore`.
    pub restore_options: Dictionary,
    /// Pair records for a phone starting in normal mode (the usbmuxd socket's directory);
    /// `None` pairs anew each time and keeps nothing.
    pub pair_records: Option<&'a std::path::Path>,
}

/// Pairs (or uses the saved pairing), starts a TLS session and sends `EnterRecovery`
/// ([`super::entry`]).
fn enter_recovery(
    dev: Box<dyn UsbDevice>,
    pair_records: Option<&std::path::Path>,
    deadlines: &Deadlines,
    clock: &mut dyn Clock,
    on_event: &mut dyn FnMut(JobEvent),
) -> Result<(), JobError> {
    let records = entry::PairRecords::maybe(pair_records);
    let host = entry::Host {
        records: &records,
        deadlines,
        clock,
        on_prompt: &mut |p| on_event(JobEvent::Operator(p)),
    };
    let entered = entry::enter_recovery(dev, host)?;
    tracing::info!(
        udid = %entered.udid,
        paired = entered.paired,
        tls = entered.tls,
        "entering recovery"
    );
    // The phone reboots into recovery once the reply is out; the next step waits for it.
    Ok(())
}

fn upload_recovery(
    dev: &mut dyn UsbDevice,
    data: &[u8],
    component: &str,
    clock: &dyn Clock,
    on_event: &mut dyn FnMut(JobEvent),
) -> Result<(), JobError> {
    let what = |s: &str| format!("{s} {component}");
    irecv::recovery::claim_interfaces(dev).map_err(|source| JobError::Recovery {
        what: what("claiming the interfaces for"),
        source,
    })?;
    irecv::recovery::run_upload_cancellable(
        dev,
        data,
        irecv::recovery::UploadOptions::default(),
        clock,
        &mut |p| {
            on_event(JobEvent::Upload {
                component: component.to_string(),
                fraction: p.fraction(),
            });
            ControlFlow::Continue(())
        },
    )
    .map_err(|source| JobError::Recovery {
        what: what("uploading"),
        source,
    })?;
    Ok(())
}

fn command(dev: &mut dyn UsbDevice, text: &str) -> Result<(), JobError> {
    let cmd = irecv::recovery::Command::new(text).map_err(|e| JobError::Recovery {
        what: format!("`{text}`"),
        source: e.into(),
    })?;
    irecv::recovery::send_command(dev, &cmd, COMMAND_TIMEOUT).map_err(|source| {
        JobError::Recovery {
            what: format!("`{text}`"),
            source,
        }
    })?;
    Ok(())
}

/// The restore ramdisk's mux link with transfers queued on a writer thread and the phone's
/// bytes read on another, so the link stays busy while the next ASR chunk is prepared (see
/// [`super::overlap`]); the plain handle when the backend cannot read from another thread.
fn overlapped(mut dev: Box<dyn UsbDevice>) -> Result<Box<dyn UsbDevice>, JobError> {
    let Some(mux) = usb::mux_configuration(dev.configurations()) else {
        return Ok(dev);
    };
    // The reader starts at once: the interface must be claimed before it reads.
    if dev.active_configuration().map_err(SessionError::from)? != mux.configuration {
        dev.set_configuration(mux.configuration)
            .map_err(SessionError::from)?;
    }
    dev.claim_interface(mux.interface)
        .map_err(SessionError::from)?;
    Ok(
        match super::overlap::Overlapped::new(dev, mux.endpoint_in) {
            Ok(o) => Box::new(o),
            Err(dev) => dev,
        },
    )
}

/// Reads what the phone shows in recovery or DFU (serial string, nonces) and hands it to
/// personalization: a new ApNonce there means a new ticket for the next image.
fn observe(dev: &mut dyn UsbDevice, source: &mut StagedSource<'_>) -> Result<(), JobError> {
    let serial_index = dev.device_descriptor().serial_number_index;
    let mut read = |index: u8, what: &str| {
        dev.string_descriptor(index, COMMAND_TIMEOUT)
            .map_err(|e| SourceError {
                what: format!("the phone's {what} (string descriptor {index})"),
                reason: e.to_string(),
            })
    };
    let serial_text = read(serial_index, "serial string")?;
    let nonce_text = read(1, "nonces")?;
    let serial = irecv::serial::SerialInfo::parse(&serial_text).map_err(|e| SourceError {
        what: "the phone's serial string".into(),
        reason: e.to_string(),
    })?;
    // Older SecureROMs put the nonces in the serial string itself.
    let nonces = irecv::serial::Nonces::parse(&nonce_text)
        .ok()
        .filter(|n| n.ap_nonce.is_some())
        .or_else(|| irecv::serial::Nonces::parse(&serial_text).ok())
        .ok_or_else(|| SourceError {
            what: "the phone's nonces".into(),
            reason: format!("no NONC in {nonce_text:?} nor in the serial string"),
        })?;
    source.personalizer().observe(&serial, &nonces)?;
    Ok(())
}

/// Asks the restore ramdisk on `dev` to reboot the phone (it comes back in recovery).
pub fn reboot_restore_mode(dev: Box<dyn UsbDevice>) -> Result<(), JobError> {
    let mut pump = Pump::open(dev)?;
    restoring::reboot(&mut pump)?;
    Ok(())
}

/// Refuses an enumeration below high speed before anything is sent over it
/// ([`JobError::LinkSpeed`]): every iPhone is a high-speed device.
fn check_link(dev: &dyn UsbDevice, phase: Phase) -> Result<(), JobError> {
    let speed = dev.speed();
    if speed.below_high_speed() {
        return Err(JobError::LinkSpeed { phase, speed });
    }
    Ok(())
}

/// Runs `plan` from `first` (the phone as it is now) to restored's final status 0 and the
/// phone back in iOS. Each enumeration's link speed is checked before anything is sent over
/// it.
pub fn run(
    plan: &Plan,
    first: Box<dyn UsbDevice>,
    phones: &mut dyn Phones,
    materials: Materials<'_>,
    deadlines: &Deadlines,
    clock: &mut dyn Clock,
    on_event: &mut dyn FnMut(JobEvent),
) -> Result<FinalStatus, JobError> {
    let total = plan.steps.len();
    let first_phase = match plan.steps.first() {
        Some(Step::EnterRecovery) => Phase::EnterRecovery,
        _ => Phase::Upload,
    };
    check_link(&*first, first_phase)?;
    let mut dev: Option<Box<dyn UsbDevice>> = Some(first);
    let mut status = None;
    // Components, tickets and restored's data all come from the staged IPSW through one
    // source.
    let mut source = StagedSource::new(
        materials.file,
        materials.archive,
        &plan.identity,
        &mut *materials.personalize,
    );
    // A phone found in recovery or DFU shows its nonces now; in normal mode they come with
    // recovery.
    if plan.target.mode != StartMode::Normal {
        if let Some(d) = dev.as_deref_mut() {
            observe(d, &mut source)?;
        }
    }
    for (index, step) in plan.steps.iter().enumerate() {
        let phase = match step {
            Step::Await { phase } => *phase,
            Step::Restore => Phase::Restore,
            Step::EnterRecovery => Phase::EnterRecovery,
            _ => Phase::Upload,
        };
        on_event(JobEvent::Step {
            index,
            total,
            text: step.to_string(),
            phase,
        });
        let no_phone = || JobError::NoPhone(step.to_string());
        match step {
            Step::EnterRecovery => enter_recovery(
                dev.take().ok_or_else(no_phone)?,
                materials.pair_records,
                deadlines,
                clock,
                on_event,
            )?,
            Step::Await { phase } => {
                let mode = phase.awaited_mode().unwrap_or(AwaitedMode::Recovery);
                // The old handle is for an enumeration that is gone.
                drop(dev.take());
                let within = deadlines.of(*phase);
                let mut back =
                    phones
                        .wait_for(plan.target.ecid, mode, within)
                        .map_err(|source| JobError::Wait {
                            phase: *phase,
                            source,
                        })?;
                // Nothing is sent over the new iOS's enumeration: a restore that is done is
                // not failed for its speed.
                if *phase != Phase::FinalReboot {
                    check_link(&*back, *phase)?;
                }
                // Every arrival in recovery or DFU shows the nonces; when the plan reads them
                // next anyway, that step does it.
                let read_next = matches!(plan.steps.get(index + 1), Some(Step::RefreshNonce));
                if matches!(mode, AwaitedMode::Recovery | AwaitedMode::Dfu) && !read_next {
                    observe(&mut *back, &mut source)?;
                }
                dev = Some(back);
            }
            Step::Send {
                component: name,
                delivery,
            } => {
                let data = source.component(name)?;
                let d = dev.as_deref_mut().ok_or_else(no_phone)?;
                match delivery {
                    Delivery::Dfu => {
                        irecv::dfu::run_download(
                            d,
                            &data,
                            irecv::dfu::Options::dfu(),
                            clock,
                            &mut |p| {
                                on_event(JobEvent::Upload {
                                    component: name.clone(),
                                    fraction: p.fraction(),
                                })
                            },
                        )
                        .map_err(|source| JobError::Dfu {
                            component: name.clone(),
                            source,
                        })?;
                    }
                    Delivery::Recovery(cmd) => {
                        upload_recovery(d, &data, name, clock, on_event)?;
                        command(d, cmd)?;
                    }
                }
            }
            Step::Command { text } => command(dev.as_deref_mut().ok_or_else(no_phone)?, text)?,
            Step::RefreshNonce => {
                observe(dev.as_deref_mut().ok_or_else(no_phone)?, &mut source)?;
            }
            Step::Restore => {
                let mut pump = Pump::open(overlapped(dev.take().ok_or_else(no_phone)?)?)?;
                let done = match restoring::run(
                    &mut pump,
                    materials.restore_options.clone(),
                    &mut source,
                    &mut |e| on_event(JobEvent::Restore(e)),
                    deadlines,
                ) {
                    Ok(done) => done,
                    Err(e) => {
                        // The restore ramdisk outlives a failed conversation: without a
                        // reboot the phone would sit in restore mode and the retry would
                        // never find it in recovery.
                        match restoring::reboot(&mut pump) {
                            Ok(()) => {
                                tracing::info!(error = %e, "restore mode failed; asked restored to reboot the phone")
                            }
                            Err(r) => {
                                tracing::warn!(error = %e, reboot = %r, "restore mode failed and restored could not be asked to reboot")
                            }
                        }
                        return Err(e.into());
                    }
                };
                if done.status != 0 {
                    return Err(JobError::Failed(done));
                }
                status = Some(done);
            }
        }
    }
    status.ok_or_else(|| JobError::NoPhone("restore".into()))
}
