//! The request for a real iPhone 13 Pro Max build (iOS 15.4.1), read from the shared real
//! manifests when they are present (never copied into the project).

use ipsw::{BuildManifest, DeviceMatch, RestoreBehavior};
use tss::request::{Device, Request, SKIPPED_COMPONENTS};

const REAL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/real/BuildManifest-iPhone14.3-15.4.1-19E258.plist"
);

#[test]
fn request_for_iphone14_3_carries_every_digest() {
    let Ok(bytes) = std::fs::read(REAL) else {
        eprintln!("SKIP: {REAL} not present (the shared real fixtures are not on this machine)");
        return;
    };
    let manifest = BuildManifest::from_bytes(&bytes).unwrap();
    let identity = manifest
        .select(
            &DeviceMatch::Chip {
                cpid: 0x8110,
                bdid: 0x0E,
            },
            RestoreBehavior::Erase,
        )
        .unwrap();
    let device = Device {
        ecid: 0x0001_2345_6789_ABCD,
        ap_nonce: vec![0x42; 32],
        sep_nonce: Some(vec![0x24; 20]),
        chip_id: 0x8110,
        board_id: 0x0E,
        security_domain: identity.ap_security_domain,
        production_mode: true,
        security_mode: true,
    };
    let request = Request::for_identity(&device, identity).unwrap();

    // Every component with a digest is asked for, with that digest; the skipped ones never.
    let mut with_digest = 0;
    for c in &identity.components {
        let asked = request.component(&c.name);
        if SKIPPED_COMPONENTS.contains(&c.name.as_str()) {
            assert!(asked.is_none(), "{} must not be requested", c.name);
            continue;
        }
        match &c.digest {
            Some(d) => {
                with_digest += 1;
                let asked = asked.unwrap_or_else(|| panic!("{} missing", c.name));
                assert_eq!(asked.digest, d.as_bytes(), "{}", c.name);
                assert_eq!(asked.trusted, c.trusted, "{}", c.name);
                assert!(asked.epro && asked.esec);
            }
            None if c.trusted => {
                assert_eq!(request.component(&c.name).map(|a| a.digest.len()), Some(0));
            }
            None => assert!(asked.is_none(), "{} has no digest", c.name),
        }
    }
    assert!(
        with_digest > 40,
        "only {with_digest} components with a digest"
    );
    for name in ["iBSS", "iBEC", "KernelCache", "RestoreRamDisk", "SEP", "OS"] {
        assert!(request.component(name).is_some(), "{name} not requested");
    }
    // SHA-384 for the AP images of this generation.
    assert_eq!(request.component("iBSS").unwrap().digest.len(), 48);

    // The plist says what Apple's server reads, and reads back the same.
    let xml = request.to_xml();
    let text = String::from_utf8_lossy(&xml);
    for key in [
        "@ApImg4Ticket",
        "@HostPlatformInfo",
        "@VersionInfo",
        "ApECID",
        "ApNonce",
        "SepNonce",
        "ApChipID",
        "ApBoardID",
        "ApSecurityDomain",
        "ApProductionMode",
        "ApSecurityMode",
        "UniqueBuildID",
    ] {
        assert!(text.contains(&format!("<key>{key}</key>")), "{key} missing");
    }
    assert_eq!(Request::from_xml(&xml).unwrap(), request);
    assert_eq!(
        request.unique_build_id.as_deref(),
        identity.unique_build_id.as_deref()
    );
}
