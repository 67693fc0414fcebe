//! `restation demo`, the README's first command: a bench of virtual phones restored at once,
//! ending with a summary in which every phone ended as its fault predicts.
//!
//! - The default demo: six phones of three models in recovery, DFU and normal mode; the one
//!   whose cable drops once in the OS image restores on its second attempt, the one whose disk
//!   cannot be prepared fails with its own status 6, the others restore at the first attempt;
//!   the synthetic IPSWs staged on the first run are reused by the second.
//! - A fault from the command line that needs the technician (uploads to recovery fail every
//!   time): the demo plays the technician (DFU mode, then another port) and the phone ends
//!   4014 after two ports.
//! - With a cap of two restores per host controller, four phones run two at a time; the
//!   others are shown queued until a slot frees.
//! - A fault naming a port the bench does not have is refused before anything starts.

use std::path::Path;
use std::process::Output;

mod common;
use common::{restation, temp_dir};

/// Runs the demo with `--json` in `dir`; the job lines and the summary.
fn demo(dir: &Path, extra: &[&str]) -> (Output, Vec<serde_json::Value>, serde_json::Value) {
    let mut args = vec!["demo", "--json", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = restation(&args);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines
        .iter()
        .rev()
        .find(|l| l["event"] == "summary")
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no summary line; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out, lines, summary)
}

fn row<'a>(summary: &'a serde_json::Value, port: &str) -> &'a serde_json::Value {
    summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["port"] == port)
        .unwrap_or_else(|| panic!("no row for port {port}: {summary:#}"))
}

#[test]
fn the_default_demo_restores_every_phone_but_the_one_whose_fault_predicts_a_failure() {
    let dir = temp_dir("demo-default");
    let (out, lines, summary) = demo(&dir, &[]);
    assert!(
        out.status.success(),
        "{summary:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(summary["phones"], 6, "{summary:#}");
    assert_eq!(summary["restored"], 5, "{summary:#}");
    assert_eq!(summary["as_expected"], true, "{summary:#}");
    assert!(
        summary["dashboard"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{summary:#}"
    );
    let rows = summary["rows"].as_array().unwrap();
    let models: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r["model"].as_str()).collect();
    assert_eq!(models.len(), 3, "mixed models: {models:?}");
    let modes: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r["start_mode"].as_str())
        .collect();
    assert_eq!(modes.len(), 3, "mixed modes: {modes:?}");
    for r in rows {
        assert_eq!(r["as_expected"], true, "{r}");
        assert!(
            r["ecid"].as_str().is_some_and(|e| e.starts_with("0x")),
            "{r}"
        );
    }

    // The cable that drops once: a failure the ladder retried, restored on attempt 2.
    let dropped = row(&summary, "1-1.4");
    assert_eq!(dropped["result"], "restored", "{dropped}");
    assert_eq!(dropped["attempts"], 2, "{dropped}");
    assert!(dropped["retried_after"].is_i64(), "{dropped}");
    assert!(dropped["fault"].as_str().unwrap().contains("asr:unplug"));
    // The disk that cannot be prepared: the phone's own status, not retried forever.
    let disk = row(&summary, "1-1.5");
    assert_eq!(disk["result"], "failed", "{disk}");
    assert_eq!(disk["number"], 6, "{disk}");
    assert_eq!(disk["expected"]["number"], 6, "{disk}");
    for port in ["1-1.1", "1-1.2", "1-1.3", "1-1.6"] {
        let r = row(&summary, port);
        assert_eq!(r["result"], "restored", "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
        assert!(r["fault"].is_null(), "{r}");
    }
    // Every job's changes were printed as they happened, ending in its final state.
    for r in rows {
        let job = r["job"].as_u64().unwrap();
        let last = lines
            .iter()
            .rfind(|l| l["id"].as_u64() == Some(job))
            .unwrap_or_else(|| panic!("no job lines for {job}"));
        let state = if r["result"] == "restored" {
            "succeeded"
        } else {
            "failed"
        };
        assert_eq!(last["state"], state, "{last}");
    }

    // A second run reuses the staged firmware: nothing is synthesized again.
    let store = dir.join("store");
    let staged = std::fs::read_dir(&store).unwrap().count();
    let (out, _, summary) = demo(&dir, &["--devices", "2", "--no-faults"]);
    assert!(out.status.success(), "{summary:#}");
    assert_eq!(summary["restored"], 2, "{summary:#}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("first run"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), staged);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_plays_the_technician_when_the_ladder_asks_for_dfu_and_another_port() {
    let dir = temp_dir("demo-technician");
    let (out, lines, summary) = demo(
        &dir,
        &["--devices", "1", "--fault", "1=recovery-upload:io-error"],
    );
    // A fault from the command line predicts nothing: the demo reports what happened.
    assert!(out.status.success(), "{summary:#}");
    let r = row(&summary, "1-1.1");
    assert_eq!(r["result"], "failed", "{r}");
    assert_eq!(r["number"], 4014, "{r}");
    assert!(r["expected"].is_null(), "{r}");
    let prompts: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["operator"].as_str())
        .collect();
    assert!(prompts.iter().any(|p| p.contains("DFU")), "{prompts:?}");
    assert!(
        prompts.iter().any(|p| p.contains("move the phone")),
        "{prompts:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restores_past_the_controllers_cap_wait_in_the_queue() {
    let dir = temp_dir("demo-queue");
    let (out, lines, summary) = demo(
        &dir,
        &[
            "--devices",
            "4",
            "--no-faults",
            "--max-restores-per-controller",
            "2",
        ],
    );
    assert!(out.status.success(), "{summary:#}");
    assert_eq!(summary["restored"], 4, "{summary:#}");
    // Replay the job changes: never more than two running at once, and some waited.
    let mut state = std::collections::BTreeMap::new();
    let mut most = 0;
    let mut queued = std::collections::BTreeSet::new();
    for line in lines.iter().filter(|l| l["id"].is_u64()) {
        let id = line["id"].as_u64().unwrap();
        let now = line["state"].as_str().unwrap().to_string();
        if now == "queued" {
            assert!(
                line["step_text"].as_str().unwrap().contains("queued"),
                "{line}"
            );
            queued.insert(id);
        }
        state.insert(id, now);
        most = most.max(state.values().filter(|s| *s == "running").count());
    }
    assert!(most <= 2, "{most} restores ran at once on one controller");
    assert_eq!(most, 2, "the cap is used");
    assert_eq!(queued.len(), 2, "{queued:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_fault_on_a_port_the_bench_does_not_have_is_refused() {
    let dir = temp_dir("demo-refused");
    let out = restation(&[
        "demo",
        "--dir",
        dir.to_str().unwrap(),
        "--devices",
        "2",
        "--fault",
        "7=asr:stall",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ports 1 to 2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
