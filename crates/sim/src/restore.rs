//! Restore mode (the restore ramdisk), device side: normal-mode USB ids and descriptors, the
//! usbmux interface, restored on port 62078 and ASR on 12345.
//!
//! restored speaks lockdown's framing (4-byte length + plist):
//!
//! - `QueryType` → `com.apple.mobile.restored` with `RestoreProtocolVersion`
//!   ([`RESTORE_PROTOCOL_VERSION`]);
//! - `QueryValue` `HardwareInfo` (UniqueChipID, ChipID, BoardID, ProductionMode, ...) and
//!   `SavedDebugInfo`; other keys → `MissingValue`;
//! - `StartRestore` (no reply) starts the message loop of [`restore_steps`]: `ProgressMsg`
//!   (Operation, Progress) for the steps that only take time ([`crate::phone::Timings::restore_step`]
//!   each), and a `DataRequestMsg` per data type, answered by the host with a dictionary
//!   holding [`DataType::reply_key`]. `SystemImageData` opens ASR on 12345 ([`crate::asr`]);
//!   restored reports its progress as `ProgressMsg` Operation 13 every 10 %;
//! - the final `StatusMsg`: Status 0, the number of a `final-status:status=N` fault, 14 when
//!   an ASR chunk fails its SHA-1 (or OOB data differs, or restored refused data), −1 when the
//!   image is short or too long. After the host's `ReceivedFinalStatusMsg` the phone reboots:
//!   into normal mode after a success, with the build it was given; into recovery after a
//!   failure;
//! - `Reboot` → ack, then the phone reboots to its boot target.
//!
//! The new build: `RestoreOptions.BuildIdentityDict.Info.BuildNumber` becomes the
//! `BuildVersion` lockdownd reports after the reboot, and `RestoreOptions.ProductVersion` (a
//! key the simulator reads; restation sends the manifest's `ProductVersion` there) the
//! `ProductVersion`. Data the host sends goes through the personalization hook
//! ([`crate::check::ImageCheck`] with [`ImageKind::Restore`]); a refusal fails the restore.
//!
//! Fault points: every transfer is at `restore-mode`; a bulk OUT with restored bytes at
//! `restored` (progress measured on the bytes sent to restored against
//! `Options::upload_sizes[restored]`), one with ASR bytes at `asr` (measured on the ASR stream
//! against the announced `Payload.Size`). `restored:refuse` answers the requests of that
//! transfer with `InvalidResponse` and fails a restore whose data it carried (Status 14).
//! `final-status` is reached once per restore. `restore-mode:never-returns` strikes the
//! reboot after the final status.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use lockdown::{
    encode_frame_into, DaemonType, Envelope, ErrorKind as LockdownError, Format, FrameDecoder,
    Reply, Request,
};
use plist::{Dictionary, Value};
use usb::{ErrorKind, Transfer};
use usbmux::{ConnId, Event};

use crate::asr::{AsrFailure, AsrSink};
use crate::check::{ImageKind, Verdict};
use crate::descriptors::MUX_OUT;
use crate::fault::{Action, Point};
use crate::injector::Span;
use crate::mux_port::{peek_tcp, MuxPort, ASR_PORT, LOCKDOWN_PORT};
use crate::phone::{Core, Mode, ModeHandler, RecoveryStage, Touches, UploadRecord};
use crate::profile::Profile;

/// `RestoreProtocolVersion` restored reports.
pub const RESTORE_PROTOCOL_VERSION: u64 = 15;

/// How long restored waits for the host to read its `Reboot` reply before rebooting anyway.
pub const REBOOT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Final status when an ASR chunk or restored data is refused.
pub const STATUS_DATA_REFUSED: i64 = 14;
/// Final status when the image is short or too long.
pub const STATUS_VERIFY_FAILED: i64 = -1;

/// `ProgressMsg` operations (restored's numbering, shared with the host side).
pub use restore::restored::operation;

/// What restored asks the host for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// The personalized root ticket (IM4M).
    RootTicket,
    /// The OS image, over ASR.
    SystemImageData,
    /// The kernelcache.
    KernelCache,
    /// The device tree.
    DeviceTree,
    /// LLB, iBoot, logos... for the NOR.
    NorData,
    /// The baseband firmware (cellular phones).
    BasebandData,
    /// FDR trust objects (phones with a SEP).
    FdrTrustData,
}

impl DataType {
    /// `DataType` on the wire.
    pub fn name(self) -> &'static str {
        match self {
            DataType::RootTicket => "RootTicket",
            DataType::SystemImageData => "SystemImageData",
            DataType::KernelCache => "KernelCache",
            DataType::DeviceTree => "DeviceTree",
            DataType::NorData => "NORData",
            DataType::BasebandData => "BasebandData",
            DataType::FdrTrustData => "FDRTrustData",
        }
    }

    /// The key of the host's answer that carries the data (`None`: the answer may be empty,
    /// or the data goes over ASR): the host side's table.
    pub fn reply_key(self) -> Option<&'static str> {
        restore::restored::DataType::from_name(self.name()).reply_key()
    }

    /// By wire name.
    pub fn from_name(name: &str) -> Option<DataType> {
        [
            DataType::RootTicket,
            DataType::SystemImageData,
            DataType::KernelCache,
            DataType::DeviceTree,
            DataType::NorData,
            DataType::BasebandData,
            DataType::FdrTrustData,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }
}

/// One step of the restore message loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A `ProgressMsg` after `Timings::restore_step`.
    Progress {
        /// Operation.
        operation: u64,
        /// Percent.
        progress: u64,
    },
    /// A `DataRequestMsg`, waiting for the answer (or the ASR stream).
    Data(DataType),
}

/// The steps of a restore for this phone, in order: one table. BasebandData only for
/// cellular phones, FDRTrustData only for phones with a SEP.
pub fn restore_steps(profile: &Profile) -> Vec<Step> {
    use operation::*;
    let progress = |operation| Step::Progress {
        operation,
        progress: 100,
    };
    let mut steps = vec![
        progress(CREATE_PARTITION_MAP),
        progress(CREATE_FILESYSTEM),
        Step::Data(DataType::RootTicket),
        Step::Data(DataType::SystemImageData),
        progress(VERIFY_RESTORE),
        Step::Data(DataType::KernelCache),
        Step::Data(DataType::DeviceTree),
        Step::Data(DataType::NorData),
        progress(FLASH_FIRMWARE),
    ];
    if profile.imei.is_some() {
        steps.push(Step::Data(DataType::BasebandData));
        steps.push(progress(UPDATE_BASEBAND));
    }
    if profile.chip.has_sep {
        steps.push(Step::Data(DataType::FdrTrustData));
    }
    steps
}

/// What a restore did, for tests and the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Data types asked, in order.
    pub requested: Vec<&'static str>,
    /// Image bytes ASR received and checked.
    pub asr_received: u64,
    /// The ASR failure, if any.
    pub asr_failure: Option<AsrFailure>,
    /// The final status sent.
    pub final_status: Option<i64>,
    /// The build the phone will boot after a success.
    pub new_build: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Before StartRestore.
    Start,
    /// The next step is due then.
    Timer(Instant),
    /// The host's answer to a data request.
    Data(DataType),
    /// The ASR stream.
    Asr,
    /// The final status is out: waiting for ReceivedFinalStatusMsg.
    FinalAck,
    /// Rebooting.
    Over,
}

#[derive(Debug, Default)]
struct Conn {
    decoder: FrameDecoder,
    outbox: VecDeque<u8>,
}

/// The restore ramdisk.
#[derive(Debug)]
pub struct RestoreMode {
    mux: MuxPort,
    conns: HashMap<ConnId, Conn>,
    loop_conn: Option<ConnId>,
    asr_conn: Option<ConnId>,
    asr: Option<AsrSink>,
    asr_stream_bytes: u64,
    asr_decile: u64,
    restored_bytes: u64,
    steps: VecDeque<Step>,
    waiting: Waiting,
    new_version: Option<String>,
    /// A `Reboot` was answered: reboot into this mode once the reply is out, or at the instant.
    rebooting: Option<(Mode, Instant)>,
    report: RestoreReport,
}

impl RestoreMode {
    /// The ramdisk booted: usbmux up, restored listening.
    pub fn new(_core: &mut Core, now: Instant) -> Self {
        Self {
            mux: MuxPort::new(&[LOCKDOWN_PORT], now),
            conns: HashMap::new(),
            loop_conn: None,
            asr_conn: None,
            asr: None,
            asr_stream_bytes: 0,
            asr_decile: 0,
            restored_bytes: 0,
            steps: VecDeque::new(),
            waiting: Waiting::Start,
            new_version: None,
            rebooting: None,
            report: RestoreReport::default(),
        }
    }

    /// The mux.
    pub fn mux(&mut self) -> &mut MuxPort {
        &mut self.mux
    }

    /// What the restore did so far.
    pub fn report(&self) -> &RestoreReport {
        &self.report
    }

    fn send_dict(&mut self, conn: ConnId, dict: Dictionary, what: &str) {
        let mut bytes = Vec::new();
        if encode_frame_into(&Value::Dictionary(dict), Format::Xml, what, &mut bytes).is_ok() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.outbox.extend(bytes);
            }
        }
    }

    fn send_msg(&mut self, dict: Dictionary) {
        if let Some(conn) = self.loop_conn {
            let what = dict
                .get("MsgType")
                .and_then(Value::as_string)
                .unwrap_or("restored message")
                .to_string();
            self.send_dict(conn, dict, &what);
        }
    }

    fn progress(&mut self, operation: u64, progress: u64) {
        let mut d = Dictionary::new();
        d.insert("MsgType".into(), Value::from("ProgressMsg"));
        d.insert("Operation".into(), Value::from(operation));
        d.insert("Progress".into(), Value::from(progress));
        self.send_msg(d);
    }

    fn flush(&mut self) {
        if let (Some(conn), Some(asr)) = (self.asr_conn, self.asr.as_mut()) {
            let out = asr.take_output();
            if let Some(c) = self.conns.get_mut(&conn) {
                c.outbox.extend(out);
            }
        }
        for (conn, c) in self.conns.iter_mut() {
            while !c.outbox.is_empty() {
                let (a, _) = c.outbox.as_slices();
                match self.mux.device().send(*conn, a) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        c.outbox.drain(..n);
                    }
                }
            }
        }
    }

    fn service(&mut self, core: &mut Core, now: Instant) {
        while let Some(event) = self.mux.poll_event() {
            match event {
                Event::Accepted { conn, port } => {
                    if port == ASR_PORT {
                        if self.waiting == Waiting::Asr && self.asr.is_none() {
                            self.conns.insert(conn, Conn::default());
                            self.asr_conn = Some(conn);
                            self.asr = Some(AsrSink::new());
                        } else {
                            // One image per restore.
                            let _ = self.mux.device().reset(conn, "ASR: stream already open");
                        }
                    } else {
                        self.conns.insert(conn, Conn::default());
                    }
                }
                Event::Readable { conn } => self.read(core, conn, now),
                Event::Closed { conn, .. } => {
                    self.conns.remove(&conn);
                    if Some(conn) == self.asr_conn {
                        self.asr_conn = None;
                        let closed = self.asr.as_mut().map(AsrSink::closed);
                        if let Some(Err(failure)) = closed {
                            self.asr_failed(core, now, failure);
                        }
                    }
                }
                _ => {}
            }
        }
        self.flush();
    }

    fn read(&mut self, core: &mut Core, conn: ConnId, now: Instant) {
        let mut input = Vec::new();
        while let Ok(Some(bytes)) = self.mux.device().read(conn, 1 << 17) {
            input.extend_from_slice(&bytes);
        }
        if Some(conn) == self.asr_conn {
            self.asr_input(core, now, &input);
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.decoder.push(&input);
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let dict = match c.decoder.next_frame() {
                Ok(Some(frame)) => lockdown::decode_dictionary(&frame),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let Ok(dict) = dict else {
                let _ = self
                    .mux
                    .device()
                    .reset(conn, "restored: unreadable message");
                self.conns.remove(&conn);
                return;
            };
            if dict.contains_key("Request") {
                match Envelope::from_dictionary(dict) {
                    Ok(envelope) => self.request(core, conn, envelope.request, now),
                    Err(_) => {
                        let reply = Reply::error("request", LockdownError::InvalidResponse);
                        self.send_dict(conn, reply.to_dictionary(), "error");
                    }
                }
            } else {
                self.message(core, now, dict);
            }
        }
    }

    fn request(&mut self, core: &mut Core, conn: ConnId, request: Request, now: Instant) {
        let name = request.name().to_string();
        if core.refusing && !matches!(request, Request::QueryType) {
            let reply = Reply::error(&name, LockdownError::InvalidResponse);
            self.send_dict(conn, reply.to_dictionary(), &name);
            return;
        }
        let reply = match request {
            Request::QueryType => Reply::QueryType {
                daemon: DaemonType::Restored,
                restore_protocol_version: Some(RESTORE_PROTOCOL_VERSION),
            },
            Request::QueryValue { query_key } => match query_key.as_deref() {
                Some("HardwareInfo") => value_reply("HardwareInfo", hardware_info(&core.profile)),
                Some("SavedDebugInfo") => {
                    let mut d = Dictionary::new();
                    d.insert("PreviousExitStatus".into(), Value::from("none"));
                    value_reply("SavedDebugInfo", d)
                }
                _ => Reply::error(&name, LockdownError::MissingValue),
            },
            Request::StartRestore {
                restore_options, ..
            } => {
                if self.waiting == Waiting::Start {
                    self.start(core, conn, restore_options.as_ref(), now);
                }
                return;
            }
            Request::Reboot => {
                self.rebooting = Some((core.boot_target(), now + REBOOT_GRACE));
                Reply::ack(&name)
            }
            Request::Goodbye => Reply::ack(&name),
            _ => Reply::error(&name, LockdownError::Unknown("InvalidRequest".into())),
        };
        self.send_dict(conn, reply.to_dictionary(), &name);
    }

    fn start(&mut self, core: &mut Core, conn: ConnId, options: Option<&Dictionary>, now: Instant) {
        self.loop_conn = Some(conn);
        let build = options
            .and_then(|o| o.get("BuildIdentityDict"))
            .and_then(Value::as_dictionary)
            .and_then(|b| b.get("Info"))
            .and_then(Value::as_dictionary)
            .and_then(|i| i.get("BuildNumber"))
            .and_then(Value::as_string)
            .map(str::to_string);
        self.report.new_build = build;
        self.new_version = options
            .and_then(|o| o.get("ProductVersion"))
            .and_then(Value::as_string)
            .map(str::to_string);
        self.steps = restore_steps(&core.profile).into();
        self.waiting = Waiting::Timer(now + core.timings.restore_step);
    }

    /// Runs steps until one has to wait.
    fn advance(&mut self, core: &mut Core, now: Instant) {
        loop {
            match self.waiting {
                Waiting::Timer(t) if now >= t => {}
                Waiting::Start
                | Waiting::Timer(_)
                | Waiting::Data(_)
                | Waiting::Asr
                | Waiting::FinalAck
                | Waiting::Over => return,
            }
            // The timer ran out: the step it was for happens now.
            if let Some(Step::Progress {
                operation,
                progress,
            }) = self.steps.front().copied()
            {
                self.steps.pop_front();
                self.progress(operation, progress);
            }
            self.next_step(core, now);
        }
    }

    /// After a step: the next one (data requests go out at once, progress after a while).
    fn next_step(&mut self, core: &mut Core, now: Instant) {
        match self.steps.front().copied() {
            Some(Step::Data(dt)) => {
                self.steps.pop_front();
                self.report.requested.push(dt.name());
                let mut d = Dictionary::new();
                d.insert("MsgType".into(), Value::from("DataRequestMsg"));
                d.insert("DataType".into(), Value::from(dt.name()));
                self.send_msg(d);
                if dt == DataType::SystemImageData {
                    self.mux.device().listen(ASR_PORT);
                    self.waiting = Waiting::Asr;
                } else {
                    self.waiting = Waiting::Data(dt);
                }
            }
            Some(Step::Progress { .. }) => {
                self.waiting = Waiting::Timer(now + core.timings.restore_step)
            }
            None => self.finish(core, 0),
        }
    }

    /// A message-loop dictionary from the host (data answers, ReceivedFinalStatusMsg).
    fn message(&mut self, core: &mut Core, now: Instant, dict: Dictionary) {
        let msg_type = dict.get("MsgType").and_then(Value::as_string);
        if msg_type == Some("ReceivedFinalStatusMsg") {
            if self.waiting == Waiting::FinalAck {
                self.reboot_after_restore(core);
            }
            return;
        }
        let Waiting::Data(dt) = self.waiting else {
            return;
        };
        if core.refusing {
            self.finish(core, STATUS_DATA_REFUSED);
            return;
        }
        let data = match dt.reply_key() {
            Some(key) => match dict.get(key).and_then(Value::as_data) {
                Some(d) => d.to_vec(),
                None => {
                    // restored cannot go on without it.
                    self.finish(core, STATUS_DATA_REFUSED);
                    return;
                }
            },
            None => Vec::new(),
        };
        match core.take_image(ImageKind::Restore(dt.name()), &data) {
            Verdict::Accept => self.next_step(core, now),
            Verdict::Refuse(_) => self.finish(core, STATUS_DATA_REFUSED),
        }
    }

    fn asr_input(&mut self, core: &mut Core, now: Instant, input: &[u8]) {
        let Some(asr) = self.asr.as_mut() else {
            return;
        };
        let result = asr.handle_input(input);
        let (received, size, done) = (asr.received(), asr.size(), asr.is_done());
        self.report.asr_received = received;
        if let Err(failure) = result {
            self.asr_failed(core, now, failure);
            return;
        }
        if let Some(size) = size.filter(|s| *s > 0) {
            let decile = received * 10 / size;
            while self.asr_decile < decile {
                self.asr_decile += 1;
                self.progress(operation::RESTORE_IMAGE, self.asr_decile * 10);
            }
        }
        if done && self.waiting == Waiting::Asr {
            let sha256 = self.asr.as_ref().map(AsrSink::sha256).unwrap_or_default();
            core.record.uploads.push(UploadRecord {
                kind: ImageKind::Restore("SystemImageData"),
                size: received,
                sha256,
                accepted: true,
                refusal: None,
            });
            self.mux.device().unlisten(ASR_PORT);
            self.next_step(core, now);
        }
    }

    fn asr_failed(&mut self, core: &mut Core, _now: Instant, failure: AsrFailure) {
        let status = match failure {
            AsrFailure::Short { .. } | AsrFailure::TooLong { .. } => STATUS_VERIFY_FAILED,
            _ => STATUS_DATA_REFUSED,
        };
        if let Some(conn) = self.asr_conn.take() {
            let _ = self.mux.device().reset(conn, &failure.to_string());
            self.conns.remove(&conn);
        }
        self.report.asr_failure = Some(failure);
        if !matches!(self.waiting, Waiting::FinalAck | Waiting::Over) {
            self.finish(core, status);
        }
    }

    /// The final StatusMsg: `status`, or on success a `final-status:status=N` fault's number.
    fn finish(&mut self, core: &mut Core, status: i64) {
        let mut status = status;
        if status == 0 {
            for action in core.faults.on_transfer(&[Point::FinalStatus], None) {
                if let Action::Status(n) = action {
                    status = n;
                }
            }
        }
        self.steps.clear();
        self.report.final_status = Some(status);
        let mut d = Dictionary::new();
        d.insert("MsgType".into(), Value::from("StatusMsg"));
        d.insert("Status".into(), Value::from(status));
        if status != 0 {
            d.insert("AMRError".into(), Value::from(status));
        }
        self.send_msg(d);
        self.waiting = Waiting::FinalAck;
    }

    fn reboot_after_restore(&mut self, core: &mut Core) {
        self.waiting = Waiting::Over;
        let ok = self.report.final_status == Some(0);
        let target = if ok {
            if let Some(build) = &self.report.new_build {
                core.profile.build_version = build.clone();
            }
            if let Some(version) = &self.new_version {
                core.profile.product_version = version.clone();
            }
            core.nvram.insert("auto-boot".into(), "true".into());
            Mode::Normal
        } else {
            core.nvram.insert("auto-boot".into(), "false".into());
            Mode::Recovery(RecoveryStage::Iboot)
        };
        core.reenumerate(target, core.timings.after_reboot, Some(Point::RestoreMode));
    }

    fn maybe_reboot(&mut self, core: &mut Core, now: Instant) {
        if let Some((target, deadline)) = self.rebooting {
            let sent = self.conns.values().all(|c| c.outbox.is_empty()) && self.mux.flushed();
            if sent || now >= deadline {
                self.rebooting = None;
                core.reenumerate(target, core.timings.after_reboot, None);
            }
        }
    }
}

fn value_reply(key: &str, value: Dictionary) -> Reply {
    let mut fields = Dictionary::new();
    fields.insert(key.to_string(), Value::Dictionary(value));
    Reply::Generic {
        request: Some(lockdown::names::QUERY_VALUE.to_string()),
        result: None,
        fields,
    }
}

/// restored's `HardwareInfo`.
pub fn hardware_info(p: &Profile) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("UniqueChipID".into(), Value::from(p.ecid));
    d.insert("ChipID".into(), Value::from(u64::from(p.chip_id)));
    d.insert("BoardID".into(), Value::from(u64::from(p.board_id)));
    d.insert(
        "SecurityDomain".into(),
        Value::from(u64::from(p.security_domain)),
    );
    d.insert("ProductionMode".into(), Value::from(p.fuse_mode & 1 == 1));
    d.insert("HardwareModel".into(), Value::from(p.hardware_model()));
    d.insert("ProductType".into(), Value::from(p.product_type.as_str()));
    d.insert("UniqueDeviceID".into(), Value::from(p.udid.as_str()));
    d.insert("ApNonce".into(), Value::Data(p.ap_nonce.clone()));
    d
}

impl ModeHandler for RestoreMode {
    fn in_pending(&mut self) -> usize {
        self.flush();
        self.mux.pending_in()
    }

    fn touches(&self, core: &Core, transfer: &Transfer<'_>) -> Touches {
        let mut points = vec![Point::RestoreMode];
        let mut span = None;
        if let Transfer::BulkOut {
            endpoint: MUX_OUT,
            data,
        } = transfer
        {
            if let Some(tcp) = peek_tcp(data, self.mux.header_version()) {
                let n = tcp.payload.len() as u64;
                if n > 0 && tcp.dport == LOCKDOWN_PORT {
                    points.push(Point::Restored);
                    span = Some(Span {
                        before: self.restored_bytes,
                        after: self.restored_bytes + n,
                        total: core.upload_size(Point::Restored),
                    });
                } else if n > 0 && tcp.dport == ASR_PORT {
                    points.push(Point::Asr);
                    let total = self
                        .asr
                        .as_ref()
                        .and_then(AsrSink::size)
                        .unwrap_or_else(|| core.upload_size(Point::Asr));
                    span = Some(Span {
                        before: self.asr_stream_bytes,
                        after: self.asr_stream_bytes + n,
                        total,
                    });
                }
            }
        }
        Touches { points, span }
    }

    fn bulk_out(
        &mut self,
        core: &mut Core,
        endpoint: u8,
        data: &[u8],
        now: Instant,
    ) -> Result<usize, ErrorKind> {
        if endpoint == MUX_OUT {
            if let Some(tcp) = peek_tcp(data, self.mux.header_version()) {
                let n = tcp.payload.len() as u64;
                match tcp.dport {
                    LOCKDOWN_PORT => self.restored_bytes += n,
                    ASR_PORT => self.asr_stream_bytes += n,
                    _ => {}
                }
            }
        }
        let r = self.mux.bulk_out(core, endpoint, data, now);
        self.service(core, now);
        self.advance(core, now);
        self.flush();
        r
    }

    fn bulk_in(
        &mut self,
        core: &mut Core,
        endpoint: u8,
        length: usize,
        now: Instant,
    ) -> Result<Vec<u8>, ErrorKind> {
        self.advance(core, now);
        self.flush();
        let r = self.mux.bulk_in(core, endpoint, length);
        self.maybe_reboot(core, now);
        r
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let step = match self.waiting {
            Waiting::Timer(t) => Some(t),
            _ => None,
        };
        [
            self.mux.poll_timeout(),
            step,
            self.rebooting.map(|(_, t)| t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, core: &mut Core, now: Instant) {
        self.mux.handle_timeout(now);
        self.service(core, now);
        self.advance(core, now);
        self.flush();
        self.maybe_reboot(core, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_table_follows_the_profile() {
        let data = |p: &Profile| -> Vec<&'static str> {
            restore_steps(p)
                .into_iter()
                .filter_map(|s| match s {
                    Step::Data(d) => Some(d.name()),
                    Step::Progress { .. } => None,
                })
                .collect()
        };
        let phone = Profile::for_product_type("iPhone14,3", 1).unwrap();
        assert_eq!(
            data(&phone),
            [
                "RootTicket",
                "SystemImageData",
                "KernelCache",
                "DeviceTree",
                "NORData",
                "BasebandData",
                "FDRTrustData"
            ]
        );
        let ipad = Profile::for_product_type("iPad7,5", 1).unwrap();
        assert!(!data(&ipad).contains(&"BasebandData"));
        for d in data(&phone) {
            let dt = DataType::from_name(d).unwrap();
            assert_eq!(dt.name(), d);
        }
        assert_eq!(DataType::from_name("URLAsset"), None);
    }

    #[test]
    fn hardware_info_carries_the_ecid_and_board() {
        let p = Profile::for_product_type("iPhone10,3", 2).unwrap();
        let hw = hardware_info(&p);
        assert_eq!(
            hw.get("UniqueChipID").and_then(Value::as_unsigned_integer),
            Some(p.ecid)
        );
        assert_eq!(
            hw.get("BoardID").and_then(Value::as_unsigned_integer),
            Some(u64::from(p.board_id))
        );
        assert_eq!(hw.get("ProductionMode"), Some(&Value::from(true)));
    }
}
