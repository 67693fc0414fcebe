//! Normal mode → recovery, the way a phone that insists on a pairing lets a host in
//! (blocking; run by a job's thread): lockdown on port 62078 over the phone's mux link
//! ([`Pump`]), then
//!
//! 1. `QueryType` (lockdownd, not restored), `GetValue` `UniqueDeviceID` and `ProductVersion`;
//! 2. the pair record for that UDID from the pair-record directory the usbmuxd socket serves
//!    ([`PairRecords`]: `/var/lib/lockdown` layout, `SystemConfiguration.plist` holding the
//!    `SystemBUID`), or a new one ([`lockdown::pairing::generate_pair_record`] for the phone's
//!    `DevicePublicKey`) sent with `Pair`. "Trust this computer?" still showing
//!    (`PairingDialogResponsePending`) or a locked phone (`PasswordProtected`) is told to the
//!    technician ([`Prompt`]) and `Pair` is asked again, paced by the job's clock, until the
//!    [`Deadlines::pair`] deadline; "Don't Trust" ends the job with [`EntryError::UserDenied`]. The
//!    new record is saved (owner-only, as usbmuxd's `SavePairRecord` does);
//! 3. `ValidatePair` (phones before iOS 7, which want it), then `StartSession` with the record's
//!    `HostID` and the host's `SystemBUID`; a phone that no longer knows a saved record
//!    (`InvalidHostID`: it was erased, or unpaired) is paired again, once;
//! 4. `EnableSessionSSL`: TLS on the same connection, rustls pinned to the record
//!    ([`lockdown::tls::client_config`]), driven over the pump by a small sync adapter;
//! 5. `EnterRecovery` inside the session. The phone reboots once the reply is out.
//!
//! Nothing here sleeps: every wait is the job's [`Clock`] or the pump's own read deadline.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use irecv::dfu::Clock;
use lockdown::pairing::{pair_outcome, pair_request, validate_pair_request, PairOutcome};
use lockdown::{DaemonType, ErrorKind, HostCodec, PairRecordFile, Reply, Request};
use plist::Value;
use restore::phase::Deadlines;
use usb::UsbDevice;
use usbmux::ConnId;

use super::session::{Pump, SessionError};

/// How long lockdown may take to answer one request (and the TLS handshake, all of it).
pub const LOCKDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `Pair` is asked again while the phone waits for its user.
pub const PAIR_RETRY: Duration = Duration::from_secs(1);
/// The file holding the host's `SystemBUID` in the pair-record directory (as usbmuxd keeps it).
pub const SYSTEM_CONFIGURATION: &str = super::muxd::SYSTEM_CONFIGURATION;
/// The label restation's lockdown requests carry.
const LABEL: &str = "restation";

/// Something the technician has to do at the phone before the job can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prompt {
    /// "Trust this computer?" is showing.
    TapTrust,
    /// The phone is locked with a passcode.
    Unlock,
}

impl Prompt {
    /// The line shown to the technician.
    pub fn message(self) -> &'static str {
        match self {
            Prompt::TapTrust => "Tap \u{201c}Trust\u{201d} on the phone",
            Prompt::Unlock => {
                "Unlock the phone (enter its passcode), then tap \u{201c}Trust\u{201d}"
            }
        }
    }

    /// The line for a job's record: the message and the port the phone is on.
    pub fn line(self, port: Option<&str>) -> String {
        match port {
            Some(port) => format!("{} (port {port})", self.message()),
            None => self.message().to_string(),
        }
    }
}

impl std::fmt::Display for Prompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Why a normal-mode phone could not be sent to recovery.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The mux link or the lockdown connection.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A request could not be encoded or the reply decoded.
    #[error("{request}: {source}")]
    Codec {
        /// The request.
        request: String,
        /// The codec's error.
        source: lockdown::CodecError,
    },
    /// The phone answered with an error (the error names the request).
    #[error(transparent)]
    Refused(Box<lockdown::Error>),
    /// The phone closed the connection before answering.
    #[error("the phone closed the lockdown connection before answering {request}")]
    Closed {
        /// The request.
        request: String,
    },
    /// Port 62078 is not lockdownd.
    #[error("port 62078 answers as {daemon}, not lockdownd (is the phone running a restore?)")]
    NotLockdown {
        /// What `QueryType` said.
        daemon: String,
    },
    /// A value came in another shape than lockdown gives it.
    #[error("GetValue {key} answered {found}, expected {expected}")]
    Value {
        /// The key.
        key: &'static str,
        /// The shape expected.
        expected: &'static str,
        /// What came.
        found: &'static str,
    },
    /// Someone tapped "Don't Trust" on the phone.
    #[error(
        "the phone's user refused to trust this computer (\u{201c}Don't Trust\u{201d} was tapped \
         on {udid}): unplug and replug the phone, tap \u{201c}Trust\u{201d}, then restore again"
    )]
    UserDenied {
        /// The phone.
        udid: String,
    },
    /// Nobody tapped Trust (or unlocked the phone) in time.
    #[error("nobody answered the phone's trust dialog within {waited:?} ({prompt} was asked)")]
    TrustTimeout {
        /// The deadline ([`Deadlines::pair`]).
        waited: Duration,
        /// What the technician was asked.
        prompt: Prompt,
    },
    /// The phone paired but still does not accept this host's sessions.
    #[error("the phone refuses a session for the pairing it just accepted: {source}")]
    SessionAfterPair {
        /// What `StartSession` said.
        source: Box<lockdown::Error>,
    },
    /// Keys or certificates could not be made.
    #[error("making a pair record: {0}")]
    Pairing(#[from] lockdown::pairing::PairingError),
    /// The pair record cannot configure TLS.
    #[error("pair record for TLS: {0}")]
    TlsConfig(#[from] lockdown::tls::TlsError),
    /// The TLS session failed (handshake, the phone's certificate, a record).
    #[error("TLS session with lockdownd ({during}): {source}")]
    Tls {
        /// The handshake, or a request inside.
        during: &'static str,
        /// What rustls said.
        source: rustls::Error,
    },
    /// Bytes came after the `StartSession` reply and before TLS started.
    #[error("{buffered} bytes arrived between StartSession's reply and the TLS handshake")]
    BytesBeforeTls {
        /// How many.
        buffered: usize,
    },
    /// The TLS layer's buffers refused bytes (it was closed).
    #[error("TLS session with lockdownd: {0}")]
    TlsIo(#[source] std::io::Error),
}

impl EntryError {
    /// Whether the person at the bench stopped it (tapped "Don't Trust", or nobody answered
    /// the trust dialog): a restore that should not be retried without them.
    pub fn needs_user(&self) -> bool {
        matches!(
            self,
            EntryError::UserDenied { .. } | EntryError::TrustTimeout { .. }
        )
    }
}

/// Why the pair-record directory could not be used (logged: the entry goes on with a record
/// kept for this job only).
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A saved record does not read.
    #[error("{path}: {source}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Why.
        source: lockdown::PairRecordError,
    },
    /// The UDID cannot name a file.
    #[error("UDID {0:?} cannot name a pair record file")]
    Udid(String),
}

/// The host's pair records: a directory in `/var/lib/lockdown` layout (the one the usbmuxd
/// socket serves, so records made here are the ones libimobiledevice's tools use, and the other
/// way round), or none (every entry pairs anew and keeps nothing).
#[derive(Debug, Clone, Default)]
pub struct PairRecords {
    dir: Option<PathBuf>,
}

impl PairRecords {
    /// Records in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
        }
    }

    /// No directory: records live for one entry.
    pub fn none() -> Self {
        Self { dir: None }
    }

    /// Records in `dir` when there is one.
    pub fn maybe(dir: Option<&Path>) -> Self {
        Self {
            dir: dir.map(Path::to_path_buf),
        }
    }

    /// `<dir>/<udid>.plist`, for UDIDs that can name a file (as the usbmuxd socket checks).
    pub fn path_of(&self, udid: &str) -> Result<Option<PathBuf>, RecordsError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let ok = !udid.is_empty()
            && udid.len() <= 128
            && udid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(RecordsError::Udid(udid.chars().take(64).collect()));
        }
        Ok(Some(dir.join(format!("{udid}.plist"))))
    }

    /// The saved record of `udid`, if any.
    pub fn load(&self, udid: &str) -> Result<Option<PairRecordFile>, RecordsError> {
        let Some(path) = self.path_of(udid)? else {
            return Ok(None);
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RecordsError::Io { path, source }),
        };
        PairRecordFile::from_bytes(&bytes)
            .map(Some)
            .map_err(|source| RecordsError::Record { path, source })
    }

    /// Saves `record` as `udid`'s (owner-only, written whole then renamed into place).
    pub fn save(&self, udid: &str, record: &PairRecordFile) -> Result<(), RecordsError> {
        let Some(path) = self.path_of(udid)? else {
            return Ok(());
        };
        let bytes = record.to_xml().map_err(|source| RecordsError::Record {
            path: path.clone(),
            source,
        })?;
        write_private(&path, &bytes)
    }

    /// The host's `SystemBUID`, from `SystemConfiguration.plist` (made when absent, as the
    /// usbmuxd socket's `ReadBUID` does); `None` without a directory.
    pub fn system_buid(&self) -> Result<Option<String>, RecordsError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let path = dir.join(SYSTEM_CONFIGURATION);
        if let Some(buid) = read_buid(&path)? {
            return Ok(Some(buid));
        }
        let buid = lockdown::pairing::new_host_id(&mut rand_core::OsRng);
        let mut dict = plist::Dictionary::new();
        dict.insert("SystemBUID".into(), Value::String(buid.clone()));
        let mut bytes = Vec::new();
        Value::Dictionary(dict)
            .to_writer_xml(&mut bytes)
            .map_err(|e| RecordsError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        // Another writer (the usbmuxd socket) may make it meanwhile: the first one stays.
        create_private(&path, &bytes)?;
        Ok(read_buid(&path)?.or(Some(buid)))
    }
}

fn read_buid(path: &Path) -> Result<Option<String>, RecordsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(plist::Value::from_reader(std::io::Cursor::new(bytes))
            .ok()
            .and_then(|v| {
                v.as_dictionary()
                    .and_then(|d| d.get("SystemBUID"))
                    .and_then(Value::as_string)
                    .map(str::to_string)
            })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RecordsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn temporary(path: &Path) -> Result<(PathBuf, std::fs::File), RecordsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| RecordsError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("plist.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    Ok((tmp, file))
}

fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf, RecordsError> {
    let (tmp, mut file) = temporary(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(RecordsError::Io { path: tmp, source });
    }
    Ok(tmp)
}

/// Writes `path` whole, owner-only, replacing what was there.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), RecordsError> {
    let tmp = write_temporary(path, bytes)?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        RecordsError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Writes `path` whole, owner-only, unless it exists (then it is left as it is).
fn create_private(path: &Path, bytes: &[u8]) -> Result<(), RecordsError> {
    let tmp = write_temporary(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(RecordsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// How the phone was let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    /// The phone's UDID.
    pub udid: String,
    /// A new pairing was made (no usable record was saved).
    pub paired: bool,
    /// The pair record is saved in the directory.
    pub saved: bool,
    /// The session ran over TLS.
    pub tls: bool,
}

/// One lockdown connection over the pump, plain or inside TLS.
struct Lockdown<'p> {
    pump: &'p mut Pump,
    conn: ConnId,
    codec: HostCodec,
    tls: Option<rustls::ClientConnection>,
}

impl Lockdown<'_> {
    /// Sends `plain` (through TLS when it runs).
    fn send(&mut self, plain: &[u8]) -> Result<(), EntryError> {
        match &mut self.tls {
            None => self.pump.send_all(self.conn, plain, LOCKDOWN_TIMEOUT)?,
            Some(tls) => {
                tls.writer().write_all(plain).map_err(EntryError::TlsIo)?;
                self.flush_tls()?;
            }
        }
        Ok(())
    }

    /// Sends what TLS has queued (handshake messages, records, alerts).
    fn flush_tls(&mut self) -> Result<(), EntryError> {
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        let mut wire = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut wire).map_err(EntryError::TlsIo)?;
        }
        if !wire.is_empty() {
            self.pump.send_all(self.conn, &wire, LOCKDOWN_TIMEOUT)?;
        }
        Ok(())
    }

    /// Reads what the phone sends next into the codec (through TLS when it runs); false once
    /// the phone closed the connection.
    fn receive(&mut self, during: &'static str) -> Result<bool, EntryError> {
        let Some(bytes) = self.pump.read(self.conn, LOCKDOWN_TIMEOUT)? else {
            return Ok(false);
        };
        let Some(tls) = &mut self.tls else {
            self.codec.receive(&bytes);
            return Ok(true);
        };
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            tls.read_tls(&mut rest).map_err(EntryError::TlsIo)?;
            let state = match tls.process_new_packets() {
                Ok(state) => state,
                Err(source) => {
                    // Tell the phone why (an alert), as far as it still listens.
                    let _ = self.flush_tls();
                    return Err(EntryError::Tls { during, source });
                }
            };
            let mut plain = vec![0; state.plaintext_bytes_to_read()];
            if !plain.is_empty() {
                tls.reader()
                    .read_exact(&mut plain)
                    .map_err(EntryError::TlsIo)?;
                self.codec.receive(&plain);
            }
        }
        self.flush_tls()?;
        Ok(true)
    }

    /// One request, its reply as it came (errors included).
    fn exchange(&mut self, request: &Request) -> Result<Reply, EntryError> {
        let name = request.name().to_string();
        let mut wire = Vec::new();
        self.codec
            .encode_request(request, &mut wire)
            .map_err(|source| EntryError::Codec {
                request: name.clone(),
                source,
            })?;
        self.send(&wire)?;
        loop {
            let reply = self
                .codec
                .poll_reply()
                .map_err(|source| EntryError::Codec {
                    request: name.clone(),
                    source,
                })?;
            if let Some(reply) = reply {
                return Ok(reply);
            }
            if !self.receive("a request inside the session")? {
                return Err(EntryError::Closed { request: name });
            }
        }
    }

    /// One request, its reply checked (an `Error` answer is [`EntryError::Refused`]).
    fn ask(&mut self, request: &Request) -> Result<Reply, EntryError> {
        let reply = self.exchange(request)?;
        lockdown::check_reply(request.name(), reply)
            .map_err(|source| EntryError::Refused(Box::new(source)))
    }

    /// `GetValue` of one global key.
    fn value(&mut self, key: &'static str) -> Result<Value, EntryError> {
        let reply = self.ask(&Request::GetValue {
            domain: None,
            key: Some(key.into()),
        })?;
        match reply {
            Reply::GetValue {
                value: Some(value), ..
            } => Ok(value),
            _ => Err(EntryError::Value {
                key,
                expected: "a value",
                found: "none",
            }),
        }
    }

    fn string(&mut self, key: &'static str) -> Result<String, EntryError> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            other => Err(EntryError::Value {
                key,
                expected: "a string",
                found: shape(&other),
            }),
        }
    }

    /// Switches the connection to TLS (after `StartSession` enabled it).
    fn start_tls(&mut self, record: &PairRecordFile) -> Result<(), EntryError> {
        let config = lockdown::tls::client_config(record)?;
        let early = self.codec.take_buffered();
        if !early.is_empty() {
            return Err(EntryError::BytesBeforeTls {
                buffered: early.len(),
            });
        }
        let tls = rustls::ClientConnection::new(Arc::clone(&config), lockdown::tls::server_name())
            .map_err(|source| EntryError::Tls {
                during: "the handshake",
                source,
            })?;
        self.tls = Some(tls);
        loop {
            self.flush_tls()?;
            if !self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
                return Ok(());
            }
            if !self.receive("the handshake")? {
                return Err(EntryError::Closed {
                    request: "StartSession (during the TLS handshake)".into(),
                });
            }
        }
    }
}

fn shape(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Data(_) => "data",
        Value::Integer(_) => "an integer",
        Value::Dictionary(_) => "a dictionary",
        Value::Array(_) => "an array",
        Value::Boolean(_) => "a boolean",
        _ => "another plist value",
    }
}

/// Whether `ProductVersion` is before iOS 7 (which wants `ValidatePair` before a session).
fn before_ios7(version: &str) -> bool {
    version
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major < 7)
}

/// What the entry needs besides the phone.
pub struct Host<'a> {
    /// Where pair records are kept.
    pub records: &'a PairRecords,
    /// The [`Deadlines::pair`] deadline (and the others).
    pub deadlines: &'a Deadlines,
    /// The job's clock: paces `Pair` while the phone waits for its user.
    pub clock: &'a mut dyn Clock,
    /// Told when the technician must act at the phone (`Some`), and when no longer (`None`).
    pub on_prompt: &'a mut dyn FnMut(Option<Prompt>),
}

/// Sends a normal-mode phone to recovery through a paired lockdown session (see the module
/// documentation). Returns once `EnterRecovery` is acknowledged; the phone then reboots.
pub fn enter_recovery(dev: Box<dyn UsbDevice>, host: Host<'_>) -> Result<Entered, EntryError> {
    let mut pump = Pump::open(dev)?;
    let conn = pump.connect(lockdown::PORT, LOCKDOWN_TIMEOUT)?;
    let mut ld = Lockdown {
        pump: &mut pump,
        conn,
        codec: HostCodec::new().with_label(LABEL),
        tls: None,
    };
    let entered = enter(&mut ld, host);
    if entered.is_err() {
        ld.pump.close(conn);
    }
    entered
}

fn enter(ld: &mut Lockdown<'_>, host: Host<'_>) -> Result<Entered, EntryError> {
    let Host {
        records,
        deadlines,
        clock,
        on_prompt,
    } = host;
    if let Reply::QueryType { daemon, .. } = ld.ask(&Request::QueryType)? {
        if daemon != DaemonType::Lockdown {
            return Err(EntryError::NotLockdown {
                daemon: format!("{daemon:?}"),
            });
        }
    }
    let udid = ld.string("UniqueDeviceID")?;
    let old_ios = ld.string("ProductVersion").is_ok_and(|v| before_ios7(&v));
    let system_buid = records.system_buid().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no SystemBUID from the pair-record directory");
        None
    });
    let saved = records.load(&udid).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "unreadable pair record: pairing anew");
        None
    });
    let mut entered = Entered {
        udid: udid.clone(),
        paired: false,
        saved: saved.is_some(),
        tls: false,
    };
    let mut pairing = Pairing {
        udid: &udid,
        within: deadlines.pair,
        clock,
        on_prompt,
        shown: None,
    };
    let mut record = match saved {
        Some(record) => record,
        None => new_pairing(
            ld,
            &mut pairing,
            records,
            system_buid.as_deref(),
            &mut entered,
        )?,
    };
    let session = loop {
        if old_ios && !entered.paired {
            let request = validate_pair_request(&record);
            let reply = ld.exchange(&request)?;
            match pairing.outcome(request.name(), reply)? {
                Some(()) => {}
                None => {
                    record = new_pairing(
                        ld,
                        &mut pairing,
                        records,
                        system_buid.as_deref(),
                        &mut entered,
                    )?;
                    continue;
                }
            }
        }
        let reply = ld.exchange(&Request::StartSession {
            host_id: record.host_id.clone(),
            system_buid: Some(
                system_buid
                    .clone()
                    .unwrap_or_else(|| record.system_buid.clone()),
            ),
        })?;
        match lockdown::check_reply(lockdown::names::START_SESSION, reply) {
            Ok(Reply::StartSession {
                enable_session_ssl, ..
            }) => break enable_session_ssl,
            Ok(_) => break false,
            Err(lockdown::Error::Device {
                kind: ErrorKind::UserDeniedPairing,
                ..
            }) => return Err(EntryError::UserDenied { udid: udid.clone() }),
            // The phone no longer knows the saved pairing (erased, or unpaired; it may be
            // asking its user already): pair again.
            Err(lockdown::Error::Device {
                kind:
                    ErrorKind::InvalidHostID
                    | ErrorKind::PairingDialogResponsePending
                    | ErrorKind::PasswordProtected,
                ..
            }) if !entered.paired => {
                tracing::info!(%udid, "the phone forgot the saved pairing: pairing again");
                record = new_pairing(
                    ld,
                    &mut pairing,
                    records,
                    system_buid.as_deref(),
                    &mut entered,
                )?;
            }
            Err(source) if entered.paired => {
                return Err(EntryError::SessionAfterPair {
                    source: Box::new(source),
                })
            }
            Err(source) => return Err(EntryError::Refused(Box::new(source))),
        }
    };
    if session {
        ld.start_tls(&record)?;
        entered.tls = true;
    }
    ld.ask(&Request::EnterRecovery)?;
    Ok(entered)
}

/// Pairing in progress: what is shown to the technician, and the deadline.
struct Pairing<'a> {
    udid: &'a str,
    within: Duration,
    clock: &'a mut dyn Clock,
    on_prompt: &'a mut dyn FnMut(Option<Prompt>),
    shown: Option<Prompt>,
}

impl Pairing<'_> {
    fn show(&mut self, prompt: Option<Prompt>) {
        if self.shown != prompt {
            self.shown = prompt;
            (self.on_prompt)(prompt);
        }
    }

    /// The answer to `Pair`/`ValidatePair`: `Some(())` when paired, `None` when the phone does
    /// not know the record (`ValidatePair` only), `Err` when it said no for good.
    fn outcome(&mut self, request: &str, reply: Reply) -> Result<Option<()>, EntryError> {
        match pair_outcome(request, reply) {
            Ok(PairOutcome::Paired { .. }) => Ok(Some(())),
            Ok(PairOutcome::UserDenied) => {
                self.show(None);
                Err(EntryError::UserDenied {
                    udid: self.udid.to_string(),
                })
            }
            Ok(_) => Ok(None),
            Err(lockdown::Error::Device {
                kind: ErrorKind::InvalidHostID,
                ..
            }) => Ok(None),
            Err(source) => Err(EntryError::Refused(Box::new(source))),
        }
    }
}

/// Makes a pair record for the phone, `Pair`s it (asking again while its user decides), and
/// saves it.
fn new_pairing(
    ld: &mut Lockdown<'_>,
    pairing: &mut Pairing<'_>,
    records: &PairRecords,
    system_buid: Option<&str>,
    entered: &mut Entered,
) -> Result<PairRecordFile, EntryError> {
    let device_key = match ld.value("DevicePublicKey")? {
        Value::Data(pem) => pem,
        other => {
            return Err(EntryError::Value {
                key: "DevicePublicKey",
                expected: "data",
                found: shape(&other),
            })
        }
    };
    let mut rng = rand_core::OsRng;
    let host_id = lockdown::pairing::new_host_id(&mut rng);
    let system_buid = system_buid
        .map(str::to_string)
        .unwrap_or_else(|| lockdown::pairing::new_host_id(&mut rng));
    let mut record = lockdown::pairing::generate_pair_record(
        &device_key,
        host_id,
        system_buid,
        SystemTime::now(),
        &mut rng,
    )?;
    if let Ok(mac) = ld.string("WiFiAddress") {
        record.wifi_mac_address = Some(mac);
    }
    let request = pair_request(&record);
    let started = pairing.clock.now();
    loop {
        let reply = ld.exchange(&request)?;
        let outcome = match pair_outcome(request.name(), reply) {
            Ok(outcome) => outcome,
            Err(source) => {
                pairing.show(None);
                return Err(EntryError::Refused(Box::new(source)));
            }
        };
        let prompt = match outcome {
            PairOutcome::Paired { escrow_bag } => {
                record.escrow_bag = escrow_bag;
                pairing.show(None);
                break;
            }
            PairOutcome::TrustDialogPending => Prompt::TapTrust,
            PairOutcome::PasswordProtected => Prompt::Unlock,
            PairOutcome::UserDenied => {
                pairing.show(None);
                return Err(EntryError::UserDenied {
                    udid: pairing.udid.to_string(),
                });
            }
            // A newer kind of answer this build does not know: ask as for the dialog.
            _ => Prompt::TapTrust,
        };
        pairing.show(Some(prompt));
        let now = pairing.clock.now();
        let end = started + pairing.within;
        if now >= end {
            pairing.show(None);
            return Err(EntryError::TrustTimeout {
                waited: pairing.within,
                prompt,
            });
        }
        pairing.clock.wait_until((now + PAIR_RETRY).min(end));
    }
    entered.paired = true;
    entered.saved = match records.save(pairing.udid, &record) {
        Ok(()) => records.dir.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot save the pair record: it is used for this job only");
            false
        }
    };
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("restation-entry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn system_buid_is_made_once_and_kept() {
        let dir = temp("buid");
        let records = PairRecords::new(&dir);
        let first = records.system_buid().unwrap().unwrap();
        assert_eq!(first.len(), 36);
        assert_eq!(records.system_buid().unwrap(), Some(first.clone()));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(SYSTEM_CONFIGURATION))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(PairRecords::none().system_buid().unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_save_load_and_refuse_odd_udids() {
        let dir = temp("records");
        let records = PairRecords::new(&dir);
        assert!(records.load("00008110-001A2B3C4D5E6F70").unwrap().is_none());
        let record = PairRecordFile {
            device_certificate: b"D".to_vec(),
            host_certificate: b"H".to_vec(),
            root_certificate: b"R".to_vec(),
            host_private_key: b"HK".to_vec(),
            root_private_key: b"RK".to_vec(),
            host_id: "A1B2C3D4-0000-4000-8000-000000000001".into(),
            system_buid: "B2C3D4E5-0000-4000-8000-000000000002".into(),
            ..PairRecordFile::default()
        };
        records.save("00008110-001A2B3C4D5E6F70", &record).unwrap();
        assert_eq!(
            records.load("00008110-001A2B3C4D5E6F70").unwrap(),
            Some(record.clone())
        );
        assert!(matches!(
            records.load("../etc/passwd"),
            Err(RecordsError::Udid(_))
        ));
        std::fs::write(dir.join("BAD.plist"), b"not a plist").unwrap();
        assert!(matches!(
            records.load("BAD"),
            Err(RecordsError::Record { .. })
        ));
        assert!(PairRecords::none().load("X").unwrap().is_none());
        PairRecords::none().save("X", &record).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ios_versions_that_want_validate_pair() {
        assert!(before_ios7("6.1.6"));
        assert!(!before_ios7("7.0"));
        assert!(!before_ios7("17.5.1"));
        assert!(!before_ios7("garbage"));
    }

    #[test]
    fn prompts_read_as_instructions() {
        assert_eq!(
            Prompt::TapTrust.to_string(),
            "Tap \u{201c}Trust\u{201d} on the phone"
        );
        assert!(Prompt::Unlock.message().starts_with("Unlock"));
        assert_eq!(
            Prompt::TapTrust.line(Some("1-1.2")),
            "Tap \u{201c}Trust\u{201d} on the phone (port 1-1.2)"
        );
        assert_eq!(Prompt::Unlock.line(None), Prompt::Unlock.message());
        assert!(EntryError::UserDenied { udid: "X".into() }.needs_user());
        assert!(!EntryError::Closed {
            request: "Pair".into()
        }
        .needs_user());
    }
}
