//! Jobs a stopped daemon left unfinished, resumed when it starts again.
//!
//! A daemon that is killed (`kill -9`, a crash, a power loss) in the middle of a restore
//! leaves its jobs `running` in the history, the open attempt without an end. At startup,
//! [`resume_interrupted`] lists this station's unfinished jobs
//! ([`history::HistoryStore::unfinished_on`]), ends their open attempts as interrupted
//! ([`history::HistoryStore::interrupt`], with the phase they had reached) and gives each job
//! a record again (`GET /jobs`, running, with an operator line asking for the phone), then a
//! thread of its own that:
//!
//! 1. verifies the staged IPSW again ([`ipsw::store::Store::verify`]): a file that no longer
//!    matches is quarantined and the job ends failed with 14 (a corrupted firmware file, see
//!    ERROR-CODES: "never retry a 14 before the firmware is re-verified"); a file gone from the
//!    store ends it as the station's own error (no number), saying so;
//! 2. waits, on registry events and at most the operator deadline, for the phone with the
//!    job's ECID in a mode a plan starts from (normal, recovery, DFU), identified. A phone
//!    still in restore mode (its restore ramdisk outlived the host) is asked, through
//!    restored, to reboot (it comes back in recovery); when restored does not answer, the
//!    operator line asks for a force restart;
//! 3. runs the job on from there as a new attempt of the same history job, through the
//!    normal retry ladder, the attempt count going on from the history's.

use std::sync::Arc;
use std::time::SystemTime;

use ipsw::manifest::{BuildManifest, RestoreBehavior};
use irecv::mode::Mode;
use restore::failure::{Cause, Failure};
use restore::phase::Phase;
use restore::plan::{StartMode, Target};

use super::{
    finish, history, start_mode_of, Awaiting, Drive, End, Found, JobContext, JobRecord, JobState,
    JobUpdate, RegistryPhones, Slot, MAX_MANIFEST,
};
use crate::daemon::registry::{unix_ms, Key};
use crate::daemon::Shared;

/// A job the history says was running when the daemon stopped.
struct Interrupted {
    row: history::JobRow,
    /// The attempts [`history::HistoryStore::interrupt`] just ended.
    cut: Vec<u32>,
}

/// Resumes this station's jobs that the last daemon left unfinished (see the module's
/// documentation); their number. Call once at startup, after the jobs are enabled and before
/// the API serves (so that no new job takes one of their phones first). Blocking history
/// calls run on a plain thread of their own.
pub fn resume_interrupted(shared: &Arc<Shared>) -> usize {
    let (Some(store), Some(ctx)) = (shared.history().cloned(), shared.job_context().cloned())
    else {
        return 0;
    };
    let station = history::station_name();
    // PostgreSQL's blocking client must not run on the runtime's threads.
    let listed = std::thread::scope(|scope| {
        scope
            .spawn(|| list_interrupted(store.as_ref(), station.as_deref()))
            .join()
    });
    let interrupted = match listed {
        Ok(Ok(jobs)) => jobs,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the job history cannot list the interrupted jobs");
            return 0;
        }
        Err(_) => {
            tracing::warn!("listing the interrupted jobs panicked");
            return 0;
        }
    };
    let mut resumed = 0;
    for job in interrupted {
        let key = job.row.key;
        match resume(shared, &ctx, &store, job) {
            Ok(id) => {
                tracing::info!(history = %key, job = id, "resuming a job the last daemon left");
                resumed += 1;
            }
            Err(e) => tracing::warn!(history = %key, error = %e, "cannot resume the job"),
        }
    }
    resumed
}

fn list_interrupted(
    store: &dyn history::HistoryStore,
    station: Option<&str>,
) -> Result<Vec<Interrupted>, history::HistoryError> {
    let now = SystemTime::now();
    store
        .unfinished_on(station)?
        .into_iter()
        .map(|mut row| {
            let cut = store.interrupt(row.key, now)?;
            // The rows were read before: say what was just written.
            for attempt in row.attempts.iter_mut().filter(|a| cut.contains(&a.n)) {
                attempt.ended = Some(now);
            }
            Ok(Interrupted { row, cut })
        })
        .collect()
}

/// What the operator reads while the job waits for its phone.
fn plug_in_line(row: &history::JobRow) -> String {
    let ecid = irecv::serial::format_ecid(row.ecid);
    let on = row
        .port
        .as_deref()
        .map(|p| format!(" (port {p})"))
        .unwrap_or_default();
    format!(
        "phone {ecid}{on} was being restored when the station stopped: plug it in (recovery or \
         DFU) and the restore resumes"
    )
}

fn restore_mode_line(row: &history::JobRow) -> String {
    format!(
        "phone {} is still in restore mode from the interrupted restore: force-restart it \
         (Volume Up, Volume Down, hold Side) so that it comes back in recovery",
        irecv::serial::format_ecid(row.ecid)
    )
}

/// Gives the job a record and a thread; its (new) daemon job number.
fn resume(
    shared: &Arc<Shared>,
    ctx: &JobContext,
    store: &Arc<dyn history::HistoryStore>,
    job: Interrupted,
) -> std::io::Result<u64> {
    let Interrupted { row, cut } = job;
    let jobs = shared.jobs();
    let id = jobs.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let attempts = u32::try_from(row.attempts.len()).unwrap_or(u32::MAX);
    let phase = row
        .attempts
        .last()
        .and_then(|a| a.phase_reached.clone())
        .unwrap_or_else(|| Phase::Upload.to_string());
    let record = JobRecord {
        id,
        ecid: irecv::serial::format_ecid(row.ecid),
        port: row.port.clone(),
        product_type: row.product_type.clone(),
        ipsw: row.ipsw.clone(),
        build_version: row.build_version.clone(),
        behavior: row.behavior.clone(),
        start_mode: String::new(),
        state: JobState::Running,
        phase,
        step: 0,
        steps: 0,
        step_text: format!(
            "interrupted by a station restart (attempt{} {}); waiting for the phone",
            if cut.len() == 1 { "" } else { "s" },
            cut.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        progress: 0.0,
        started_ms: unix_ms(row.started),
        ended_ms: None,
        error: None,
        number: None,
        meaning: None,
        advice: None,
        operator: Some(plug_in_line(&row)),
        attempts,
        next_step: Some(
            "resume: verify the IPSW again, wait for the phone in recovery or DFU, restore again"
                .into(),
        ),
    };
    jobs.lock().insert(id, record.clone());
    let _ = jobs.updates.send(JobUpdate { job: record });
    let shared_for_thread = Arc::clone(shared);
    let ctx = ctx.clone();
    let kept = (Arc::clone(store), row.key);
    std::thread::Builder::new()
        .name(format!("job-{id}"))
        .spawn(move || {
            let span = tracing::info_span!(
                "job",
                id,
                ecid = %irecv::serial::format_ecid(row.ecid),
                history = %row.key,
                resumed = true,
            );
            let _enter = span.enter();
            run(shared_for_thread, ctx, id, row, kept);
        })
        .inspect_err(|_| {
            finish(
                shared,
                id,
                None,
                End::Station {
                    phase: Phase::Upload,
                    error: "cannot start the resumed job's thread".into(),
                },
            );
        })?;
    Ok(id)
}

/// The staged IPSW, verified again, and what a plan needs from it.
struct Firmware {
    manifest: BuildManifest,
    manifest_bytes: Vec<u8>,
    file: std::fs::File,
    archive: ipsw::archive::Archive,
    id: String,
}

fn station_end(error: String) -> End {
    End::Station {
        phase: Phase::Upload,
        error,
    }
}

/// Verifies the job's IPSW again; an IPSW that no longer matches (quarantined) is 14, one
/// that is gone the station's own error.
fn firmware(root: &std::path::Path, row: &history::JobRow) -> Result<Firmware, End> {
    let id = &row.ipsw;
    let store = ipsw::store::Store::open(root)
        .map_err(|e| station_end(format!("the IPSW store {}: {e}", root.display())))?;
    let corrupt = |why: String| {
        let failure = Failure::new(Phase::Upload, Cause::DigestMismatch);
        End::Failed {
            number: failure.number(),
            failure: Box::new(failure),
            error: format!(
                "the staged IPSW {id} does not verify after the station restarted ({why}): it \
                 is quarantined; stage it again and start a new job"
            ),
        }
    };
    let record = match store.verify(id, None) {
        Ok(ipsw::store::VerifyOutcome::Intact(record)) => record,
        Ok(ipsw::store::VerifyOutcome::Quarantined { reason, .. }) => {
            return Err(corrupt(reason.to_string()))
        }
        Err(ipsw::Error::NotStaged { .. }) => {
            return Err(station_end(format!(
                "the staged IPSW {id} is no longer in the store {}: stage it again and start a \
                 new job",
                root.display()
            )))
        }
        Err(e) => {
            return Err(station_end(format!(
                "the staged IPSW {id} cannot be verified: {e}"
            )))
        }
    };
    if !record.sha256.eq_ignore_ascii_case(&row.ipsw_sha256) {
        return Err(corrupt(format!(
            "the store's file has SHA-256 {}, the job started with {}",
            record.sha256, row.ipsw_sha256
        )));
    }
    let path = store.path_of(&record);
    let unreadable = |e: ipsw::Error| station_end(format!("the staged IPSW {id}: {e}"));
    let (file, archive) = ipsw::archive::Archive::open(&path).map_err(unreadable)?;
    let manifest_bytes = archive
        .read_member(&file, "BuildManifest.plist", MAX_MANIFEST)
        .map_err(unreadable)?;
    let manifest = BuildManifest::from_bytes(&manifest_bytes).map_err(unreadable)?;
    Ok(Firmware {
        manifest,
        manifest_bytes,
        file,
        archive,
        id: record.id,
    })
}

/// What the registry shows of the awaited phone.
enum Seen {
    /// In a mode a plan starts from, identified.
    Ready,
    /// In restore mode, at this enumeration.
    Restoring(usb::DeviceId),
}

/// Waits (registry events, the operator deadline) for the phone in a mode a plan starts
/// from, asking for a force restart while it sits in restore mode; takes it over.
fn phone(
    shared: &Arc<Shared>,
    ctx: &JobContext,
    id: u64,
    row: &history::JobRow,
    phones: &mut RegistryPhones,
) -> Result<Found, End> {
    let within = ctx.deadlines.operator;
    let deadline = tokio::time::Instant::now() + within;
    let key = Key::Ecid(row.ecid);
    let ecid = irecv::serial::format_ecid(row.ecid);
    let mut told_restore = false;
    let never = || {
        station_end(format!(
            "phone {ecid} did not come back in recovery, DFU or normal mode within {within:?} \
             after the station restarted: plug it in and start a new job"
        ))
    };
    loop {
        let seen = ctx.runtime.block_on(async {
            tokio::time::timeout_at(
                deadline,
                shared.wait_for_entry(|r| {
                    let e = r.get(&key).filter(|e| e.present && e.device.is_some())?;
                    let identified = e.identity.chip_id.is_some() && e.identity.board_id.is_some();
                    if start_mode_of(e.mode).is_some() && identified {
                        Some(Seen::Ready)
                    } else if matches!(e.mode, Mode::Restore | Mode::RestoreOrMacDfu)
                        && !told_restore
                    {
                        e.device.map(Seen::Restoring)
                    } else {
                        None
                    }
                }),
            )
            .await
        });
        match seen {
            Err(_) => return Err(never()),
            Ok(Seen::Restoring(device)) => {
                told_restore = true;
                // The restore ramdisk outlived the host: ask it to reboot the phone; if it
                // does not answer, the operator forces a restart.
                match super::leave_restore_mode(shared, ctx, device) {
                    Ok(()) => tracing::info!(
                        "the phone is still in restore mode: asked restored to reboot it"
                    ),
                    Err(e) => {
                        tracing::info!(error = %e, "the phone is still in restore mode and restored does not answer: asking for a force restart");
                        shared
                            .jobs()
                            .update(id, |r| r.operator = Some(restore_mode_line(row)));
                    }
                }
            }
            Ok(Seen::Ready) => break,
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let found = phones
        .wait_for_start(row.ecid, Awaiting::Start, None, left)
        .map_err(|e| station_end(format!("phone {ecid} after the station restarted: {e}")))?;
    shared.jobs().update(id, |r| {
        r.operator = None;
        r.next_step = None;
        r.port = found.port.as_ref().map(ToString::to_string);
    });
    Ok(found)
}

/// The resumed job's thread.
fn run(
    shared: Arc<Shared>,
    ctx: JobContext,
    id: u64,
    row: history::JobRow,
    kept: (Arc<dyn history::HistoryStore>, history::JobKey),
) {
    let end = |end: End| finish(&shared, id, Some(&kept), end);
    let behavior: RestoreBehavior = match row.behavior.parse() {
        Ok(b) => b,
        Err(e) => return end(station_end(format!("the job's behavior: {e}"))),
    };
    let firmware = match firmware(&ctx.store, &row) {
        Ok(f) => f,
        Err(e) => return end(e),
    };
    tracing::info!("the staged IPSW verifies; waiting for the phone");
    let mut phones = RegistryPhones {
        shared: Arc::clone(&shared),
        ctx: ctx.clone(),
        used: std::collections::HashSet::new(),
    };
    let found = match phone(&shared, &ctx, id, &row, &mut phones) {
        Ok(found) => found,
        Err(e) => return end(e),
    };
    let identity = shared
        .registry()
        .get(&Key::Ecid(row.ecid))
        .map(|e| e.identity.clone());
    let (Some(chip_id), Some(board_id), product_type) = identity
        .map(|i| (i.chip_id, i.board_id, i.product_type))
        .unwrap_or_default()
    else {
        return end(station_end(
            "the phone left before it was identified".into(),
        ));
    };
    let bus = found.port.as_ref().map(usb::PortPath::bus);
    let drive = Drive {
        shared: Arc::clone(&shared),
        ctx,
        id,
        target: Target {
            ecid: row.ecid,
            chip_id,
            board_id,
            product_type: product_type.or(row.product_type.clone()),
            // Each attempt's own: `prepare` sets it from the mode the phone is in.
            mode: StartMode::Dfu,
        },
        behavior,
        manifest: firmware.manifest,
        manifest_bytes: firmware.manifest_bytes,
        file: firmware.file,
        archive: firmware.archive,
        ipsw_id: firmware.id,
        kept: Some(kept.clone()),
        attempts_before: u32::try_from(row.attempts.len()).unwrap_or(u32::MAX),
    };
    let start = match drive.prepare(found) {
        Ok(start) => start,
        Err(e) => return drive.finish(e),
    };
    // A slot on the phone's host controller, as for any job.
    if let Some(bus) = bus {
        if !shared.jobs().gate.try_take(bus, id) {
            shared.jobs().update(id, |r| {
                r.state = JobState::Queued;
                r.step_text = format!("queued: restores already run on USB bus {bus}");
            });
            shared.jobs().admit(id, bus);
        }
    }
    let _slot = bus.map(|bus| Slot {
        shared: Arc::clone(&shared),
        bus,
    });
    tracing::info!(
        attempt = drive.attempts_before.saturating_add(1),
        mode = %start.plan.target.mode,
        "resuming the restore"
    );
    drive.run(start);
}
