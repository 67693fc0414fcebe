//! `restation restore` end to end, as an operator runs it: a synthetic IPSW staged with
//! `restation ipsw stage`, `restation serve` with two virtual phones (sped up), and
//! `restation restore --port … --ipsw … --json` following each job until the phone is back in
//! iOS with the IPSW's build; an IPSW for another model is refused before anything is sent.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{restation, temp_dir, Daemon};

const DEADLINE: Duration = Duration::from_secs(120);

fn staged_id(store: &Path, ipsw: &Path) -> String {
    let out = restation(&[
        "ipsw",
        "stage",
        ipsw.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    record["id"].as_str().unwrap().to_string()
}

fn synth(dir: &Path, profile: &str) -> PathBuf {
    let path = dir.join(format!("{}.ipsw", profile.replace(',', "_")));
    let out = restation(&[
        "ipsw",
        "synth",
        "--profile",
        profile,
        "--os-size",
        "2M",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn identified(socket: &Path, n: usize) {
    let end = Instant::now() + DEADLINE;
    loop {
        let out = restation(&["devices", "--json", "--socket", socket.to_str().unwrap()]);
        if let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout) {
            if list
                .iter()
                .filter(|e| e["identity"]["ecid"].is_u64())
                .count()
                == n
            {
                return;
            }
        }
        assert!(Instant::now() < end, "phones not identified in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn restore_through_the_daemon_from_dfu_and_from_normal_mode() {
    let dir = temp_dir("restore-cli");
    let store = dir.join("store");
    let socket = dir.join("restation.sock");
    let id = staged_id(&store, &synth(&dir, "iPhone14,3"));
    let other = staged_id(&store, &synth(&dir, "iPhone10,3"));
    let child = Command::new(env!("CARGO_BIN_EXE_restation"))
        .args([
            "serve",
            "--sim-profile",
            "iPhone14,3:dfu",
            "--sim-profile",
            "iPhone14,3:normal",
            "--sim-speed",
            "50",
            "--store",
            store.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            // The normal-mode phone is paired: its record goes here, not /var/lib/lockdown.
            "--pair-records",
            dir.join("lockdown").to_str().unwrap(),
            "--history",
            dir.join("history.sqlite").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon(child);
    identified(&socket, 2);

    // The wrong IPSW is refused with the reason, and nothing starts.
    let out = restation(&[
        "restore",
        "--port",
        "1-1.1",
        "--ipsw",
        &other,
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("iPhone10,3") && err.contains("iPhone14,3"),
        "{err}"
    );

    for port in ["1-1.1", "1-1.2"] {
        let started = Instant::now();
        let out = restation(&[
            "restore",
            "--port",
            port,
            "--ipsw",
            &id[..16],
            "--json",
            "--socket",
            socket.to_str().unwrap(),
        ]);
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let last = lines.last().expect("job updates");
        assert!(
            out.status.success(),
            "port {port}: {last}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(last["state"], "succeeded", "{last}");
        let phases: Vec<&str> = lines.iter().filter_map(|l| l["phase"].as_str()).collect();
        assert!(
            phases.contains(&"ramdisk-boot") && phases.contains(&"restore"),
            "{phases:?}"
        );
        if port == "1-1.2" {
            // The normal-mode phone was paired (it trusts at once: nothing to tap), and the
            // record is kept for the next time.
            assert!(lines.iter().all(|l| l["operator"].is_null()), "{last}");
            assert!(dir
                .join("lockdown")
                .join("SystemConfiguration.plist")
                .is_file());
        }
        eprintln!(
            "port {port}: restored in {:?} ({} updates)",
            started.elapsed(),
            lines.len()
        );
    }
    // Both phones are back in iOS.
    let out = restation(&["devices", "--json", "--socket", socket.to_str().unwrap()]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        list.iter()
            .filter(|e| e["mode"] == "normal" && e["present"] == true)
            .count(),
        2,
        "{list:#?}"
    );
    // The history keeps both jobs, each restored in one attempt, with the IPSW's hash.
    let out = restation(&[
        "history",
        "--json",
        "--db",
        dir.join("history.sqlite").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    for job in &jobs {
        assert_eq!(job["result"], "restored", "{job}");
        assert_eq!(job["ipsw_sha256"], id.as_str(), "{job}");
        assert_eq!(job["attempts"].as_array().map(Vec::len), Some(1), "{job}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
