//! `restation ipsw …` end to end: inspect/select against the real manifests (skipped when
//! ../shared is absent), and synth → stage → list → verify on a small synthetic IPSW.

use std::path::PathBuf;
use std::process::{Command, Output};

fn restation(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(args)
        .output()
        .unwrap()
}

fn real(name: &str) -> Option<String> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/real"
    ))
    .join(name);
    if p.exists() {
        Some(p.display().to_string())
    } else {
        eprintln!("SKIP: real fixture {} absent", p.display());
        None
    }
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ipsw-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn inspect_real_manifests() {
    for (file, build, identities) in [
        ("BuildManifest-iPhone7.2-8.4.1-12H321.plist", "12H321", 2),
        ("BuildManifest-iPhone10.3-11.2-15C114.plist", "15C114", 4),
        ("BuildManifest-iPhone9-10-13.5.1-17F80.plist", "17F80", 8),
        ("BuildManifest-iPhone14.3-15.4.1-19E258.plist", "19E258", 2),
    ] {
        let Some(path) = real(file) else { return };
        let text = stdout(&restation(&["ipsw", "inspect", &path]));
        assert!(
            text.contains(build) && text.contains(&format!("build identities: {identities}")),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&stdout(&restation(&["ipsw", "inspect", &path, "--json"])))
                .unwrap();
        assert_eq!(json["identities"].as_array().unwrap().len(), identities);
        assert_eq!(json["product_build_version"], build);
    }
}

#[test]
fn select_real_manifests() {
    let Some(m14) = real("BuildManifest-iPhone14.3-15.4.1-19E258.plist") else {
        return;
    };
    let json: serde_json::Value = serde_json::from_str(&stdout(&restation(&[
        "ipsw",
        "select",
        &m14,
        "--cpid",
        "0x8110",
        "--bdid",
        "0x0E",
        "--behavior",
        "update",
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["device_class"], "d64ap");
    assert_eq!(json["restore_behavior"], "Update");
    assert_eq!(json["ap_chip_id"], "0x8110");

    let Some(m9) = real("BuildManifest-iPhone9-10-13.5.1-17F80.plist") else {
        return;
    };
    let text = stdout(&restation(&[
        "ipsw", "select", &m9, "--cpid", "0x8015", "--bdid", "0x0A",
    ]));
    assert!(text.contains("d201ap") && text.contains("Erase"), "{text}");
    let text = stdout(&restation(&[
        "ipsw",
        "select",
        &m9,
        "--device-class",
        "d10ap",
        "--behavior",
        "update",
    ]));
    assert!(text.contains("0x8010") && text.contains("Update"), "{text}");

    // A device the IPSW does not fit: non-zero exit and a clear message.
    let o = restation(&["ipsw", "select", &m14, "--cpid", "0x8015", "--bdid", "0x06"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no build identity for CPID 0x8015 BDID 0x06") && err.contains("d64ap"),
        "{err}"
    );
}

#[test]
fn synth_stage_list_verify() {
    let d = tmp("flow");
    let ipsw = d.join("d22.ipsw");
    let store = d.join("store");
    let (ipsw_s, store_s) = (ipsw.display().to_string(), store.display().to_string());
    let text = stdout(&restation(&[
        "ipsw",
        "synth",
        "--profile",
        "iPhone10,3",
        "--os-size",
        "1M",
        &ipsw_s,
    ]));
    assert!(text.contains("wrote"), "{text}");
    let text = stdout(&restation(&[
        "ipsw",
        "select",
        &ipsw_s,
        "--cpid",
        "0x8015",
        "--bdid",
        "0x06",
        "--behavior",
        "erase",
    ]));
    assert!(text.contains("d22ap"), "{text}");

    // A wrong expected hash: refused, nothing staged.
    let o = restation(&[
        "ipsw",
        "stage",
        &ipsw_s,
        "--store",
        &store_s,
        "--sha256",
        &"00".repeat(32),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("whole-file sha256"));

    let rec: serde_json::Value = serde_json::from_str(&stdout(&restation(&[
        "ipsw", "stage", &ipsw_s, "--store", &store_s, "--json",
    ])))
    .unwrap();
    let id = rec["id"].as_str().unwrap().to_owned();
    assert_eq!(rec["product_build_version"], "15C114");
    let text = stdout(&restation(&["ipsw", "stage", &ipsw_s, "--store", &store_s]));
    assert!(text.contains("already staged"), "{text}");
    let text = stdout(&restation(&["ipsw", "list", "--store", &store_s]));
    assert!(text.contains(&id[..16]) && text.contains("d22ap"), "{text}");
    let text = stdout(&restation(&[
        "ipsw",
        "verify",
        &id[..10],
        "--store",
        &store_s,
    ]));
    assert!(text.starts_with("ok"), "{text}");

    let o = restation(&[
        "ipsw",
        "synth",
        "--profile",
        "iPad99,9",
        "--os-size",
        "1M",
        &ipsw_s,
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("iPhone14,3"));
    let _ = std::fs::remove_dir_all(&d);
}
