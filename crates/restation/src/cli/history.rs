//! `restation history [--since WHEN] [--until WHEN] [--ecid X] [--json|--csv] [--db PATH]`:
//! the jobs this station ran, read straight from the history file (the daemon need not run).
//!
//! A table for people; `--json` for scripts (JSON lines: one job per line, attempts and
//! failures with their evidence nested, so `jq` and line-by-line readers work on a history of
//! any length); `--csv` for spreadsheets (one row per job, a header row, RFC 4180 quoting).
//! Times are UTC. `WHEN` is a date (`2026-11-01`, midnight UTC), a date and time
//! (`2026-11-01T14:30:00Z`), or an age (`24h`, `7d`, `2w`, `90m`); `--since` is inclusive,
//! `--until` exclusive, both on the job's start.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::daemon::history::{self, AttemptRow, FailureRecord, Filter, JobRow};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Jobs started at or after WHEN: a date (2026-11-01), a date and time
    /// (2026-11-01T14:30:00Z) or an age (24h, 7d). UTC.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Jobs started before WHEN (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// One phone's jobs (0x… or bare hex).
    #[arg(long, value_name = "ECID")]
    ecid: Option<String>,
    /// JSON lines: one job per line, with its attempts.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV with a header row: one job per row.
    #[arg(long)]
    csv: bool,
    /// The history file, or a postgres:// URL [default: $RESTATION_HISTORY, else the
    /// configuration's `history`, else /var/lib/restation/history.sqlite].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The configuration file [default: /etc/restation/restation.toml].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

pub fn run(args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    let when = |text: &Option<String>, flag: &str| -> anyhow::Result<Option<SystemTime>> {
        text.as_deref()
            .map(|t| parse_when(t, now))
            .transpose()
            .with_context(|| format!("--{flag}"))
    };
    let filter = Filter {
        since: when(&args.since, "since")?,
        until: when(&args.until, "until")?,
        ecid: args
            .ecid
            .as_deref()
            .map(parse_ecid)
            .transpose()
            .context("--ecid")?,
    };
    let path = db_path(args.db.as_deref(), std::env::var_os(history::ENV), || {
        Ok(super::config::Config::load(args.config.as_deref())?.history)
    })?;
    let store = history::Location::of(&path).open_read_only()?;
    let jobs = store.query(&filter)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for job in &jobs {
            serde_json::to_writer(&mut out, &JsonJob::of(job))?;
            out.write_all(b"\n")?;
        }
    } else if args.csv {
        write_csv(&mut out, &jobs)?;
    } else {
        out.write_all(table(&jobs).as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The history file: `--db`, else `$RESTATION_HISTORY`, else the configuration's `history`,
/// else [`history::DEFAULT_PATH`]. The configuration is only read when it is needed.
fn db_path(
    db: Option<&Path>,
    env: Option<OsString>,
    config: impl FnOnce() -> anyhow::Result<Option<PathBuf>>,
) -> anyhow::Result<PathBuf> {
    if let Some(db) = db {
        return Ok(db.to_path_buf());
    }
    if let Some(env) = env.filter(|e| !e.is_empty()) {
        return Ok(PathBuf::from(env));
    }
    Ok(config()?.unwrap_or_else(|| PathBuf::from(history::DEFAULT_PATH)))
}

/// A `--since`/`--until` value that is none of the accepted forms.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a time: {why} (use 2026-11-01, 2026-11-01T14:30:00Z, 24h or 7d)")]
pub struct WhenError {
    text: String,
    why: &'static str,
}

/// Reads a `WHEN`: an age before `now` (`90m`, `24h`, `7d`, `2w`, `30s`), a date (midnight
/// UTC), or a date and time (`T` or a space between, optional `Z`, optional seconds).
pub fn parse_when(text: &str, now: SystemTime) -> Result<SystemTime, WhenError> {
    let err = |why| WhenError {
        text: text.chars().take(40).collect(),
        why,
    };
    let t = text.trim();
    if !t.contains('-') {
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (count, unit) = t.split_at(split);
        let count: u64 = count
            .parse()
            .map_err(|_| err("an age is a whole number and a unit"))?;
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(err("the unit of an age is s, m, h, d or w")),
        };
        let age = count
            .checked_mul(secs)
            .map(Duration::from_secs)
            .ok_or_else(|| err("too long ago"))?;
        return now.checked_sub(age).ok_or_else(|| err("too long ago"));
    }
    let (date, clock) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err("a date is YYYY-MM-DD"));
    };
    let number = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (Some(y), Some(m), Some(d)) = (number(y, 4), number(m, 2), number(d, 2)) else {
        return Err(err("a date is YYYY-MM-DD"));
    };
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(err("no such day"));
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(clock) = clock {
        let clock = clock.strip_suffix(['Z', 'z']).unwrap_or(clock);
        let mut fields = clock.split(':');
        let h = fields.next().and_then(|f| number(f, 2));
        let min = fields.next().and_then(|f| number(f, 2));
        let s = match fields.next() {
            None => Some(0),
            Some(f) => number(f, 2),
        };
        let (Some(h), Some(min), Some(s), None) = (h, min, s, fields.next()) else {
            return Err(err("a time of day is HH:MM or HH:MM:SS (UTC)"));
        };
        if h > 23 || min > 59 || s > 59 {
            return Err(err("no such time of day"));
        }
        secs += h * 3600 + min * 60 + s;
    }
    let secs = u64::try_from(secs).map_err(|_| err("before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// An ECID as a technician types it: hex, with or without `0x`.
pub(crate) fn parse_ecid(text: &str) -> anyhow::Result<u64> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u64::from_str_radix(hex, 16)
        .with_context(|| format!("{text:?} is not an ECID (hex, with or without 0x)"))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// `2026-11-21T10:04:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = since_epoch(t);
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let (y, m, day) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// `2026-11-21 10:04` for the table.
fn short_time(t: SystemTime) -> String {
    let full = rfc3339(t);
    full.get(..16).unwrap_or(&full).replacen('T', " ", 1)
}

/// `4m 05s`, `1h 02m`, `12s`.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}

fn seconds(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// The human table: port, model, ECID, result, number, attempts, duration, start.
fn table(jobs: &[JobRow]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".to_string();
    }
    let header = [
        "PORT",
        "MODEL",
        "ECID",
        "RESULT",
        "NUMBER",
        "TRIES",
        "DURATION",
        "STARTED (UTC)",
    ];
    let rows: Vec<[String; 8]> = jobs
        .iter()
        .map(|j| {
            [
                j.port.clone().unwrap_or_else(|| "-".into()),
                j.product_type.clone().unwrap_or_else(|| "-".into()),
                irecv::serial::format_ecid(j.ecid),
                j.result.to_string(),
                j.number.map_or_else(|| "-".into(), |n| n.to_string()),
                j.attempts.len().to_string(),
                j.duration().map_or_else(|| "-".into(), human_duration),
                short_time(j.started),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut s = cells
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for row in &rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// One job in `--json`.
#[derive(Debug, Serialize)]
struct JsonJob<'a> {
    id: i64,
    station: Option<&'a str>,
    daemon_job: Option<u64>,
    ecid: String,
    serial: Option<&'a str>,
    udid: Option<&'a str>,
    product_type: Option<&'a str>,
    port: Option<&'a str>,
    ipsw: &'a str,
    ipsw_sha256: &'a str,
    build_version: &'a str,
    behavior: &'a str,
    started: String,
    ended: Option<String>,
    duration_s: Option<f64>,
    result: &'static str,
    number: Option<i64>,
    advice: Option<&'a str>,
    error: Option<&'a str>,
    attempts: Vec<JsonAttempt<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonAttempt<'a> {
    n: u32,
    started: String,
    ended: Option<String>,
    phase_reached: Option<&'a str>,
    failure: Option<&'a FailureRecord>,
}

impl<'a> JsonJob<'a> {
    fn of(j: &'a JobRow) -> Self {
        JsonJob {
            id: j.key.0,
            station: j.station.as_deref(),
            daemon_job: j.daemon_job,
            ecid: irecv::serial::format_ecid(j.ecid),
            serial: j.serial.as_deref(),
            udid: j.udid.as_deref(),
            product_type: j.product_type.as_deref(),
            port: j.port.as_deref(),
            ipsw: &j.ipsw,
            ipsw_sha256: &j.ipsw_sha256,
            build_version: &j.build_version,
            behavior: &j.behavior,
            started: rfc3339(j.started),
            ended: j.ended.map(rfc3339),
            duration_s: j.duration().map(seconds),
            result: j.result.as_str(),
            number: j.number,
            advice: j.advice.as_deref(),
            error: j.error.as_deref(),
            attempts: j.attempts.iter().map(JsonAttempt::of).collect(),
        }
    }
}

impl<'a> JsonAttempt<'a> {
    fn of(a: &'a AttemptRow) -> Self {
        JsonAttempt {
            n: a.n,
            started: rfc3339(a.started),
            ended: a.ended.map(rfc3339),
            phase_reached: a.phase_reached.as_deref(),
            failure: a.failure.as_ref(),
        }
    }
}

/// One job in `--csv` (a flat row: the attempts are counted, the last failure named).
#[derive(Debug, Serialize)]
struct CsvJob<'a> {
    id: i64,
    station: Option<&'a str>,
    ecid: String,
    serial: Option<&'a str>,
    udid: Option<&'a str>,
    product_type: Option<&'a str>,
    port: Option<&'a str>,
    ipsw: &'a str,
    ipsw_sha256: &'a str,
    build_version: &'a str,
    behavior: &'a str,
    started: String,
    ended: Option<String>,
    duration_s: Option<f64>,
    result: &'static str,
    number: Option<i64>,
    advice: Option<&'a str>,
    error: Option<&'a str>,
    attempts: usize,
    last_failure_phase: Option<&'a str>,
    last_failure_number: Option<i64>,
}

fn write_csv(out: &mut impl Write, jobs: &[JobRow]) -> anyhow::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    // The header is written by hand so that an empty export still has it.
    w.write_record([
        "id",
        "station",
        "ecid",
        "serial",
        "udid",
        "product_type",
        "port",
        "ipsw",
        "ipsw_sha256",
        "build_version",
        "behavior",
        "started",
        "ended",
        "duration_s",
        "result",
        "number",
        "advice",
        "error",
        "attempts",
        "last_failure_phase",
        "last_failure_number",
    ])?;
    for j in jobs {
        let last_failure = j.attempts.iter().rev().find_map(|a| a.failure.as_ref());
        w.serialize(CsvJob {
            id: j.key.0,
            station: j.station.as_deref(),
            ecid: irecv::serial::format_ecid(j.ecid),
            serial: j.serial.as_deref(),
            udid: j.udid.as_deref(),
            product_type: j.product_type.as_deref(),
            port: j.port.as_deref(),
            ipsw: &j.ipsw,
            ipsw_sha256: &j.ipsw_sha256,
            build_version: &j.build_version,
            behavior: &j.behavior,
            started: rfc3339(j.started),
            ended: j.ended.map(rfc3339),
            duration_s: j.duration().map(seconds),
            result: j.result.as_str(),
            number: j.number,
            advice: j.advice.as_deref(),
            error: j.error.as_deref(),
            attempts: j.attempts.len(),
            last_failure_phase: last_failure.map(|f| f.phase.as_str()),
            last_failure_number: last_failure.and_then(|f| f.number),
        })?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn dates_times_and_ages() {
        // 2026-11-01 is 20 758 days after 1970-01-01.
        assert_eq!(
            parse_when("2026-11-01", at(0)).unwrap(),
            at(20_758 * 86_400)
        );
        assert_eq!(
            parse_when("2026-11-01T14:30:00Z", at(0)).unwrap(),
            at(20_758 * 86_400 + 14 * 3600 + 30 * 60)
        );
        assert_eq!(
            parse_when("2026-11-01 14:30", at(0)).unwrap(),
            at(20_758 * 86_400 + 14 * 3600 + 30 * 60)
        );
        assert_eq!(parse_when("1970-01-01", at(5)).unwrap(), at(0));
        assert_eq!(
            parse_when("2024-02-29", at(0)).unwrap(),
            at(19_782 * 86_400)
        );
        let now = at(10 * 86_400);
        assert_eq!(parse_when("24h", now).unwrap(), at(9 * 86_400));
        assert_eq!(parse_when("7d", now).unwrap(), at(3 * 86_400));
        assert_eq!(parse_when("1w", now).unwrap(), at(3 * 86_400));
        assert_eq!(parse_when("90m", now).unwrap(), at(10 * 86_400 - 5400));
        for bad in [
            "",
            "yesterday",
            "7x",
            "d",
            "2026-13-01",
            "2025-02-29",
            "2026-11-1",
            "2026-11-01T25:00",
            "2026-11-01T10",
            "99999999999999999999d",
        ] {
            assert!(parse_when(bad, now).is_err(), "{bad:?} parsed");
        }
        let e = parse_when("yesterday", now).unwrap_err().to_string();
        assert!(e.contains("use 2026-11-01"), "{e}");
    }

    #[test]
    fn dates_round_trip_through_the_day_count() {
        for days in [-800_000, -1, 0, 1, 59, 365, 11_016, 20_758, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(
            rfc3339(at(20_758 * 86_400 + 3723) + Duration::from_millis(45)),
            "2026-11-01T01:02:03.045Z"
        );
        assert_eq!(short_time(at(20_758 * 86_400 + 3723)), "2026-11-01 01:02");
    }

    #[test]
    fn the_path_comes_from_the_flag_then_the_environment_then_the_configuration() {
        let from_config = || Ok(Some(PathBuf::from("/cfg/h.sqlite")));
        let no_config = || Ok(None);
        assert_eq!(
            db_path(Some(Path::new("/a")), Some("/b".into()), from_config).unwrap(),
            Path::new("/a")
        );
        assert_eq!(
            db_path(None, Some("/b".into()), from_config).unwrap(),
            Path::new("/b")
        );
        assert_eq!(
            db_path(None, Some("".into()), from_config).unwrap(),
            Path::new("/cfg/h.sqlite")
        );
        assert_eq!(
            db_path(None, None, no_config).unwrap(),
            Path::new(history::DEFAULT_PATH)
        );
        // The configuration is not read when it is not needed.
        assert!(db_path(Some(Path::new("/a")), None, || anyhow::bail!("unreadable")).is_ok());
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(human_duration(Duration::from_secs(3720)), "1h 02m");
        assert_eq!(parse_ecid("0x1A2b").unwrap(), 0x1a2b);
        assert_eq!(parse_ecid("1a2b").unwrap(), 0x1a2b);
        assert!(parse_ecid("0xzz").is_err());
    }
}
