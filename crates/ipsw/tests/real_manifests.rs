//! The four real BuildManifests (and one Restore.plist) from ../shared/fixtures/real parse,
//! and identity selection gives the right answers. Skipped when the folder is absent.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ipsw::{Algorithm, BuildManifest, DeviceMatch, Error, RestoreBehavior, RestoreInfo};

fn real(name: &str) -> Option<Vec<u8>> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/real"
    ))
    .join(name);
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!("SKIP: real fixture {} absent", p.display());
            None
        }
    }
}

fn manifest(name: &str) -> Option<BuildManifest> {
    real(name).map(|b| BuildManifest::from_bytes(&b).unwrap())
}

fn chip(cpid: u32, bdid: u32) -> DeviceMatch {
    DeviceMatch::Chip { cpid, bdid }
}

fn digest_lengths(m: &BuildManifest) -> BTreeSet<usize> {
    m.identities
        .iter()
        .flat_map(|i| &i.components)
        .filter_map(|c| c.digest.as_ref())
        .map(|d| d.algorithm().digest_len())
        .collect()
}

#[test]
fn iphone7_2_8_4_1() {
    let Some(m) = manifest("BuildManifest-iPhone7.2-8.4.1-12H321.plist") else {
        return;
    };
    assert_eq!(
        (m.product_version.as_str(), m.product_build_version.as_str()),
        ("8.4.1", "12H321")
    );
    assert_eq!(m.supported_product_types, ["iPhone7,2"]);
    assert_eq!(m.identities.len(), 2);
    for id in &m.identities {
        assert_eq!(
            (id.ap_chip_id, id.ap_board_id, id.ap_security_domain),
            (0x7000, 0x06, 1)
        );
        assert_eq!(id.info.device_class, "n61ap");
        assert!(id.unique_build_id.is_some());
        let os = id.component("OS").unwrap();
        assert!(os.digest.is_none() && os.path.is_some());
    }
    assert_eq!(digest_lengths(&m), BTreeSet::from([20]));
    let erase = m
        .select(&chip(0x7000, 0x06), RestoreBehavior::Erase)
        .unwrap();
    assert_eq!(erase.info.restore_behavior, RestoreBehavior::Erase);
    let update = m
        .select(
            &DeviceMatch::DeviceClass("N61AP".into()),
            RestoreBehavior::Update,
        )
        .unwrap();
    assert!(update.info.variant.contains("Upgrade"));
    let ibss = erase.component("iBSS").unwrap();
    assert_eq!(ibss.digest.as_ref().unwrap().algorithm(), Algorithm::Sha1);
    assert_eq!(
        ibss.path.as_deref(),
        Some("Firmware/dfu/iBSS.n61.RELEASE.im4p")
    );
    // Update and Erase differ in their ramdisk.
    assert_ne!(
        erase.component("RestoreRamDisk").unwrap().path,
        update.component("RestoreRamDisk").unwrap().path
    );
}

#[test]
fn restore_plist_iphone7_2() {
    let Some(b) = real("Restore-iPhone7.2-8.4.1-12H321.plist") else {
        return;
    };
    let r = RestoreInfo::from_bytes(&b).unwrap();
    assert_eq!(
        (r.product_version.as_str(), r.product_build_version.as_str()),
        ("8.4.1", "12H321")
    );
    assert_eq!(r.supported_product_types, ["iPhone7,2"]);
    assert_eq!(r.device_map.len(), 1);
    let d = &r.device_map[0];
    assert_eq!(
        (d.cpid, d.bdid, d.board_config.as_str()),
        (0x7000, 0x06, "n61ap")
    );
    assert_eq!(d.platform.as_deref(), Some("t7000"));
}

#[test]
fn iphone10_3_11_2() {
    let Some(m) = manifest("BuildManifest-iPhone10.3-11.2-15C114.plist") else {
        return;
    };
    assert_eq!(m.product_build_version, "15C114");
    assert_eq!(m.identities.len(), 4);
    let boards: BTreeSet<_> = m
        .identities
        .iter()
        .map(|i| (i.ap_chip_id, i.ap_board_id, i.info.device_class.clone()))
        .collect();
    assert_eq!(
        boards,
        BTreeSet::from([
            (0x8015, 0x06, "d22ap".to_owned()),
            (0x8015, 0x0E, "d221ap".to_owned())
        ])
    );
    assert_eq!(digest_lengths(&m), BTreeSet::from([32, 48]));
    let id = m
        .select(&chip(0x8015, 0x0E), RestoreBehavior::Erase)
        .unwrap();
    assert_eq!(id.info.device_class, "d221ap");
    let id = m
        .select(&chip(0x8015, 0x06), RestoreBehavior::Update)
        .unwrap();
    assert_eq!(
        (id.info.device_class.as_str(), id.info.restore_behavior),
        ("d22ap", RestoreBehavior::Update)
    );
    // OS has a HashMethod: its digest is not over the dmg's bytes.
    assert!(!id.component("OS").unwrap().has_member_digest());
    // An iPhone 13 Pro Max does not fit.
    match m.select(&chip(0x8110, 0x0E), RestoreBehavior::Erase) {
        Err(Error::NoIdentityForDevice { available, .. }) => {
            assert!(available.iter().any(|a| a.contains("d221ap")))
        }
        other => panic!("expected NoIdentityForDevice, got {other:?}"),
    }
}

#[test]
fn iphone9_10_13_5_1() {
    let Some(m) = manifest("BuildManifest-iPhone9-10-13.5.1-17F80.plist") else {
        return;
    };
    assert_eq!(m.identities.len(), 8);
    assert_eq!(digest_lengths(&m), BTreeSet::from([48]));
    let classes: BTreeSet<_> = m
        .identities
        .iter()
        .map(|i| (i.ap_chip_id, i.info.device_class.as_str()))
        .collect();
    assert_eq!(
        classes,
        BTreeSet::from([
            (0x8010, "d10ap"),
            (0x8010, "d101ap"),
            (0x8015, "d20ap"),
            (0x8015, "d201ap")
        ])
    );
    for (class, cpid) in [
        ("d10ap", 0x8010),
        ("d101ap", 0x8010),
        ("d20ap", 0x8015),
        ("d201ap", 0x8015),
    ] {
        for behavior in [RestoreBehavior::Erase, RestoreBehavior::Update] {
            let id = m
                .select(&DeviceMatch::DeviceClass(class.into()), behavior)
                .unwrap();
            assert_eq!((id.ap_chip_id, id.info.restore_behavior), (cpid, behavior));
            let by_chip = m
                .select(&chip(id.ap_chip_id, id.ap_board_id), behavior)
                .unwrap();
            assert_eq!(by_chip.info.device_class, class);
        }
    }
    let iboot: Vec<_> = m.identities[0]
        .components
        .iter()
        .filter(|c| c.is_loaded_by_iboot)
        .collect();
    assert!(!iboot.is_empty());
}

#[test]
fn iphone14_3_15_4_1() {
    let Some(m) = manifest("BuildManifest-iPhone14.3-15.4.1-19E258.plist") else {
        return;
    };
    assert_eq!(
        (m.product_version.as_str(), m.product_build_version.as_str()),
        ("15.4.1", "19E258")
    );
    assert_eq!(m.identities.len(), 2);
    assert_eq!(digest_lengths(&m), BTreeSet::from([32, 48]));
    let erase = m
        .select(&chip(0x8110, 0x0E), RestoreBehavior::Erase)
        .unwrap();
    let update = m
        .select(&chip(0x8110, 0x0E), RestoreBehavior::Update)
        .unwrap();
    assert_eq!(erase.info.device_class, "d64ap");
    assert_eq!(update.info.restore_behavior, RestoreBehavior::Update);
    let without: BTreeSet<_> = erase
        .components
        .iter()
        .filter(|c| c.digest.is_none())
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        without.contains("BasebandFirmware") && without.contains("SE,UpdatePayload"),
        "{without:?}"
    );
    // Some components share one Info.Path (the Rose ftab).
    let rose: Vec<_> = erase
        .components
        .iter()
        .filter(|c| c.path.as_deref() == Some("Firmware/Rose/r1p2/ftab.bin"))
        .collect();
    assert!(rose.len() >= 2, "{rose:?}");
    assert!(erase.components.iter().any(|c| c.is_loaded_by_iboot));
    assert!(erase.components.iter().any(|c| c.hash_method.is_some()));
    match m.select(&chip(0x8110, 0x0C), RestoreBehavior::Erase) {
        Err(e @ Error::NoIdentityForDevice { .. }) => {
            assert!(e.to_string().contains("0x8110/0x0E d64ap"))
        }
        other => panic!("expected NoIdentityForDevice, got {other:?}"),
    }
}
