//! `restation restore (--ecid X | --port 1-1.3) --ipsw ID [--erase | --update] [--json]`:
//! asks the daemon to restore a phone and follows the job to its end, with a progress bar
//! per phase (or one JSON line per change with `--json`). When the phone needs the technician
//! (a normal-mode phone showing "Trust this computer?"), a line says so (`operator` in the
//! JSON). Exits 0 when the phone is back in
//! iOS with the new build, 1 when the restore failed (the reason is printed).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::http::{self, EventStream};
use crate::daemon::api;
use crate::daemon::jobs::{JobRecord, JobRequest, JobState};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The phone by ECID (`0x…`).
    #[arg(
        long,
        value_name = "ECID",
        required_unless_present = "port",
        conflicts_with = "port"
    )]
    ecid: Option<String>,
    /// The phone by the port it is on (`1-1.3`, as `restation devices` shows).
    #[arg(long, value_name = "PORT")]
    port: Option<String>,
    /// The staged IPSW (its id from `restation ipsw list`, or a unique prefix).
    #[arg(long, value_name = "ID")]
    ipsw: String,
    /// Erase and install (the default).
    #[arg(long, conflicts_with = "update")]
    erase: bool,
    /// Update, keeping the user's data.
    #[arg(long)]
    update: bool,
    /// One JSON line per job change instead of progress bars.
    #[arg(long)]
    json: bool,
    /// The daemon's API socket [default: from the configuration, else
    /// $XDG_RUNTIME_DIR/restation.sock, else /run/restation/restation.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

pub fn run(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let socket = match &args.socket {
        Some(path) => path.clone(),
        None => super::config::Config::load(None)?
            .socket
            .unwrap_or_else(api::default_socket_path),
    };
    let request = JobRequest {
        ecid: args.ecid.clone(),
        port: args.port.clone(),
        ipsw: args.ipsw.clone(),
        behavior: Some(if args.update { "update" } else { "erase" }.into()),
    };
    // Subscribe first, so that no change of the job is missed.
    let mut events = EventStream::open(&socket, "/jobs/events")?;
    let (status, body) = http::request(
        &socket,
        "POST",
        "/jobs",
        Some(&serde_json::to_value(&request)?),
    )?;
    if status != 201 {
        let why = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("the daemon refused the restore: {why}");
    }
    let job: JobRecord =
        serde_json::from_slice(&body).context("the daemon's answer is not a job")?;
    let mut view = View::new(args.json, &job);
    view.show(&job)?;
    let mut last = job;
    while last.state.is_active() {
        let Some((name, data)) = events.next_event()? else {
            bail!(
                "the daemon closed the event stream while job {} ran",
                last.id
            );
        };
        if name != "job" {
            continue;
        }
        let Ok(update) = serde_json::from_str::<JobRecord>(&data) else {
            continue;
        };
        if update.id != last.id {
            continue;
        }
        view.show(&update)?;
        last = update;
    }
    view.finish(&last);
    Ok(if last.state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Progress bars, or JSON lines.
struct View {
    json: bool,
    bar: Option<ProgressBar>,
    phase: String,
    operator: Option<String>,
}

impl View {
    fn new(json: bool, job: &JobRecord) -> View {
        if !json {
            eprintln!(
                "restoring {} ({}) on port {} to {} ({}), job {}",
                job.ecid,
                job.product_type.as_deref().unwrap_or("?"),
                job.port.as_deref().unwrap_or("?"),
                job.build_version,
                job.behavior,
                job.id
            );
        }
        View {
            json,
            bar: None,
            phase: String::new(),
            operator: None,
        }
    }

    fn show(&mut self, job: &JobRecord) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(job)?);
            return Ok(());
        }
        if job.phase != self.phase {
            if let Some(bar) = self.bar.take() {
                bar.finish();
            }
            let bar = ProgressBar::new(1000);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>18} [{bar:30}] {percent:>3}% {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(job.phase.clone());
            self.bar = Some(bar);
            self.phase = job.phase.clone();
        }
        if job.operator != self.operator {
            self.operator = job.operator.clone();
            if let Some(message) = &job.operator {
                // Above the bars, and shown even when they are hidden (not a terminal).
                let line = || eprintln!("\n>>> {message} <<<\n");
                match &self.bar {
                    Some(bar) => bar.suspend(line),
                    None => line(),
                }
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position((job.progress.clamp(0.0, 1.0) * 1000.0) as u64);
            bar.set_message(format!("{}/{} {}", job.step, job.steps, job.step_text));
        }
        Ok(())
    }

    fn finish(&mut self, job: &JobRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        if self.json {
            return;
        }
        match (&job.state, &job.error) {
            (JobState::Succeeded, _) => {
                eprintln!("restored: {} runs {} now", job.ecid, job.build_version)
            }
            (_, Some(e)) => {
                eprintln!("restore failed in {}: {e}", job.phase);
                if let (Some(n), Some(meaning)) = (job.number, &job.meaning) {
                    eprintln!("error {n}: {meaning}");
                }
                if let Some(advice) = &job.advice {
                    eprintln!(
                        "what to do: {advice} (restation explain {})",
                        job.number.unwrap_or_default()
                    );
                }
            }
            _ => eprintln!("restore ended in {}", job.phase),
        }
    }
}
