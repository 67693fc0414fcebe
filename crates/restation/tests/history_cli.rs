//! `restation history` run as a process on a history written through the store's API: the
//! table, JSON lines and CSV exports, the `--since`/`--until`/`--ecid` filters, the path from
//! `$RESTATION_HISTORY`, and a missing file → a clear error.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use restation::daemon::history::{AttemptOutcome, History, HistoryStore, JobEnd, NewJob, ENV};
use restore::failure::{Cause, Evidence, Failure};
use restore::phase::Phase;

/// 2026-11-01T00:00:00Z.
const NOV_1: u64 = 20_758 * 86_400;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn restation(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(args)
        .env_remove(ENV)
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

fn new_job(ecid: u64, port: &str, started: SystemTime) -> NewJob {
    NewJob {
        station: Some("bench-1".into()),
        product_type: Some("iPhone14,3".into()),
        port: Some(port.into()),
        serial: Some("F2LXK0ABCD12".into()),
        ..NewJob::new(ecid, &"5e".repeat(32), "21A329", "Erase", started)
    }
}

/// Three jobs: restored on the second attempt (Nov 1), failed with 4013 (Nov 2, an advice
/// with a comma and quotes, for CSV quoting), still running (Nov 3).
fn write_history(path: &Path) {
    let h = History::open(path).unwrap();

    let a = h
        .start_job(&new_job(0x1a2b3c, "1-1.3", at(NOV_1 + 3600)))
        .unwrap();
    let first = h.start_attempt(a, at(NOV_1 + 3601)).unwrap();
    let vanished = Failure::new(Phase::RamdiskBoot, Cause::Vanished);
    h.end_attempt(first, &AttemptOutcome::failed(at(NOV_1 + 3660), &vanished))
        .unwrap();
    let second = h.start_attempt(a, at(NOV_1 + 3661)).unwrap();
    h.end_attempt(
        second,
        &AttemptOutcome::succeeded(at(NOV_1 + 3900), Phase::FinalReboot),
    )
    .unwrap();
    h.end_job(a, &JobEnd::restored(at(NOV_1 + 3905))).unwrap();

    let b = h
        .start_job(&new_job(0x4d5e6f, "1-1.4", at(NOV_1 + 86_400)))
        .unwrap();
    let only = h.start_attempt(b, at(NOV_1 + 86_400)).unwrap();
    let lost = Failure::new(
        Phase::Restore,
        Cause::Usb {
            kind: usb::ErrorKind::Io,
        },
    )
    .with_evidence(
        Evidence::default()
            .usb_error(usb::ErrorKind::Io)
            .bytes(1 << 20),
    );
    h.end_attempt(only, &AttemptOutcome::failed(at(NOV_1 + 86_520), &lost))
        .unwrap();
    let mut end = JobEnd::failed(at(NOV_1 + 86_520), &lost);
    end.advice = Some("swap the cable, then \"the port\"".into());
    h.end_job(b, &end).unwrap();

    let c = h
        .start_job(&new_job(0x1a2b3c, "1-1.3", at(NOV_1 + 2 * 86_400)))
        .unwrap();
    h.start_attempt(c, at(NOV_1 + 2 * 86_400)).unwrap();
}

fn fixture() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.sqlite");
    write_history(&path);
    let db = path.to_str().unwrap().to_string();
    (dir, db)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_table_shows_port_model_ecid_result_number_duration_and_start() {
    let (_dir, db) = fixture();
    let text = stdout_of(&["history", "--db", &db]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for column in [
        "PORT", "MODEL", "ECID", "RESULT", "NUMBER", "DURATION", "STARTED",
    ] {
        assert!(lines[0].contains(column), "{text}");
    }
    let restored: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        restored,
        [
            "1-1.3",
            "iPhone14,3",
            "0x1a2b3c",
            "restored",
            "-",
            "2",
            "5m",
            "05s",
            "2026-11-01",
            "01:00"
        ],
        "{text}"
    );
    assert!(
        lines[2].contains("failed") && lines[2].contains("4013") && lines[2].contains("2m 00s"),
        "{text}"
    );
    assert!(lines[3].contains("running"), "{text}");
}

#[test]
fn json_lines_carry_every_job_with_its_attempts_and_evidence() {
    let (_dir, db) = fixture();
    let jobs = json_lines(&stdout_of(&["history", "--db", &db, "--json"]));
    assert_eq!(jobs.len(), 3);
    let a = &jobs[0];
    assert_eq!(a["ecid"], "0x1a2b3c");
    assert_eq!(a["result"], "restored");
    assert_eq!(a["started"], "2026-11-01T01:00:00.000Z");
    assert_eq!(a["duration_s"], 305.0);
    assert_eq!(a["ipsw_sha256"], "5e".repeat(32));
    assert_eq!(a["station"], "bench-1");
    let attempts = a["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["failure"]["phase"], "ramdisk-boot");
    let vanished = Failure::new(Phase::RamdiskBoot, Cause::Vanished);
    assert_eq!(attempts[0]["failure"]["number"], vanished.number());
    assert!(attempts[1]["failure"].is_null());
    assert_eq!(attempts[1]["phase_reached"], "final-reboot");

    let b = &jobs[1];
    assert_eq!(
        (b["result"].as_str(), b["number"].as_i64()),
        (Some("failed"), Some(4013))
    );
    let evidence = &b["attempts"][0]["failure"]["evidence"];
    assert_eq!(evidence["bytes_transferred"], 1 << 20);

    let c = &jobs[2];
    assert_eq!(c["result"], "running");
    assert!(c["ended"].is_null() && c["duration_s"].is_null());
    assert!(c["attempts"][0]["ended"].is_null());
}

#[test]
fn csv_has_a_header_and_quotes_as_rfc_4180_says() {
    let (_dir, db) = fixture();
    let text = stdout_of(&["history", "--db", &db, "--csv"]);
    assert!(text.starts_with("id,station,ecid,"), "{text}");
    assert!(text.contains("\r\n"), "RFC 4180 lines end in CRLF");
    // The advice holds a comma and quotes: quoted, quotes doubled.
    assert!(
        text.contains("\"swap the cable, then \"\"the port\"\"\""),
        "{text}"
    );
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][col("result")], "restored");
    assert_eq!(&rows[0][col("attempts")], "2");
    assert_eq!(&rows[0][col("product_type")], "iPhone14,3");
    assert_eq!(&rows[1][col("number")], "4013");
    assert_eq!(&rows[1][col("advice")], "swap the cable, then \"the port\"");
    assert_eq!(&rows[1][col("last_failure_phase")], "restore");
    assert_eq!(&rows[2][col("ended")], "");

    // No job: the header alone.
    let none = stdout_of(&["history", "--db", &db, "--csv", "--since", "2030-01-01"]);
    assert_eq!(none.lines().count(), 1, "{none}");
}

#[test]
fn since_until_and_ecid_filter_the_jobs() {
    let (_dir, db) = fixture();
    let count = |extra: &[&str]| {
        let mut args = vec!["history", "--db", &db, "--json"];
        args.extend_from_slice(extra);
        json_lines(&stdout_of(&args))
    };
    assert_eq!(count(&[]).len(), 3);
    let since = count(&["--since", "2026-11-02"]);
    assert_eq!(since.len(), 2);
    assert_eq!(since[0]["ecid"], "0x4d5e6f");
    let until = count(&["--until", "2026-11-02"]);
    assert_eq!(until.len(), 1);
    assert_eq!(until[0]["result"], "restored");
    let window = count(&["--since", "2026-11-01T12:00:00Z", "--until", "2026-11-03"]);
    assert_eq!(window.len(), 1);
    assert_eq!(window[0]["number"], 4013);
    let phone = count(&["--ecid", "0x1A2B3C"]);
    assert_eq!(phone.len(), 2);
    assert!(phone.iter().all(|j| j["ecid"] == "0x1a2b3c"));
    assert_eq!(
        count(&["--ecid", "1a2b3c", "--since", "2026-11-02"]).len(),
        1
    );
    // An age: everything in the fixture is older than a day from now.
    assert_eq!(count(&["--since", "24h"]).len(), 0);

    let out = restation(&["history", "--db", &db, "--since", "last tuesday"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--since") && err.contains("2026-11-01"),
        "{err}"
    );
}

#[test]
fn a_recent_job_is_found_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    let h = History::open(&path).unwrap();
    let now = SystemTime::now();
    h.start_job(&new_job(1, "2-1", now - Duration::from_secs(3600)))
        .unwrap();
    h.start_job(&new_job(2, "2-2", now - Duration::from_secs(30 * 86_400)))
        .unwrap();
    let db = path.to_str().unwrap();
    let recent = json_lines(&stdout_of(&[
        "history", "--db", db, "--json", "--since", "7d",
    ]));
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0]["port"], "2-1");
}

#[test]
fn the_path_comes_from_the_environment_and_a_missing_file_is_an_error() {
    let (_dir, db) = fixture();
    let out = Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(["history", "--json"])
        .env(ENV, &db)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);

    let out = restation(&["history", "--db", "/nonexistent/restation/history.sqlite"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no history at /nonexistent"), "{err}");
    // Reading never creates it.
    assert!(!Path::new("/nonexistent/restation").exists());
}
