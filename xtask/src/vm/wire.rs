//! The wire comparison: usbmon captures the guest made (`run/wire/<name>.pcap`, binary
//! interface, link type 220) of a peer tool and of restation doing the same thing to the same
//! kind of phone, read with `usb::trace` and compared transfer by transfer.
//!
//! Each capture comes with `<name>.meta` (`bus=B device=D rc=N ...`): the device of interest
//! and the exit status of the command that ran under the capture. Only that device's records
//! are compared (and kept, with `--write-traces`).
//!
//! What is normalized (and named in the output when it differs), for uploads: standard requests
//! (descriptor reads and configuration: the kernel's and libusb's housekeeping, and the
//! descriptor reads vm-guest-tool does so a replay can present the device), the number of
//! GETSTATUS polls in a row, how a bulk stream is cut into transfers (the bytes and the closing
//! zero-length packet are compared). For the usbmux/lockdown conversation: host ports, TCP
//! sequence and acknowledgement numbers, pure ACKs, window sizes, how a stream is cut into mux
//! packets, and the values of lockdown replies (two phones: another ECID).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use usb::trace::{
    read_records, Conversation, EventType, Exchange, Outcome, Record, Request, TraceWriter,
    XferType,
};

/// A capture of one device.
pub struct Capture {
    pub name: String,
    pub bus: u16,
    pub device: u8,
    /// That device's records, in capture order.
    pub records: Vec<Record>,
    /// Records of the whole bus in the file.
    pub all_records: usize,
}

fn meta_field<'a>(meta: &'a str, key: &str) -> Option<&'a str> {
    meta.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Reads `dir/<name>.pcap` and `dir/<name>.meta`, keeps the device's records.
pub fn load(dir: &Path, name: &str) -> Result<Capture> {
    let meta_path = dir.join(format!("{name}.meta"));
    let meta = fs::read_to_string(&meta_path)
        .with_context(|| format!("no {} (the guest did not run it)", meta_path.display()))?
        .trim()
        .to_owned();
    if let Some(err) = meta.find("error=") {
        bail!("{}", &meta[err..]);
    }
    let rc = meta_field(&meta, "rc").unwrap_or("?");
    if rc != "0" {
        bail!("the command under capture failed: {meta}");
    }
    if let Some(dropped) = meta_field(&meta, "dropped") {
        if dropped.trim_end_matches(']') != "0" {
            bail!("usbmon dropped events: {meta}");
        }
    }
    let bus: u16 = meta_field(&meta, "bus")
        .and_then(|b| b.parse().ok())
        .context("meta without bus")?;
    let device: u8 = meta_field(&meta, "device")
        .and_then(|d| d.parse().ok())
        .context("meta without device")?;
    let pcap = dir.join(format!("{name}.pcap"));
    let file = fs::File::open(&pcap).with_context(|| format!("opening {}", pcap.display()))?;
    let all = read_records(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", pcap.display()))?;
    let all_records = all.len();
    let records: Vec<Record> = all
        .into_iter()
        .filter(|r| r.bus == bus && r.device == device)
        .collect();
    if records.is_empty() {
        bail!("{all_records} records on bus {bus}, none of device {device} ({meta})");
    }
    Ok(Capture {
        name: name.to_owned(),
        bus,
        device,
        records,
        all_records,
    })
}

impl Capture {
    fn conversation(&self) -> Conversation {
        Conversation::from_records(&self.records)
            .into_iter()
            .next()
            .unwrap_or(Conversation {
                bus: self.bus,
                device: self.device,
                exchanges: Vec::new(),
            })
    }

    /// The device's records as a pcap file (link type 220).
    pub fn write(&self, path: &Path) -> Result<u64> {
        let mut w = TraceWriter::new(Vec::new())?;
        for r in &self.records {
            w.write(r)?;
        }
        let out = w.into_inner();
        fs::write(path, &out).with_context(|| format!("writing {}", path.display()))?;
        Ok(out.len() as u64)
    }
}

/// The outcome of one comparison: PASS or FAIL and the figures.
pub struct Verdict {
    pub pass: bool,
    pub text: String,
}

// --- uploads ----------------------------------------------------------------------------------

/// One step of an upload, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A non-standard control transfer: setup, OUT data length or IN wLength, and how it ended.
    Control(String),
    /// A run of GETSTATUS polls (how many is normalized).
    GetStatus,
    /// A run of bulk OUT transfers on one endpoint: total bytes, whether it ended with a ZLP.
    Bulk { endpoint: u8, bytes: u64, zlp: bool },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Control(s) => f.write_str(s),
            Step::GetStatus => f.write_str("GETSTATUS…"),
            Step::Bulk {
                endpoint,
                bytes,
                zlp,
            } => write!(
                f,
                "bulk OUT {endpoint:#04x} {bytes}B{}",
                if *zlp { " + ZLP" } else { "" }
            ),
        }
    }
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::In(d) => format!("{}B", d.len()),
        Outcome::Out { written } => format!("{written}B"),
        Outcome::Failed(kind) => format!("{kind:?}"),
        Outcome::Missing => "no completion".into(),
    }
}

/// What one side of an upload did.
#[derive(Default)]
struct Upload {
    steps: Vec<Step>,
    /// Counts of what normalization folded away.
    getstatus: usize,
    chunks: BTreeMap<usize, usize>,
    housekeeping: BTreeMap<String, usize>,
    /// Every byte the host sent in data stages and bulk OUT, in order.
    payload: Vec<u8>,
    /// The last DNLOAD with data ends with the DFU suffix (`UFD`, length 16).
    suffix: bool,
}

fn upload_of(c: &Capture) -> Upload {
    let mut u = Upload::default();
    let mut last_dnload_data: Vec<u8> = Vec::new();
    for Exchange {
        request, outcome, ..
    } in c.conversation().exchanges
    {
        if request.is_standard() {
            let what = match &request {
                Request::ControlIn { setup, .. } if setup.request == 6 => match setup.value >> 8 {
                    1 => "GET_DESCRIPTOR(device)".to_owned(),
                    2 => "GET_DESCRIPTOR(configuration)".to_owned(),
                    3 => "GET_DESCRIPTOR(string)".to_owned(),
                    t => format!("GET_DESCRIPTOR(type {t})"),
                },
                other => other.setup().map(|s| s.to_string()).unwrap_or_default(),
            };
            *u.housekeeping.entry(what).or_default() += 1;
            continue;
        }
        let failed = matches!(outcome, Outcome::Failed(_) | Outcome::Missing);
        let end = if failed {
            format!(" -> {}", outcome_text(&outcome))
        } else {
            String::new()
        };
        match &request {
            Request::ControlIn { setup, length }
                if setup.request_type == 0xA1 && setup.request == 3 && !failed =>
            {
                let _ = length;
                u.getstatus += 1;
                if u.steps.last() != Some(&Step::GetStatus) {
                    u.steps.push(Step::GetStatus);
                }
            }
            Request::ControlIn { setup, length } => {
                let name = match (setup.request_type, setup.request) {
                    (0xA1, 3) => "GETSTATUS".to_owned(),
                    (0xA1, 5) => "GETSTATE".to_owned(),
                    _ => format!("control IN {setup} wLength={length}"),
                };
                u.steps.push(Step::Control(format!("{name}{end}")));
            }
            Request::ControlOut { setup, data } => {
                u.payload.extend_from_slice(data);
                let name = match (setup.request_type, setup.request) {
                    (0x21, 1) => {
                        if !data.is_empty() {
                            last_dnload_data.clone_from(data);
                        }
                        format!("DNLOAD block={} {}B", setup.value, data.len())
                    }
                    (0x21, 4) => "CLRSTATUS".to_owned(),
                    (0x21, 6) => "ABORT".to_owned(),
                    _ => format!("control OUT {setup} {}B", data.len()),
                };
                u.steps.push(Step::Control(format!("{name}{end}")));
            }
            Request::BulkOut { endpoint, data } => {
                u.payload.extend_from_slice(data);
                *u.chunks.entry(data.len()).or_default() += 1;
                match u.steps.last_mut() {
                    Some(Step::Bulk {
                        endpoint: e,
                        bytes,
                        zlp,
                    }) if *e == *endpoint && !*zlp => {
                        *bytes += data.len() as u64;
                        *zlp = data.is_empty();
                    }
                    _ => u.steps.push(Step::Bulk {
                        endpoint: *endpoint,
                        bytes: data.len() as u64,
                        zlp: data.is_empty(),
                    }),
                }
                if failed {
                    u.steps.push(Step::Control(format!("bulk OUT failed{end}")));
                }
            }
            Request::BulkIn { endpoint, length } => u.steps.push(Step::Control(format!(
                "bulk IN {endpoint:#04x} {length}B -> {}",
                outcome_text(&outcome)
            ))),
        }
    }
    u.suffix = last_dnload_data.len() >= 16 && {
        let s = &last_dnload_data[last_dnload_data.len() - 16..];
        s[8..11] == *b"UFD" && s[11] == 16
    };
    u
}

fn counts(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn chunk_text(m: &BTreeMap<usize, usize>) -> String {
    m.iter()
        .map(|(size, n)| format!("{size}B×{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Compares a peer's upload with restation's.
pub fn compare_uploads(peer_name: &str, peer: &Capture, ours: &Capture) -> Verdict {
    let a = upload_of(peer);
    let b = upload_of(ours);
    let mut normalized = Vec::new();
    if a.getstatus != b.getstatus {
        normalized.push(format!(
            "GETSTATUS polls {peer_name}={} restation={}",
            a.getstatus, b.getstatus
        ));
    }
    if a.chunks != b.chunks && !(a.chunks.is_empty() && b.chunks.is_empty()) {
        normalized.push(format!(
            "bulk transfer sizes {peer_name}=[{}] restation=[{}]",
            chunk_text(&a.chunks),
            chunk_text(&b.chunks)
        ));
    }
    if a.housekeeping != b.housekeeping {
        normalized.push(format!(
            "standard requests {peer_name}=[{}] restation=[{}]",
            counts(&a.housekeeping),
            counts(&b.housekeeping)
        ));
    }
    let mut real = Vec::new();
    let first = a
        .steps
        .iter()
        .zip(&b.steps)
        .position(|(x, y)| x != y)
        .or_else(|| (a.steps.len() != b.steps.len()).then(|| a.steps.len().min(b.steps.len())));
    if let Some(i) = first {
        let show = |s: &[Step]| {
            s.get(i)
                .map(|x| x.to_string())
                .unwrap_or_else(|| "end".into())
        };
        let before = i
            .checked_sub(1)
            .and_then(|j| a.steps.get(j))
            .map(|s| format!(" after `{s}`"))
            .unwrap_or_default();
        real.push(format!(
            "first difference at step {i}{before}: {peer_name} `{}` vs restation `{}` (steps {peer_name}={} restation={})",
            show(&a.steps),
            show(&b.steps),
            a.steps.len(),
            b.steps.len()
        ));
    }
    if a.payload != b.payload {
        let at = a
            .payload
            .iter()
            .zip(&b.payload)
            .position(|(x, y)| x != y)
            .unwrap_or(a.payload.len().min(b.payload.len()));
        real.push(format!(
            "host data differs at byte {at} ({peer_name} {}B, restation {}B)",
            a.payload.len(),
            b.payload.len()
        ));
    }
    if a.suffix != b.suffix {
        real.push(format!(
            "DFU suffix in the last block: {peer_name}={} restation={}",
            a.suffix, b.suffix
        ));
    }
    let summary = format!(
        "steps={} [{}] data={}B suffix={} usbmon={}+{} records",
        b.steps.len(),
        abbreviate(&b.steps),
        b.payload.len(),
        if b.suffix { "yes" } else { "no" },
        peer.records.len(),
        ours.records.len(),
    );
    let normalized = if normalized.is_empty() {
        "nothing".to_owned()
    } else {
        normalized.join("; ")
    };
    if real.is_empty() {
        Verdict {
            pass: true,
            text: format!("{peer_name} and restation send the same sequence: {summary}; normalized: {normalized}"),
        }
    } else {
        Verdict {
            pass: false,
            text: format!("{}; normalized: {normalized}; {summary}", real.join("; ")),
        }
    }
}

/// A step list in a line: runs of the same step as `step×n`.
fn abbreviate(steps: &[Step]) -> String {
    let mut out: Vec<(String, usize)> = Vec::new();
    for s in steps {
        let text = match s {
            Step::Control(t) if t.starts_with("DNLOAD block=") => {
                // block numbers count up; fold the run
                let size = t.rsplit(' ').next().unwrap_or_default();
                format!("DNLOAD {size}")
            }
            other => other.to_string(),
        };
        match out.last_mut() {
            Some((t, n)) if *t == text => *n += 1,
            _ => out.push((text, 1)),
        }
    }
    out.iter()
        .map(|(t, n)| {
            if *n > 1 {
                format!("{t}×{n}")
            } else {
                t.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// --- usbmux / lockdown ---------------------------------------------------------------------------

const LOCKDOWN_PORT: u16 = 62078;

/// One mux packet, decoded as far as the comparison needs.
#[derive(Debug, Clone)]
struct MuxPacket {
    to_device: bool,
    protocol: u32,
    tcp: Option<Tcp>,
}

#[derive(Debug, Clone)]
struct Tcp {
    sport: u16,
    dport: u16,
    flags: u8,
    window: u16,
    payload: Vec<u8>,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Splits a direction's byte stream into mux packets (a transfer may hold a part of one).
#[derive(Default)]
struct Reassembler {
    buf: Vec<u8>,
}

impl Reassembler {
    fn push(&mut self, data: &[u8], to_device: bool, out: &mut Vec<MuxPacket>) {
        self.buf.extend_from_slice(data);
        loop {
            if self.buf.len() < 8 {
                return;
            }
            let be = |o: usize| {
                u32::from_be_bytes([
                    self.buf[o],
                    self.buf[o + 1],
                    self.buf[o + 2],
                    self.buf[o + 3],
                ])
            };
            let protocol = be(0);
            let length = be(4) as usize;
            if !(8..=1 << 20).contains(&length) {
                // not a mux packet boundary: drop what we have
                self.buf.clear();
                return;
            }
            if self.buf.len() < length {
                return;
            }
            let packet: Vec<u8> = self.buf.drain(..length).collect();
            let header_len = if packet.len() >= 16 && packet[8..12] == [0xfe, 0xed, 0xfa, 0xce] {
                16
            } else {
                8
            };
            let tcp = (protocol == 6 && packet.len() >= header_len + 20).then(|| {
                let t = &packet[header_len..];
                let off = usize::from(t[12] >> 4) * 4;
                Tcp {
                    sport: u16::from_be_bytes([t[0], t[1]]),
                    dport: u16::from_be_bytes([t[2], t[3]]),
                    flags: t[13],
                    window: u16::from_be_bytes([t[14], t[15]]),
                    payload: t.get(off.max(20)..).unwrap_or_default().to_vec(),
                }
            });
            out.push(MuxPacket {
                to_device,
                protocol,
                tcp,
            });
        }
    }
}

fn mux_packets(c: &Capture) -> Vec<MuxPacket> {
    let mut out = Vec::new();
    let mut to_dev = Reassembler::default();
    let mut to_host = Reassembler::default();
    for r in &c.records {
        if r.xfer_type != XferType::Bulk || r.data.is_empty() {
            continue;
        }
        match (r.event, r.is_in()) {
            (EventType::Submit, false) => to_dev.push(&r.data, true, &mut out),
            (EventType::Complete, true)
                if matches!(r.status, 0 | -121) || r.is_bulk_in_unlinked_with_bytes() =>
            {
                to_host.push(&r.data, false, &mut out)
            }
            _ => {}
        }
    }
    out
}

/// A lockdown frame described with its values normalized.
fn describe_frame(frame: &[u8]) -> String {
    let Ok(dict) = plist::from_bytes::<plist::Dictionary>(frame) else {
        return format!("<{} bytes, not a plist>", frame.len());
    };
    let mut parts = Vec::new();
    for (k, v) in dict.iter() {
        let shown = match (k.as_str(), v) {
            (
                "Request" | "Key" | "Domain" | "Type" | "Error" | "Result",
                plist::Value::String(s),
            ) => {
                format!("{k}={s}")
            }
            (_, plist::Value::String(_)) => format!("{k}=<string>"),
            (_, plist::Value::Integer(_)) => format!("{k}=<integer>"),
            (_, plist::Value::Boolean(b)) => format!("{k}={b}"),
            (_, plist::Value::Dictionary(_)) => format!("{k}=<dict>"),
            (_, plist::Value::Array(_)) => format!("{k}=<array>"),
            (_, plist::Value::Data(_)) => format!("{k}=<data>"),
            _ => format!("{k}=<value>"),
        };
        parts.push(shown);
    }
    parts.sort();
    format!("{{{}}}", parts.join(" "))
}

/// The lockdown conversation on the wire, normalized.
#[derive(Default)]
struct MuxSide {
    steps: Vec<String>,
    pure_acks: usize,
    windows: BTreeSet<u16>,
    data_packets: usize,
    non_tcp: usize,
    /// Bulk IN sizes the host asked for, and reads that ended without data (cancelled by the
    /// host's timeout, or at the end of the capture).
    read_sizes: BTreeSet<u32>,
    reads_cancelled: usize,
}

fn mux_side(c: &Capture) -> MuxSide {
    let mut side = MuxSide::default();
    for r in &c.records {
        if r.xfer_type == XferType::Bulk && r.is_in() {
            match r.event {
                EventType::Submit => {
                    side.read_sizes.insert(r.length);
                }
                EventType::Complete if r.status == -2 || r.status == -104 => {
                    side.reads_cancelled += 1
                }
                _ => {}
            }
        }
    }
    let mut host_ports: BTreeMap<u16, usize> = BTreeMap::new();
    // per (host port, to_device): bytes not yet a whole lockdown frame
    let mut streams: BTreeMap<(u16, bool), Vec<u8>> = BTreeMap::new();
    for p in mux_packets(c) {
        let Some(t) = &p.tcp else {
            side.non_tcp += 1;
            side.steps.push(format!(
                "{} mux protocol {}",
                if p.to_device { "H→D" } else { "D→H" },
                p.protocol
            ));
            continue;
        };
        let (host_port, dev_port) = if p.to_device {
            (t.sport, t.dport)
        } else {
            (t.dport, t.sport)
        };
        let n = host_ports.len();
        let conn = *host_ports.entry(host_port).or_insert(n);
        let dir = if p.to_device { "H→D" } else { "D→H" };
        let port = if dev_port == LOCKDOWN_PORT {
            "lockdown".to_owned()
        } else {
            dev_port.to_string()
        };
        side.windows.insert(t.window);
        let flags = t.flags & (SYN | RST | FIN);
        if flags != 0 {
            let mut names = Vec::new();
            if t.flags & SYN != 0 {
                names.push("SYN");
            }
            if t.flags & ACK != 0 && t.flags & SYN != 0 {
                names.push("ACK");
            }
            if t.flags & RST != 0 {
                names.push("RST");
            }
            if t.flags & FIN != 0 {
                names.push("FIN");
            }
            // a reset or close carries no stream bytes; a reason text in it is worth seeing
            let payload = if t.payload.is_empty() {
                String::new()
            } else {
                format!(
                    " with {}B payload {:?}",
                    t.payload.len(),
                    String::from_utf8_lossy(&t.payload)
                )
            };
            side.steps.push(format!(
                "{dir} conn{conn}:{port} {}{payload}",
                names.join("/")
            ));
            continue;
        }
        if t.payload.is_empty() {
            if flags == 0 {
                side.pure_acks += 1;
            }
            continue;
        }
        side.data_packets += 1;
        let stream = streams.entry((host_port, p.to_device)).or_default();
        stream.extend_from_slice(&t.payload);
        while stream.len() >= 4 {
            let len = u32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]) as usize;
            if stream.len() < 4 + len {
                break;
            }
            let frame: Vec<u8> = stream.drain(..4 + len).skip(4).collect();
            side.steps.push(format!(
                "{dir} conn{conn}:{port} {}",
                describe_frame(&frame)
            ));
        }
    }
    for ((port, to_device), rest) in &streams {
        if !rest.is_empty() {
            side.steps.push(format!(
                "{} port {port}: {} bytes that are not a whole lockdown frame",
                if *to_device { "H→D" } else { "D→H" },
                rest.len()
            ));
        }
    }
    side
}

/// Compares the usbmux/lockdown conversation of `ideviceinfo -k UniqueChipID` through two
/// daemons.
pub fn compare_mux(peer_name: &str, peer: &Capture, ours: &Capture) -> Verdict {
    let a = mux_side(peer);
    let b = mux_side(ours);
    let mut normalized = vec!["host ports, TCP seq/ack numbers, lockdown values".to_owned()];
    if a.pure_acks != b.pure_acks {
        normalized.push(format!(
            "pure ACKs {peer_name}={} restation={}",
            a.pure_acks, b.pure_acks
        ));
    }
    if a.windows != b.windows {
        let w = |s: &BTreeSet<u16>| s.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        normalized.push(format!(
            "TCP windows {peer_name}=[{}] restation=[{}]",
            w(&a.windows),
            w(&b.windows)
        ));
    }
    if a.read_sizes != b.read_sizes || a.reads_cancelled != b.reads_cancelled {
        let w = |s: &BTreeSet<u32>| s.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        normalized.push(format!(
            "bulk IN reads {peer_name}=[{}B, {} cancelled] restation=[{}B, {} cancelled]",
            w(&a.read_sizes),
            a.reads_cancelled,
            w(&b.read_sizes),
            b.reads_cancelled
        ));
    }
    if a.data_packets != b.data_packets {
        normalized.push(format!(
            "data packets {peer_name}={} restation={}",
            a.data_packets, b.data_packets
        ));
    }
    let mut real = Vec::new();
    let longest = a.steps.len().max(b.steps.len());
    let mut differing = 0;
    let mut first = None;
    for i in 0..longest {
        if a.steps.get(i) != b.steps.get(i) {
            differing += 1;
            first.get_or_insert(i);
        }
    }
    if let Some(i) = first {
        let show = |s: &[String]| s.get(i).cloned().unwrap_or_else(|| "end".into());
        real.push(format!(
            "first difference at step {i}: {peer_name} `{}` vs restation `{}` ({differing} of {longest} steps differ)",
            show(&a.steps),
            show(&b.steps)
        ));
    }
    let summary = format!(
        "steps={} [{}] usbmon={}+{} records",
        b.steps.len(),
        b.steps.join(", "),
        peer.records.len(),
        ours.records.len()
    );
    if b.steps.is_empty() {
        real.push("restation's capture holds no lockdown traffic".into());
    }
    if real.is_empty() {
        Verdict {
            pass: true,
            text: format!(
                "{peer_name} and restation carry the same conversation: {summary}; normalized: {}",
                normalized.join("; ")
            ),
        }
    } else {
        Verdict {
            pass: false,
            text: format!(
                "{}; normalized: {}; restation: {summary}; {peer_name}: [{}]",
                real.join("; "),
                normalized.join("; "),
                a.steps.join(", ")
            ),
        }
    }
}

/// The comparisons of a run: (check name, peer capture, restation capture, peer name, kind).
pub const PAIRS: [(&str, &str, &str, &str, bool); 3] = [
    (
        "wire-dfu-upload",
        "wire-dfu-irecovery",
        "wire-dfu-restation",
        "libirecovery",
        false,
    ),
    (
        "wire-recovery-upload",
        "wire-recovery-irecovery",
        "wire-recovery-restation",
        "libirecovery",
        false,
    ),
    (
        "wire-lockdown-getvalue",
        "wire-lockdown-usbmuxd",
        "wire-lockdown-restation",
        "usbmuxd",
        true,
    ),
];

/// Runs every comparison on `dir`; with `keep`, writes each device-cut capture there as
/// `vm-<name>.pcap`. Returns (check, verdict) pairs.
pub fn compare_all(dir: &Path, keep: Option<&Path>) -> Vec<(String, Verdict)> {
    let mut out = Vec::new();
    for (check, peer_name, ours_name, peer_label, mux) in PAIRS {
        let peer = load(dir, peer_name);
        let ours = load(dir, ours_name);
        let verdict = match (&peer, &ours) {
            (Ok(p), Ok(o)) => {
                let mut v = if mux {
                    compare_mux(peer_label, p, o)
                } else {
                    compare_uploads(peer_label, p, o)
                };
                if let Some(keep) = keep {
                    for c in [p, o] {
                        let path = keep.join(format!("vm-{}.pcap", c.name));
                        match c.write(&path) {
                            Ok(bytes) => v.text.push_str(&format!(
                                "; kept {} ({bytes}B, {} of {} records)",
                                path.display(),
                                c.records.len(),
                                c.all_records
                            )),
                            Err(e) => {
                                v.pass = false;
                                v.text.push_str(&format!("; {e:#}"));
                            }
                        }
                    }
                }
                v
            }
            (p, o) => Verdict {
                pass: false,
                text: [("peer", p.as_ref().err()), ("restation", o.as_ref().err())]
                    .iter()
                    .filter_map(|(who, e)| e.map(|e| format!("{who} capture: {e:#}")))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        };
        out.push((check.to_owned(), verdict));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed VM trace (already cut to its device) as a capture.
    fn fixture(name: &str) -> Capture {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/traces")
            .join(format!("vm-{name}.pcap"));
        let records = read_records(fs::File::open(&path).unwrap()).unwrap();
        Capture {
            name: name.to_owned(),
            bus: records[0].bus,
            device: records[0].device,
            all_records: records.len(),
            records,
        }
    }

    #[test]
    fn the_recorded_dfu_uploads_match_after_normalizing() {
        let v = compare_uploads(
            "libirecovery",
            &fixture("wire-dfu-irecovery"),
            &fixture("wire-dfu-restation"),
        );
        assert!(v.pass, "{}", v.text);
        assert!(v.text.contains("suffix=yes"), "{}", v.text);
        assert!(v.text.contains("DNLOAD 0B"), "{}", v.text);
    }

    #[test]
    fn a_different_upload_is_a_real_difference() {
        let dfu = fixture("wire-dfu-irecovery");
        let recovery = fixture("wire-recovery-irecovery");
        let v = compare_uploads("libirecovery", &dfu, &recovery);
        assert!(!v.pass);
        assert!(v.text.contains("first difference at step 0"), "{}", v.text);
        assert!(v.text.contains("host data differs"), "{}", v.text);
    }

    #[test]
    fn the_lockdown_conversations_differ_only_in_the_reset_payload() {
        let usbmuxd = fixture("wire-lockdown-usbmuxd");
        let restation = fixture("wire-lockdown-restation");
        let v = compare_mux("usbmuxd", &usbmuxd, &restation);
        assert!(!v.pass);
        assert!(
            v.text.contains(r#"RST with 14B payload "closed by host""#),
            "{}",
            v.text
        );
        assert!(v.text.contains("(1 of 5 steps differ)"), "{}", v.text);
        // the same capture against itself: nothing to report
        assert!(compare_mux("usbmuxd", &usbmuxd, &usbmuxd).pass);
    }

    #[test]
    fn bytes_of_a_read_that_timed_out_are_part_of_the_stream() {
        let usbmuxd = fixture("wire-lockdown-usbmuxd");
        let mut late = usbmuxd.records.clone();
        // the SYN/ACK arrives as the read's timeout cancels it: the URB ends unlinked (-ENOENT)
        // with its bytes, and libusb hands them over
        let syn_ack = late
            .iter_mut()
            .find(|r| r.event == EventType::Complete && r.is_in() && !r.data.is_empty())
            .unwrap();
        syn_ack.status = -2;
        let late = Capture {
            records: late,
            ..fixture("wire-lockdown-usbmuxd")
        };
        let v = compare_mux("usbmuxd", &usbmuxd, &late);
        assert!(v.pass, "{}", v.text);
    }
}
