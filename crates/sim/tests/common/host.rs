//! Test-only host side: a tiny blocking usbmux driver over any `UsbDevice` (a hub handle, a
//! recorder around one, or a trace replay), lockdown requests through it, and a restored + ASR
//! host that drives a whole restore. The real host side of restored/ASR is a later issue; this
//! is just enough to exercise the device side.
//!
//! Everything here is deterministic in what the device answers: the driver keeps its own
//! logical clock (it moves only when a bulk IN times out), so the same conversation replayed
//! from a trace makes the same transfers.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use lockdown::{DaemonType, FrameDecoder, HostCodec, Reply, Request};
use plist::{Dictionary, Value};
use sha1::{Digest, Sha1};
use sim::asr::{self, AsrReader};
use usb::{ErrorKind, UsbDevice, UsbError};
use usbmux::{CloseReason, ConnId, Event, Link};

pub const MUX_OUT: u8 = 0x04;
pub const MUX_IN: u8 = 0x85;
pub const READ_SIZE: usize = 16384;
/// How long one bulk IN waits when the phone has nothing to say.
pub const POLL: Duration = Duration::from_millis(50);
const T: Duration = Duration::from_secs(5);
/// Steps (bulk IN polls) any single wait may take: 3000 × 50 ms = 150 virtual seconds.
const MAX_STEPS: usize = 3000;

#[derive(Debug)]
pub enum HostError {
    Usb(UsbError),
    Link(usbmux::LinkError),
    Stream(usbmux::StreamError),
    Refused { port: u16, reason: String },
    Closed(CloseReason),
    Lockdown(lockdown::Error),
    Codec(lockdown::CodecError),
    Asr(asr::AsrError),
    Protocol(String),
    Stalled(&'static str),
}

impl HostError {
    pub fn usb_kind(&self) -> Option<ErrorKind> {
        match self {
            HostError::Usb(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<UsbError> for HostError {
    fn from(e: UsbError) -> Self {
        HostError::Usb(e)
    }
}
impl From<usbmux::StreamError> for HostError {
    fn from(e: usbmux::StreamError) -> Self {
        HostError::Stream(e)
    }
}
impl From<lockdown::CodecError> for HostError {
    fn from(e: lockdown::CodecError) -> Self {
        HostError::Codec(e)
    }
}
impl From<asr::AsrError> for HostError {
    fn from(e: asr::AsrError) -> Self {
        HostError::Asr(e)
    }
}

/// `usbmux::Link` pumped over a device's mux endpoints.
pub struct MuxDriver<'a> {
    pub dev: &'a mut dyn UsbDevice,
    pub link: Link,
    now: Instant,
    events: VecDeque<Event>,
    closed: HashMap<ConnId, CloseReason>,
    /// Every bulk transfer made, for tests that count them.
    pub transfers: usize,
}

impl<'a> MuxDriver<'a> {
    /// Selects the highest configuration with the mux interface, claims it, runs the
    /// VERSION/SETUP handshake.
    pub fn open(dev: &'a mut dyn UsbDevice) -> Result<Self, HostError> {
        let found = dev
            .configurations()
            .iter()
            .filter_map(|c| {
                c.interfaces
                    .iter()
                    .flat_map(|i| i.alt_settings.iter())
                    .find(|a| (a.class, a.subclass, a.protocol) == (0xFF, 0xFE, 0x02))
                    .map(|a| (c.value, a.interface_number))
            })
            .max();
        let Some((config, interface)) = found else {
            return Err(HostError::Protocol("no mux interface".into()));
        };
        dev.set_configuration(config)?;
        dev.claim_interface(interface)?;
        let now = Instant::now();
        let mut d = MuxDriver {
            dev,
            link: Link::new(now),
            now,
            events: VecDeque::new(),
            closed: HashMap::new(),
            transfers: 0,
        };
        for _ in 0..MAX_STEPS {
            d.step()?;
            if d.link.header_version().is_some() {
                return Ok(d);
            }
        }
        Err(HostError::Stalled("mux handshake"))
    }

    /// Writes what the link has to send, reads once (a timeout moves the host's clock).
    pub fn step(&mut self) -> Result<(), HostError> {
        while let Some(p) = self.link.poll_transmit() {
            self.dev.bulk_out(MUX_OUT, &p, T)?;
            self.transfers += 1;
            if usbmux::needs_zlp(p.len(), 512) {
                self.dev.bulk_out(MUX_OUT, &[], T)?;
                self.transfers += 1;
            }
        }
        self.transfers += 1;
        match self.dev.bulk_in(MUX_IN, READ_SIZE, POLL) {
            Ok(bytes) => self
                .link
                .handle_input(&bytes, self.now)
                .map_err(HostError::Link)?,
            Err(e) if e.kind() == ErrorKind::Timeout => self.now += POLL,
            Err(e) => return Err(e.into()),
        }
        if self.link.poll_timeout().is_some_and(|t| t <= self.now) {
            self.link.handle_timeout(self.now);
        }
        while let Some(e) = self.link.poll_event() {
            if let Event::Closed { conn, reason } = &e {
                self.closed.insert(*conn, reason.clone());
            }
            self.events.push_back(e);
        }
        Ok(())
    }

    /// Opens a connection to `port`.
    pub fn connect(&mut self, port: u16) -> Result<ConnId, HostError> {
        let conn = self.link.connect(port, self.now)?;
        for _ in 0..MAX_STEPS {
            self.step()?;
            while let Some(e) = self.events.pop_front() {
                match e {
                    Event::Connected { conn: c } if c == conn => return Ok(conn),
                    Event::Refused {
                        conn: c,
                        port,
                        reason,
                    } if c == conn => return Err(HostError::Refused { port, reason }),
                    _ => {}
                }
            }
        }
        Err(HostError::Stalled("connect"))
    }

    /// Queues all of `data` on `conn`, pumping while the send buffer is full.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), HostError> {
        let mut rest = data;
        for _ in 0..MAX_STEPS {
            let n = self.link.send(conn, rest)?;
            rest = &rest[n..];
            if rest.is_empty() {
                // Push it out now.
                while let Some(p) = self.link.poll_transmit() {
                    self.dev.bulk_out(MUX_OUT, &p, T)?;
                    self.transfers += 1;
                    if usbmux::needs_zlp(p.len(), 512) {
                        self.dev.bulk_out(MUX_OUT, &[], T)?;
                        self.transfers += 1;
                    }
                }
                return Ok(());
            }
            self.step()?;
        }
        Err(HostError::Stalled("send"))
    }

    /// The next bytes from `conn` (waits for them).
    pub fn recv(&mut self, conn: ConnId) -> Result<Vec<u8>, HostError> {
        for _ in 0..MAX_STEPS {
            if let Some(b) = self.link.read(conn, 1 << 20)? {
                return Ok(b.to_vec());
            }
            if let Some(reason) = self.closed.get(&conn) {
                return Err(HostError::Closed(reason.clone()));
            }
            self.step()?;
        }
        Err(HostError::Stalled("recv"))
    }

    pub fn close(&mut self, conn: ConnId) -> Result<(), HostError> {
        self.link.close(conn)?;
        while let Some(p) = self.link.poll_transmit() {
            self.dev.bulk_out(MUX_OUT, &p, T)?;
            self.transfers += 1;
        }
        Ok(())
    }

    /// Why `conn` closed, if it did.
    pub fn closed(&self, conn: ConnId) -> Option<&CloseReason> {
        self.closed.get(&conn)
    }
}

/// A lockdown client on one mux connection.
pub struct Lockdown {
    pub conn: ConnId,
    pub codec: HostCodec,
}

impl Lockdown {
    pub fn connect(mux: &mut MuxDriver<'_>) -> Result<Self, HostError> {
        let conn = mux.connect(lockdown::PORT)?;
        Ok(Lockdown {
            conn,
            codec: HostCodec::new().with_label("restation-test"),
        })
    }

    /// Sends `request`, returns the checked reply.
    pub fn request(
        &mut self,
        mux: &mut MuxDriver<'_>,
        request: Request,
    ) -> Result<Reply, HostError> {
        let name = request.name().to_string();
        let mut wire = Vec::new();
        self.codec.encode_request(&request, &mut wire)?;
        mux.send(self.conn, &wire)?;
        loop {
            if let Some(reply) = self.codec.poll_reply()? {
                return lockdown::check_reply(&name, reply).map_err(HostError::Lockdown);
            }
            let bytes = mux.recv(self.conn)?;
            self.codec.receive(&bytes);
        }
    }

    pub fn get_value(
        &mut self,
        mux: &mut MuxDriver<'_>,
        domain: Option<&str>,
        key: Option<&str>,
    ) -> Result<Value, HostError> {
        let reply = self.request(
            mux,
            Request::GetValue {
                domain: domain.map(str::to_string),
                key: key.map(str::to_string),
            },
        )?;
        match reply {
            Reply::GetValue { value: Some(v), .. } => Ok(v),
            other => Err(HostError::Protocol(format!("GetValue answered {other:?}"))),
        }
    }
}

/// The lockdown device error of a failed request.
pub fn device_error(e: &HostError) -> Option<&lockdown::ErrorKind> {
    match e {
        HostError::Lockdown(lockdown::Error::Device { kind, .. }) => Some(kind),
        _ => None,
    }
}

/// Normal-mode identification: QueryType, then `keys` one by one, then Goodbye.
pub fn identify(dev: &mut dyn UsbDevice, keys: &[&str]) -> Result<Vec<Value>, HostError> {
    let mut mux = MuxDriver::open(dev)?;
    let mut ld = Lockdown::connect(&mut mux)?;
    match ld.request(&mut mux, Request::QueryType)? {
        Reply::QueryType {
            daemon: DaemonType::Lockdown,
            ..
        } => {}
        other => return Err(HostError::Protocol(format!("QueryType: {other:?}"))),
    }
    let mut values = Vec::new();
    for key in keys {
        values.push(ld.get_value(&mut mux, None, Some(key))?);
    }
    ld.request(&mut mux, Request::Goodbye)?;
    mux.close(ld.conn)?;
    Ok(values)
}

/// Normal mode → recovery: QueryType, EnterRecovery, then reads until the phone is gone.
/// Returns the error that showed it left (NO_DEVICE).
pub fn enter_recovery(dev: &mut dyn UsbDevice) -> Result<HostError, HostError> {
    let mut mux = MuxDriver::open(dev)?;
    let mut ld = Lockdown::connect(&mut mux)?;
    ld.request(&mut mux, Request::QueryType)?;
    ld.request(&mut mux, Request::EnterRecovery)?;
    for _ in 0..MAX_STEPS {
        if let Err(e) = mux.step() {
            return Ok(e);
        }
    }
    Err(HostError::Stalled(
        "the phone did not leave after EnterRecovery",
    ))
}

/// How the test host misbehaves (or not) in a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreHost {
    /// The OS image sent over ASR.
    pub image: Vec<u8>,
    /// Send a wrong SHA-1 after this chunk.
    pub corrupt_chunk: Option<usize>,
    /// Stop streaming after this many image bytes and close the ASR connection.
    pub truncate: Option<usize>,
    /// `BuildIdentityDict.Info.BuildNumber` and `ProductVersion` in RestoreOptions.
    pub build: Option<(String, String)>,
}

/// What the host saw.
#[derive(Debug, Clone, Default)]
pub struct RestoreSeen {
    pub restore_protocol_version: Option<u64>,
    pub hardware_info: Dictionary,
    pub requested: Vec<String>,
    pub progress: Vec<(u64, u64)>,
    pub status: Option<i64>,
    /// The reason the phone reset the ASR connection, if it did.
    pub asr_reset: Option<String>,
}

/// restored's framing on one connection (4-byte length + plist), for the message loop.
struct PlistConn {
    conn: ConnId,
    decoder: FrameDecoder,
}

impl PlistConn {
    fn send(&self, mux: &mut MuxDriver<'_>, dict: Dictionary) -> Result<(), HostError> {
        let wire = lockdown::encode_frame(
            &Value::Dictionary(dict),
            lockdown::Format::Xml,
            "host message",
        )?;
        mux.send(self.conn, &wire)
    }

    fn next(&mut self, mux: &mut MuxDriver<'_>) -> Result<Dictionary, HostError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(lockdown::decode_dictionary(&frame)?);
            }
            let bytes = mux.recv(self.conn)?;
            self.decoder.push(&bytes);
        }
    }
}

fn dict(pairs: Vec<(&str, Value)>) -> Dictionary {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A whole restore from the host's side: QueryType, HardwareInfo, StartRestore, the message
/// loop, ASR, ReceivedFinalStatusMsg.
pub fn restore(dev: &mut dyn UsbDevice, host: &RestoreHost) -> Result<RestoreSeen, HostError> {
    let mut seen = RestoreSeen::default();
    let mut mux = MuxDriver::open(dev)?;
    let mut ld = Lockdown::connect(&mut mux)?;
    match ld.request(&mut mux, Request::QueryType)? {
        Reply::QueryType {
            daemon: DaemonType::Restored,
            restore_protocol_version,
        } => seen.restore_protocol_version = restore_protocol_version,
        other => return Err(HostError::Protocol(format!("QueryType: {other:?}"))),
    }
    let reply = ld.request(
        &mut mux,
        Request::QueryValue {
            query_key: Some("HardwareInfo".into()),
        },
    )?;
    if let Reply::Generic { fields, .. } = reply {
        if let Some(Value::Dictionary(hw)) = fields.get("HardwareInfo") {
            seen.hardware_info = hw.clone();
        }
    }
    let mut options = dict(vec![
        ("AutoBootDelay", Value::from(0u64)),
        ("CreateFilesystemPartitions", Value::from(true)),
    ]);
    if let Some((build, version)) = &host.build {
        let info = dict(vec![("BuildNumber", Value::from(build.as_str()))]);
        let identity = dict(vec![("Info", Value::Dictionary(info))]);
        options.insert("BuildIdentityDict".into(), Value::Dictionary(identity));
        options.insert("ProductVersion".into(), Value::from(version.as_str()));
    }
    let mut wire = Vec::new();
    ld.codec.encode_request(
        &Request::StartRestore {
            restore_protocol_version: seen.restore_protocol_version,
            restore_options: Some(options),
        },
        &mut wire,
    )?;
    mux.send(ld.conn, &wire)?;
    let mut asr_conn = None;
    let mut restored = PlistConn {
        conn: ld.conn,
        decoder: FrameDecoder::new(),
    };
    restored.decoder.push(&ld.codec.take_buffered());
    loop {
        let msg = restored.next(&mut mux)?;
        match msg.get("MsgType").and_then(Value::as_string) {
            Some("ProgressMsg") => {
                let op = msg.get("Operation").and_then(Value::as_unsigned_integer);
                let p = msg.get("Progress").and_then(Value::as_unsigned_integer);
                seen.progress.push((op.unwrap_or(0), p.unwrap_or(0)));
            }
            Some("DataRequestMsg") => {
                let dt = msg
                    .get("DataType")
                    .and_then(Value::as_string)
                    .unwrap_or("")
                    .to_string();
                seen.requested.push(dt.clone());
                let data = |n: usize, salt: u8| Value::Data(super::image(n, salt));
                let answer = match dt.as_str() {
                    "SystemImageData" => {
                        asr_conn = Some(asr_stream(&mut mux, host)?);
                        continue;
                    }
                    "RootTicket" => dict(vec![("RootTicketData", data(300, 1))]),
                    "KernelCache" => dict(vec![("KernelCacheFile", data(2000, 2))]),
                    "DeviceTree" => dict(vec![("DeviceTreeFile", data(700, 3))]),
                    "NORData" => dict(vec![
                        ("LlbImageData", data(500, 4)),
                        ("NorImageData", Value::Array(vec![data(400, 5)])),
                    ]),
                    "BasebandData" => dict(vec![("BasebandData", data(900, 6))]),
                    _ => Dictionary::new(),
                };
                restored.send(&mut mux, answer)?;
            }
            Some("StatusMsg") => {
                if let Some(Some(CloseReason::Reset { reason })) = asr_conn.map(|c| mux.closed(c)) {
                    seen.asr_reset = Some(reason.clone());
                }
                seen.status = msg.get("Status").and_then(Value::as_signed_integer);
                restored.send(
                    &mut mux,
                    dict(vec![("MsgType", Value::from("ReceivedFinalStatusMsg"))]),
                )?;
                return Ok(seen);
            }
            _ => {}
        }
    }
}

/// The ASR side: connect (retrying while refused), Initiate, packet info, OOB ranges, the
/// payload in checksummed chunks. Returns the connection (the phone may have reset it).
fn asr_stream(mux: &mut MuxDriver<'_>, host: &RestoreHost) -> Result<ConnId, HostError> {
    let mut tries = 0;
    let conn = loop {
        match mux.connect(12345) {
            Ok(c) => break c,
            Err(HostError::Refused { .. }) if tries < 20 => tries += 1,
            Err(e) => return Err(e),
        }
    };
    let reset = |mux: &MuxDriver<'_>| mux.closed(conn).is_some();
    let mut reader = AsrReader::new();
    let next = |mux: &mut MuxDriver<'_>, reader: &mut AsrReader| -> Result<Dictionary, HostError> {
        loop {
            if let Some(d) = reader.next_plist()? {
                return Ok(d);
            }
            let bytes = mux.recv(conn)?;
            reader.push(&bytes);
        }
    };
    let initiate = next(mux, &mut reader)?;
    if initiate.get("Command").and_then(Value::as_string) != Some("Initiate") {
        return Err(HostError::Protocol(format!("ASR: {initiate:?}")));
    }
    let checksums = initiate
        .get("Checksum Chunks")
        .and_then(Value::as_boolean)
        .unwrap_or(false);
    let image = &host.image;
    let payload = dict(vec![
        ("Port", Value::from(1u64)),
        ("Size", Value::from(image.len() as u64)),
    ]);
    let info = dict(vec![
        ("Checksum Chunk Size", Value::from(asr::CHUNK_SIZE as u64)),
        ("FEC Slice Stride", Value::from(40u64)),
        ("Packet Payload Size", Value::from(1450u64)),
        ("Packets Per FEC", Value::from(25u64)),
        ("Payload", Value::Dictionary(payload)),
        ("Stream ID", Value::from(1u64)),
        ("Version", Value::from(1u64)),
    ]);
    mux.send(conn, &asr::encode(&info)?)?;
    loop {
        let cmd = next(mux, &mut reader)?;
        match cmd.get("Command").and_then(Value::as_string) {
            Some("OOBData") => {
                let off = cmd.get("OOB Offset").and_then(Value::as_unsigned_integer);
                let len = cmd.get("OOB Length").and_then(Value::as_unsigned_integer);
                let (Some(off), Some(len)) = (off, len) else {
                    return Err(HostError::Protocol(format!("ASR OOB: {cmd:?}")));
                };
                let range = image.get(off as usize..(off + len) as usize);
                let bytes = range.ok_or_else(|| HostError::Protocol("OOB out of range".into()))?;
                mux.send(conn, bytes)?;
            }
            Some("Payload") => break,
            other => return Err(HostError::Protocol(format!("ASR command {other:?}"))),
        }
    }
    let mut sent = 0;
    for (i, chunk) in image.chunks(asr::CHUNK_SIZE).enumerate() {
        let chunk = match host.truncate {
            Some(limit) if sent + chunk.len() > limit => &chunk[..limit - sent],
            _ => chunk,
        };
        let r = mux.send(conn, chunk).and_then(|()| {
            if checksums && Some(sent + chunk.len()) != host.truncate {
                let mut sum = Sha1::digest(chunk).to_vec();
                if host.corrupt_chunk == Some(i) {
                    sum[0] ^= 0xFF;
                }
                mux.send(conn, &sum)
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => {}
            Err(HostError::Stream(_)) if reset(mux) => return Ok(conn),
            Err(e) => return Err(e),
        }
        sent += chunk.len();
        if host.truncate == Some(sent) {
            mux.close(conn)?;
            return Ok(conn);
        }
        if reset(mux) {
            return Ok(conn);
        }
    }
    Ok(conn)
}
