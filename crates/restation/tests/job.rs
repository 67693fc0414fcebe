//! Whole restores against the virtual phone, from every start mode, for three generations
//! (the shapes of the real manifests: SHA-1 era iPhone7,2, A11 iPhone10,3, A15 iPhone14,3):
//! the plan run step by step (`daemon::job`), each mode change awaited on the virtual bus,
//! and the phone ending in iOS with the synthetic IPSW's build.

use std::sync::Arc;

use ipsw::manifest::{BuildManifest, RestoreBehavior};
use restation::daemon::bench::HubPhones;
use restation::daemon::identify::{ask_lockdown, Told};
use restation::daemon::job::{self, JobEvent, Materials};
use restation::daemon::restoring::{Personalize, PersonalizeError};
use restation::daemon::session::Pump;
use restore::phase::{Deadlines, Phase};
use restore::plan::{Plan, StartMode, Target};
use sim::clock::{Clock, ManualClock};
use sim::hub::VirtualHub;
use sim::phone::{Mode, Options, Phone, RecoveryStage};
use sim::profile::{DfuStage, Profile};

struct AsIs {
    nonces_seen: usize,
}

impl Personalize for AsIs {
    fn observe(
        &mut self,
        _: &irecv::serial::SerialInfo,
        nonces: &irecv::serial::Nonces,
    ) -> Result<(), PersonalizeError> {
        assert!(nonces.ap_nonce.is_some(), "the phone shows its ApNonce");
        self.nonces_seen += 1;
        Ok(())
    }
    fn component(&mut self, _: &str, im4p: Vec<u8>) -> Result<Vec<u8>, PersonalizeError> {
        Ok(im4p)
    }
    fn root_ticket(&mut self) -> Result<Vec<u8>, PersonalizeError> {
        Ok(b"IM4M test ticket".to_vec())
    }
}

struct Staged {
    dir: std::path::PathBuf,
    file: std::fs::File,
    archive: ipsw::archive::Archive,
    manifest_bytes: Vec<u8>,
    manifest: BuildManifest,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn staged(product_type: &str) -> Staged {
    let dir = std::env::temp_dir().join(format!(
        "restation-job-{}-{}",
        product_type.replace(',', "_"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("synth.ipsw");
    let profile = ipsw::profile::profile(product_type).unwrap();
    ipsw::synth::synthesize(
        profile,
        &ipsw::synth::SynthOptions { os_size: 1 << 20 },
        &path,
    )
    .unwrap();
    let (file, archive) = ipsw::archive::Archive::open(&path).unwrap();
    let manifest_bytes = archive
        .read_member(&file, "BuildManifest.plist", 16 << 20)
        .unwrap();
    let manifest = BuildManifest::from_bytes(&manifest_bytes).unwrap();
    Staged {
        dir,
        file,
        archive,
        manifest_bytes,
        manifest,
    }
}

fn restore_from(product_type: &str, start: Mode, plan_mode: StartMode, ipsw: &Staged) {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let hub = VirtualHub::new(1, Arc::clone(&clock));
    let profile = Profile::for_product_type(product_type, 1234).unwrap();
    let options = Options {
        start,
        ..Options::default()
    };
    hub.plug(0, Phone::new(profile.clone(), options, clock.now()))
        .unwrap();
    let plan = Plan::new(
        Target {
            ecid: profile.ecid,
            chip_id: profile.chip_id,
            board_id: profile.board_id,
            product_type: Some(product_type.into()),
            mode: plan_mode,
        },
        &ipsw.manifest,
        RestoreBehavior::Erase,
    )
    .unwrap();
    let restore_options = restore::restored::restore_options(
        restore::restored::identity_dict(&ipsw.manifest_bytes, &plan.identity).unwrap(),
        &plan.product_version,
        plan.behavior,
        profile.imei.is_some(),
        "6F1E2D3C-0000-4000-8000-000000000002",
    );
    let mut personalize = AsIs { nonces_seen: 0 };
    let mut phones = HubPhones {
        hub: hub.clone(),
        port: 0,
    };
    let first = phones.open().unwrap();
    let mut phases = Vec::new();
    let status = job::run(
        &plan,
        first,
        &mut phones,
        Materials {
            file: &ipsw.file,
            archive: &ipsw.archive,
            personalize: &mut personalize,
            restore_options,
            pair_records: None,
        },
        &Deadlines::default(),
        &mut sim::clock::DriverClock(Arc::clone(&clock)),
        &mut |e| {
            if let JobEvent::Step { phase, .. } = e {
                if phases.last() != Some(&phase) {
                    phases.push(phase);
                }
            }
        },
    )
    .unwrap_or_else(|e| panic!("{product_type} from {plan_mode}: {e}\n{}", plan.describe()));
    assert_eq!(status.status, 0);
    if plan_mode == StartMode::Dfu {
        assert!(
            personalize.nonces_seen >= 2,
            "the nonce is read in DFU and again after iBSS"
        );
    }
    assert_eq!(phases.last(), Some(&Phase::FinalReboot));

    // The phone runs iOS again, with the IPSW's build.
    let mut pump = Pump::open(phones.open().unwrap()).unwrap();
    let Told::Lockdown(values) = ask_lockdown(&mut pump).unwrap() else {
        panic!("{product_type} from {plan_mode}: not back in iOS");
    };
    assert_eq!(
        values.get("BuildVersion").and_then(plist::Value::as_string),
        Some(ipsw.manifest.product_build_version.as_str()),
        "{product_type} from {plan_mode}"
    );
    assert_eq!(
        values
            .get("UniqueChipID")
            .and_then(plist::Value::as_unsigned_integer),
        Some(profile.ecid)
    );
}

fn every_mode(product_type: &str) {
    let ipsw = staged(product_type);
    for (start, plan_mode) in [
        (Mode::Normal, StartMode::Normal),
        (
            Mode::Recovery(RecoveryStage::Iboot),
            StartMode::RecoveryIboot,
        ),
        (Mode::Dfu(DfuStage::SecureRom), StartMode::Dfu),
    ] {
        restore_from(product_type, start, plan_mode, &ipsw);
    }
}

#[test]
fn iphone7_2_sha1_era_from_every_mode() {
    every_mode("iPhone7,2");
}

#[test]
fn iphone10_3_from_every_mode() {
    every_mode("iPhone10,3");
}

#[test]
fn iphone14_3_from_every_mode() {
    every_mode("iPhone14,3");
}
