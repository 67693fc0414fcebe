//! The one streaming pass: a reader hands each chunk of the file (shared, never copied) to a
//! SHA-1 thread, a SHA-256 thread, a member thread that hashes every component member whose
//! bytes fall in the chunk (stored members directly, deflated ones through a streaming
//! inflater with a size guard), and optionally a writer thread. The file is read once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use crate::archive::{Archive, Member, Method, ReadAt, MAX_COMPRESSION_RATIO};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::Error;
use crate::manifest::{BuildManifest, RestoreInfo};

/// Chunk size of the pass.
pub const CHUNK: usize = 4 << 20;
const RING: usize = 8;
/// Largest BuildManifest/Restore.plist accepted.
pub const MAX_PLIST: u64 = 64 << 20;

/// One check: this component's digest must match its member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Component name.
    pub component: String,
    /// Expected digest.
    pub expected: Digest,
}

/// One member the pass hashes, with every algorithm any component asks of it.
#[derive(Debug, Clone)]
pub struct PlannedMember {
    /// The zip member.
    pub member: Member,
    /// Algorithms to compute (each once, however many identities use the member).
    pub algorithms: BTreeSet<Algorithm>,
    /// Distinct (component, digest) pairs to check.
    pub checks: Vec<Check>,
}

/// What the pass must hash besides the whole file.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// By data offset.
    pub members: Vec<PlannedMember>,
    /// Components whose digest is not over member bytes (`HashMethod`), not checked.
    pub skipped: Vec<String>,
}

impl Plan {
    /// Number of distinct component checks.
    pub fn check_count(&self) -> usize {
        self.members.iter().map(|m| m.checks.len()).sum()
    }

    /// Build the plan for every identity of `manifest` against `archive`: every `Info.Path`
    /// must be a member, every member digest is planned once per algorithm.
    pub fn new(archive: &Archive, manifest: &BuildManifest) -> Result<Plan, Error> {
        let mut by_path: BTreeMap<&str, PlannedMember> = BTreeMap::new();
        let mut skipped = BTreeSet::new();
        for id in &manifest.identities {
            for c in &id.components {
                let Some(path) = c.path.as_deref() else {
                    continue;
                };
                let member = archive.member(path).ok_or_else(|| Error::MissingMember {
                    component: c.name.clone(),
                    path: path.to_owned(),
                })?;
                let Some(digest) = &c.digest else { continue };
                if c.hash_method.is_some() {
                    skipped.insert(c.name.clone());
                    continue;
                }
                let pm = by_path.entry(path).or_insert_with(|| PlannedMember {
                    member: member.clone(),
                    algorithms: BTreeSet::new(),
                    checks: Vec::new(),
                });
                pm.algorithms.insert(digest.algorithm());
                let check = Check {
                    component: c.name.clone(),
                    expected: digest.clone(),
                };
                if !pm.checks.contains(&check) {
                    pm.checks.push(check);
                }
            }
        }
        let mut members: Vec<PlannedMember> = by_path.into_values().collect();
        members.sort_by_key(|m| m.member.data_offset);
        Ok(Plan {
            members,
            skipped: skipped.into_iter().collect(),
        })
    }
}

/// The manifests of an IPSW and its digest plan, read from the central directory and two
/// small members before the pass.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Zip layout.
    pub archive: Archive,
    /// BuildManifest.plist.
    pub manifest: BuildManifest,
    /// Restore.plist, when the IPSW has one.
    pub restore: Option<RestoreInfo>,
    /// What to hash.
    pub plan: Plan,
}

impl Prepared {
    /// Read layout, manifests and plan from `src`.
    pub fn read<R: ReadAt + ?Sized>(
        src: &R,
        len: u64,
        path: &std::path::Path,
    ) -> Result<Prepared, Error> {
        let archive = Archive::read(src, len, path)?;
        let manifest = BuildManifest::from_bytes(&archive.read_member(
            src,
            "BuildManifest.plist",
            MAX_PLIST,
        )?)?;
        let restore = match archive.member("Restore.plist") {
            Some(_) => Some(RestoreInfo::from_bytes(&archive.read_member(
                src,
                "Restore.plist",
                MAX_PLIST,
            )?)?),
            None => None,
        };
        let plan = Plan::new(&archive, &manifest)?;
        Ok(Prepared {
            archive,
            manifest,
            restore,
            plan,
        })
    }
}

/// Results of a pass.
#[derive(Debug, Clone)]
pub struct PassResult {
    /// Bytes read.
    pub bytes: u64,
    /// Whole-file SHA-1.
    pub sha1: Digest,
    /// Whole-file SHA-256.
    pub sha256: Digest,
    /// Component checks done.
    pub checked: usize,
}

struct Chunk {
    slot: usize,
    offset: u64,
    len: usize,
    data: Arc<Vec<u8>>,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        self.data.get(..self.len).unwrap_or(&[])
    }
}

/// Where a pass writes the bytes it reads (the store's `.part`), or nowhere.
pub type Sink<'a> = Option<Box<dyn Write + Send + 'a>>;

struct MemberState {
    planned: PlannedMember,
    hashers: Vec<Hasher>,
    crc: crc32fast::Hasher,
    inflater: Option<flate2::Decompress>,
    out_buf: Vec<u8>,
    fed: u64,
    produced: u64,
}

impl MemberState {
    fn new(planned: PlannedMember) -> MemberState {
        let inflater =
            (planned.member.method == Method::Deflated).then(|| flate2::Decompress::new(false));
        MemberState {
            hashers: planned.algorithms.iter().map(|a| a.hasher()).collect(),
            crc: crc32fast::Hasher::new(),
            out_buf: if inflater.is_some() {
                vec![0u8; 256 << 10]
            } else {
                Vec::new()
            },
            inflater,
            planned,
            fed: 0,
            produced: 0,
        }
    }

    fn name(&self) -> &str {
        &self.planned.member.name
    }

    fn emit(hashers: &mut [Hasher], crc: &mut crc32fast::Hasher, data: &[u8]) {
        crc.update(data);
        for h in hashers.iter_mut() {
            h.update(data);
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), Error> {
        self.fed += data.len() as u64;
        let declared = self.planned.member.uncompressed_size;
        let Some(inf) = self.inflater.as_mut() else {
            Self::emit(&mut self.hashers, &mut self.crc, data);
            self.produced += data.len() as u64;
            return Ok(());
        };
        let name = self.planned.member.name.clone();
        loop {
            let before_in = inf.total_in();
            let before_out = inf.total_out();
            let status = inf
                .decompress(data, &mut self.out_buf, flate2::FlushDecompress::None)
                .map_err(|e| Error::MemberData {
                    name: name.clone(),
                    reason: format!("deflate data does not inflate: {e}"),
                })?;
            let used = (inf.total_in() - before_in) as usize;
            let made = (inf.total_out() - before_out) as usize;
            data = data.get(used..).unwrap_or(&[]);
            let out = self.out_buf.get(..made).unwrap_or(&[]);
            self.produced += made as u64;
            let ratio_exceeded = self.produced > (1 << 20)
                && self.produced / self.fed.max(1) > MAX_COMPRESSION_RATIO;
            if self.produced > declared || ratio_exceeded {
                return Err(Error::CompressionRatio {
                    name,
                    compressed: self.fed,
                    uncompressed: self.produced,
                    limit: MAX_COMPRESSION_RATIO,
                });
            }
            Self::emit(&mut self.hashers, &mut self.crc, out);
            if status == flate2::Status::StreamEnd || (data.is_empty() && made < self.out_buf.len())
            {
                return Ok(());
            }
            if used == 0 && made == 0 {
                return Ok(());
            }
        }
    }

    fn finish(mut self) -> Result<usize, Error> {
        if self.inflater.is_some() {
            // Drain anything still buffered in the inflater.
            self.feed(&[])?;
        }
        let m = &self.planned.member;
        if self.produced != m.uncompressed_size {
            return Err(Error::MemberData {
                name: self.name().to_owned(),
                reason: format!(
                    "inflates to {} bytes, {} declared",
                    self.produced, m.uncompressed_size
                ),
            });
        }
        let crc = self.crc.finalize();
        if crc != m.crc32 {
            return Err(Error::Crc {
                name: m.name.clone(),
                expected: m.crc32,
                actual: crc,
            });
        }
        let digests: Vec<Digest> = self.hashers.into_iter().map(Hasher::finish).collect();
        for check in &self.planned.checks {
            let actual = digests
                .iter()
                .find(|d| d.algorithm() == check.expected.algorithm())
                .cloned()
                .ok_or_else(|| Error::MemberData {
                    name: m.name.clone(),
                    reason: "internal: digest not planned".into(),
                })?;
            if actual != check.expected {
                return Err(Error::ComponentDigest {
                    component: check.component.clone(),
                    path: m.name.clone(),
                    algorithm: actual.algorithm(),
                    expected: check.expected.clone(),
                    actual,
                });
            }
        }
        Ok(self.planned.checks.len())
    }
}

/// Feeds chunks to the planned members they overlap.
struct MemberPass {
    pending: Vec<PlannedMember>,
    next: usize,
    active: Vec<MemberState>,
    checked: usize,
}

impl MemberPass {
    fn new(plan: &Plan) -> MemberPass {
        MemberPass {
            pending: plan.members.clone(),
            next: 0,
            active: Vec::new(),
            checked: 0,
        }
    }

    fn feed(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let end = offset + data.len() as u64;
        while let Some(p) = self.pending.get(self.next) {
            if p.member.data_offset >= end {
                break;
            }
            self.active.push(MemberState::new(p.clone()));
            self.next += 1;
        }
        let mut i = 0;
        while i < self.active.len() {
            let Some(st) = self.active.get_mut(i) else {
                break;
            };
            let (start, stop) = (st.planned.member.data_offset, st.planned.member.data_end());
            let from = start.max(offset);
            let to = stop.min(end);
            if from < to {
                let slice = data
                    .get((from - offset) as usize..(to - offset) as usize)
                    .unwrap_or(&[]);
                st.feed(slice)?;
            }
            if stop <= end {
                let st = self.active.swap_remove(i);
                self.checked += st.finish()?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<usize, Error> {
        // Zero-length members at the very end, or members the file was too short for.
        self.feed(u64::MAX - 1, &[])?;
        if let Some(st) = self.active.first() {
            return Err(Error::MemberData {
                name: st.name().to_owned(),
                reason: "the file ends inside this member".into(),
            });
        }
        Ok(self.checked)
    }
}

fn consumer<T>(
    rx: Receiver<Arc<Chunk>>,
    done: mpsc::Sender<usize>,
    abort: &AtomicBool,
    mut work: impl FnMut(&Chunk) -> Result<(), Error>,
    finish: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let mut failed = None;
    for chunk in rx {
        if failed.is_none() {
            if let Err(e) = work(&chunk) {
                failed = Some(e);
                abort.store(true, Ordering::SeqCst);
            }
        }
        let slot = chunk.slot;
        drop(chunk);
        let _ = done.send(slot);
    }
    match failed {
        Some(e) => Err(e),
        None => finish(),
    }
}

fn join<T>(r: std::thread::Result<Result<T, Error>>) -> Result<T, Error> {
    r.unwrap_or_else(|_| {
        Err(Error::MemberData {
            name: String::new(),
            reason: "internal: a hashing thread panicked".into(),
        })
    })
}

/// Read `src` once, to its end: hash it whole (SHA-1 and SHA-256 on their own threads), hash
/// the planned members, and copy it to `sink`. `progress` sees bytes read so far.
/// `sink_error` turns a sink write error into the error to report.
pub fn pass<R: Read>(
    mut src: R,
    plan: Option<&Plan>,
    sink: Sink<'_>,
    sink_error: &(dyn Fn(std::io::Error, u64) -> Error + Sync),
    read_error: &(dyn Fn(std::io::Error) -> Error + Sync),
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PassResult, Error> {
    let abort = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<usize>();
        let mut senders: Vec<SyncSender<Arc<Chunk>>> = Vec::new();
        let mut spawn_hash = |alg: Algorithm| {
            let (tx, rx) = mpsc::sync_channel::<Arc<Chunk>>(RING);
            senders.push(tx);
            let done = done_tx.clone();
            let abort = &abort;
            scope.spawn(move || {
                let mut h = alg.hasher();
                let hr = &mut h;
                let r = consumer(
                    rx,
                    done,
                    abort,
                    |c| {
                        hr.update(c.bytes());
                        Ok(())
                    },
                    || Ok(()),
                );
                r.map(|()| h.finish())
            })
        };
        let sha1 = spawn_hash(Algorithm::Sha1);
        let sha256 = spawn_hash(Algorithm::Sha256);
        let members = plan.map(|plan| {
            let (tx, rx) = mpsc::sync_channel::<Arc<Chunk>>(RING);
            senders.push(tx);
            let done = done_tx.clone();
            let abort = &abort;
            scope.spawn(move || {
                let mut mp = MemberPass::new(plan);
                let mpr = &mut mp;
                consumer(
                    rx,
                    done,
                    abort,
                    |c| mpr.feed(c.offset, c.bytes()),
                    || Ok(()),
                )?;
                mp.finish()
            })
        });
        let writer = sink.map(|mut sink| {
            let (tx, rx) = mpsc::sync_channel::<Arc<Chunk>>(RING);
            senders.push(tx);
            let done = done_tx.clone();
            let abort = &abort;
            scope.spawn(move || {
                let mut written = 0u64;
                let w = &mut written;
                let s = &mut sink;
                consumer(
                    rx,
                    done,
                    abort,
                    |c| {
                        s.write_all(c.bytes()).map_err(|e| sink_error(e, *w))?;
                        *w += c.len as u64;
                        Ok(())
                    },
                    || Ok(()),
                )?;
                sink.flush().map_err(|e| sink_error(e, written))
            })
        });
        drop(done_tx);

        let consumers = senders.len();
        let mut ring: Vec<Arc<Vec<u8>>> = (0..RING).map(|_| Arc::new(Vec::new())).collect();
        let mut pending = [0usize; RING];
        let mut offset = 0u64;
        let mut read_result: Result<(), Error> = Ok(());
        'outer: for slot in (0..RING).cycle() {
            while pending[slot] > 0 {
                match done_rx.recv() {
                    Ok(s) => {
                        if let Some(p) = pending.get_mut(s) {
                            *p = p.saturating_sub(1);
                        }
                    }
                    Err(_) => break 'outer,
                }
            }
            if abort.load(Ordering::SeqCst) {
                break;
            }
            let Some(buf) = ring.get_mut(slot).and_then(Arc::get_mut) else {
                break;
            };
            if buf.len() != CHUNK {
                buf.resize(CHUNK, 0);
            }
            let mut len = 0;
            while len < CHUNK {
                match src.read(buf.get_mut(len..).unwrap_or(&mut [])) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        read_result = Err(read_error(e));
                        break 'outer;
                    }
                }
            }
            if len == 0 {
                break;
            }
            let Some(data) = ring.get(slot).cloned() else {
                break;
            };
            let chunk = Arc::new(Chunk {
                slot,
                offset,
                len,
                data,
            });
            for tx in &senders {
                if tx.send(chunk.clone()).is_ok() {
                    pending[slot] += 1;
                }
            }
            drop(chunk);
            offset += len as u64;
            progress(offset);
            if len < CHUNK {
                break;
            }
        }
        drop(senders);
        let w = writer.map(|h| join(h.join()));
        let m = members.map(|h| join(h.join()));
        let sha1 = join(sha1.join());
        let sha256 = join(sha256.join());
        let _ = consumers;
        // Order of blame: what the sink said (disk full), what the source said, then content.
        if let Some(Err(e)) = w {
            return Err(e);
        }
        read_result?;
        let checked = match m {
            Some(r) => r?,
            None => 0,
        };
        Ok(PassResult {
            bytes: offset,
            sha1: sha1?,
            sha256: sha256?,
            checked,
        })
    })
}
