//! The retry ladder in the daemon's restore jobs, end to end: `restation serve` with virtual
//! phones given faults (`--sim-fault PORT=SPEC`), `restation restore --json` following the
//! job, `restation history --json` reading what was kept.
//!
//! - A fault that strikes once during the ASR stream: the job goes back to recovery, runs
//!   again from there and ends restored; the job counts two attempts, the history keeps one
//!   job with both.
//! - An unsigned build (the signing stand-in answers STATUS 94): 3194 after one attempt,
//!   never retried.
//! - A recovery upload that fails every time: retried once, re-entered, then the operator is
//!   asked to put the phone in DFU mode.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{restation, temp_dir, Daemon};

struct Station {
    dir: PathBuf,
    socket: PathBuf,
    ipsw: String,
    _daemon: Daemon,
}

impl Drop for Station {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A synthetic IPSW for `profile`, staged; its id.
fn staged(dir: &Path, profile: &str) -> String {
    let path = dir.join("synth.ipsw");
    ok(&restation(&[
        "ipsw",
        "synth",
        "--profile",
        profile,
        "--os-size",
        "2M",
        path.to_str().unwrap(),
    ]));
    let store = dir.join("store");
    let out = ok(&restation(&[
        "ipsw",
        "stage",
        path.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--json",
    ]));
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    record["id"].as_str().unwrap().to_string()
}

/// `restation serve` with one virtual phone `PRODUCT:MODE` and `extra` arguments, once the
/// phone is identified.
fn station(name: &str, phone: &str, extra: &[&str]) -> Station {
    let dir = temp_dir(name);
    let ipsw = staged(&dir, phone.split(':').next().unwrap());
    let socket = dir.join("restation.sock");
    let mut args = vec![
        "serve".to_string(),
        "--sim-profile".into(),
        phone.into(),
        "--sim-speed".into(),
        "50".into(),
        "--store".into(),
        dir.join("store").to_str().unwrap().into(),
        "--socket".into(),
        socket.to_str().unwrap().into(),
        "--pair-records".into(),
        dir.join("lockdown").to_str().unwrap().into(),
        "--history".into(),
        dir.join("history.sqlite").to_str().unwrap().into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    // Each `devices` call is a round trip to the daemon: asking again is the wait.
    for _ in 0..100_000 {
        let out = restation(&["devices", "--json", "--socket", socket.to_str().unwrap()]);
        if let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout) {
            if list.iter().any(|e| e["identity"]["ecid"].is_u64()) {
                return Station {
                    dir,
                    socket,
                    ipsw,
                    _daemon: daemon,
                };
            }
        }
    }
    panic!("the phone was never identified");
}

impl Station {
    /// `restation restore --json` on port 1-1.1 to its end: the exit status and every update.
    fn restore(&self) -> (bool, Vec<serde_json::Value>) {
        let out = restation(&[
            "restore",
            "--port",
            "1-1.1",
            "--ipsw",
            &self.ipsw,
            "--json",
            "--socket",
            self.socket.to_str().unwrap(),
        ]);
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (out.status.success(), lines)
    }

    /// The history's jobs.
    fn history(&self) -> Vec<serde_json::Value> {
        let out = ok(&restation(&[
            "history",
            "--json",
            "--db",
            self.dir.join("history.sqlite").to_str().unwrap(),
        ]));
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[test]
fn a_fault_that_strikes_once_during_asr_is_retried_from_recovery_and_the_phone_restores() {
    let station = station(
        "ladder-asr",
        "iPhone14,3:recovery",
        &["--sim-fault", "1=asr:unplug@50%x1"],
    );
    let (success, lines) = station.restore();
    let last = lines.last().expect("job updates");
    assert!(success, "{last}");
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["attempts"], 2, "{last}");
    // The first attempt's failure was shown with the ladder's answer while the job went on.
    let retried = lines
        .iter()
        .find(|l| l["next_step"].is_string())
        .expect("an update naming the ladder's next step");
    assert_eq!(retried["state"], "running", "{retried}");
    assert!(retried["number"].is_i64(), "{retried}");
    assert!(
        retried["next_step"]
            .as_str()
            .unwrap()
            .contains("re-enter recovery"),
        "{retried}"
    );

    let jobs = station.history();
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    let job = &jobs[0];
    assert_eq!(job["result"], "restored", "{job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    assert_eq!(attempts[0]["phase_reached"], "restore", "{job}");
    assert!(attempts[0]["failure"]["number"].is_i64(), "{job}");
    assert!(attempts[1]["failure"].is_null(), "{job}");
}

#[test]
fn an_unsigned_build_ends_3194_after_one_attempt() {
    let station = station("ladder-3194", "iPhone14,3:dfu", &["--sim-tss-refuse"]);
    let (success, lines) = station.restore();
    let last = lines.last().expect("job updates");
    assert!(!success, "{last}");
    assert_eq!(last["state"], "failed", "{last}");
    assert_eq!(last["number"], 3194, "{last}");
    assert_eq!(last["attempts"], 1, "{last}");
    assert!(last["advice"].is_string(), "{last}");

    let jobs = station.history();
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(jobs[0]["result"], "failed", "{}", jobs[0]);
    assert_eq!(jobs[0]["number"], 3194, "{}", jobs[0]);
    assert_eq!(
        jobs[0]["attempts"].as_array().map(Vec::len),
        Some(1),
        "{}",
        jobs[0]
    );
}

#[test]
fn a_phone_that_keeps_failing_from_recovery_is_escalated_to_dfu_by_the_operator() {
    let station = station(
        "ladder-dfu",
        "iPhone14,3:recovery",
        &["--sim-fault", "1=recovery-upload:io-error"],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_restation"))
        .args([
            "restore",
            "--port",
            "1-1.1",
            "--ipsw",
            &station.ipsw,
            "--json",
            "--socket",
            station.socket.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut follower = Daemon(child);
    // Follow the job until it asks for the operator (or ends without asking).
    let mut seen = Vec::new();
    let mut asked = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(update) = serde_json::from_str::<serde_json::Value>(&line.unwrap()) else {
            continue;
        };
        if update["operator"].is_string() {
            asked = Some(update);
            break;
        }
        seen.push(update);
    }
    let _ = follower.0.kill();
    let asked = asked.unwrap_or_else(|| panic!("no operator prompt: {seen:#?}"));
    let prompt = asked["operator"].as_str().unwrap();
    assert!(prompt.starts_with("Put the phone in DFU mode"), "{asked}");
    assert!(prompt.contains("iPhone14,3"), "{asked}");
    assert_eq!(asked["state"], "running", "{asked}");
    assert_eq!(asked["attempts"], 3, "{asked}");
    assert_eq!(asked["number"], 4005, "{asked}");
    assert!(
        asked["next_step"].as_str().unwrap().contains("DFU"),
        "{asked}"
    );
    // On the way: one retry of the step, one re-entry into recovery.
    let steps: Vec<&str> = seen
        .iter()
        .filter_map(|l| l["next_step"].as_str())
        .collect();
    assert!(steps.iter().any(|s| s.contains("retry the")), "{steps:?}");
    assert!(
        steps.iter().any(|s| s.contains("re-enter recovery")),
        "{steps:?}"
    );
}
