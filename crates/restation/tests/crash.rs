//! Crash safety, end to end with real `kill -9`s (SIGKILL: no handler runs, nothing is
//! flushed or closed on the way out):
//!
//! - `restation serve` killed while a virtual phone's OS image streams over ASR: started
//!   again with the same arguments (the virtual bench builds the same phones, back in their
//!   start mode, as a real phone reboots or is replugged after its host died), the daemon
//!   finds the unfinished job in its history, waits for the phone by ECID, verifies the
//!   staged IPSW again and resumes the job on its own; it ends restored, and the history
//!   keeps ONE job with two attempts: the first interrupted (in the restore phase), the
//!   second restored.
//! - `restation ipsw stage` killed in the middle of a larger IPSW: the store lists and
//!   verifies no broken entry, and staging again succeeds.
//! - A job whose staged IPSW is corrupted while the daemon is down ends failed with 14.
//! - A phone still in restore mode when the daemon comes back (its restore ramdisk outlived
//!   the host) is asked through restored to reboot, comes back and the job resumes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;
use common::{poll_until, restation, temp_dir, Daemon};

const DEADLINE: Duration = Duration::from_secs(180);

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn synth(path: &Path, profile: &str, os_size: &str) {
    ok(&restation(&[
        "ipsw",
        "synth",
        "--profile",
        profile,
        "--os-size",
        os_size,
        path.to_str().unwrap(),
    ]));
}

fn stage(ipsw: &Path, store: &Path) -> String {
    let out = ok(&restation(&[
        "ipsw",
        "stage",
        ipsw.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--json",
    ]));
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    record["id"].as_str().unwrap().to_string()
}

/// One test's bench: the same arguments for every `restation serve` it starts.
struct Bench {
    dir: PathBuf,
    socket: PathBuf,
    ipsw: String,
    starts: usize,
}

impl Drop for Bench {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Bench {
    fn new(name: &str, os_size: &str) -> Bench {
        let dir = temp_dir(name);
        let ipsw = dir.join("synth.ipsw");
        synth(&ipsw, "iPhone14,3", os_size);
        let ipsw = stage(&ipsw, &dir.join("store"));
        Bench {
            socket: dir.join("restation.sock"),
            dir,
            ipsw,
            starts: 0,
        }
    }

    fn history_path(&self) -> PathBuf {
        self.dir.join("history.sqlite")
    }

    /// `restation serve` with one virtual iPhone14,3 in recovery (its log in the bench's
    /// directory), once the API answers.
    fn serve(&mut self) -> Daemon {
        self.serve_as("iPhone14,3:recovery")
    }

    /// `restation serve` with one virtual phone `PRODUCT:MODE` (the same ECID whatever the
    /// mode: the bench builds its phones from their index).
    fn serve_as(&mut self, phone: &str) -> Daemon {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("serve-{}.log", self.starts))).unwrap();
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(env!("CARGO_BIN_EXE_restation"))
            .args([
                "serve",
                "--sim-profile",
                phone,
                "--sim-speed",
                "50",
                "--store",
                self.dir.join("store").to_str().unwrap(),
                "--socket",
                self.socket.to_str().unwrap(),
                "--pair-records",
                self.dir.join("lockdown").to_str().unwrap(),
                "--history",
                self.history_path().to_str().unwrap(),
            ])
            .env("RESTATION_LOG", "info,restation=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Daemon(child);
        poll_until(DEADLINE, "the daemon's API", || {
            let out = restation(&[
                "devices",
                "--json",
                "--socket",
                self.socket.to_str().unwrap(),
            ]);
            out.status.success().then_some(())
        });
        daemon
    }

    /// The daemons' logs, for failure messages.
    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let text = std::fs::read_to_string(self.dir.join(format!("serve-{n}.log")))
                    .unwrap_or_default();
                format!("--- serve #{n} ---\n{text}")
            })
            .collect()
    }

    fn history(&self) -> Vec<serde_json::Value> {
        let out = restation(&[
            "history",
            "--json",
            "--db",
            self.history_path().to_str().unwrap(),
        ]);
        if !out.status.success() {
            return Vec::new();
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `GET /jobs` over the API socket.
    fn jobs(&self) -> Vec<serde_json::Value> {
        let Ok(mut stream) = UnixStream::connect(&self.socket) else {
            return Vec::new();
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /jobs HTTP/1.1\r\nHost: restation\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        answer
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .unwrap_or_default()
    }

    /// Starts `restation restore --json` on the phone and follows it until `until` says yes
    /// to an update; that update. The follower is killed when it returns.
    fn restore_until(&self, until: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let mut child = Command::new(env!("CARGO_BIN_EXE_restation"))
            .args([
                "restore",
                "--port",
                "1-1.1",
                "--ipsw",
                &self.ipsw,
                "--json",
                "--socket",
                self.socket.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let _follower = Daemon(child);
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(update) = serde_json::from_str::<serde_json::Value>(&line.unwrap()) else {
                continue;
            };
            if until(&update) {
                return update;
            }
            seen.push(update);
        }
        panic!(
            "the job ended before the awaited update: {seen:#?}\n{}",
            self.logs()
        );
    }
}

#[test]
fn a_daemon_killed_mid_restore_resumes_the_job_by_ecid_and_keeps_one_job_with_two_attempts() {
    let mut bench = Bench::new("crash-restore", "16M");
    let mut daemon = bench.serve();
    // Well into the restore: the OS image is streaming over ASR.
    let streaming = bench.restore_until(|u| {
        assert_ne!(u["state"], "failed", "{u}");
        u["phase"] == "restore" && u["progress"].as_f64().is_some_and(|p| p > 0.0)
    });
    let ecid = streaming["ecid"].as_str().unwrap().to_string();
    // kill -9.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();

    // The history a dead daemon left: one running job, its attempt open.
    let left = bench.history();
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0]["result"], "running", "{}", left[0]);

    // Started again with the same arguments: the phone comes back (in recovery) with the
    // same ECID and the job goes on without anyone asking.
    let _daemon = bench.serve();
    let resumed = poll_until(DEADLINE, "the resumed job in GET /jobs", || {
        bench
            .jobs()
            .into_iter()
            .find(|j| j["ecid"] == ecid.as_str())
    });
    assert!(
        resumed["attempts"].as_u64().is_some_and(|n| n >= 1),
        "{resumed}"
    );
    let job = poll_until(DEADLINE, "the resumed job to end", || {
        bench
            .history()
            .into_iter()
            .next()
            .filter(|j| j["result"] != "running")
    });
    assert_eq!(job["result"], "restored", "{job}\n{}", bench.logs());
    let jobs = bench.history();
    assert_eq!(jobs.len(), 1, "one job, not two: {jobs:#?}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    let first = &attempts[0];
    assert_eq!(first["failure"]["cause"], "interrupted", "{job}");
    assert!(first["failure"]["number"].is_null(), "{job}");
    assert_eq!(first["phase_reached"], "restore", "{job}");
    assert!(
        first["ended"].is_string() || first["ended_ms"].is_u64(),
        "{job}"
    );
    assert!(attempts[1]["failure"].is_null(), "{job}");
    assert_eq!(attempts[1]["phase_reached"], "final-reboot", "{job}");

    // The API shows the resumed job ended, with the attempt count going on.
    let api = bench
        .jobs()
        .into_iter()
        .find(|j| j["ecid"] == ecid.as_str())
        .unwrap();
    assert_eq!(api["state"], "succeeded", "{api}");
    assert_eq!(api["attempts"], 2, "{api}");
    assert!(api["operator"].is_null(), "{api}");
}

#[test]
fn an_ipsw_corrupted_while_the_daemon_was_down_ends_the_resumed_job_with_14() {
    let mut bench = Bench::new("crash-corrupt", "16M");
    let mut daemon = bench.serve();
    bench.restore_until(|u| u["phase"] == "restore");
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();

    // One byte of the staged file changes while the station is down.
    let staged = bench.dir.join("store").join(format!("{}.ipsw", bench.ipsw));
    let mut bytes = std::fs::read(&staged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&staged, bytes).unwrap();

    let _daemon = bench.serve();
    let job = poll_until(DEADLINE, "the resumed job to end", || {
        bench
            .history()
            .into_iter()
            .next()
            .filter(|j| j["result"] != "running")
    });
    assert_eq!(job["result"], "failed", "{job}\n{}", bench.logs());
    assert_eq!(job["number"], 14, "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("does not verify"),
        "{job}"
    );
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "no attempt on a corrupt IPSW: {job}");
    assert_eq!(attempts[0]["failure"]["cause"], "interrupted", "{job}");
    assert!(!staged.exists(), "the corrupt file is quarantined");
}

#[test]
fn a_phone_still_in_restore_mode_after_the_restart_is_rebooted_through_restored_and_resumed() {
    let mut bench = Bench::new("crash-restore-mode", "16M");
    let mut daemon = bench.serve();
    let streaming = bench.restore_until(|u| u["phase"] == "restore");
    let ecid = streaming["ecid"].as_str().unwrap().to_string();
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();

    // The phone's restore ramdisk outlived the host: it is still in restore mode. The
    // station asks restored to reboot it (no technician needed), finds it back and resumes.
    let _daemon = bench.serve_as("iPhone14,3:restore");
    let job = poll_until(DEADLINE, "the resumed job to end", || {
        bench
            .history()
            .into_iter()
            .next()
            .filter(|j| j["result"] != "running")
    });
    assert_eq!(job["result"], "restored", "{job}\n{}", bench.logs());
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    assert_eq!(attempts[0]["failure"]["cause"], "interrupted", "{job}");
    assert!(attempts[1]["failure"].is_null(), "{job}");
    let logs = bench.logs();
    assert!(logs.contains("asked restored to reboot"), "{logs}");
    let api = bench
        .jobs()
        .into_iter()
        .find(|j| j["ecid"] == ecid.as_str())
        .unwrap();
    assert_eq!(api["state"], "succeeded", "{api}");
}

#[test]
fn ipsw_stage_killed_midway_leaves_no_corrupt_entry_and_staging_again_succeeds() {
    let dir = temp_dir("crash-stage");
    let ipsw = dir.join("big.ipsw");
    synth(&ipsw, "iPhone14,3", "48M");
    let store = dir.join("store");
    let mut child = Daemon(
        Command::new(env!("CARGO_BIN_EXE_restation"))
            .args([
                "ipsw",
                "stage",
                ipsw.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // In the middle: the work-in-progress file has grown but is not in place yet.
    let tmp = store.join("tmp");
    let killed_at = poll_until(DEADLINE, "the staging to be under way", || {
        let part = std::fs::read_dir(&tmp)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with(".part"))?;
        let len = part.metadata().ok()?.len();
        (len > 4 << 20).then_some(len)
    });
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "killed before it finished");
    assert!(killed_at > 0);

    // Nothing half-written is listed…
    let list: Vec<serde_json::Value> = serde_json::from_str(&ok(&restation(&[
        "ipsw",
        "list",
        "--store",
        store.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert!(list.is_empty(), "{list:#?}");
    let staged: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ipsw") || n.ends_with(".json"))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    // …verifying everything finds nothing wrong…
    ok(&restation(&[
        "ipsw",
        "verify",
        "--store",
        store.to_str().unwrap(),
    ]));
    // …and staging again succeeds and verifies.
    let id = stage(&ipsw, &store);
    ok(&restation(&[
        "ipsw",
        "verify",
        &id,
        "--store",
        store.to_str().unwrap(),
    ]));
    let list: Vec<serde_json::Value> = serde_json::from_str(&ok(&restation(&[
        "ipsw",
        "list",
        "--store",
        store.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["id"], id.as_str());
    let _ = std::fs::remove_dir_all(&dir);
}
