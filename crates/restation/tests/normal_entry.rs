//! A restore that starts from a normal-mode phone that insists on a pairing (the virtual
//! phone's default, as real phones): restation pairs with it (or uses the saved pair record),
//! starts a TLS session and sends `EnterRecovery` inside it (`daemon::entry`). The trust
//! dialog is shown to the technician and waited for on the job's (virtual) clock; "Don't
//! Trust" and nobody answering end the job with errors that say so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipsw::manifest::{BuildManifest, RestoreBehavior};
use restation::daemon::bench::HubPhones;
use restation::daemon::entry::{self, EntryError, Host, PairRecords, Prompt};
use restation::daemon::job::{self, JobError, JobEvent, Materials, Phones};
use restation::daemon::jobs::AsShipped;
use restation::daemon::restoring::FinalStatus;
use restation::daemon::session::Pump;
use restore::phase::{AwaitedMode, Deadlines, Phase};
use restore::plan::{Plan, StartMode, Target};
use sim::clock::{Clock, DriverClock, ManualClock};
use sim::hub::VirtualHub;
use sim::phone::{Mode, Options, Phone};
use sim::profile::{Pairing, Profile, Trust};

const PRODUCT: &str = "iPhone14,3";

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("restation-entry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Staged {
    _dir: Dir,
    file: std::fs::File,
    archive: ipsw::archive::Archive,
    manifest_bytes: Vec<u8>,
    manifest: BuildManifest,
}

fn staged(name: &str) -> Staged {
    let dir = Dir::new(&format!("ipsw-{name}"));
    let path = dir.0.join("synth.ipsw");
    let profile = ipsw::profile::profile(PRODUCT).unwrap();
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
        _dir: dir,
        file,
        archive,
        manifest_bytes,
        manifest,
    }
}

/// One normal-mode phone on a virtual hub.
struct Bench {
    clock: Arc<ManualClock>,
    hub: VirtualHub,
    profile: Profile,
}

fn bench(trust: Trust, pairing: Pairing) -> Bench {
    let clock = ManualClock::new();
    let hub = VirtualHub::new(1, clock.clone() as Arc<dyn Clock>);
    let mut profile = Profile::for_product_type(PRODUCT, 77).unwrap();
    profile.trust = trust;
    profile.pairing = pairing;
    let options = Options {
        start: Mode::Normal,
        ..Options::default()
    };
    hub.plug(0, Phone::new(profile.clone(), options, clock.now()))
        .unwrap();
    Bench {
        clock,
        hub,
        profile,
    }
}

impl Bench {
    fn phones(&self) -> HubPhones {
        HubPhones {
            hub: self.hub.clone(),
            port: 0,
        }
    }

    fn mode(&self) -> Mode {
        self.hub.with_phone(0, |p| p.mode()).unwrap()
    }

    /// Runs a whole restore from normal mode; the events it reported.
    fn restore(
        &self,
        ipsw: &Staged,
        pair_records: Option<&std::path::Path>,
        deadlines: &Deadlines,
        clock: &mut dyn irecv::dfu::Clock,
    ) -> (Result<FinalStatus, JobError>, Vec<JobEvent>) {
        let plan = Plan::new(
            Target {
                ecid: self.profile.ecid,
                chip_id: self.profile.chip_id,
                board_id: self.profile.board_id,
                product_type: Some(PRODUCT.into()),
                mode: StartMode::Normal,
            },
            &ipsw.manifest,
            RestoreBehavior::Erase,
        )
        .unwrap();
        let restore_options = restore::restored::restore_options(
            restore::restored::identity_dict(&ipsw.manifest_bytes, &plan.identity).unwrap(),
            &plan.product_version,
            plan.behavior,
            self.profile.imei.is_some(),
            "6F1E2D3C-0000-4000-8000-000000000003",
        );
        let mut phones = self.phones();
        let first = phones.open().unwrap();
        let mut personalize = AsShipped;
        let mut events = Vec::new();
        let result = job::run(
            &plan,
            first,
            &mut phones,
            Materials {
                file: &ipsw.file,
                archive: &ipsw.archive,
                personalize: &mut personalize,
                restore_options,
                pair_records,
            },
            deadlines,
            clock,
            &mut |e| {
                if !matches!(e, JobEvent::Upload { .. } | JobEvent::Restore(_)) {
                    events.push(e);
                }
            },
        );
        (result, events)
    }
}

fn operator_events(events: &[JobEvent]) -> Vec<Option<Prompt>> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Operator(p) => Some(*p),
            _ => None,
        })
        .collect()
}

/// The job's clock that taps Trust on the phone after the job has waited `after` times.
struct TapsTrustAfter {
    inner: DriverClock,
    hub: VirtualHub,
    waits: usize,
    after: usize,
}

impl irecv::dfu::Clock for TapsTrustAfter {
    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn wait_until(&mut self, instant: Instant) {
        self.inner.wait_until(instant);
        self.waits += 1;
        if self.waits == self.after {
            self.hub.with_phone(0, sim::normal::tap_trust);
        }
    }
}

#[test]
fn an_unpaired_phone_is_paired_and_restored_and_the_record_is_reused() {
    let ipsw = staged("paired");
    let records = Dir::new("records");
    let b = bench(Trust::Trusted, Pairing::Required);
    let (result, events) = b.restore(
        &ipsw,
        Some(&records.0),
        &Deadlines::default(),
        &mut DriverClock(b.clock.clone()),
    );
    assert_eq!(result.unwrap().status, 0);
    assert!(
        operator_events(&events).is_empty(),
        "a trusting phone needs nobody"
    );
    assert!(matches!(b.mode(), Mode::Normal), "back in iOS");

    // The record is saved where the usbmuxd socket serves it, owner-only, with the phone's
    // EscrowBag and this host's SystemBUID.
    let path = records.0.join(format!("{}.plist", b.profile.udid));
    let record = lockdown::PairRecordFile::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    assert!(record.escrow_bag.is_some());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let buid = PairRecords::new(&records.0).system_buid().unwrap();
    assert_eq!(buid.as_deref(), Some(record.system_buid.as_str()));

    // The next entry uses it: no new pairing, a TLS session, and the phone goes to recovery.
    let mut clock = DriverClock(b.clock.clone());
    let entered = entry::enter_recovery(
        b.phones().open().unwrap(),
        Host {
            records: &PairRecords::new(&records.0),
            deadlines: &Deadlines::default(),
            clock: &mut clock,
            on_prompt: &mut |p| panic!("no prompt expected, got {p:?}"),
        },
    )
    .unwrap();
    assert_eq!(entered.udid, b.profile.udid);
    assert!(
        !entered.paired && entered.saved && entered.tls,
        "{entered:?}"
    );
    b.phones()
        .wait_for(
            b.profile.ecid,
            AwaitedMode::Recovery,
            Duration::from_secs(90),
        )
        .unwrap();
}

#[test]
fn the_trust_dialog_is_shown_and_the_restore_goes_on_once_trust_is_tapped() {
    let ipsw = staged("trust");
    let b = bench(Trust::DialogPending, Pairing::Required);
    let mut clock = TapsTrustAfter {
        inner: DriverClock(b.clock.clone()),
        hub: b.hub.clone(),
        waits: 0,
        after: 3,
    };
    let started = b.clock.elapsed();
    let (result, events) = b.restore(&ipsw, None, &Deadlines::default(), &mut clock);
    assert_eq!(result.unwrap().status, 0);
    assert_eq!(
        operator_events(&events),
        [Some(Prompt::TapTrust), None],
        "shown once, cleared once paired"
    );
    // Shown during the EnterRecovery step, before anything else happened.
    let shown = events
        .iter()
        .position(|e| matches!(e, JobEvent::Operator(Some(_))))
        .unwrap();
    assert!(matches!(
        events.get(shown - 1),
        Some(JobEvent::Step {
            phase: Phase::EnterRecovery,
            ..
        })
    ));
    assert!(clock.waits >= 3);
    assert!(b.clock.elapsed() - started >= entry::PAIR_RETRY * 3);
}

#[test]
fn dont_trust_ends_the_job_with_the_users_refusal() {
    let ipsw = staged("denied");
    let records = Dir::new("denied");
    let b = bench(Trust::Denied, Pairing::Required);
    let (result, events) = b.restore(
        &ipsw,
        Some(&records.0),
        &Deadlines::default(),
        &mut DriverClock(b.clock.clone()),
    );
    let err = result.unwrap_err();
    assert!(
        matches!(err, JobError::Lockdown(EntryError::UserDenied { ref udid }) if *udid == b.profile.udid),
        "{err}"
    );
    assert_eq!(err.phase(Phase::EnterRecovery), Phase::EnterRecovery);
    assert!(matches!(&err, JobError::Lockdown(e) if e.needs_user()));
    let text = err.to_string();
    assert!(text.contains("refused to trust this computer"), "{text}");
    assert!(text.contains("Don't Trust"), "{text}");
    assert!(operator_events(&events).is_empty());
    assert!(
        !records.0.join(format!("{}.plist", b.profile.udid)).exists(),
        "no record for a refused pairing"
    );
    assert!(matches!(b.mode(), Mode::Normal), "the phone stays in iOS");
}

#[test]
fn nobody_tapping_trust_ends_the_job_at_the_pairing_deadline() {
    let b = bench(Trust::DialogPending, Pairing::Required);
    let deadlines = Deadlines {
        pair: Duration::from_secs(20),
        ..Deadlines::default()
    };
    let mut prompts = Vec::new();
    let started = b.clock.elapsed();
    let err = entry::enter_recovery(
        b.phones().open().unwrap(),
        Host {
            records: &PairRecords::none(),
            deadlines: &deadlines,
            clock: &mut DriverClock(b.clock.clone()),
            on_prompt: &mut |p| prompts.push(p),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, EntryError::TrustTimeout { waited, prompt: Prompt::TapTrust } if waited == deadlines.pair),
        "{err}"
    );
    assert!(err.needs_user());
    assert_eq!(prompts, [Some(Prompt::TapTrust), None]);
    let waited = b.clock.elapsed() - started;
    assert!(
        waited >= deadlines.pair && waited < deadlines.pair + Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(matches!(b.mode(), Mode::Normal));
}

#[test]
fn a_phone_that_forgot_the_saved_pairing_is_paired_again() {
    let records = Dir::new("forgot");
    let b = bench(Trust::Trusted, Pairing::Required);
    let mut prompts = Vec::new();
    let mut enter = |b: &Bench, clock: &mut dyn irecv::dfu::Clock| {
        entry::enter_recovery(
            b.phones().open().unwrap(),
            Host {
                records: &PairRecords::new(&records.0),
                deadlines: &Deadlines::default(),
                clock,
                on_prompt: &mut |p| prompts.push(p),
            },
        )
        .unwrap()
    };
    let first = enter(&b, &mut DriverClock(b.clock.clone()));
    assert!(first.paired && first.saved && first.tls);
    let path = records.0.join(format!("{}.plist", b.profile.udid));
    let before = lockdown::PairRecordFile::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    // Back to iOS, where the phone has forgotten every host (as after "Reset Location &
    // Privacy") and asks its user again.
    let mut phones = b.phones();
    phones
        .wait_for(
            b.profile.ecid,
            AwaitedMode::Recovery,
            Duration::from_secs(90),
        )
        .unwrap();
    b.hub.unplug(0).unwrap();
    let mut profile = b.profile.clone();
    profile.trust = Trust::DialogPending;
    let options = Options {
        start: Mode::Normal,
        ..Options::default()
    };
    b.hub
        .plug(0, Phone::new(profile, options, b.clock.now()))
        .unwrap();
    let mut clock = TapsTrustAfter {
        inner: DriverClock(b.clock.clone()),
        hub: b.hub.clone(),
        waits: 0,
        after: 2,
    };
    let second = enter(&b, &mut clock);
    assert!(second.paired && second.saved && second.tls, "{second:?}");
    assert_eq!(prompts, [Some(Prompt::TapTrust), None]);
    let after = lockdown::PairRecordFile::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    assert_ne!(
        before.host_id, after.host_id,
        "a new pairing replaced the old"
    );
}

/// Virtual-phone time (the link's transfers) and wall time of the three ways in: plain
/// `EnterRecovery` on a lenient phone, pairing + TLS on a phone without a record, TLS with a
/// saved record. Printed (`--nocapture`), not asserted beyond each one working.
#[test]
fn figures_pairing_and_tls_against_plain_enter_recovery() {
    let records = Dir::new("figures");
    let mut rows = Vec::new();
    // What the phone of the second row remembers (its pairing), for the third.
    let mut remembered: Option<sim::normal::LockdownStore> = None;
    for (name, pairing, plain) in [
        (
            "plain EnterRecovery (lenient phone)",
            Pairing::Lenient,
            true,
        ),
        ("Pair + TLS + EnterRecovery", Pairing::Required, false),
        (
            "saved record: TLS + EnterRecovery",
            Pairing::Required,
            false,
        ),
    ] {
        let b = bench(Trust::Trusted, pairing);
        if let Some(store) = remembered.take() {
            b.hub
                .with_phone(0, |p| p.mode_state_mut().1.lockdown = store)
                .unwrap();
        }
        let dev = b.phones().open().unwrap();
        let (virtual0, wall0) = (b.clock.elapsed(), Instant::now());
        if plain {
            let mut pump = Pump::open(dev).unwrap();
            let conn = pump
                .connect(lockdown::PORT, Duration::from_secs(10))
                .unwrap();
            let mut codec = lockdown::HostCodec::new().with_label("restation");
            for request in [
                lockdown::Request::QueryType,
                lockdown::Request::EnterRecovery,
            ] {
                restation::daemon::identify::ask(
                    &mut pump,
                    conn,
                    &mut codec,
                    request,
                    Duration::from_secs(10),
                )
                .unwrap();
            }
        } else {
            let entered = entry::enter_recovery(
                dev,
                Host {
                    records: &PairRecords::new(&records.0),
                    deadlines: &Deadlines::default(),
                    clock: &mut DriverClock(b.clock.clone()),
                    on_prompt: &mut |_| {},
                },
            )
            .unwrap();
            assert!(entered.tls, "{name}");
            assert_eq!(entered.paired, rows.len() == 1, "{name}");
        }
        let (virt, wall) = (b.clock.elapsed() - virtual0, wall0.elapsed());
        remembered = b
            .hub
            .with_phone(0, |p| p.mode_state_mut().1.lockdown.clone());
        b.phones()
            .wait_for(
                b.profile.ecid,
                AwaitedMode::Recovery,
                Duration::from_secs(90),
            )
            .unwrap();
        rows.push((name, virt, wall));
    }
    let base = rows[0].1.as_secs_f64().max(1e-9);
    for (name, virt, wall) in &rows {
        eprintln!(
            "{name:<40} virtual {:>8.3} ms ({:>5.1}x plain)  wall {:>8.1} ms",
            virt.as_secs_f64() * 1e3,
            virt.as_secs_f64() / base,
            wall.as_secs_f64() * 1e3
        );
    }
}
