//! Plans for three generations (the shapes of the real manifests: SHA-1 era iPhone7,2, A11
//! iPhone10,3, A15 iPhone14,3) from every start mode, built from synthetic IPSWs; the real
//! manifests themselves from ../shared (skipped when absent); and the early refusals.

use ipsw::manifest::{BuildManifest, RestoreBehavior};
use restore::phase::{AwaitedMode, Phase};
use restore::plan::{Delivery, Generation, Plan, PlanError, StartMode, Step, Target};

fn synth_manifest(product_type: &str) -> BuildManifest {
    let dir = std::env::temp_dir().join(format!(
        "restore-plan-{}-{}",
        product_type.replace(',', "_"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("synth.ipsw");
    let profile = ipsw::profile::profile(product_type).unwrap();
    ipsw::synth::synthesize(
        profile,
        &ipsw::synth::SynthOptions { os_size: 64 << 10 },
        &path,
    )
    .unwrap();
    let (file, archive) = ipsw::archive::Archive::open(&path).unwrap();
    let bytes = archive
        .read_member(&file, "BuildManifest.plist", 16 << 20)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    BuildManifest::from_bytes(&bytes).unwrap()
}

fn target(product_type: &str, mode: StartMode) -> Target {
    let row = irecv::devices::by_product_type(product_type)
        .next()
        .unwrap();
    Target {
        ecid: 0x11_2233_4455,
        chip_id: row.chip_id,
        board_id: row.board_id,
        product_type: Some(product_type.into()),
        mode,
    }
}

fn awaits(plan: &Plan) -> Vec<Phase> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Await { phase } => Some(*phase),
            _ => None,
        })
        .collect()
}

const MODES: [StartMode; 4] = [
    StartMode::Normal,
    StartMode::RecoveryIboot,
    StartMode::RecoveryIbec,
    StartMode::Dfu,
];

#[test]
fn three_generations_from_every_mode() {
    for (product_type, generation) in [
        ("iPhone7,2", Generation::IbssToRecovery),
        ("iPhone10,3", Generation::IbssToRecovery),
        ("iPhone14,3", Generation::IbssToDfu),
    ] {
        let manifest = synth_manifest(product_type);
        for mode in MODES {
            for behavior in [RestoreBehavior::Erase, RestoreBehavior::Update] {
                let plan = Plan::new(target(product_type, mode), &manifest, behavior)
                    .unwrap_or_else(|e| panic!("{product_type} from {mode}: {e}"));
                assert_eq!(plan.generation, generation);
                assert_eq!(plan.identity.info.restore_behavior, behavior);
                let phases = awaits(&plan);
                // Every restore ends with the ramdisk, restored, and the reboot into iOS.
                assert_eq!(
                    &phases[phases.len() - 2..],
                    &[Phase::RamdiskBoot, Phase::FinalReboot],
                    "{product_type} {mode}"
                );
                let restore_at = plan.steps.iter().position(|s| *s == Step::Restore);
                let bootx_at = plan.steps.iter().position(|s| {
                    matches!(
                        s,
                        Step::Send {
                            delivery: Delivery::Recovery("bootx"),
                            ..
                        }
                    )
                });
                assert!(bootx_at < restore_at, "{product_type} {mode}");
                // Each mode's own way to iBEC.
                let first = &plan.steps[0];
                match mode {
                    StartMode::Normal => {
                        assert_eq!(*first, Step::EnterRecovery);
                        assert_eq!(phases[0], Phase::EnterRecovery);
                    }
                    StartMode::RecoveryIboot => assert_eq!(
                        *first,
                        Step::Send {
                            component: "iBEC".into(),
                            delivery: Delivery::Recovery("go")
                        }
                    ),
                    StartMode::RecoveryIbec => {
                        assert!(!plan.components().any(|c| c == "iBSS" || c == "iBEC"))
                    }
                    StartMode::Dfu => {
                        assert_eq!(plan.components().next(), Some("iBSS"));
                        let ibec = plan
                            .steps
                            .iter()
                            .find_map(|s| match s {
                                Step::Send {
                                    component,
                                    delivery,
                                } if component == "iBEC" => Some(*delivery),
                                _ => None,
                            })
                            .unwrap();
                        let after_ibss = phases[0];
                        match generation {
                            Generation::IbssToDfu => {
                                assert_eq!(ibec, Delivery::Dfu);
                                assert_eq!(after_ibss.awaited_mode(), Some(AwaitedMode::Dfu));
                            }
                            Generation::IbssToRecovery => {
                                assert_eq!(ibec, Delivery::Recovery("go"));
                                assert_eq!(after_ibss.awaited_mode(), Some(AwaitedMode::Recovery));
                            }
                        }
                        // A new nonce after iBSS needs a new ticket before iBEC.
                        assert!(plan.steps.contains(&Step::RefreshNonce));
                    }
                }
                // Every component sent is in the chosen identity with a file behind it.
                for c in plan.components() {
                    let comp = plan.identity.component(c).unwrap();
                    assert!(comp.path.is_some(), "{c}");
                }
                assert!(plan.steps.contains(&Step::Command {
                    text: format!("setenv boot-args {}", restore::plan::boot_args(behavior))
                }));
            }
        }
    }
}

#[test]
fn the_wrong_ipsw_is_refused_before_anything_is_sent() {
    let manifest = synth_manifest("iPhone14,3");
    let err = Plan::new(
        target("iPhone10,3", StartMode::Dfu),
        &manifest,
        RestoreBehavior::Erase,
    )
    .unwrap_err();
    assert!(matches!(err, PlanError::WrongModel { .. }), "{err}");
    assert!(err.to_string().contains("iPhone10,3"), "{err}");
    // Right model name, wrong board (a refurbished board swap, a mistyped table): no identity.
    let mut odd = target("iPhone14,3", StartMode::Dfu);
    odd.board_id = 0x7F;
    let err = Plan::new(odd, &manifest, RestoreBehavior::Erase).unwrap_err();
    assert!(matches!(err, PlanError::NoIdentity(_)), "{err}");
}

#[test]
fn a_manifest_missing_the_ramdisk_is_refused_naming_it() {
    let mut manifest = synth_manifest("iPhone10,3");
    for id in &mut manifest.identities {
        id.components.retain(|c| c.name != "RestoreRamDisk");
    }
    let err = Plan::new(
        target("iPhone10,3", StartMode::RecoveryIbec),
        &manifest,
        RestoreBehavior::Erase,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PlanError::MissingComponent {
                component: "RestoreRamDisk",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn real_manifests_plan_for_their_devices() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/real");
    for (file, product_type) in [
        ("BuildManifest-iPhone7.2-8.4.1-12H321.plist", "iPhone7,2"),
        ("BuildManifest-iPhone10.3-11.2-15C114.plist", "iPhone10,3"),
        ("BuildManifest-iPhone14.3-15.4.1-19E258.plist", "iPhone14,3"),
    ] {
        let path = std::path::Path::new(dir).join(file);
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!(
                "SKIP: {} is absent (../shared/fixtures/real)",
                path.display()
            );
            continue;
        };
        let manifest = BuildManifest::from_bytes(&bytes).unwrap();
        for mode in MODES {
            let plan = Plan::new(
                target(product_type, mode),
                &manifest,
                RestoreBehavior::Erase,
            )
            .unwrap_or_else(|e| panic!("{file} from {mode}: {e}"));
            assert_eq!(plan.build_version, manifest.product_build_version);
            eprintln!("{product_type} from {mode}:\n{}", plan.describe());
        }
        // The A15 manifest's IsLoadedByiBoot components go with `firmware`.
        if product_type == "iPhone14,3" {
            let plan = Plan::new(
                target(product_type, StartMode::RecoveryIbec),
                &manifest,
                RestoreBehavior::Erase,
            )
            .unwrap();
            let firmware: Vec<&str> = plan
                .steps
                .iter()
                .filter_map(|s| match s {
                    Step::Send {
                        component,
                        delivery: Delivery::Recovery("firmware"),
                    } => Some(component.as_str()),
                    _ => None,
                })
                .collect();
            assert!(firmware.contains(&"RestoreTrustCache"), "{firmware:?}");
            assert!(firmware.contains(&"AOP"), "{firmware:?}");
            assert!(!firmware.contains(&"iBSS"));
        }
    }
}

#[test]
fn the_chosen_identity_is_found_verbatim_in_the_manifest() {
    let dir = std::env::temp_dir().join(format!("restore-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("synth.ipsw");
    let profile = ipsw::profile::profile("iPhone10,3").unwrap();
    ipsw::synth::synthesize(
        profile,
        &ipsw::synth::SynthOptions { os_size: 64 << 10 },
        &path,
    )
    .unwrap();
    let (file, archive) = ipsw::archive::Archive::open(&path).unwrap();
    let bytes = archive
        .read_member(&file, "BuildManifest.plist", 16 << 20)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let manifest = BuildManifest::from_bytes(&bytes).unwrap();
    for behavior in [RestoreBehavior::Erase, RestoreBehavior::Update] {
        let plan = Plan::new(target("iPhone10,3", StartMode::Dfu), &manifest, behavior).unwrap();
        let raw = restore::restored::identity_dict(&bytes, &plan.identity).unwrap();
        let info = raw
            .get("Info")
            .and_then(plist::Value::as_dictionary)
            .unwrap();
        assert_eq!(
            info.get("RestoreBehavior")
                .and_then(plist::Value::as_string),
            Some(behavior.as_str())
        );
        assert!(raw.get("Manifest").is_some());
    }
}
