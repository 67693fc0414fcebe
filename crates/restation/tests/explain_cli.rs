//! `restation explain` run as a process: one number in full, the whole table, JSON, negative
//! device statuses, and an unknown number → a helpful message and exit 2.

use std::process::{Command, Output};

fn restation(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(args)
        .output()
        .expect("run restation")
}

fn stdout_of(args: &[&str]) -> String {
    let out = restation(args);
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn one_number_prints_meaning_causes_and_advice() {
    let text = stdout_of(&["explain", "4013"]);
    assert!(text.starts_with("4013 (Apple's number): "), "{text}");
    assert!(text.contains("lost communication"), "{text}");
    assert!(text.contains("typical causes: "), "{text}");
    assert!(
        text.contains("what to do: ") && text.contains("swap the cable"),
        "{text}"
    );

    let text = stdout_of(&["explain", "3194"]);
    assert!(text.contains("this build is no longer signed"), "{text}");
    let text = stdout_of(&["explain", "14"]);
    assert!(text.contains("re-download the IPSW"), "{text}");
}

#[test]
fn a_negative_device_status_is_a_number_not_a_flag() {
    let text = stdout_of(&["explain", "-1"]);
    assert!(text.starts_with("-1 (the phone's own status): "), "{text}");
}

#[test]
fn without_a_number_it_lists_the_table() {
    let text = stdout_of(&["explain"]);
    for n in restore::failure::TABLE.iter().map(|e| e.number) {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(&n.to_string())),
            "{n} missing from:\n{text}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&stdout_of(&["explain", "--json"])).expect("JSON");
    assert_eq!(
        json.as_array().map(Vec::len),
        Some(restore::failure::TABLE.len())
    );
    let one: serde_json::Value =
        serde_json::from_str(&stdout_of(&["explain", "4005", "--json"])).expect("JSON");
    assert_eq!(one["number"], 4005);
    assert_eq!(one["origin"], "apple");
    assert!(one["advice"]
        .as_str()
        .unwrap()
        .contains("move to another port"));
}

#[test]
fn an_unknown_number_says_what_is_known_and_fails() {
    let out = restation(&["explain", "1234"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1234 is not in the table"), "{err}");
    assert!(err.contains("9, 4005, 4013, 4014, 14, 3194"), "{err}");
    assert!(err.contains("restation explain"), "{err}");
    // Not a number at all: clap's usage error.
    let out = restation(&["explain", "four-thousand"]);
    assert_eq!(out.status.code(), Some(2));
}
