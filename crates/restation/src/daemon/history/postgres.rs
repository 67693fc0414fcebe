//! The history on a PostgreSQL server, for several stations that share one
//! (`history = "postgres://user:password@host/db"` in the configuration).
//!
//! The same two tables as the SQLite file (times as milliseconds since the epoch, the evidence
//! as JSON text), plus `restation_schema`, which holds the schema version (PostgreSQL has no
//! `user_version`). Migrations run in a transaction under an advisory lock, so stations that
//! start together migrate once. The client is `postgres`'s blocking one behind a `Mutex`, as
//! for SQLite; it runs a small runtime of its own, so it must be called from plain threads
//! (the daemon's job threads, `spawn_blocking`), never from inside an async task.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use postgres::{Client, NoTls, Row};

use super::{
    corrupt, ecid_text, ms, speed_text, AttemptKey, AttemptOutcome, AttemptRow, Filter,
    HistoryError, HistoryStore, JobEnd, JobKey, JobResult, JobRow, NewJob, Observation, RawAttempt,
    RawJob, RawObservation, INTERRUPTED, INTERRUPTED_MESSAGE, JOB_COLUMNS, OBSERVATION_COLUMNS,
    SCHEMA_VERSION, UNKNOWN_PHASE,
};
use restore::phase::Phase;

/// The advisory lock migrations take (any constant the stations agree on).
const MIGRATION_LOCK: i64 = 0x7265_7374_6174_696f; // "restatio"

/// The schema, one migration per version, as [`super::MIGRATIONS`] for SQLite.
const MIGRATIONS: &[&str] = &[
    // 1: jobs and their attempts.
    "CREATE TABLE jobs (
        id            BIGSERIAL PRIMARY KEY,
        station       TEXT,
        daemon_job    BIGINT,
        ecid          TEXT    NOT NULL,
        serial        TEXT,
        udid          TEXT,
        product_type  TEXT,
        port          TEXT,
        ipsw          TEXT    NOT NULL,
        ipsw_sha256   TEXT    NOT NULL,
        build_version TEXT    NOT NULL,
        behavior      TEXT    NOT NULL,
        started_ms    BIGINT  NOT NULL,
        ended_ms      BIGINT,
        result        TEXT    NOT NULL DEFAULT 'running'
                      CHECK (result IN ('running', 'restored', 'failed', 'cancelled')),
        number        BIGINT,
        advice        TEXT,
        error         TEXT
    );
    CREATE INDEX jobs_by_start ON jobs (started_ms);
    CREATE INDEX jobs_by_ecid ON jobs (ecid, started_ms);
    CREATE INDEX jobs_running ON jobs (result) WHERE result = 'running';
    CREATE TABLE attempts (
        job             BIGINT  NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        n               BIGINT  NOT NULL,
        started_ms      BIGINT  NOT NULL,
        ended_ms        BIGINT,
        phase_reached   TEXT,
        failure_phase   TEXT,
        failure_cause   TEXT,
        failure_number  BIGINT,
        failure_message TEXT,
        evidence        TEXT,
        PRIMARY KEY (job, n)
    );",
    // 2: what each attempt said about its port (`super::super::port_health`).
    "CREATE TABLE port_observations (
        id            BIGSERIAL PRIMARY KEY,
        station       TEXT,
        port          TEXT    NOT NULL,
        ecid          TEXT    NOT NULL,
        at_ms         BIGINT  NOT NULL,
        signal        TEXT    NOT NULL,
        number        BIGINT,
        cause         TEXT,
        speed         TEXT,
        bytes_per_sec BIGINT
    );
    CREATE INDEX port_observations_by_time ON port_observations (station, at_ms);",
];

// Both stores must describe the same schema version.
const _: () = assert!(MIGRATIONS.len() as u32 == SCHEMA_VERSION);

fn pg(what: &'static str) -> impl FnOnce(postgres::Error) -> HistoryError {
    move |error| HistoryError::Postgres { what, error }
}

/// `postgres://user:secret@host/db` → `postgres://user@host/db`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// The history on a PostgreSQL server.
pub struct PgHistory {
    client: Mutex<Client>,
}

impl std::fmt::Debug for PgHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHistory").finish_non_exhaustive()
    }
}

impl PgHistory {
    /// Connects to `url` (a libpq URL or key=value string, without TLS) and brings the schema
    /// up to [`SCHEMA_VERSION`].
    pub fn connect(url: &str) -> Result<PgHistory, HistoryError> {
        let mut client = Self::client(url)?;
        migrate(&mut client, url)?;
        Ok(PgHistory {
            client: Mutex::new(client),
        })
    }

    /// Connects for reading only: never migrates, and refuses a schema other than
    /// [`SCHEMA_VERSION`].
    pub fn connect_read_only(url: &str) -> Result<PgHistory, HistoryError> {
        let mut client = Self::client(url)?;
        let found = version(&mut client)?;
        let at = || PathBuf::from(redact(url));
        if found > SCHEMA_VERSION {
            return Err(HistoryError::NewerSchema {
                path: at(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(HistoryError::OlderSchema {
                path: at(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(PgHistory {
            client: Mutex::new(client),
        })
    }

    fn client(url: &str) -> Result<Client, HistoryError> {
        Client::connect(url, NoTls).map_err(|error| HistoryError::Connect {
            url: redact(url),
            error,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn version(client: &mut Client) -> Result<u32, HistoryError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('restation_schema') IS NOT NULL", &[])
        .and_then(|r| r.try_get(0))
        .map_err(pg("reading the schema version"))?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_opt("SELECT max(version) FROM restation_schema", &[])
        .and_then(|r| r.map(|r| r.try_get(0)).transpose())
        .map_err(pg("reading the schema version"))?
        .flatten();
    Ok(v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0))
}

fn migrate(client: &mut Client, url: &str) -> Result<(), HistoryError> {
    let mut tx = client.transaction().map_err(pg("migrating"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg("migrating"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS restation_schema (version INTEGER NOT NULL)")
        .map_err(pg("migrating"))?;
    let found: Option<i32> = tx
        .query_one("SELECT max(version) FROM restation_schema", &[])
        .and_then(|r| r.try_get(0))
        .map_err(pg("reading the schema version"))?;
    let found = found.and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(HistoryError::NewerSchema {
            path: PathBuf::from(redact(url)),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (version, migration) in (1i32..).zip(MIGRATIONS).skip(found as usize) {
        tx.batch_execute(migration)
            .and_then(|()| {
                tx.execute("DELETE FROM restation_schema", &[])?;
                tx.execute(
                    "INSERT INTO restation_schema (version) VALUES ($1)",
                    &[&version],
                )
            })
            .map_err(|error| HistoryError::MigratePostgres {
                version: version.unsigned_abs(),
                error,
            })?;
    }
    tx.commit().map_err(pg("migrating"))
}

fn raw_job(r: &Row) -> Result<RawJob, postgres::Error> {
    Ok(RawJob {
        id: r.try_get(0)?,
        station: r.try_get(1)?,
        daemon_job: r.try_get(2)?,
        ecid: r.try_get(3)?,
        serial: r.try_get(4)?,
        udid: r.try_get(5)?,
        product_type: r.try_get(6)?,
        port: r.try_get(7)?,
        ipsw: r.try_get(8)?,
        ipsw_sha256: r.try_get(9)?,
        build_version: r.try_get(10)?,
        behavior: r.try_get(11)?,
        started_ms: r.try_get(12)?,
        ended_ms: r.try_get(13)?,
        result: r.try_get(14)?,
        number: r.try_get(15)?,
        advice: r.try_get(16)?,
        error: r.try_get(17)?,
    })
}

fn raw_attempt(r: &Row) -> Result<RawAttempt, postgres::Error> {
    Ok(RawAttempt {
        n: r.try_get(0)?,
        started_ms: r.try_get(1)?,
        ended_ms: r.try_get(2)?,
        phase_reached: r.try_get(3)?,
        failure_phase: r.try_get(4)?,
        failure_cause: r.try_get(5)?,
        failure_number: r.try_get(6)?,
        failure_message: r.try_get(7)?,
        evidence: r.try_get(8)?,
    })
}

fn raw_observation(r: &Row) -> Result<RawObservation, postgres::Error> {
    Ok(RawObservation {
        id: r.try_get(0)?,
        port: r.try_get(1)?,
        ecid: r.try_get(2)?,
        at_ms: r.try_get(3)?,
        signal: r.try_get(4)?,
        number: r.try_get(5)?,
        cause: r.try_get(6)?,
        speed: r.try_get(7)?,
        bytes_per_sec: r.try_get(8)?,
    })
}

fn select(
    client: &mut Client,
    where_sql: &str,
    args: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<JobRow>, HistoryError> {
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .map_err(pg("reading jobs"))?;
    let rows = tx
        .query(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {where_sql} ORDER BY started_ms, id"),
            args,
        )
        .map_err(pg("reading jobs"))?;
    let attempts = tx
        .prepare(
            "SELECT n, started_ms, ended_ms, phase_reached, failure_phase, failure_cause, \
             failure_number, failure_message, evidence FROM attempts WHERE job = $1 ORDER BY n",
        )
        .map_err(pg("reading attempts"))?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in &rows {
        let job = raw_job(row).map_err(pg("reading jobs"))?;
        let tries = tx
            .query(&attempts, &[&job.id])
            .map_err(pg("reading attempts"))?
            .iter()
            .map(|r| {
                raw_attempt(r)
                    .map_err(pg("reading attempts"))
                    .and_then(|a| a.check(job.id))
            })
            .collect::<Result<Vec<AttemptRow>, _>>()?;
        jobs.push(job.check(tries)?);
    }
    tx.commit().map_err(pg("reading jobs"))?;
    Ok(jobs)
}

fn result_of(
    tx: &mut postgres::Transaction<'_>,
    job: JobKey,
) -> Result<Option<String>, HistoryError> {
    tx.query_opt(
        "SELECT result FROM jobs WHERE id = $1 FOR UPDATE",
        &[&job.0],
    )
    .and_then(|r| r.map(|r| r.try_get(0)).transpose())
    .map_err(pg("looking a job up"))
}

impl HistoryStore for PgHistory {
    fn start_job(&self, job: &NewJob) -> Result<JobKey, HistoryError> {
        let daemon_job = job.daemon_job.and_then(|n| i64::try_from(n).ok());
        let row = self
            .lock()
            .query_one(
                "INSERT INTO jobs (station, daemon_job, ecid, serial, udid, product_type, port, \
                 ipsw, ipsw_sha256, build_version, behavior, started_ms, result) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'running') \
                 RETURNING id",
                &[
                    &job.station,
                    &daemon_job,
                    &ecid_text(job.ecid),
                    &job.serial,
                    &job.udid,
                    &job.product_type,
                    &job.port,
                    &job.ipsw,
                    &job.ipsw_sha256,
                    &job.build_version,
                    &job.behavior,
                    &ms(job.started),
                ],
            )
            .map_err(pg("recording a new job"))?;
        let id: i64 = row.try_get(0).map_err(pg("recording a new job"))?;
        Ok(JobKey(id))
    }

    fn start_attempt(&self, job: JobKey, started: SystemTime) -> Result<AttemptKey, HistoryError> {
        let mut client = self.lock();
        let mut tx = client.transaction().map_err(pg("recording an attempt"))?;
        match result_of(&mut tx, job)? {
            None => return Err(HistoryError::UnknownJob(job)),
            Some(r) if r != JobResult::Running.as_str() => return Err(HistoryError::Ended(job)),
            Some(_) => {}
        }
        let n: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(n), 0) + 1 FROM attempts WHERE job = $1",
                &[&job.0],
            )
            .and_then(|r| r.try_get(0))
            .map_err(pg("numbering an attempt"))?;
        tx.execute(
            "INSERT INTO attempts (job, n, started_ms) VALUES ($1, $2, $3)",
            &[&job.0, &n, &ms(started)],
        )
        .map_err(pg("recording an attempt"))?;
        tx.commit().map_err(pg("recording an attempt"))?;
        let n = u32::try_from(n)
            .map_err(|_| corrupt(job.0, "attempts.n", &n.to_string(), "an attempt number"))?;
        Ok(AttemptKey { job, n })
    }

    fn end_attempt(
        &self,
        attempt: AttemptKey,
        outcome: &AttemptOutcome,
    ) -> Result<(), HistoryError> {
        let f = outcome.failure.as_ref();
        let evidence = f
            .map(|f| &f.evidence)
            .filter(|e| !e.is_null())
            .map(serde_json::Value::to_string);
        let changed = self
            .lock()
            .execute(
                "UPDATE attempts SET ended_ms = $3, phase_reached = $4, failure_phase = $5, \
                 failure_cause = $6, failure_number = $7, failure_message = $8, evidence = $9 \
                 WHERE job = $1 AND n = $2",
                &[
                    &attempt.job.0,
                    &i64::from(attempt.n),
                    &ms(outcome.ended),
                    &outcome.phase_reached.name(),
                    &f.map(|f| f.phase.as_str()),
                    &f.and_then(|f| f.cause.as_deref()),
                    &f.and_then(|f| f.number),
                    &f.map(|f| f.message.as_str()),
                    &evidence,
                ],
            )
            .map_err(pg("recording an attempt's end"))?;
        if changed == 0 {
            return Err(HistoryError::UnknownAttempt(attempt));
        }
        Ok(())
    }

    fn end_job(&self, job: JobKey, end: &JobEnd) -> Result<(), HistoryError> {
        if end.result == JobResult::Running {
            return Err(HistoryError::NotAnEnd(job));
        }
        let mut client = self.lock();
        let mut tx = client.transaction().map_err(pg("recording a job's end"))?;
        match result_of(&mut tx, job)? {
            None => return Err(HistoryError::UnknownJob(job)),
            Some(r) if r != JobResult::Running.as_str() => return Err(HistoryError::Ended(job)),
            Some(_) => {}
        }
        tx.execute(
            "UPDATE jobs SET ended_ms = $2, result = $3, number = $4, advice = $5, error = $6 \
             WHERE id = $1",
            &[
                &job.0,
                &ms(end.ended),
                &end.result.as_str(),
                &end.number,
                &end.advice,
                &end.error,
            ],
        )
        .map_err(pg("recording a job's end"))?;
        tx.execute(
            "UPDATE attempts SET ended_ms = $2 WHERE job = $1 AND ended_ms IS NULL",
            &[&job.0, &ms(end.ended)],
        )
        .map_err(pg("closing a job's open attempt"))?;
        tx.commit().map_err(pg("recording a job's end"))
    }

    fn unfinished(&self) -> Result<Vec<JobRow>, HistoryError> {
        select(&mut self.lock(), "result = 'running'", &[])
    }

    fn unfinished_on(&self, station: Option<&str>) -> Result<Vec<JobRow>, HistoryError> {
        select(
            &mut self.lock(),
            "result = 'running' AND station IS NOT DISTINCT FROM $1::TEXT",
            &[&station],
        )
    }

    fn reach_phase(&self, attempt: AttemptKey, phase: Phase) -> Result<(), HistoryError> {
        let changed = self
            .lock()
            .execute(
                "UPDATE attempts SET phase_reached = $3 WHERE job = $1 AND n = $2 \
                 AND ended_ms IS NULL",
                &[&attempt.job.0, &i64::from(attempt.n), &phase.name()],
            )
            .map_err(pg("recording the phase an attempt reached"))?;
        if changed == 0 {
            return Err(HistoryError::UnknownAttempt(attempt));
        }
        Ok(())
    }

    fn interrupt(&self, job: JobKey, ended: SystemTime) -> Result<Vec<u32>, HistoryError> {
        let mut client = self.lock();
        let mut tx = client
            .transaction()
            .map_err(pg("ending interrupted attempts"))?;
        match result_of(&mut tx, job)? {
            None => return Err(HistoryError::UnknownJob(job)),
            Some(r) if r != JobResult::Running.as_str() => return Err(HistoryError::Ended(job)),
            Some(_) => {}
        }
        let rows = tx
            .query(
                "UPDATE attempts SET ended_ms = $2, \
                 failure_phase = COALESCE(phase_reached, $3), failure_cause = $4, \
                 failure_number = NULL, failure_message = $5, evidence = NULL \
                 WHERE job = $1 AND ended_ms IS NULL RETURNING n",
                &[
                    &job.0,
                    &ms(ended),
                    &UNKNOWN_PHASE,
                    &INTERRUPTED,
                    &INTERRUPTED_MESSAGE,
                ],
            )
            .map_err(pg("ending interrupted attempts"))?;
        tx.commit().map_err(pg("ending interrupted attempts"))?;
        let mut ended_attempts = rows
            .iter()
            .map(|r| {
                let n: i64 = r.try_get(0).map_err(pg("ending interrupted attempts"))?;
                u32::try_from(n)
                    .map_err(|_| corrupt(job.0, "attempts.n", &n.to_string(), "an attempt number"))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        ended_attempts.sort_unstable();
        Ok(ended_attempts)
    }

    fn query(&self, filter: &Filter) -> Result<Vec<JobRow>, HistoryError> {
        let since = filter.since.map(ms);
        let until = filter.until.map(ms);
        let ecid = filter.ecid.map(ecid_text);
        select(
            &mut self.lock(),
            "($1::BIGINT IS NULL OR started_ms >= $1) AND ($2::BIGINT IS NULL OR started_ms < $2) \
             AND ($3::TEXT IS NULL OR ecid = $3)",
            &[&since, &until, &ecid],
        )
    }

    fn record_port_observation(
        &self,
        station: Option<&str>,
        o: &Observation,
    ) -> Result<(), HistoryError> {
        self.lock()
            .execute(
                "INSERT INTO port_observations (station, port, ecid, at_ms, signal, number, \
                 cause, speed, bytes_per_sec) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &station,
                    &o.port,
                    &ecid_text(o.ecid),
                    &i64::try_from(o.at_ms).unwrap_or(i64::MAX),
                    &o.signal.as_str(),
                    &o.number,
                    &o.cause,
                    &o.speed.and_then(speed_text),
                    &o.bytes_per_sec.and_then(|b| i64::try_from(b).ok()),
                ],
            )
            .map_err(pg("recording a port observation"))?;
        Ok(())
    }

    fn port_observations(
        &self,
        station: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Observation>, HistoryError> {
        let rows = self
            .lock()
            .query(
                &format!(
                    "SELECT {OBSERVATION_COLUMNS} FROM port_observations \
                     WHERE station IS NOT DISTINCT FROM $1::TEXT \
                     ORDER BY at_ms DESC, id DESC LIMIT $2"
                ),
                &[&station, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .map_err(pg("reading port observations"))?;
        let raw = rows
            .iter()
            .map(raw_observation)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pg("reading port observations"))?;
        Ok(raw
            .into_iter()
            .rev()
            .filter_map(RawObservation::check)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same behaviour as the SQLite store, on a real server: set
    /// `RESTATION_TEST_POSTGRES` to the URL of a throwaway database (its `jobs`, `attempts`,
    /// `port_observations` and `restation_schema` tables are dropped first).
    #[test]
    fn the_postgres_store_conforms() {
        let Ok(url) = std::env::var("RESTATION_TEST_POSTGRES") else {
            eprintln!("SKIP: set RESTATION_TEST_POSTGRES=postgres://… (a throwaway database)");
            return;
        };
        let mut client = Client::connect(&url, NoTls).unwrap();
        client
            .batch_execute(
                "DROP TABLE IF EXISTS attempts; DROP TABLE IF EXISTS jobs; \
                 DROP TABLE IF EXISTS port_observations; \
                 DROP TABLE IF EXISTS restation_schema;",
            )
            .unwrap();
        assert!(matches!(
            PgHistory::connect_read_only(&url),
            Err(HistoryError::OlderSchema { found: 0, .. })
        ));
        let store = PgHistory::connect(&url).unwrap();
        // Connecting again migrates nothing twice.
        let again = PgHistory::connect(&url).unwrap();
        assert_eq!(version(&mut again.lock()).unwrap(), SCHEMA_VERSION);
        super::super::tests::conformance(&store);
        // A reader sees what the writer wrote.
        let reader = PgHistory::connect_read_only(&url).unwrap();
        assert_eq!(reader.query(&Filter::default()).unwrap().len(), 5);
        client
            .execute("UPDATE restation_schema SET version = version + 1", &[])
            .unwrap();
        assert!(matches!(
            PgHistory::connect(&url),
            Err(HistoryError::NewerSchema { .. })
        ));
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://bench:s3cret@db.shop.lan:5432/history"),
            "postgres://bench@db.shop.lan:5432/history"
        );
        assert_eq!(redact("postgres://db/history"), "postgres://db/history");
        assert_eq!(redact("host=db user=bench"), "host=db user=bench");
    }
}
