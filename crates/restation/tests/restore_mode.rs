//! Restore mode end to end against the virtual phone: restation's restored driver
//! (`daemon::restoring`) over the phone's mux link, with a synthetic IPSW as the data source:
//! every data request answered from the IPSW's members, the OS image streamed over ASR
//! straight from its zip member, the final status 0, and the phone rebooting into iOS with the
//! IPSW's build. A phone whose restored asks for a data type restation does not serve ends
//! the run naming it.

use std::sync::Arc;
use std::time::Duration;

use ipsw::manifest::{BuildManifest, RestoreBehavior};
use restation::daemon::identify::{ask_lockdown, Told};
use restation::daemon::restoring::{
    self, DataSource, Personalize, PersonalizeError, RestoreEvent, RestoreModeError, SourceError,
    StagedSource,
};
use restation::daemon::session::Pump;
use restore::phase::Deadlines;
use restore::plan::{Plan, StartMode, Target};
use sha2::{Digest, Sha256};
use sim::check::ImageKind;
use sim::clock::{Clock, ManualClock};
use sim::hub::VirtualHub;
use sim::phone::{Mode, Options, Phone};
use sim::profile::Profile;
use usb::UsbBackend;

/// The virtual phone checks nothing here (its default check boots what arrives intact):
/// images go as the IPSW has them.
struct AsIs;

impl Personalize for AsIs {
    fn observe(
        &mut self,
        _: &irecv::serial::SerialInfo,
        _: &irecv::serial::Nonces,
    ) -> Result<(), PersonalizeError> {
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
    _dir: tempdir::Dir,
    file: std::fs::File,
    archive: ipsw::archive::Archive,
    manifest_bytes: Vec<u8>,
    manifest: BuildManifest,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn staged(product_type: &str, os_size: u64) -> Staged {
    let dir = std::env::temp_dir().join(format!(
        "restation-restore-mode-{}-{}",
        product_type.replace(',', "_"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("synth.ipsw");
    let profile = ipsw::profile::profile(product_type).unwrap();
    ipsw::synth::synthesize(profile, &ipsw::synth::SynthOptions { os_size }, &path).unwrap();
    let (file, archive) = ipsw::archive::Archive::open(&path).unwrap();
    let manifest_bytes = archive
        .read_member(&file, "BuildManifest.plist", 16 << 20)
        .unwrap();
    let manifest = BuildManifest::from_bytes(&manifest_bytes).unwrap();
    Staged {
        _dir: tempdir::Dir(dir),
        file,
        archive,
        manifest_bytes,
        manifest,
    }
}

fn bench(product_type: &str) -> (VirtualHub, Profile) {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let hub = VirtualHub::new(2, Arc::clone(&clock));
    let profile = Profile::for_product_type(product_type, 77).unwrap();
    let options = Options {
        start: Mode::Restore,
        ..Options::default()
    };
    hub.plug(0, Phone::new(profile.clone(), options, clock.now()))
        .unwrap();
    (hub, profile)
}

fn open_pump(hub: &VirtualHub) -> Pump {
    let info = hub.devices().unwrap().remove(0);
    Pump::open(hub.open(info.id).unwrap()).unwrap()
}

#[test]
fn restore_mode_runs_to_status_0_and_the_phone_boots_the_new_build() {
    let product_type = "iPhone14,3";
    let ipsw = staged(product_type, 3 << 20);
    let (hub, profile) = bench(product_type);
    let plan = Plan::new(
        Target {
            ecid: profile.ecid,
            chip_id: profile.chip_id,
            board_id: profile.board_id,
            product_type: Some(product_type.into()),
            mode: StartMode::RecoveryIbec,
        },
        &ipsw.manifest,
        RestoreBehavior::Erase,
    )
    .unwrap();
    let options = restore::restored::restore_options(
        restore::restored::identity_dict(&ipsw.manifest_bytes, &plan.identity).unwrap(),
        &plan.product_version,
        plan.behavior,
        profile.imei.is_some(),
        "6F1E2D3C-0000-4000-8000-000000000001",
    );
    let mut personalize = AsIs;
    let mut source = StagedSource::new(&ipsw.file, &ipsw.archive, &plan.identity, &mut personalize);
    let image_len = source.image_size();
    assert!(image_len >= 3 << 20);

    let mut pump = open_pump(&hub);
    let mut events = Vec::new();
    let status = restoring::run(
        &mut pump,
        options,
        &mut source,
        &mut |e| events.push(e),
        &Deadlines::default(),
    )
    .unwrap();
    if status.status != 0 {
        let record = hub.with_phone(0, |p| p.core().record.clone()).unwrap();
        let last: Vec<_> = events.iter().rev().take(5).collect();
        panic!(
            "{status:?}\nuploads: {:?}\nlast events: {last:?}",
            record.uploads
        );
    }
    assert!(events.iter().any(|e| matches!(
        e,
        RestoreEvent::Image { sent, total } if sent == total && *total == image_len
    )));
    let served: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            RestoreEvent::Served { data_type, .. } => Some(data_type.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        served.contains(&"RootTicket") && served.contains(&"KernelCache"),
        "{served:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        RestoreEvent::Progress {
            operation: 13,
            progress: 100
        }
    )));
    drop(pump);

    // What the phone got: the OS image byte for byte.
    let os_member = plan.identity.component("OS").unwrap().path.clone().unwrap();
    let os = ipsw
        .archive
        .read_member(&ipsw.file, &os_member, 1 << 30)
        .unwrap();
    let record = hub.with_phone(0, |p| p.core().record.clone()).unwrap();
    let got = record
        .uploads
        .iter()
        .find(|u| u.kind == ImageKind::Restore("SystemImageData"))
        .unwrap();
    assert_eq!(got.sha256, <[u8; 32]>::from(Sha256::digest(&os)));

    // The reboot into iOS, with the IPSW's build.
    assert!(hub.run_port_until(0, Duration::from_secs(600), |p| {
        p.is_on_bus() && p.mode() == Mode::Normal
    }));
    let mut pump = open_pump(&hub);
    let Told::Lockdown(values) = ask_lockdown(&mut pump).unwrap() else {
        panic!("restored still answers after the reboot");
    };
    assert_eq!(
        values.get("BuildVersion").and_then(plist::Value::as_string),
        Some(ipsw.manifest.product_build_version.as_str())
    );
}

/// A data source that serves nothing but the image: restored's first request is unserved.
struct Nothing;

impl DataSource for Nothing {
    fn data(&mut self, _: &restore::restored::DataType) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(None)
    }
    fn image_size(&self) -> u64 {
        0
    }
    fn image_range(&mut self, _: u64, _: u64) -> Result<Vec<u8>, SourceError> {
        Ok(Vec::new())
    }
    fn image(&mut self) -> Result<Box<dyn std::io::Read + '_>, SourceError> {
        Ok(Box::new(std::io::empty()))
    }
}

#[test]
fn an_unserved_data_request_ends_the_run_naming_the_type() {
    let (hub, _) = bench("iPhone10,3");
    let mut pump = open_pump(&hub);
    let err = restoring::run(
        &mut pump,
        plist::Dictionary::new(),
        &mut Nothing,
        &mut |_| {},
        &Deadlines::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RestoreModeError::UnservedData(t) if t == "RootTicket"),
        "{err}"
    );
}

#[test]
fn a_normal_mode_phone_is_not_taken_for_restored() {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let hub = VirtualHub::new(1, Arc::clone(&clock));
    let profile = Profile::for_product_type("iPhone10,3", 5).unwrap();
    hub.plug(0, Phone::new(profile, Options::default(), clock.now()))
        .unwrap();
    let mut pump = open_pump(&hub);
    let err = restoring::run(
        &mut pump,
        plist::Dictionary::new(),
        &mut Nothing,
        &mut |_| {},
        &Deadlines::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RestoreModeError::NotRestored(_)), "{err}");
}
