//! Personalized restores: the job asks the loopback TSS stand-in (over HTTP) for a ticket
//! bound to the phone's ECID and current ApNonce, stitches every image it sends, and the
//! virtual phone checks each one as a real phone does (signature, ECID, nonce, digest).
//!
//! - Three generations from DFU, on phones whose iBSS boots with a new ApNonce: the job reads
//!   the nonce again and asks for a second ticket, or iBEC would be refused.
//! - From normal mode the nonce is learnt in recovery: one ticket.
//! - A personalization that keeps the old ticket, or sends an image the ticket does not cover,
//!   is refused by the phone; an unsigned build (STATUS 94) stops the job before anything is
//!   sent.

use std::sync::Arc;

use ipsw::manifest::{BuildManifest, RestoreBehavior};
use restation::daemon::bench::HubPhones;
use restation::daemon::job::{self, JobError, Materials};
use restation::daemon::jobs::Personalization;
use restation::daemon::personalize::{ClientTickets, Tss};
use restation::daemon::restoring::{Personalize, PersonalizeError};
use restore::phase::{Deadlines, Phase};
use restore::plan::{Plan, StartMode, Target};
use sim::clock::{Clock, ManualClock};
use sim::hub::VirtualHub;
use sim::phone::{Mode, Options, Phone};
use sim::profile::{DfuStage, Profile};
use tss::standin::Standin;

struct Staged {
    _dir: tempfile::TempDir,
    file: std::fs::File,
    archive: ipsw::archive::Archive,
    manifest_bytes: Vec<u8>,
    manifest: BuildManifest,
}

fn staged(product_type: &str) -> Staged {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synth.ipsw");
    let profile = ipsw::profile::profile(product_type).unwrap();
    ipsw::synth::synthesize(
        profile,
        &ipsw::synth::SynthOptions { os_size: 256 << 10 },
        &path,
    )
    .unwrap();
    let (file, archive) = ipsw::archive::Archive::open(&path).unwrap();
    let manifest_bytes = archive
        .read_member(&file, "BuildManifest.plist", 16 << 20)
        .unwrap();
    let manifest = BuildManifest::from_bytes(&manifest_bytes).unwrap();
    Staged {
        _dir: dir,
        file,
        archive,
        manifest_bytes,
        manifest,
    }
}

/// The stand-in on a runtime of its own, and the daemon's personalization pointed at it.
struct Signing {
    runtime: tokio::runtime::Runtime,
    standin: Standin,
    tss: Tss,
}

fn signing() -> Signing {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let standin = runtime.block_on(Standin::start()).unwrap();
    let client = tss::Client::new(tss::Config {
        url: standin.url(),
        ..tss::Config::default()
    })
    .unwrap();
    let tss = Tss::new(Arc::new(ClientTickets::new(
        client,
        runtime.handle().clone(),
    )));
    Signing {
        runtime,
        standin,
        tss,
    }
}

struct Bench {
    hub: VirtualHub,
    clock: Arc<dyn Clock>,
    profile: Profile,
    plan: Plan,
    restore_options: plist::Dictionary,
}

fn bench(product_type: &str, start: Mode, ipsw: &Staged, signing: &Signing, roll: bool) -> Bench {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let hub = VirtualHub::new(1, Arc::clone(&clock));
    let mut profile = Profile::for_product_type(product_type, 77).unwrap();
    profile.nonce_rolls_after_ibss = roll;
    let mut phone = Phone::new(
        profile.clone(),
        Options {
            start,
            ..Options::default()
        },
        clock.now(),
    );
    phone.set_image_check(Box::new(tss::verify::image_check(
        signing.standin.public_key(),
    )));
    hub.plug(0, phone).unwrap();
    let plan_mode = match start {
        Mode::Normal => StartMode::Normal,
        Mode::Dfu(_) => StartMode::Dfu,
        _ => StartMode::RecoveryIboot,
    };
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
        "6F1E2D3C-0000-4000-8000-000000000003",
    );
    Bench {
        hub,
        clock,
        profile,
        plan,
        restore_options,
    }
}

fn run(
    bench: &Bench,
    ipsw: &Staged,
    personalize: &mut dyn Personalize,
) -> Result<restation::daemon::restoring::FinalStatus, JobError> {
    let mut phones = HubPhones {
        hub: bench.hub.clone(),
        port: 0,
    };
    let first = phones.open().unwrap();
    job::run(
        &bench.plan,
        first,
        &mut phones,
        Materials {
            file: &ipsw.file,
            archive: &ipsw.archive,
            personalize,
            restore_options: bench.restore_options.clone(),
            pair_records: None,
        },
        &Deadlines::default(),
        &mut sim::clock::DriverClock(Arc::clone(&bench.clock)),
        &mut |_| {},
    )
}

/// Every image the phone took, and whether it booted it.
fn refusals(bench: &Bench) -> Vec<String> {
    bench
        .hub
        .with_phone(0, |p| {
            p.core()
                .record
                .uploads
                .iter()
                .filter_map(|u| u.refusal.clone())
                .collect()
        })
        .unwrap()
}

fn accepted(bench: &Bench) -> usize {
    bench
        .hub
        .with_phone(0, |p| {
            p.core()
                .record
                .uploads
                .iter()
                .filter(|u| u.accepted)
                .count()
        })
        .unwrap()
}

#[test]
fn three_generations_from_dfu_with_a_nonce_that_changes_after_ibss() {
    for product_type in ["iPhone7,2", "iPhone10,3", "iPhone14,3"] {
        let ipsw = staged(product_type);
        let signing = signing();
        let bench = bench(
            product_type,
            Mode::Dfu(DfuStage::SecureRom),
            &ipsw,
            &signing,
            true,
        );
        let before = bench.profile.ap_nonce.clone();
        let mut personalize = signing.tss.for_plan(&bench.plan).unwrap();
        let status = run(&bench, &ipsw, &mut *personalize)
            .unwrap_or_else(|e| panic!("{product_type}: {e}; refusals {:?}", refusals(&bench)));
        assert_eq!(status.status, 0, "{product_type}");
        assert!(
            refusals(&bench).is_empty(),
            "{product_type}: {:?}",
            refusals(&bench)
        );
        assert!(
            accepted(&bench) >= 5,
            "{product_type}: images checked and booted"
        );
        let after = bench
            .hub
            .with_phone(0, |p| p.profile().ap_nonce.clone())
            .unwrap();
        assert_ne!(before, after, "{product_type}: iBSS rolled the nonce");
        assert_eq!(
            signing.standin.requests(),
            2,
            "{product_type}: one ticket for SecureROM's nonce, one for iBSS's"
        );
        assert_eq!(signing.tss.requested(), 2);
        signing.runtime.block_on(signing.standin.shutdown());
    }
}

#[test]
fn from_normal_mode_the_nonce_is_learnt_in_recovery() {
    let ipsw = staged("iPhone14,3");
    let signing = signing();
    let bench = bench("iPhone14,3", Mode::Normal, &ipsw, &signing, false);
    let mut personalize = signing.tss.for_plan(&bench.plan).unwrap();
    let status = run(&bench, &ipsw, &mut *personalize)
        .unwrap_or_else(|e| panic!("{e}; refusals {:?}", refusals(&bench)));
    assert_eq!(status.status, 0);
    assert!(refusals(&bench).is_empty(), "{:?}", refusals(&bench));
    assert_eq!(signing.standin.requests(), 1);
}

/// Hands the personalization only the first nonce it sees, as a tool that never reads it
/// again would.
struct FirstNonceOnly {
    inner: Box<dyn Personalize + Send>,
    seen: bool,
}

impl Personalize for FirstNonceOnly {
    fn observe(
        &mut self,
        serial: &irecv::serial::SerialInfo,
        nonces: &irecv::serial::Nonces,
    ) -> Result<(), PersonalizeError> {
        if self.seen {
            return Ok(());
        }
        self.seen = true;
        self.inner.observe(serial, nonces)
    }
    fn component(&mut self, name: &str, im4p: Vec<u8>) -> Result<Vec<u8>, PersonalizeError> {
        self.inner.component(name, im4p)
    }
    fn root_ticket(&mut self) -> Result<Vec<u8>, PersonalizeError> {
        self.inner.root_ticket()
    }
}

#[test]
fn a_ticket_for_the_old_nonce_is_refused_by_the_phone() {
    let ipsw = staged("iPhone14,3");
    let signing = signing();
    let bench = bench(
        "iPhone14,3",
        Mode::Dfu(DfuStage::SecureRom),
        &ipsw,
        &signing,
        true,
    );
    let mut stale = FirstNonceOnly {
        inner: signing.tss.for_plan(&bench.plan).unwrap(),
        seen: false,
    };
    let err = run(&bench, &ipsw, &mut stale).unwrap_err();
    let refused = refusals(&bench);
    assert_eq!(refused.len(), 1, "iBEC refused: {refused:?} ({err})");
    assert!(
        refused[0].to_lowercase().contains("nonce"),
        "the phone names the nonce: {refused:?}"
    );
    assert_eq!(accepted(&bench), 1, "only iBSS booted");
    // The phone stays in iBSS's DFU: the job waits for iBEC in vain.
    assert!(
        matches!(
            err,
            JobError::Wait {
                phase: Phase::IbecBoot,
                ..
            }
        ),
        "{err}"
    );
}

/// Sends another image under the ticket of the real one (a digest the ticket does not list).
struct SwappedImage {
    inner: Box<dyn Personalize + Send>,
    swap: &'static str,
}

impl Personalize for SwappedImage {
    fn observe(
        &mut self,
        serial: &irecv::serial::SerialInfo,
        nonces: &irecv::serial::Nonces,
    ) -> Result<(), PersonalizeError> {
        self.inner.observe(serial, nonces)
    }
    fn component(&mut self, name: &str, im4p: Vec<u8>) -> Result<Vec<u8>, PersonalizeError> {
        let real = self.inner.component(name, im4p)?;
        if name != self.swap {
            return Ok(real);
        }
        let mut img = tss::Img4::decode(&real).unwrap();
        let payload = img.payload().unwrap();
        img.im4p = ipsw::Im4p::new(&payload.kind, "not-the-signed-one", vec![0x42; 4096]).encode();
        Ok(img.encode())
    }
    fn root_ticket(&mut self) -> Result<Vec<u8>, PersonalizeError> {
        self.inner.root_ticket()
    }
}

#[test]
fn an_image_the_ticket_does_not_cover_is_refused_by_the_phone() {
    let ipsw = staged("iPhone10,3");
    let signing = signing();
    let bench = bench(
        "iPhone10,3",
        Mode::Dfu(DfuStage::SecureRom),
        &ipsw,
        &signing,
        false,
    );
    let mut swapped = SwappedImage {
        inner: signing.tss.for_plan(&bench.plan).unwrap(),
        swap: "iBSS",
    };
    let err = run(&bench, &ipsw, &mut swapped).unwrap_err();
    let refused = refusals(&bench);
    assert_eq!(refused.len(), 1, "{refused:?} ({err})");
    assert!(
        refused[0].contains("does not match the ticket"),
        "the phone names the digest: {refused:?}"
    );
    assert_eq!(accepted(&bench), 0);
}

#[test]
fn an_unsigned_build_stops_the_job_before_anything_is_sent() {
    let ipsw = staged("iPhone14,3");
    let signing = signing();
    signing.standin.refuse_all(Some((
        94,
        "This device isn't eligible for the requested build.".into(),
    )));
    let bench = bench(
        "iPhone14,3",
        Mode::Dfu(DfuStage::SecureRom),
        &ipsw,
        &signing,
        false,
    );
    let mut personalize = signing.tss.for_plan(&bench.plan).unwrap();
    let err = run(&bench, &ipsw, &mut *personalize).unwrap_err();
    match &err {
        JobError::Personalize(p) => match &**p {
            PersonalizeError::Tss(e) => assert!(e.is_unsigned_build(), "{e}"),
            other => panic!("expected an unsigned-build refusal, got {other}"),
        },
        other => panic!("expected an unsigned-build refusal, got {other}"),
    }
    assert_eq!(err.phase(Phase::Upload), Phase::Personalize);
    assert_eq!(signing.standin.requests(), 1, "94 is never retried");
    let uploads = bench
        .hub
        .with_phone(0, |p| p.core().record.uploads.len())
        .unwrap();
    assert_eq!(uploads, 0, "nothing reached the phone");
}
