//! The content-addressed firmware store. Layout under the root:
//!
//! ```text
//! <sha256>.ipsw        a verified IPSW, named by the SHA-256 of its bytes
//! <sha256>.json        its record (Record): source, hashes, version, identities, verification
//! tmp/<key>.part       work in progress, never served; removed on failure
//! locks/<key>.lock     flock held while one source is staged (others wait, then find it)
//! quarantine/          files that no longer match their record, moved aside by `verify`
//! ```
//!
//! Root: `--store DIR`, else `$RESTATION_STORE`, else `$XDG_CACHE_HOME/restation/ipsw`, else
//! `~/.cache/restation/ipsw` (the service uses `/var/cache/restation/ipsw`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::archive::{Archive, ReadAt};
use crate::digest::{Algorithm, Digest};
use crate::error::Error;
use crate::verify::{pass, PassResult, Prepared, Sink};

/// The store path a system service uses.
pub const SERVICE_STORE: &str = "/var/cache/restation/ipsw";

/// One build identity, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySummary {
    /// ApChipID.
    pub cpid: u32,
    /// ApBoardID.
    pub bdid: u32,
    /// Board config.
    pub device_class: String,
    /// Erase / Update.
    pub behavior: String,
    /// Variant.
    pub variant: String,
}

/// The state of a staged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Hashes and component digests matched at `verified_at`.
    Verified,
    /// It no longer matched and was moved to quarantine.
    Quarantined,
}

/// The record kept next to each staged IPSW.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The SHA-256, which is the file's name in the store.
    pub id: String,
    /// File name it came with.
    pub original_name: String,
    /// Path or URL it was staged from.
    pub source: String,
    /// Source size and mtime (seconds) when it was a local file.
    pub source_stamp: Option<(u64, i64)>,
    /// Bytes.
    pub size: u64,
    /// Whole-file SHA-1 (hex).
    pub sha1: String,
    /// Whole-file SHA-256 (hex).
    pub sha256: String,
    /// ProductVersion.
    pub product_version: String,
    /// ProductBuildVersion.
    pub product_build_version: String,
    /// SupportedProductTypes.
    pub supported_product_types: Vec<String>,
    /// Every build identity.
    pub identities: Vec<IdentitySummary>,
    /// Component digests checked.
    pub components_checked: usize,
    /// Components whose digest is not over member bytes (not checked).
    pub components_skipped: Vec<String>,
    /// Unix seconds.
    pub staged_at: u64,
    /// Unix seconds of the last successful verification.
    pub verified_at: u64,
    /// Verified or quarantined.
    pub status: Status,
}

/// What happened in a staging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for another staging of the same source.
    Waiting,
    /// Downloading into the store.
    Download,
    /// Reading, hashing (and copying) the file.
    Verify,
}

/// A progress report: `done` of `total` bytes in `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Which phase.
    pub phase: Phase,
    /// Bytes so far.
    pub done: u64,
    /// Bytes expected, when known.
    pub total: Option<u64>,
}

/// Wraps the `.part` file before the pass writes to it (tests inject a failing disk; a
/// deployment could throttle).
pub type SinkWrapper = Box<dyn Fn(File) -> Box<dyn Write + Send> + Sync>;

/// Options of a staging.
#[derive(Default)]
pub struct StageOptions<'a> {
    /// Expected whole-file SHA-1.
    pub sha1: Option<Digest>,
    /// Expected whole-file SHA-256.
    pub sha256: Option<Digest>,
    /// Progress callback.
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    /// Sink wrapper for the `.part` writes.
    pub wrap_sink: Option<SinkWrapper>,
}

/// The outcome of a staging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The record.
    pub record: Record,
    /// The file in the store.
    pub path: PathBuf,
    /// True when it was already staged and nothing was read.
    pub already: bool,
}

/// The outcome of a re-verification.
#[derive(Debug)]
pub enum VerifyOutcome {
    /// Still matches.
    Intact(Record),
    /// No longer matches; moved to `moved_to`.
    Quarantined {
        /// The record (status Quarantined).
        record: Record,
        /// Why.
        reason: Error,
        /// Where the file went.
        moved_to: PathBuf,
    },
}

/// A firmware store rooted at a folder.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn key_of(text: &str) -> String {
    Algorithm::Sha256.digest(text.as_bytes()).to_hex()[..32].to_owned()
}

/// Removes a file on drop unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

struct Lock {
    _file: File,
}

fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
}

impl Store {
    /// The default root (see the module docs).
    pub fn default_root() -> PathBuf {
        if let Some(s) = std::env::var_os("RESTATION_STORE").filter(|s| !s.is_empty()) {
            return PathBuf::from(s);
        }
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|s| !s.is_empty()) {
            return PathBuf::from(x).join("restation/ipsw");
        }
        match std::env::var_os("HOME").filter(|s| !s.is_empty()) {
            Some(h) => PathBuf::from(h).join(".cache/restation/ipsw"),
            None => PathBuf::from(SERVICE_STORE),
        }
    }

    /// Open (creating) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, Error> {
        let root = root.into();
        for d in [
            root.clone(),
            root.join("tmp"),
            root.join("locks"),
            root.join("quarantine"),
        ] {
            fs::create_dir_all(&d).map_err(Error::io("create folder", &d))?;
        }
        Ok(Store { root })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the IPSW with this record lives.
    pub fn path_of(&self, record: &Record) -> PathBuf {
        self.root.join(format!("{}.ipsw", record.id))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.json"))
    }

    fn lock(&self, key: &str, progress: Option<&(dyn Fn(Progress) + Sync)>) -> Result<Lock, Error> {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open lock", &path))?;
        use rustix::fs::{flock, FlockOperation};
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            if let Some(p) = progress {
                p(Progress {
                    phase: Phase::Waiting,
                    done: 0,
                    total: None,
                });
            }
            flock(&file, FlockOperation::LockExclusive).map_err(|e| Error::Io {
                op: "lock",
                path: path.clone(),
                source: e.into(),
            })?;
        }
        Ok(Lock { _file: file })
    }

    /// Every record, newest first.
    pub fn list(&self) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.root).map_err(Error::io("list", &self.root))?;
        for entry in rd {
            let entry = entry.map_err(Error::io("list", &self.root))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            out.push(self.read_record(&path)?);
        }
        out.sort_by(|a, b| b.staged_at.cmp(&a.staged_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn read_record(&self, path: &Path) -> Result<Record, Error> {
        let bytes = fs::read(path).map_err(Error::io("read", path))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Sidecar {
            path: path.to_path_buf(),
            source: e,
        })
    }

    fn write_record(&self, record: &Record) -> Result<(), Error> {
        let path = self.record_path(&record.id);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.json.part", record.id));
        let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Sidecar {
            path: path.clone(),
            source: e,
        })?;
        let mut f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        f.write_all(&json)
            .and_then(|()| f.sync_all())
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::Io {
                    op: "write",
                    path: tmp.clone(),
                    source: e,
                }
            })?;
        fs::rename(&tmp, &path).map_err(Error::io("rename", &path))
    }

    /// The record whose id (SHA-256) starts with `id`.
    pub fn find(&self, id: &str) -> Result<Record, Error> {
        let id_l = id.to_ascii_lowercase();
        let matches: Vec<Record> = self
            .list()?
            .into_iter()
            .filter(|r| r.id.starts_with(&id_l))
            .collect();
        match matches.len() {
            0 => Err(Error::NotStaged { id: id.to_owned() }),
            1 => matches
                .into_iter()
                .next()
                .ok_or(Error::NotStaged { id: id.to_owned() }),
            _ => Err(Error::AmbiguousId {
                id: id.to_owned(),
                matches: matches.into_iter().map(|r| r.id).collect(),
            }),
        }
    }

    fn already(
        &self,
        opts: &StageOptions<'_>,
        source: &str,
        stamp: Option<(u64, i64)>,
    ) -> Result<Option<Staged>, Error> {
        for r in self.list()? {
            let by_hash = opts.sha256.as_ref().is_some_and(|d| d.to_hex() == r.sha256)
                || opts.sha1.as_ref().is_some_and(|d| d.to_hex() == r.sha1);
            let by_source = r.source == source && r.source_stamp == stamp;
            let path = self.path_of(&r);
            if (by_hash || by_source) && r.status == Status::Verified && path.exists() {
                return Ok(Some(Staged {
                    record: r,
                    path,
                    already: true,
                }));
            }
        }
        Ok(None)
    }

    /// Stage a local IPSW: one pass copies it into `tmp/` while hashing it whole and checking
    /// every component digest; only then is it synced and renamed into place.
    pub fn stage_file(&self, src: &Path, opts: &StageOptions<'_>) -> Result<Staged, Error> {
        let canon = fs::canonicalize(src).map_err(Error::io("open", src))?;
        let meta = fs::metadata(&canon).map_err(Error::io("stat", &canon))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let stamp = Some((meta.len(), mtime));
        let source = canon.display().to_string();
        let key = key_of(&format!("file:{source}"));
        let _lock = self.lock(&key, opts.progress)?;
        if let Some(s) = self.already(opts, &source, stamp)? {
            return Ok(s);
        }
        let file = File::open(&canon).map_err(Error::io("open", &canon))?;
        let len = meta.len();
        let prepared = Prepared::read(&file, len, &canon)?;

        let part = self.root.join("tmp").join(format!("{key}.part"));
        let guard = RemoveOnDrop(Some(part.clone()));
        let out = File::create(&part).map_err(Error::io("create", &part))?;
        let sink: Box<dyn Write + Send> = match &opts.wrap_sink {
            Some(w) => w(out),
            None => Box::new(SyncingFile {
                file: out,
                unsynced: 0,
            }),
        };
        let part_for_err = part.clone();
        let sink_error = move |e: std::io::Error, written: u64| {
            if is_enospc(&e) {
                Error::DiskFull {
                    path: part_for_err.clone(),
                    written,
                }
            } else {
                Error::Io {
                    op: "write",
                    path: part_for_err.clone(),
                    source: e,
                }
            }
        };
        let canon_err = canon.clone();
        let read_error = move |e: std::io::Error| Error::Io {
            op: "read",
            path: canon_err.clone(),
            source: e,
        };
        let progress = |done| {
            if let Some(p) = opts.progress {
                p(Progress {
                    phase: Phase::Verify,
                    done,
                    total: Some(len),
                });
            }
        };
        let result = pass(
            &file,
            Some(&prepared.plan),
            Some(sink),
            &sink_error,
            &read_error,
            &progress,
        )?;
        if result.bytes != len {
            return Err(Error::SourceChanged { path: canon });
        }
        check_whole(opts, &result)?;
        // The copy must have the layout that was planned (the source did not change under us).
        let copy = File::open(&part).map_err(Error::io("open", &part))?;
        let copy_layout = Archive::read(&copy, len, &part)?;
        if copy_layout != prepared.archive {
            return Err(Error::SourceChanged { path: canon });
        }
        let name = canon
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staged = self.commit(&part, &copy, &prepared, &result, name, source, stamp)?;
        std::mem::forget(guard);
        Ok(staged)
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        part: &Path,
        part_file: &File,
        prepared: &Prepared,
        result: &PassResult,
        original_name: String,
        source: String,
        source_stamp: Option<(u64, i64)>,
    ) -> Result<Staged, Error> {
        part_file.sync_all().map_err(Error::io("sync", part))?;
        let id = result.sha256.to_hex();
        let dest = self.root.join(format!("{id}.ipsw"));
        let m = &prepared.manifest;
        let t = now();
        let record = Record {
            id: id.clone(),
            original_name,
            source,
            source_stamp,
            size: result.bytes,
            sha1: result.sha1.to_hex(),
            sha256: id.clone(),
            product_version: m.product_version.clone(),
            product_build_version: m.product_build_version.clone(),
            supported_product_types: m.supported_product_types.clone(),
            identities: m
                .identities
                .iter()
                .map(|i| IdentitySummary {
                    cpid: i.ap_chip_id,
                    bdid: i.ap_board_id,
                    device_class: i.info.device_class.clone(),
                    behavior: i.info.restore_behavior.to_string(),
                    variant: i.info.variant.clone(),
                })
                .collect(),
            components_checked: result.checked,
            components_skipped: prepared.plan.skipped.clone(),
            staged_at: t,
            verified_at: t,
            status: Status::Verified,
        };
        let renamed = if dest.exists() {
            // The same bytes came from elsewhere: keep the verified file, drop the copy.
            let _ = fs::remove_file(part);
            false
        } else {
            fs::rename(part, &dest).map_err(Error::io("rename", &dest))?;
            true
        };
        if let Err(e) = self.write_record(&record) {
            // Without its record the file must not stay where a restore could find it.
            if renamed {
                let _ = fs::remove_file(&dest);
            }
            return Err(e);
        }
        if let Ok(dir) = File::open(&self.root) {
            let _ = dir.sync_all();
        }
        Ok(Staged {
            record,
            path: dest,
            already: false,
        })
    }

    /// Stage from an `http(s)://` URL: download into `tmp/` (resuming with `Range` after an
    /// interruption, also across runs), then verify the download in one pass like a local file.
    pub fn stage_url(&self, url: &str, opts: &StageOptions<'_>) -> Result<Staged, Error> {
        let key = key_of(&format!("url:{url}"));
        let _lock = self.lock(&key, opts.progress)?;
        if let Some(s) = self.already(opts, url, None)? {
            return Ok(s);
        }
        let part = self.root.join("tmp").join(format!("{key}.download.part"));
        download(url, &part, opts)?;
        let guard = RemoveOnDrop(Some(part.clone()));
        let file = File::open(&part).map_err(Error::io("open", &part))?;
        let len = file.metadata().map_err(Error::io("stat", &part))?.len();
        let prepared = Prepared::read(&file, len, &part)?;
        let result = self.check_pass(&file, &part, len, &prepared, opts.progress)?;
        check_whole(opts, &result)?;
        let name = url
            .rsplit('/')
            .next()
            .and_then(|n| n.split(['?', '#']).next())
            .unwrap_or_default()
            .to_owned();
        let staged = self.commit(&part, &file, &prepared, &result, name, url.to_owned(), None)?;
        std::mem::forget(guard);
        Ok(staged)
    }

    fn check_pass(
        &self,
        file: &File,
        path: &Path,
        len: u64,
        prepared: &Prepared,
        progress: Option<&(dyn Fn(Progress) + Sync)>,
    ) -> Result<PassResult, Error> {
        let p = path.to_path_buf();
        let read_error = move |e: std::io::Error| Error::Io {
            op: "read",
            path: p.clone(),
            source: e,
        };
        let no_sink = |e: std::io::Error, _| Error::Io {
            op: "write",
            path: PathBuf::new(),
            source: e,
        };
        let report = |done| {
            if let Some(p) = progress {
                p(Progress {
                    phase: Phase::Verify,
                    done,
                    total: Some(len),
                });
            }
        };
        let sink: Sink<'_> = None;
        pass(
            file,
            Some(&prepared.plan),
            sink,
            &no_sink,
            &read_error,
            &report,
        )
    }

    /// Re-check a staged IPSW (its hashes and every component digest); a file that no longer
    /// matches is moved to `quarantine/` with its record, so it is never served.
    pub fn verify(
        &self,
        id: &str,
        progress: Option<&(dyn Fn(Progress) + Sync)>,
    ) -> Result<VerifyOutcome, Error> {
        let mut record = self.find(id)?;
        let path = self.path_of(&record);
        let check = || -> Result<PassResult, Error> {
            let file = File::open(&path).map_err(Error::io("open", &path))?;
            let len = file.metadata().map_err(Error::io("stat", &path))?.len();
            let prepared = Prepared::read(&file, len, &path)?;
            let result = self.check_pass(&file, &path, len, &prepared, progress)?;
            let expect = |alg: Algorithm, hex: &str, actual: &Digest| -> Result<(), Error> {
                let expected = Digest::from_hex(hex)?;
                if &expected != actual {
                    return Err(Error::WholeFileHash {
                        algorithm: alg,
                        expected,
                        actual: actual.clone(),
                    });
                }
                Ok(())
            };
            expect(Algorithm::Sha256, &record.sha256, &result.sha256)?;
            expect(Algorithm::Sha1, &record.sha1, &result.sha1)?;
            Ok(result)
        };
        match check() {
            Ok(_) => {
                record.verified_at = now();
                self.write_record(&record)?;
                Ok(VerifyOutcome::Intact(record))
            }
            Err(reason) => {
                let q = self.root.join("quarantine");
                let moved_to = q.join(format!("{}.ipsw", record.id));
                if path.exists() {
                    fs::rename(&path, &moved_to).map_err(Error::io("quarantine", &moved_to))?;
                }
                record.status = Status::Quarantined;
                let rec_q = q.join(format!("{}.json", record.id));
                let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Sidecar {
                    path: rec_q.clone(),
                    source: e,
                })?;
                fs::write(&rec_q, json).map_err(Error::io("write", &rec_q))?;
                let rp = self.record_path(&record.id);
                fs::remove_file(&rp).map_err(Error::io("remove", &rp))?;
                Ok(VerifyOutcome::Quarantined {
                    record,
                    reason,
                    moved_to,
                })
            }
        }
    }
}

fn check_whole(opts: &StageOptions<'_>, result: &PassResult) -> Result<(), Error> {
    for (expected, actual) in [(&opts.sha1, &result.sha1), (&opts.sha256, &result.sha256)] {
        if let Some(e) = expected {
            if e.algorithm() != actual.algorithm() {
                return Err(Error::DigestLength {
                    len: e.as_bytes().len(),
                });
            }
            if e != actual {
                return Err(Error::WholeFileHash {
                    algorithm: actual.algorithm(),
                    expected: e.clone(),
                    actual: actual.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Bytes of an `http(s)` download into `part`, resuming from what `part` already holds.
fn download(url: &str, part: &Path, opts: &StageOptions<'_>) -> Result<(), Error> {
    let derr = |reason: String| Error::Download {
        url: url.to_owned(),
        reason,
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(derr("only http:// and https:// URLs can be staged".into()));
    }
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .build();
    const MAX_ATTEMPTS: u32 = 20;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        let mut req = agent.get(url);
        if have > 0 {
            req = req.set("Range", &format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, r)) if have > 0 => {
                // Already complete if the server's total is what we hold.
                let total = r
                    .header("Content-Range")
                    .and_then(|v| v.rsplit('/').next())
                    .and_then(|t| t.parse::<u64>().ok());
                if total == Some(have) {
                    return Ok(());
                }
                fs::remove_file(part).map_err(Error::io("remove", part))?;
                continue;
            }
            Err(ureq::Error::Status(status, _)) => {
                return Err(Error::HttpStatus {
                    url: url.to_owned(),
                    status,
                })
            }
            Err(ureq::Error::Transport(t)) => {
                if attempts < 3 && have > 0 {
                    continue;
                }
                let mut reason = t.kind().to_string();
                let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&t);
                while let Some(c) = cause {
                    reason.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                return Err(derr(reason));
            }
        };
        let (mut file, start, total) = match resp.status() {
            206 => {
                let range = resp.header("Content-Range").unwrap_or_default().to_owned();
                let start = range
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                let total = range.rsplit('/').next().and_then(|t| t.parse::<u64>().ok());
                if start != Some(have) {
                    return Err(derr(format!(
                        "asked for bytes from {have}, server sent {range:?}"
                    )));
                }
                let f = OpenOptions::new()
                    .append(true)
                    .open(part)
                    .map_err(Error::io("open", part))?;
                (f, have, total)
            }
            _ => {
                let total = resp
                    .header("Content-Length")
                    .and_then(|v| v.parse::<u64>().ok());
                let f = File::create(part).map_err(Error::io("create", part))?;
                (f, 0, total)
            }
        };
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = start;
        let mut cut = false;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or(&[]);
                    if let Err(e) = file.write_all(data) {
                        let _ = fs::remove_file(part);
                        return Err(if is_enospc(&e) {
                            Error::DiskFull {
                                path: part.to_path_buf(),
                                written: done,
                            }
                        } else {
                            Error::Io {
                                op: "write",
                                path: part.to_path_buf(),
                                source: e,
                            }
                        });
                    }
                    done += n as u64;
                    if let Some(p) = opts.progress {
                        p(Progress {
                            phase: Phase::Download,
                            done,
                            total,
                        });
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
        file.sync_data().map_err(Error::io("sync", part))?;
        let complete = !cut && total.is_none_or(|t| done == t);
        if complete {
            return Ok(());
        }
        if done == start || attempts >= MAX_ATTEMPTS {
            return Err(derr(format!(
                "connection lost at byte {done} and no progress on retry"
            )));
        }
    }
}

/// The `.part` writer: syncs every [`SYNC_EVERY`] bytes so the disk writes back while the
/// pass is still hashing, and the final fsync has little left to wait for.
struct SyncingFile {
    file: File,
    unsynced: u64,
}

/// Bytes between two data syncs of a `.part`.
pub const SYNC_EVERY: u64 = 64 << 20;

impl Write for SyncingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// For tests: a sink that fails with ENOSPC after `limit` bytes.
#[derive(Debug)]
pub struct FailingDisk<W> {
    inner: W,
    left: u64,
}

impl<W: Write> FailingDisk<W> {
    /// Accept `limit` bytes, then fail like a full disk.
    pub fn new(inner: W, limit: u64) -> Self {
        FailingDisk { inner, left: limit }
    }
}

impl<W: Write> Write for FailingDisk<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = buf.len().min(self.left as usize);
        let n = self.inner.write(buf.get(..n).unwrap_or(&[]))?;
        self.left -= n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Read a BuildManifest from either an IPSW (zip) or a plist file.
pub fn read_manifest(
    path: &Path,
) -> Result<
    (
        crate::manifest::BuildManifest,
        Option<crate::manifest::RestoreInfo>,
    ),
    Error,
> {
    let file = File::open(path).map_err(Error::io("open", path))?;
    let len = file.metadata().map_err(Error::io("stat", path))?.len();
    let mut magic = [0u8; 4];
    let is_zip = len >= 4 && file.read_exact_at(&mut magic, 0).is_ok() && &magic == b"PK\x03\x04";
    if is_zip {
        let archive = Archive::read(&file, len, path)?;
        let m = crate::manifest::BuildManifest::from_bytes(&archive.read_member(
            &file,
            "BuildManifest.plist",
            crate::verify::MAX_PLIST,
        )?)?;
        let r = match archive.member("Restore.plist") {
            Some(_) => Some(crate::manifest::RestoreInfo::from_bytes(
                &archive.read_member(&file, "Restore.plist", crate::verify::MAX_PLIST)?,
            )?),
            None => None,
        };
        Ok((m, r))
    } else {
        if len > crate::verify::MAX_PLIST {
            return Err(Error::MemberTooLarge {
                name: path.display().to_string(),
                size: len,
                limit: crate::verify::MAX_PLIST,
            });
        }
        let bytes = fs::read(path).map_err(Error::io("read", path))?;
        Ok((crate::manifest::BuildManifest::from_bytes(&bytes)?, None))
    }
}
