//! The restore orchestrator's plan: from who the phone is and the staged IPSW to the steps
//! that restore it, and the phases those steps wait in, each with its deadline.
//!
//! This crate owns the *order* of a restore. The conversations themselves belong to the
//! protocol crates (`irecv` for DFU and recovery, `lockdown` for lockdownd and restored,
//! `usbmux` under them); the daemon drives a [`plan::Plan`] step by step, waiting for each
//! mode change as an event for the same ECID with the deadline [`phase::Deadlines`] gives.
//!
//! - [`plan`]: the build identity that fits the phone (refused early when none does), the chip
//!   generation (iBSS comes back in recovery before A12, in DFU from A12 on), and the steps
//!   from normal, recovery or DFU mode to the restore ramdisk and back to iOS.
//! - [`phase`]: what a restore waits for, and the one table of deadlines.
//! - [`restored`]: restored's message loop, typed (data requests, progress, the final
//!   status), and the host's answers.
//! - [`asr`]: ASR framing and the host's side of the OS image stream.
//! - [`failure`]: typed failures (phase, cause, evidence) and the one table mapping them onto
//!   Apple's numbers (9, 4005, 4013, 4014, 14, 3194) or the phone's own status, with advice.
//! - [`ladder`]: the retry ladder, a sans-IO state machine answering what to do after each
//!   failed attempt.
//!
//! ```
//! use ipsw::manifest::{BuildManifest, RestoreBehavior};
//! use restore::plan::{Generation, Plan, StartMode, Step, Target};
//! use restore::phase::Phase;
//!
//! // A synthetic IPSW's manifest for an iPhone 13 Pro Max (A15).
//! let dir = std::env::temp_dir().join(format!("restore-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("synth.ipsw");
//! let profile = ipsw::profile::profile("iPhone14,3").ok_or("no profile")?;
//! ipsw::synth::synthesize(profile, &ipsw::synth::SynthOptions { os_size: 64 << 10 }, &path)?;
//! let (file, archive) = ipsw::archive::Archive::open(&path)?;
//! let bytes = archive.read_member(&file, "BuildManifest.plist", 16 << 20)?;
//! let manifest = BuildManifest::from_bytes(&bytes)?;
//!
//! let phone = Target {
//!     ecid: 0x001A_2B3C_4D5E_6F70,
//!     chip_id: 0x8110,
//!     board_id: 0x0E,
//!     product_type: Some("iPhone14,3".into()),
//!     mode: StartMode::Dfu,
//! };
//! let plan = Plan::new(phone, &manifest, RestoreBehavior::Erase)?;
//! assert_eq!(plan.generation, Generation::IbssToDfu);
//! assert_eq!(plan.components().next(), Some("iBSS"));
//! // From A12 on, iBSS comes back in DFU and iBEC goes over DFU too.
//! assert_eq!(plan.steps[1], Step::Await { phase: Phase::IbssBootDfu });
//! assert_eq!(plan.steps.last(), Some(&Step::Await { phase: Phase::FinalReboot }));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod asr;
pub mod failure;
pub mod ladder;
pub mod phase;
pub mod plan;
pub mod restored;
