//! Child processes with deadlines: run-to-completion with a time limit, children that are
//! killed when dropped, and waiting for a line in a file that another process appends to.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often a file or a child is looked at while waiting for it. Waiting is always for a
/// condition with a deadline; this is only the polling period for things that give no event.
pub const POLL: Duration = Duration::from_millis(100);

/// A child process that is killed (and reaped) when dropped.
pub struct Guard {
    name: String,
    child: Option<Child>,
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let name = self.name.clone();
        self.child()
            .try_wait()
            .with_context(|| format!("waiting for {name}"))
    }

    /// Waits for the exit up to `deadline`; kills it past the deadline and returns `None`.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    /// Terminates it now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to completion with its output captured; kills it past `limit`.
pub fn run_captured(name: &str, cmd: &mut Command, limit: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {name} ({cmd:?})"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().context("stdout pipe")?;
    let mut err = child.stderr.take().context("stderr pipe")?;
    let out_thread = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_thread = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not finish within {} s", limit.as_secs());
        }
        thread::sleep(POLL);
    };
    Ok(Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    })
}

/// Runs `cmd` to completion with stdout captured and stderr shown (a compiler's diagnostics);
/// kills it past `limit`.
pub fn run_stdout(name: &str, cmd: &mut Command, limit: Duration) -> Result<(ExitStatus, Vec<u8>)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = Guard::spawn(name, cmd)?;
    let mut out = guard.child().stdout.take().context("stdout pipe")?;
    let reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    match guard.wait_until(Instant::now() + limit)? {
        Some(status) => Ok((status, reader.join().unwrap_or_default())),
        None => bail!("{name} did not finish within {} s", limit.as_secs()),
    }
}

/// Runs `cmd` with inherited stdout/stderr (progress visible); fails on a non-zero exit or past
/// `limit`.
pub fn run_visible(name: &str, cmd: &mut Command, limit: Duration) -> Result<()> {
    cmd.stdin(Stdio::null());
    let mut guard = Guard::spawn(name, cmd)?;
    match guard.wait_until(Instant::now() + limit)? {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("{name} failed: {status}"),
        None => bail!("{name} did not finish within {} s", limit.as_secs()),
    }
}

/// Like [`run_captured`], but a non-zero exit is an error carrying the tail of stderr.
pub fn run_ok(name: &str, cmd: &mut Command, limit: Duration) -> Result<Vec<u8>> {
    let out = run_captured(name, cmd, limit)?;
    if !out.status.success() {
        bail!(
            "{name} failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 15)
        );
    }
    Ok(out.stdout)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines of a file another process appends to (a missing file has none yet).
pub fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|text| {
            // a line without its newline may still be being written
            let complete = match text.rfind('\n') {
                Some(end) => &text[..end],
                None => "",
            };
            complete.lines().map(str::to_owned).collect()
        })
        .unwrap_or_default()
}
