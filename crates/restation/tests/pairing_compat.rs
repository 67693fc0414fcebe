//! Lockdown pairing and TLS sessions with a real client: Debian's `idevicepair`, `ideviceinfo`
//! and `ideviceenterrecovery` (libimobiledevice, OpenSSL) against the virtual phone of
//! `restation serve --sim 3`, through restation's usbmuxd-compatible socket
//! (`USBMUXD_SOCKET_ADDRESS=UNIX:…`). Skipped with a message when the tools are absent.
//!
//! What it shows: the phone's `DevicePublicKey` is one libimobiledevice can certify, the
//! `Pair` record it sends is accepted and the pair record it saves (through usbmuxd's
//! `SavePairRecord`) reads with `lockdown::PairRecordFile`, `ValidatePair` and `StartSession`
//! switch to TLS that OpenSSL completes (libimobiledevice presents its *root* certificate as the
//! client certificate), and `GetValue` works inside. `ideviceenterrecovery` sends
//! `EnterRecovery` on a plain connection (the tool opens lockdownd without a session), which
//! the virtual phone refuses as real phones do (it requires a paired TLS session by default):
//! the tool says "Failed to enter recovery mode." (and exits 0 anyway) and the phone stays in
//! normal mode. restation's own restore jobs enter recovery inside a session
//! (`daemon::entry`, tested in `normal_entry.rs`).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::poll_until;

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Kills the daemon when the test ends, however it ends.
struct Daemon {
    child: Child,
    dir: PathBuf,
    api: PathBuf,
    muxd: PathBuf,
    pair_records: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start() -> Daemon {
    let dir = std::env::temp_dir().join(format!("restation-pairing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("restation.sock");
    let muxd = dir.join("usbmuxd");
    let pair_records = dir.join("lockdown");
    let child = Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(["serve", "--sim", "3", "--socket"])
        .arg(&api)
        .arg("--usbmuxd-socket")
        .arg(&muxd)
        .arg("--pair-records")
        .arg(&pair_records)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start restation serve");
    let daemon = Daemon {
        child,
        dir,
        api,
        muxd,
        pair_records,
    };
    poll_until(DEADLINE, "the usbmuxd socket", || {
        UnixStream::connect(&daemon.muxd).ok().map(|_| ())
    });
    daemon
}

/// The normal-mode phone's UDID, as the daemon's API shows it once identified.
fn normal_udid(daemon: &Daemon) -> String {
    poll_until(DEADLINE, "an identified normal-mode phone", || {
        let out = Command::new(env!("CARGO_BIN_EXE_restation"))
            .args(["devices", "--json", "--socket"])
            .arg(&daemon.api)
            .output()
            .ok()?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        list.into_iter().find_map(|e| {
            (e["mode"] == "normal")
                .then(|| e["identity"]["udid"].as_str().map(str::to_owned))
                .flatten()
        })
    })
}

fn gone(daemon: &Daemon, udid: &str) -> bool {
    let Ok(out) = Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(["devices", "--json", "--socket"])
        .arg(&daemon.api)
        .output()
    else {
        return false;
    };
    let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout) else {
        return false;
    };
    !list
        .iter()
        .any(|e| e["mode"] == "normal" && e["identity"]["udid"].as_str() == Some(udid))
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn run_tool(tool: &Path, args: &[&str], socket: &Path) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(tool)
        .args(args)
        .env(
            "USBMUXD_SOCKET_ADDRESS",
            format!("UNIX:{}", socket.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(POLL);
    }
    let out = child.wait_with_output().unwrap();
    (out, started.elapsed())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn idevicepair_pairs_and_libimobiledevice_runs_tls_sessions() {
    let tools = ["idevicepair", "ideviceinfo", "ideviceenterrecovery"].map(tool);
    let [Some(idevicepair), Some(ideviceinfo), Some(ideviceenterrecovery)] = tools else {
        eprintln!(
            "SKIP: idevicepair/ideviceinfo/ideviceenterrecovery not installed \
             (apt-get install libimobiledevice-utils)"
        );
        return;
    };
    let daemon = start();
    let udid = normal_udid(&daemon);

    let (out, took) = run_tool(&idevicepair, &["-u", &udid, "pair"], &daemon.muxd);
    eprintln!("idevicepair pair ({took:?}): {}", text(&out).trim());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));

    // The record libimobiledevice saved through usbmuxd reads as a pair record file.
    let path = daemon.pair_records.join(format!("{udid}.plist"));
    let record = lockdown::PairRecordFile::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        record.escrow_bag.is_some(),
        "the phone's EscrowBag was saved"
    );
    assert!(record
        .device_certificate
        .starts_with(b"-----BEGIN CERTIFICATE-----"));
    eprintln!("pair record: HostID {}", record.host_id);

    let (out, took) = run_tool(&idevicepair, &["-u", &udid, "validate"], &daemon.muxd);
    eprintln!("idevicepair validate ({took:?}): {}", text(&out).trim());
    assert!(out.status.success(), "{}", text(&out));

    // ideviceinfo without -s starts a session: TLS with the phone.
    let (out, took) = run_tool(
        &ideviceinfo,
        &["-u", &udid, "-k", "ProductType"],
        &daemon.muxd,
    );
    eprintln!(
        "ideviceinfo in a TLS session ({took:?}): {}",
        text(&out).trim()
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("iPhone"),
        "{}",
        text(&out)
    );

    // EnterRecovery on a plain connection (see the module doc): refused, the phone stays.
    let (out, took) = run_tool(&ideviceenterrecovery, &[&udid], &daemon.muxd);
    eprintln!("ideviceenterrecovery ({took:?}): {}", text(&out).trim());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Failed to enter recovery mode"),
        "{}",
        text(&out)
    );
    assert!(!gone(&daemon, &udid), "the phone stays in normal mode");
}
