//! `restation irecv ...` run as a process: JSON keys and values, masked ECIDs, garbage → exit 2.

use std::process::{Command, Output};

fn restation(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(args)
        .output()
        .expect("run restation")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = restation(args);
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

const KEYS: [&str; 17] = [
    "cpid",
    "cprv",
    "cpfm",
    "scep",
    "bdid",
    "ecid",
    "ibfl",
    "sdom",
    "srtg",
    "srnm",
    "imei",
    "product_type",
    "board_config",
    "name",
    "production_mode",
    "security_mode",
    "image4_aware",
];

#[test]
fn parse_serial_json_a10_dfu() {
    let v = json(&[
        "irecv",
        "parse-serial",
        "CPID:8010 CPRV:11 CPFM:03 SCEP:01 BDID:0C ECID:0002213824536326 IBFL:3C SRTG:[iBoot-2696.0.0.1.33]",
        "--json",
    ]);
    let obj = v.as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    let mut want = KEYS.to_vec();
    keys.sort_unstable();
    want.sort_unstable();
    assert_eq!(keys, want, "exactly the documented keys");

    assert_eq!(v["cpid"], 0x8010);
    assert_eq!(v["cprv"], 0x11);
    assert_eq!(v["cpfm"], 3);
    assert_eq!(v["scep"], 1);
    assert_eq!(v["bdid"], 0x0C);
    assert_eq!(v["ecid"], "0x2213824536326");
    assert_eq!(v["ibfl"], 0x3C);
    assert_eq!(v["sdom"], serde_json::Value::Null);
    assert_eq!(v["srtg"], "iBoot-2696.0.0.1.33");
    assert_eq!(v["srnm"], serde_json::Value::Null);
    assert_eq!(v["imei"], serde_json::Value::Null);
    assert_eq!(v["product_type"], "iPhone9,3");
    assert_eq!(v["board_config"], "d101ap");
    assert_eq!(v["name"], "iPhone 7 (GSM)");
    assert_eq!(v["production_mode"], true);
    assert_eq!(v["security_mode"], true);
    assert_eq!(v["image4_aware"], true);
}

#[test]
fn parse_serial_json_masked_ecid_and_unknown_board() {
    let v = json(&[
        "irecv",
        "parse-serial",
        "SDOM:01 CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:7E ECID:XXXXXXXXXXXXXXXX IBFL:3C SRTG:[rom]",
        "--json",
    ]);
    assert_eq!(v["ecid"], serde_json::Value::Null);
    assert_eq!(v["sdom"], 1);
    assert_eq!(v["cpid"], 0x8110);
    assert_eq!(v["srtg"], "rom");
    assert_eq!(v["product_type"], serde_json::Value::Null);
    assert_eq!(v["board_config"], serde_json::Value::Null);
    assert_eq!(v["name"], serde_json::Value::Null);
}

#[test]
fn parse_serial_text_table() {
    let out = restation(&[
        "irecv",
        "parse-serial",
        "CPID:8960 CPRV:11 CPFM:03 SCEP:01 BDID:00 ECID:**** IBFL:1D SRNM:[F2LN1234ABCD] PWND:[checkm8]",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("iPhone6,1"), "{text}");
    assert!(text.contains("n51ap"), "{text}");
    assert!(text.contains("F2LN1234ABCD"), "{text}");
    assert!(text.contains("unknown (unreadable: \"****\")"), "{text}");
    assert!(text.contains("checkm8"), "{text}");
    // Aligned: every value starts in the same column.
    let columns: std::collections::HashSet<usize> = text
        .lines()
        .filter_map(|l| {
            l.find("  ")
                .map(|i| i + l[i..].len() - l[i..].trim_start().len())
        })
        .collect();
    assert_eq!(columns.len(), 1, "{text}");
}

#[test]
fn garbage_exits_2_with_a_message() {
    for garbage in ["Apple Mobile Device (DFU Mode)", "", "hello:world"] {
        let out = restation(&["irecv", "parse-serial", garbage, "--json"]);
        assert_eq!(out.status.code(), Some(2), "{garbage:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("parse-serial"), "{err}");
        assert!(err.contains("serial"), "{err}");
    }
}

#[test]
fn mode_of_a_product_id() {
    let out = restation(&["irecv", "mode", "0x1281"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "recovery");
    let out = restation(&["irecv", "mode", "0x1227"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "dfu");
    let out = restation(&["irecv", "mode", "0x8600"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("T2"));
    let out = restation(&["irecv", "mode", "banana"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A file of `len` bytes in a fresh directory (kept alive by the returned guard).
fn file(len: usize) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ibss.bin");
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, data).unwrap();
    (dir, path.to_str().unwrap().to_owned())
}

/// `restation irecv ARGS --sim PHONE`: talk to a virtual phone `PRODUCT:MODE`.
fn on(phone: &str, args: &[&str]) -> Output {
    let mut all = vec!["irecv"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--sim", phone]);
    restation(&all)
}

/// What the command said on stderr.
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn send_uploads_to_recovery_and_downloads_to_dfu() {
    use sha2::{Digest, Sha256};
    // 5000 bytes: DFU's last block keeps room for the suffix; recovery ends on a short packet.
    let (_dir, path) = file(5000);
    let want = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
    for (phone, mode) in [
        ("iPhone10,3:recovery", "recovery"),
        ("iPhone7,2:dfu", "dfu"),
    ] {
        let out = on(phone, &["send", &path, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(sent["mode"], mode, "{sent}");
        assert_eq!(sent["bytes"], 5000, "{sent}");
        assert_eq!(sent["sha256"], want.as_str(), "{sent}");
        assert!(sent["ecid"].as_str().unwrap().starts_with("0x"), "{sent}");
    }
    // Text: one line saying what went where.
    let out = on("iPhone10,3:recovery", &["send", &path]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("sent 5000 bytes to 0x"), "{text}");
}

#[test]
fn send_refuses_what_it_cannot_do() {
    let (_dir, path) = file(100);
    let (_empty_dir, empty) = file(0);
    for (phone, args, says) in [
        // no phone with that ECID
        (
            "iPhone10,3:recovery",
            vec!["send", &path, "--ecid", "0x1"],
            "with ECID 0x1",
        ),
        // a phone in normal mode is not one to send a file to
        (
            "iPhone10,3:normal",
            vec!["send", &path],
            "no phone in recovery or DFU",
        ),
        ("iPhone10,3:recovery", vec!["send", &empty], "empty"),
        (
            "iPhone10,3:recovery",
            vec!["send", "/nonexistent/ibss"],
            "/nonexistent/ibss",
        ),
    ] {
        let out = on(phone, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn command_reads_an_environment_variable_from_recovery_only() {
    let out = on("iPhone10,3:recovery", &["command", "getenv build-version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value = String::from_utf8_lossy(&out.stdout);
    assert!(value.trim().starts_with("iBoot-"), "{value}");
    let out = on("iPhone10,3:recovery", &["command", "setenv auto-boot true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = on("iPhone7,2:dfu", &["command", "getenv build-version"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("go to a phone in recovery"));
}
