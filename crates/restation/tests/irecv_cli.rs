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
