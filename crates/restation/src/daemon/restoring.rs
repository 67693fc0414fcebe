//! Restore mode, driven: the phone runs the restore ramdisk (restored on port 62078, ASR on
//! 12345) and this module carries the conversation over the phone's mux link ([`Pump`],
//! blocking; the daemon runs it on a thread of its own).
//!
//! `QueryType` must say restored; `StartRestore` carries the [`restore::restored::restore_options`];
//! then every message of restored's loop is answered: data requests from a [`DataSource`]
//! (the staged IPSW, personalized), the OS image over ASR streamed straight from its source
//! (OOB ranges first, then checksummed chunks), progress passed on as [`RestoreEvent`]s, and
//! the final `StatusMsg` acknowledged with `ReceivedFinalStatusMsg`. A data type this host does
//! not serve ends the restore with [`RestoreModeError::UnservedData`], naming it: restored
//! would otherwise wait forever. Every wait has the deadline of [`restore::phase::Deadlines`].

use std::io::Read;
use std::time::{Duration, Instant};

use lockdown::{DaemonType, Format, FrameDecoder, HostCodec, Reply, Request};
use plist::{Dictionary, Value};
use restore::asr::{chunk_trailer, AsrAction, AsrHostError, AsrSender};
use restore::phase::Deadlines;
use restore::restored::{data_reply, received_final_status, DataType, Message, RestoredError};
use usbmux::ConnId;

use super::session::{Pump, SessionError};

/// restored's port.
pub const RESTORED_PORT: u16 = 62078;
/// ASR's port.
pub const ASR_PORT: u16 = 12345;
/// How long each restored request may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the image per read.
const READ_BLOCK: usize = 1 << 20;

/// Where restored's data comes from (the staged IPSW, personalized for this phone).
pub trait DataSource {
    /// The bytes answering a `DataRequestMsg` for `data_type` (`None`: this host does not
    /// serve that type).
    fn data(&mut self, data_type: &DataType) -> Result<Option<Vec<u8>>, SourceError>;

    /// The OS image's size.
    fn image_size(&self) -> u64;

    /// `length` bytes of the OS image at `offset` (ASR's OOB requests).
    fn image_range(&mut self, offset: u64, length: u64) -> Result<Vec<u8>, SourceError>;

    /// The OS image from its start, streamed.
    fn image(&mut self) -> Result<Box<dyn Read + '_>, SourceError>;
}

/// A data source that could not give what was asked.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct SourceError {
    /// What was asked.
    pub what: String,
    /// Why it could not be given.
    pub reason: String,
}

/// What happens during restore mode, for progress bars and the job's history.
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreEvent {
    /// restored's `ProgressMsg`.
    Progress {
        /// `Operation` (see [`restore::restored::operation`]).
        operation: u64,
        /// Percent (-1 unknown).
        progress: i64,
    },
    /// A data request answered.
    Served {
        /// The data type.
        data_type: String,
        /// Bytes sent.
        bytes: u64,
    },
    /// OS image bytes streamed over ASR so far.
    Image {
        /// Sent.
        sent: u64,
        /// Of.
        total: u64,
    },
    /// A checkpoint restored reported.
    Checkpoint {
        /// Its id.
        id: Option<u64>,
        /// Its result (non-zero: a failure restored reports and may recover from).
        result: Option<i64>,
    },
    /// Evidence: a previous restore's log, or restored's crash report.
    Log(String),
}

/// How restore mode ended: restored's final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalStatus {
    /// `Status`: 0 is success.
    pub status: i64,
    /// `AMRError`, when given.
    pub amr_error: Option<i64>,
    /// The device's log lines, when given.
    pub log: Option<String>,
}

/// Why restore mode could not be carried to a final status.
#[derive(Debug, thiserror::Error)]
pub enum RestoreModeError {
    /// The mux link or a connection.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The framing of restored's messages.
    #[error("restored's framing: {0}")]
    Codec(#[from] lockdown::CodecError),
    /// A request to restored failed (refused, unanswered, or the phone closed).
    #[error("restored: {0}")]
    Request(#[from] super::identify::LockdownError),
    /// Port 62078 is not restored (the phone is not in the restore ramdisk).
    #[error("port 62078 answered {0:?}, not restored: the phone is not in restore mode")]
    NotRestored(String),
    /// A message that is not one.
    #[error(transparent)]
    Message(#[from] RestoredError),
    /// restored asked for data this host does not serve.
    #[error("restored asked for {0} data, which this host does not serve")]
    UnservedData(String),
    /// The data source failed.
    #[error("data for restored: {0}")]
    Source(#[from] SourceError),
    /// ASR.
    #[error("ASR: {0}")]
    Asr(#[from] AsrHostError),
    /// restored closed the connection before its final status.
    #[error("restored closed the connection before its final status")]
    Closed,
    /// restored was silent longer than the phase allows.
    #[error("restored said nothing for {0:?}")]
    Silent(Duration),
}

/// One restored conversation over a mux connection.
struct Restored<'p> {
    pump: &'p mut Pump,
    conn: ConnId,
    frames: FrameDecoder,
}

impl Restored<'_> {
    fn send(&mut self, dict: Dictionary) -> Result<(), RestoreModeError> {
        let frame = lockdown::encode_frame(&Value::Dictionary(dict), Format::Xml, "restored")?;
        self.pump.send_all(self.conn, &frame, ANSWER_TIMEOUT)?;
        Ok(())
    }

    /// The next message, within `silence`.
    fn next(&mut self, silence: Duration) -> Result<Dictionary, RestoreModeError> {
        let deadline = Instant::now() + silence;
        loop {
            if let Some(frame) = self.frames.next_frame()? {
                return Ok(lockdown::decode_dictionary(&frame)?);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RestoreModeError::Silent(silence));
            }
            match self.pump.read(self.conn, left) {
                Ok(Some(bytes)) => self.frames.push(&bytes),
                Ok(None) => return Err(RestoreModeError::Closed),
                Err(SessionError::Stalled { .. }) => return Err(RestoreModeError::Silent(silence)),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Asks restored who it is (`QueryType`); its `RestoreProtocolVersion`.
fn query_type(pump: &mut Pump, conn: ConnId) -> Result<Option<u64>, RestoreModeError> {
    let mut codec = HostCodec::new().with_label("restation");
    match super::identify::ask(pump, conn, &mut codec, Request::QueryType, ANSWER_TIMEOUT)? {
        Reply::QueryType {
            daemon: DaemonType::Restored,
            restore_protocol_version,
        } => Ok(restore_protocol_version),
        Reply::QueryType { daemon, .. } => {
            Err(RestoreModeError::NotRestored(format!("{daemon:?}")))
        }
        other => Err(RestoreModeError::NotRestored(format!("{other:?}"))),
    }
}

/// Connects to ASR, which restored opens only once it asks for the image: refused connects
/// are retried until `deadline`.
fn connect_asr(pump: &mut Pump, deadline: Instant) -> Result<ConnId, RestoreModeError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match pump.connect(ASR_PORT, left.max(Duration::from_millis(1))) {
            Ok(conn) => return Ok(conn),
            Err(SessionError::Refused { .. }) if Instant::now() < deadline => {
                // restored is bringing ASR up; the next SYN is the next try (the phone's
                // refusal is the event that paces it).
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Streams the OS image over ASR.
fn stream_image(
    pump: &mut Pump,
    source: &mut dyn DataSource,
    on_event: &mut dyn FnMut(RestoreEvent),
    deadlines: &Deadlines,
) -> Result<(), RestoreModeError> {
    let total = source.image_size();
    let conn = connect_asr(pump, Instant::now() + ANSWER_TIMEOUT)?;
    let mut asr = AsrSender::new(total);
    let silence = deadlines.of(restore::phase::Phase::Restore);
    loop {
        let out = asr.take_output();
        if !out.is_empty() {
            pump.send_all(conn, &out, ANSWER_TIMEOUT)?;
        }
        match asr.poll_action() {
            Some(AsrAction::Oob { offset, length }) => {
                let bytes = source.image_range(offset, length)?;
                pump.send_all(conn, &bytes, ANSWER_TIMEOUT)?;
                continue;
            }
            Some(AsrAction::Payload {
                chunk_size,
                checksums,
            }) => {
                let chunk_size = chunk_size.max(1);
                let mut image = source.image()?;
                let mut chunk = Vec::with_capacity(chunk_size);
                let mut block = vec![0u8; READ_BLOCK.max(chunk_size)];
                let mut sent = 0u64;
                let mut last_report = 0u64;
                loop {
                    let n = image.read(&mut block).map_err(|e| SourceError {
                        what: "the OS image".into(),
                        reason: e.to_string(),
                    })?;
                    let mut rest = block.get(..n).unwrap_or_default();
                    while !rest.is_empty() || (n == 0 && !chunk.is_empty()) {
                        let room = chunk_size - chunk.len();
                        let take = room.min(rest.len());
                        chunk.extend_from_slice(rest.get(..take).unwrap_or_default());
                        rest = rest.get(take..).unwrap_or_default();
                        if chunk.len() == chunk_size || (n == 0 && !chunk.is_empty()) {
                            // The checksum goes with its chunk: one stream write, full
                            // mux packets.
                            if checksums {
                                let trailer = chunk_trailer(&chunk);
                                chunk.extend_from_slice(&trailer);
                            }
                            pump.send_all(conn, &chunk, silence)?;
                            let payload = chunk.len()
                                - if checksums {
                                    restore::asr::CHECKSUM_LEN
                                } else {
                                    0
                                };
                            sent += payload as u64;
                            chunk.clear();
                            if sent - last_report > total / 100 || sent == total {
                                last_report = sent;
                                on_event(RestoreEvent::Image { sent, total });
                            }
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                pump.finish(conn, silence)?;
                return Ok(());
            }
            None => {}
        }
        match pump.read(conn, ANSWER_TIMEOUT)? {
            Some(bytes) => asr.handle_input(&bytes)?,
            None => return Err(RestoreModeError::Closed),
        }
    }
}

/// Asks restored to reboot the phone: after a restore that failed on the host's side (a
/// stalled stream, a request that went unanswered) the restore ramdisk is still running, and
/// only a reboot brings the phone back to recovery, where the retry starts. Its answer may not
/// come: a phone that leaves the bus did what was asked.
pub fn reboot(pump: &mut Pump) -> Result<(), RestoreModeError> {
    let conn = pump.connect(RESTORED_PORT, ANSWER_TIMEOUT)?;
    query_type(pump, conn)?;
    let mut codec = HostCodec::new().with_label("restation");
    super::identify::ask(pump, conn, &mut codec, Request::Reboot, ANSWER_TIMEOUT)?;
    Ok(())
}

/// Runs restore mode to restored's final status.
pub fn run(
    pump: &mut Pump,
    options: Dictionary,
    source: &mut dyn DataSource,
    on_event: &mut dyn FnMut(RestoreEvent),
    deadlines: &Deadlines,
) -> Result<FinalStatus, RestoreModeError> {
    let conn = pump.connect(RESTORED_PORT, ANSWER_TIMEOUT)?;
    let version = query_type(pump, conn)?;
    let mut restored = Restored {
        pump,
        conn,
        frames: FrameDecoder::new(),
    };
    let mut start = HostCodec::new().with_label("restation");
    let mut wire = Vec::new();
    start.encode_request(
        &Request::StartRestore {
            restore_protocol_version: version,
            restore_options: Some(options),
        },
        &mut wire,
    )?;
    restored.pump.send_all(conn, &wire, ANSWER_TIMEOUT)?;
    let silence = deadlines.of(restore::phase::Phase::Restore);
    loop {
        let message = Message::parse(restored.next(silence)?)?;
        match message {
            Message::DataRequest {
                data_type: DataType::SystemImageData,
                ..
            } => {
                stream_image(restored.pump, source, on_event, deadlines)?;
                on_event(RestoreEvent::Served {
                    data_type: DataType::SystemImageData.to_string(),
                    bytes: source.image_size(),
                });
            }
            Message::DataRequest { data_type, .. } => {
                let Some(data) = source.data(&data_type)? else {
                    return Err(RestoreModeError::UnservedData(data_type.to_string()));
                };
                let bytes = data.len() as u64;
                restored.send(data_reply(&data_type, data))?;
                on_event(RestoreEvent::Served {
                    data_type: data_type.to_string(),
                    bytes,
                });
            }
            Message::Progress {
                operation,
                progress,
            } => on_event(RestoreEvent::Progress {
                operation,
                progress,
            }),
            Message::Checkpoint { id, result } => on_event(RestoreEvent::Checkpoint { id, result }),
            Message::PreviousRestoreLog(log) => on_event(RestoreEvent::Log(log)),
            Message::Crash(fields) => on_event(RestoreEvent::Log(format!(
                "restored crashed: {}",
                fields.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
            Message::Status {
                status,
                amr_error,
                log,
            } => {
                // The phone reboots once it has read this; a phone that is already gone is
                // fine.
                if restored.send(received_final_status()).is_ok() {
                    let _ = restored.pump.finish(conn, ANSWER_TIMEOUT);
                }
                return Ok(FinalStatus {
                    status,
                    amr_error,
                    log,
                });
            }
            Message::Other { msg_type, .. } => {
                tracing::debug!(msg_type, "restored message not acted on");
            }
        }
    }
}

/// Personalization of the images a phone boots: the TSS ticket for its ECID and current
/// ApNonce, and each component stitched into an IMG4 with it.
pub trait Personalize {
    /// What the phone shows now in recovery or DFU: its serial string (chip, board, ECID,
    /// security domain and fuses) and its nonces. Called on every arrival in those modes; a
    /// changed ApNonce makes the ticket in hand useless (the phone refuses it), so the next
    /// image needs a new one.
    fn observe(
        &mut self,
        serial: &irecv::serial::SerialInfo,
        nonces: &irecv::serial::Nonces,
    ) -> Result<(), PersonalizeError>;

    /// The image of component `name` (its IM4P from the IPSW) as this phone will load it.
    fn component(&mut self, name: &str, im4p: Vec<u8>) -> Result<Vec<u8>, PersonalizeError>;

    /// The root ticket (IM4M) for `RootTicket`.
    fn root_ticket(&mut self) -> Result<Vec<u8>, PersonalizeError>;
}

/// Why an image could not be personalized.
#[derive(Debug, thiserror::Error)]
pub enum PersonalizeError {
    /// The signing server refused or could not be reached (`tss::TssError::status` 94 is an
    /// unsigned build: Apple's 3194).
    #[error("TSS: {0}")]
    Tss(Box<tss::TssError>),
    /// The IPSW's image is not the one the build manifest describes (a damaged or altered
    /// IPSW: the phone would refuse it).
    #[error("{component}: the IPSW's image has digest {got}, the build manifest says {expected}: re-stage the IPSW")]
    Digest {
        /// The component.
        component: String,
        /// The manifest's digest (hex).
        expected: String,
        /// The image's (hex).
        got: String,
    },
    /// An image or ticket that cannot be stitched.
    #[error("{component}: cannot stitch the IMG4: {source}")]
    Stitch {
        /// The component.
        component: String,
        /// Why.
        source: Box<tss::img4::Img4Error>,
    },
    /// A ticket was needed before the phone showed its nonce (a job starting in normal mode
    /// learns it only in recovery).
    #[error("no ApNonce read from the phone yet: a ticket cannot be asked for")]
    NoNonce,
    /// The phone's serial string lacks what a TSS request needs.
    #[error("the phone's serial string has no {0}")]
    MissingField(&'static str),
    /// The TSS request could not be built for this build identity.
    #[error("TSS request: {0}")]
    Request(#[from] tss::request::RequestError),
    /// Reading the image failed.
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl From<tss::TssError> for PersonalizeError {
    fn from(e: tss::TssError) -> Self {
        PersonalizeError::Tss(Box::new(e))
    }
}

/// restored's data from a staged IPSW: members read straight from the store's file, the OS
/// image streamed from its member (no copy), images personalized on the way.
pub struct StagedSource<'a> {
    file: &'a std::fs::File,
    archive: &'a ipsw::archive::Archive,
    identity: &'a ipsw::manifest::BuildIdentity,
    personalize: &'a mut dyn Personalize,
}

/// The largest component read into memory (kernelcaches are tens of MiB).
const MAX_COMPONENT: u64 = 512 << 20;

impl<'a> StagedSource<'a> {
    /// A source over `archive` (read from `file`) for `identity`.
    pub fn new(
        file: &'a std::fs::File,
        archive: &'a ipsw::archive::Archive,
        identity: &'a ipsw::manifest::BuildIdentity,
        personalize: &'a mut dyn Personalize,
    ) -> Self {
        Self {
            file,
            archive,
            identity,
            personalize,
        }
    }

    fn member_of(&self, component: &str) -> Result<&'a str, SourceError> {
        self.identity
            .component(component)
            .and_then(|c| c.path.as_deref())
            .ok_or_else(|| SourceError {
                what: component.to_string(),
                reason: "not in the build identity".into(),
            })
    }

    fn read(&self, component: &str) -> Result<Vec<u8>, SourceError> {
        let member = self.member_of(component)?;
        self.archive
            .read_member(self.file, member, MAX_COMPONENT)
            .map_err(|e| SourceError {
                what: component.to_string(),
                reason: e.to_string(),
            })
    }

    /// Component `component` of the build identity, personalized for the phone.
    pub fn component(&mut self, component: &str) -> Result<Vec<u8>, PersonalizeError> {
        let im4p = self.read(component)?;
        self.personalize.component(component, im4p)
    }

    /// A component for restored's data requests (errors as restored's loop reports them).
    fn data_component(&mut self, component: &str) -> Result<Vec<u8>, SourceError> {
        self.component(component)
            .map_err(|e| as_source(component, e))
    }

    /// The personalization (to hand it the phone's nonces).
    pub fn personalizer(&mut self) -> &mut dyn Personalize {
        &mut *self.personalize
    }
}

fn as_source(what: &str, e: PersonalizeError) -> SourceError {
    match e {
        PersonalizeError::Source(s) => s,
        other => SourceError {
            what: what.to_string(),
            reason: other.to_string(),
        },
    }
}

impl DataSource for StagedSource<'_> {
    fn data(&mut self, data_type: &DataType) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(Some(match data_type {
            DataType::RootTicket => self
                .personalize
                .root_ticket()
                .map_err(|e| as_source("RootTicket", e))?,
            DataType::KernelCache => self.data_component("RestoreKernelCache")?,
            DataType::DeviceTree => self.data_component("RestoreDeviceTree")?,
            DataType::NorData => self.data_component("LLB")?,
            DataType::BasebandData => self.read("BasebandFirmware")?,
            // Answered with an empty dictionary: nothing to send for a phone without FDR data.
            DataType::FdrTrustData => Vec::new(),
            DataType::SystemImageData | DataType::Other(_) => return Ok(None),
        }))
    }

    fn image_size(&self) -> u64 {
        self.member_of("OS")
            .ok()
            .and_then(|m| self.archive.member(m))
            .map_or(0, |m| m.uncompressed_size)
    }

    fn image_range(&mut self, offset: u64, length: u64) -> Result<Vec<u8>, SourceError> {
        let err = |reason: String| SourceError {
            what: format!("OS image bytes {offset}+{length}"),
            reason,
        };
        let member = self.member_of("OS")?;
        let mut image = self
            .archive
            .member_reader(self.file, member)
            .map_err(|e| err(e.to_string()))?;
        // ASR asks for ranges near the image's end: a stored image (as Apple's are) seeks
        // there instead of reading gigabytes through.
        if image.skip(offset).map_err(|e| err(e.to_string()))? != offset {
            return Err(err("the image ends before it".into()));
        }
        let mut out = Vec::with_capacity(usize::try_from(length).unwrap_or(0).min(1 << 20));
        image
            .take(length)
            .read_to_end(&mut out)
            .map_err(|e| err(e.to_string()))?;
        if out.len() as u64 != length {
            return Err(err(format!("only {} bytes there", out.len())));
        }
        Ok(out)
    }

    fn image(&mut self) -> Result<Box<dyn Read + '_>, SourceError> {
        let member = self.member_of("OS")?;
        let reader = self
            .archive
            .member_reader(self.file, member)
            .map_err(|e| SourceError {
                what: "the OS image".into(),
                reason: e.to_string(),
            })?;
        Ok(Box::new(reader))
    }
}
