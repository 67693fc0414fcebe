//! A fake phone for the engine conversations: implements `usb::UsbDevice`, records every
//! transfer (setup packet, endpoint, length, data, time), and answers like a phone in DFU
//! (DFU 1.1 state machine, suffix CRC check at manifest) or recovery mode (commands, env,
//! uploads, console output). Time comes from a shared fake clock: no real waiting.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use irecv::dfu::{Clock, State, Status};
use usb::{
    ConfigurationDescriptor, Control, DeviceDescriptor, ErrorKind, Operation, PortPath, Speed,
    UsbDevice, UsbError,
};

/// A clock shared by the test driver and the fake phone; `wait_until` jumps.
#[derive(Clone)]
pub struct FakeClock {
    start: Instant,
    now: Arc<Mutex<Instant>>,
    pub waits: Arc<Mutex<Vec<Duration>>>,
}

impl FakeClock {
    pub fn new() -> Self {
        let start = Instant::now();
        Self {
            start,
            now: Arc::new(Mutex::new(start)),
            waits: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn elapsed(&self) -> Duration {
        *self.now.lock().unwrap() - self.start
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap()
    }

    fn wait_until(&mut self, instant: Instant) {
        let mut now = self.now.lock().unwrap();
        if instant > *now {
            self.waits.lock().unwrap().push(instant - *now);
            *now = instant;
        }
    }
}

/// One thing the host did, as the phone saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    ControlIn { setup: Control, length: u16 },
    ControlOut { setup: Control, data: Vec<u8> },
    BulkIn { endpoint: u8, length: usize },
    BulkOut { endpoint: u8, data: Vec<u8> },
    Reset,
    SetConfiguration(u8),
    ClaimInterface(u8),
    SetAlternateSetting(u8, u8),
}

impl Record {
    /// A one-line summary without the data bytes, for sequence assertions.
    pub fn short(&self) -> String {
        match self {
            Self::ControlIn { setup, length } => format!(
                "IN {:02x}/{} v{} i{} len{}",
                setup.request_type, setup.request, setup.value, setup.index, length
            ),
            Self::ControlOut { setup, data } => format!(
                "OUT {:02x}/{} v{} i{} len{}",
                setup.request_type,
                setup.request,
                setup.value,
                setup.index,
                data.len()
            ),
            Self::BulkIn { endpoint, length } => format!("BULK IN {endpoint:02x} len{length}"),
            Self::BulkOut { endpoint, data } => {
                format!("BULK OUT {endpoint:02x} len{}", data.len())
            }
            Self::Reset => "RESET".into(),
            Self::SetConfiguration(v) => format!("SET CONFIG {v}"),
            Self::ClaimInterface(i) => format!("CLAIM {i}"),
            Self::SetAlternateSetting(i, a) => format!("ALT {i}/{a}"),
        }
    }
}

/// The device side of DFU.
pub struct Dfu {
    pub state: State,
    pub status: Status,
    /// GETSTATUS answers dfuDNBUSY this many times per block before dfuDNLOAD-IDLE.
    pub busy_polls: u32,
    /// Never leave dfuDNBUSY.
    pub always_busy: bool,
    pub poll_timeout_ms: u32,
    busy_left: u32,
    /// Stall the DNLOAD with this wValue.
    pub stall_block: Option<u16>,
    /// Check the DFU suffix at the zero-length DNLOAD (SecureROM; not Port DFU).
    pub check_suffix: bool,
    pub received: Vec<u8>,
    pub block_lengths: Vec<usize>,
    /// Fake-clock time of each GETSTATUS.
    pub status_times: Vec<Duration>,
    /// What reset reports (None = Ok).
    pub reset_error: Option<ErrorKind>,
    /// Each block stays dfuDNBUSY for this long (fake time) after its DNLOAD.
    pub busy_for: Option<Duration>,
    /// Fake time of the last DNLOAD with data.
    dnload_at: Duration,
}

impl Dfu {
    pub fn new() -> Self {
        Self {
            state: State::DfuIdle,
            status: Status::Ok,
            busy_polls: 0,
            always_busy: false,
            poll_timeout_ms: 0,
            busy_left: 0,
            stall_block: None,
            check_suffix: true,
            received: Vec::new(),
            block_lengths: Vec::new(),
            status_times: Vec::new(),
            reset_error: None,
            busy_for: None,
            dnload_at: Duration::ZERO,
        }
    }
}

/// The device side of recovery mode.
pub struct Recovery {
    pub commands: Vec<String>,
    pub env: HashMap<String, String>,
    answer: Vec<u8>,
    pub uploading: bool,
    pub received: Vec<u8>,
    pub chunk_lengths: Vec<usize>,
    pub zero_length_packets: usize,
    /// Stall the bulk write with this index (counted from 0 since the upload started).
    pub stall_chunk: Option<usize>,
    /// How the phone leaves after go/bootx/reset/reboot.
    pub leave_with: ErrorKind,
    pub output: VecDeque<Vec<u8>>,
}

impl Recovery {
    pub fn new() -> Self {
        Self {
            commands: Vec::new(),
            env: HashMap::new(),
            answer: Vec::new(),
            uploading: false,
            received: Vec::new(),
            chunk_lengths: Vec::new(),
            zero_length_packets: 0,
            stall_chunk: None,
            leave_with: ErrorKind::Pipe,
            output: VecDeque::new(),
        }
    }
}

pub enum Personality {
    Dfu(Dfu),
    Recovery(Recovery),
}

pub struct FakePhone {
    descriptor: DeviceDescriptor,
    port: PortPath,
    clock: FakeClock,
    pub records: Vec<Record>,
    pub gone: bool,
    pub active_configuration: u8,
    pub personality: Personality,
    /// Fake time each transfer takes on the wire; one longer than the transfer's timeout
    /// times out (after the timeout).
    pub transfer_time: Duration,
}

fn device_descriptor(product_id: u16) -> DeviceDescriptor {
    DeviceDescriptor {
        usb_version: 0x0200,
        class: 0,
        subclass: 0,
        protocol: 0,
        max_packet_size_0: 64,
        vendor_id: 0x05ac,
        product_id,
        device_version: 0,
        manufacturer_index: 2,
        product_index: 3,
        serial_number_index: 4,
        num_configurations: 1,
    }
}

impl FakePhone {
    pub fn dfu(clock: &FakeClock) -> Self {
        Self::with(0x1227, clock, Personality::Dfu(Dfu::new()))
    }

    pub fn port_dfu(clock: &FakeClock) -> Self {
        let mut d = Dfu::new();
        d.check_suffix = false;
        Self::with(0xF014, clock, Personality::Dfu(d))
    }

    pub fn recovery(product_id: u16, clock: &FakeClock) -> Self {
        Self::with(product_id, clock, Personality::Recovery(Recovery::new()))
    }

    fn with(product_id: u16, clock: &FakeClock, personality: Personality) -> Self {
        Self {
            descriptor: device_descriptor(product_id),
            port: "1-2.3".parse().unwrap(),
            clock: clock.clone(),
            records: Vec::new(),
            gone: false,
            active_configuration: 0,
            personality,
            transfer_time: Duration::ZERO,
        }
    }

    pub fn dfu_side(&mut self) -> &mut Dfu {
        match &mut self.personality {
            Personality::Dfu(d) => d,
            Personality::Recovery(_) => panic!("not a DFU phone"),
        }
    }

    pub fn recovery_side(&mut self) -> &mut Recovery {
        match &mut self.personality {
            Personality::Recovery(r) => r,
            Personality::Dfu(_) => panic!("not a recovery phone"),
        }
    }

    pub fn shorts(&self) -> Vec<String> {
        self.records.iter().map(Record::short).collect()
    }

    /// Spends the wire time of one transfer: the timeout if it is shorter (then a Timeout).
    fn spend(&self, timeout: Duration, op: &Operation) -> Result<(), UsbError> {
        if self.transfer_time > timeout {
            self.clock.advance(timeout);
            return Err(UsbError::new(ErrorKind::Timeout, op.clone()));
        }
        self.clock.advance(self.transfer_time);
        Ok(())
    }

    fn check_present(&self, op: &Operation) -> Result<(), UsbError> {
        if self.gone {
            Err(UsbError::new(ErrorKind::NoDevice, op.clone()))
        } else {
            Ok(())
        }
    }
}

/// The DFU CRC written out bit by bit, independent of the crate's implementation.
fn dfu_crc_bitwise(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn dfu_control_in(
    d: &mut Dfu,
    setup: Control,
    length: u16,
    now: Duration,
) -> Result<Vec<u8>, ErrorKind> {
    match (setup.request_type, setup.request) {
        (0xA1, 5) => Ok(vec![d.state as u8]),
        (0xA1, 3) => {
            d.status_times.push(now);
            match d.state {
                State::DnloadSync | State::DnBusy => {
                    let busy_time = d.busy_for.is_some_and(|b| now < d.dnload_at + b);
                    if d.always_busy || d.busy_left > 0 || busy_time {
                        d.busy_left = d.busy_left.saturating_sub(1);
                        d.state = State::DnBusy;
                    } else {
                        d.state = State::DnloadIdle;
                    }
                }
                State::ManifestSync => d.state = State::Manifest,
                State::Manifest => d.state = State::ManifestWaitReset,
                _ => {}
            }
            let p = d.poll_timeout_ms.to_le_bytes();
            let reply = [d.status as u8, p[0], p[1], p[2], d.state as u8, 0];
            Ok(reply[..usize::from(length).min(6)].to_vec())
        }
        _ => Err(ErrorKind::Pipe),
    }
}

fn dfu_control_out(
    d: &mut Dfu,
    setup: Control,
    data: &[u8],
    now: Duration,
) -> Result<usize, ErrorKind> {
    match (setup.request_type, setup.request) {
        (0x21, 1) => {
            if !matches!(d.state, State::DfuIdle | State::DnloadIdle) {
                d.state = State::Error;
                d.status = Status::ErrStalledPkt;
                return Err(ErrorKind::Pipe);
            }
            if d.stall_block == Some(setup.value) && !data.is_empty() {
                d.state = State::Error;
                d.status = Status::ErrStalledPkt;
                return Err(ErrorKind::Pipe);
            }
            if data.is_empty() {
                d.state = State::ManifestSync;
                if d.check_suffix {
                    let ok = d.received.len() >= 16 && {
                        let (body, crc) = d.received.split_at(d.received.len() - 4);
                        body.ends_with(&irecv::dfu::SUFFIX_TAG)
                            && u32::from_le_bytes(crc.try_into().unwrap()) == dfu_crc_bitwise(body)
                    };
                    if !ok {
                        d.state = State::Error;
                        d.status = Status::ErrFirmware;
                    }
                }
            } else {
                d.received.extend_from_slice(data);
                d.block_lengths.push(data.len());
                d.state = State::DnloadSync;
                d.busy_left = d.busy_polls;
                d.dnload_at = now;
            }
            Ok(data.len())
        }
        (0x21, 4) => {
            if d.state == State::Error {
                d.state = State::DfuIdle;
                d.status = Status::Ok;
            }
            Ok(0)
        }
        (0x21, 6) => {
            d.state = State::DfuIdle;
            Ok(0)
        }
        _ => Err(ErrorKind::Pipe),
    }
}

impl UsbDevice for FakePhone {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        &self.descriptor
    }

    fn configurations(&self) -> &[ConfigurationDescriptor] {
        &[]
    }

    fn speed(&self) -> Speed {
        Speed::High
    }

    fn port_path(&self) -> Option<&PortPath> {
        Some(&self.port)
    }

    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        self.check_present(&Operation::GetConfiguration)?;
        Ok(self.active_configuration)
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError> {
        self.check_present(&Operation::SetConfiguration { value })?;
        self.records.push(Record::SetConfiguration(value));
        self.active_configuration = value;
        Ok(())
    }

    fn claim_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.check_present(&Operation::ClaimInterface { interface })?;
        self.records.push(Record::ClaimInterface(interface));
        Ok(())
    }

    fn release_interface(&mut self, _: u8) -> Result<(), UsbError> {
        Ok(())
    }

    fn set_alternate_setting(
        &mut self,
        interface: u8,
        alternate_setting: u8,
    ) -> Result<(), UsbError> {
        self.check_present(&Operation::SetAlternateSetting {
            interface,
            alternate_setting,
        })?;
        self.records
            .push(Record::SetAlternateSetting(interface, alternate_setting));
        Ok(())
    }

    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        let op = Operation::ControlIn { setup, length };
        self.check_present(&op)?;
        self.records.push(Record::ControlIn { setup, length });
        self.spend(timeout, &op)?;
        let now = self.clock.elapsed();
        let r = match &mut self.personality {
            Personality::Dfu(d) => dfu_control_in(d, setup, length, now),
            Personality::Recovery(r) => match (setup.request_type, setup.request) {
                (0xC0, 0) => {
                    let mut a = std::mem::take(&mut r.answer);
                    a.truncate(usize::from(length));
                    Ok(a)
                }
                _ => Err(ErrorKind::Pipe),
            },
        };
        r.map_err(|k| UsbError::new(k, op))
    }

    fn control_out(
        &mut self,
        setup: Control,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        let op = Operation::ControlOut {
            setup,
            length: data.len(),
        };
        self.check_present(&op)?;
        self.records.push(Record::ControlOut {
            setup,
            data: data.to_vec(),
        });
        self.spend(timeout, &op)?;
        let now = self.clock.elapsed();
        let mut leaves = false;
        let r = match &mut self.personality {
            Personality::Dfu(d) => dfu_control_out(d, setup, data, now),
            Personality::Recovery(r) => match (setup.request_type, setup.request) {
                (0x40, req @ (0 | 1)) => {
                    let text = data.strip_suffix(&[0]).expect("commands end with NUL");
                    let text = String::from_utf8(text.to_vec()).unwrap();
                    r.commands.push(text.clone());
                    let mut words = text.splitn(3, ' ');
                    match (words.next(), words.next(), words.next()) {
                        (Some("go" | "bootx" | "reset" | "reboot"), _, _) => {
                            assert_eq!(req, 1, "{text} must use bRequest 1");
                            leaves = true;
                            Err(r.leave_with)
                        }
                        (Some("getenv"), Some(name), None) => {
                            let mut a = r.env.get(name).cloned().unwrap_or_default().into_bytes();
                            a.push(0);
                            r.answer = a;
                            Ok(data.len())
                        }
                        (Some("setenv"), Some(name), Some(value)) => {
                            r.env.insert(name.into(), value.into());
                            Ok(data.len())
                        }
                        _ => Ok(data.len()),
                    }
                }
                (0x41, 0) => {
                    r.uploading = true;
                    r.received.clear();
                    r.chunk_lengths.clear();
                    Ok(0)
                }
                _ => Err(ErrorKind::Pipe),
            },
        };
        if leaves {
            self.gone = true;
        }
        r.map_err(|k| UsbError::new(k, op))
    }

    fn bulk_in(&mut self, endpoint: u8, length: usize, _: Duration) -> Result<Vec<u8>, UsbError> {
        let op = Operation::BulkIn { endpoint, length };
        self.check_present(&op)?;
        self.records.push(Record::BulkIn { endpoint, length });
        match &mut self.personality {
            Personality::Recovery(r) if endpoint == 0x81 => match r.output.pop_front() {
                Some(mut b) => {
                    b.truncate(length);
                    Ok(b)
                }
                None => Err(UsbError::new(ErrorKind::Timeout, op)),
            },
            _ => Err(UsbError::new(ErrorKind::Pipe, op)),
        }
    }

    fn bulk_out(
        &mut self,
        endpoint: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        let op = Operation::BulkOut {
            endpoint,
            length: data.len(),
        };
        self.check_present(&op)?;
        self.records.push(Record::BulkOut {
            endpoint,
            data: data.to_vec(),
        });
        self.spend(timeout, &op)?;
        match &mut self.personality {
            Personality::Recovery(r) if endpoint == 0x04 && r.uploading => {
                if r.stall_chunk == Some(r.chunk_lengths.len()) {
                    return Err(UsbError::new(ErrorKind::Pipe, op));
                }
                if data.is_empty() {
                    r.zero_length_packets += 1;
                } else {
                    r.chunk_lengths.push(data.len());
                    r.received.extend_from_slice(data);
                }
                Ok(data.len())
            }
            _ => Err(UsbError::new(ErrorKind::Pipe, op)),
        }
    }

    fn reset(&mut self) -> Result<(), UsbError> {
        self.check_present(&Operation::Reset)?;
        self.records.push(Record::Reset);
        if let Personality::Dfu(d) = &self.personality {
            if let Some(kind) = d.reset_error {
                self.gone = true;
                return Err(UsbError::new(kind, Operation::Reset));
            }
        }
        Ok(())
    }
}
