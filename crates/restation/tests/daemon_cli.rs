//! `restation serve --sim 4` as a child process, queried by `restation devices --json` over
//! its unix socket; junk on the socket gets a 4xx and the daemon keeps serving; SIGTERM shuts
//! it down (even with an event stream open) and removes the socket. Every wait polls with a
//! deadline.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{poll_until, restation, Daemon};

const DEADLINE: Duration = Duration::from_secs(60);

fn temp_socket(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("restation-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("restation.sock")
}

fn devices_json(socket: &Path) -> Option<Vec<serde_json::Value>> {
    let out = restation(&["devices", "--json", "--socket", socket.to_str().unwrap()]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn raw_request(socket: &Path, request: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn serve_sim_4_is_listed_by_devices_json_and_survives_junk() {
    let socket = temp_socket("e2e");
    let child = Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(["serve", "--sim", "4", "--socket", socket.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start restation serve");
    let mut daemon = Daemon(child);

    poll_until(DEADLINE, "the socket", || socket.exists().then_some(()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    let devices = poll_until(DEADLINE, "4 identified devices", || {
        devices_json(&socket).filter(|d| d.len() == 4)
    });
    let mut ecids: Vec<u64> = devices
        .iter()
        .map(|d| {
            d["identity"]["ecid"]
                .as_u64()
                .expect("every phone has an ECID")
        })
        .collect();
    ecids.sort_unstable();
    ecids.dedup();
    assert_eq!(ecids.len(), 4);
    let modes: Vec<&str> = devices.iter().filter_map(|d| d["mode"].as_str()).collect();
    for mode in ["normal", "dfu"] {
        assert!(modes.contains(&mode), "{mode} in {modes:?}");
    }
    assert!(devices.iter().all(|d| d["present"] == true));

    // One device by its id.
    let id = devices[0]["id"].as_str().unwrap();
    let one = raw_request(
        &socket,
        format!("GET /devices/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(one.starts_with("HTTP/1.1 200"), "{one}");
    assert!(one.contains(id));

    // Junk: not HTTP, a bad id, an unknown path. Each a 4xx; the daemon keeps serving.
    let junk = raw_request(&socket, b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(junk.is_empty() || junk.starts_with("HTTP/1.1 4"), "{junk}");
    let bad_id = raw_request(
        &socket,
        b"GET /devices/zz-not-hex HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(bad_id.starts_with("HTTP/1.1 400"), "{bad_id}");
    let unknown = raw_request(
        &socket,
        b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert_eq!(devices_json(&socket).map(|d| d.len()), Some(4));

    // The table names every phone.
    let out = restation(&["devices", "--socket", socket.to_str().unwrap()]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.starts_with("PORT"), "{table}");

    // An event stream stays open; it must not hold up the shutdown.
    let mut events = UnixStream::connect(&socket).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 512];
    let n = events.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.contains("text/event-stream"), "{head}");

    // SIGTERM: graceful shutdown, socket removed.
    let pid = libc::pid_t::try_from(daemon.0.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = poll_until(DEADLINE, "the daemon to exit", || {
        daemon.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

#[test]
fn devices_without_a_daemon_says_so() {
    let socket = temp_socket("absent");
    let out = restation(&["devices", "--socket", socket.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("restation serve"), "{err}");
}

#[test]
fn devices_direct_scans_a_virtual_bench_once() {
    let out = restation(&["devices", "--direct", "--sim", "5", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let devices: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(devices.len(), 5);
    assert!(devices.iter().all(|d| d["identity"]["ecid"].is_u64()));
}
