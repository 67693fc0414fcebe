//! Booting the guest: qemu under TCG with the image's kernel and initrd, the root disk as a
//! throwaway snapshot, user networking (the host is 10.0.2.2) and the run directory over 9p.
//! The serial console is read line by line; the guest's result lines start with `@@ `.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::image::Image;
use super::proc::Guard;

/// How the boot ended.
pub struct Outcome {
    /// The guest printed `@@ DONE`.
    pub done: bool,
    /// qemu exited by itself (the guest powered off) before the deadline.
    pub exited: bool,
    /// From qemu's start to `@@ DONE` (or to the end).
    pub elapsed: Duration,
}

pub fn command(image: &Image, run: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-m", "1024", "-smp", "1"])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .arg("-append")
        .arg("console=ttyS0 rdinit=/init panic=-1 net.ifnames=0 loglevel=4")
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,snapshot=on",
            image.rootfs.display()
        ))
        .args([
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=bench,security_model=none,id=bench",
            run.display()
        ));
    cmd
}

/// Boots the guest and streams its `@@ ` lines to `on_line` until it powers off or `limit`
/// passes. The whole console goes to `console_log` (and to stderr with `verbose`).
pub fn boot(
    image: &Image,
    run: &Path,
    limit: Duration,
    verbose: bool,
    mut on_line: impl FnMut(&str),
) -> Result<Outcome> {
    let console_log = run.join("logs/console.log");
    let mut console = fs::File::create(&console_log)
        .with_context(|| format!("creating {}", console_log.display()))?;
    let mut cmd = command(image, run);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut qemu = Guard::spawn("qemu-system-x86_64", &mut cmd)?;
    let stdout = qemu.child().stdout.take().context("qemu stdout")?;
    let stderr = qemu.child().stderr.take().context("qemu stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    let err_tx = tx.clone();
    thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if err_tx.send(format!("qemu: {line}")).is_err() {
                break;
            }
        }
    });

    let deadline = started + limit;
    let mut done = false;
    let mut done_at = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(console, "{line}");
                if verbose {
                    eprintln!("| {line}");
                }
                // the marker may follow kernel output on the same console line
                if let Some(at) = line.find("@@ ") {
                    let text = &line[at + 3..];
                    if text.starts_with("DONE") {
                        done = true;
                        done_at = Some(started.elapsed());
                    } else {
                        on_line(text);
                    }
                }
            }
            // both pipes closed: qemu has exited
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => break,
        }
    }
    // after DONE the guest powers off by itself; give it a short deadline
    let status = qemu.wait_until(Instant::now() + Duration::from_secs(30))?;
    let exited = status.is_some() && Instant::now() < deadline + Duration::from_secs(30);
    Ok(Outcome {
        done,
        exited,
        elapsed: done_at.unwrap_or_else(|| started.elapsed()),
    })
}
