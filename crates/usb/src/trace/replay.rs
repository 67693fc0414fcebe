//! [`Replay`]: a device that serves a recorded conversation back to host code.
//!
//! The host code under test runs unchanged against it. Each transfer it makes is compared with
//! the next one recorded on the same stream (control, or the same bulk endpoint; the streams
//! may interleave differently from the recording, as they do between two runs of a driver
//! that keeps reads in flight), and answered with the recorded outcome: data, a stall, a
//! disconnect. The first transfer that differs is kept as a [`Divergence`] and fails, and so
//! does everything after it.
//!
//! Standard requests (descriptors, configuration, alternate settings) are housekeeping that
//! the kernel and libusb do on their own schedule: they are answered from what the trace
//! recorded, but never count as a divergence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{DeviceId, DeviceInfo, HotplugEvent, HotplugSink, UsbBackend, Watch};
use crate::control::{standard_request, Control, Direction};
use crate::descriptor::{descriptor_type, ConfigurationDescriptor, DeviceDescriptor};
use crate::device::{Speed, UsbDevice};
use crate::error::{ErrorKind, Operation, UsbError};
use crate::port::PortPath;

use super::conversation::{Conversation, Outcome, Request};
use super::TraceError;

/// Where host code first did something other than what the trace recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replay diverged at exchange {position}: expected {expected}, got {got}")]
pub struct Divergence {
    /// Index of the recorded exchange that was expected (or the number of exchanges, when the
    /// host went on after the recording ended).
    pub position: usize,
    /// The recorded request, described.
    pub expected: String,
    /// What the host did, described.
    pub got: String,
}

/// A device that answers from a recorded [`Conversation`].
pub struct Replay {
    conversation: Conversation,
    device: DeviceDescriptor,
    configs: Vec<ConfigurationDescriptor>,
    consumed: Vec<bool>,
    /// Next exchange to look at, per stream (endpoint address; 0 for control).
    cursors: HashMap<u8, usize>,
    divergence: Option<Divergence>,
    active_config: u8,
    speed: Speed,
    port_path: Option<PortPath>,
    report: Option<Arc<Mutex<Vec<Divergence>>>>,
}

impl Replay {
    /// A replay of `conversation`. It must hold the device descriptor (a [`super::Recorder`]
    /// writes it first; a kernel capture has it when it started before the device was plugged
    /// in).
    pub fn new(conversation: Conversation) -> Result<Replay, TraceError> {
        let device_setup = Control::get_descriptor(descriptor_type::DEVICE, 0, 0);
        let device = conversation
            .descriptor(device_setup)
            .ok_or(TraceError::NoDeviceDescriptor)?;
        let device = DeviceDescriptor::parse(device)?;
        let mut configs = Vec::new();
        for index in 0..device.num_configurations {
            let setup = Control::get_descriptor(descriptor_type::CONFIGURATION, index, 0);
            if let Some(bytes) = conversation.descriptor(setup) {
                // Enumeration first reads 9 bytes, then the whole: keep only whole ones.
                if let Ok(c) = ConfigurationDescriptor::parse(bytes) {
                    configs.push(c);
                }
            }
        }
        Ok(Replay {
            consumed: vec![false; conversation.exchanges.len()],
            conversation,
            device,
            configs,
            cursors: HashMap::new(),
            divergence: None,
            active_config: 0,
            speed: Speed::High,
            port_path: None,
            report: None,
        })
    }

    /// Presents the device on `port` at `speed` (a usbmon trace records neither).
    pub fn with_link(mut self, speed: Speed, port_path: Option<PortPath>) -> Self {
        self.speed = speed;
        self.port_path = port_path;
        self
    }

    /// The first divergence so far.
    pub fn divergence(&self) -> Option<&Divergence> {
        self.divergence.as_ref()
    }

    /// Ends the replay: the first divergence, or the first recorded exchange (other than
    /// housekeeping) the host never made.
    pub fn finish(&self) -> Result<(), Divergence> {
        if let Some(d) = &self.divergence {
            return Err(d.clone());
        }
        let missed = self
            .conversation
            .exchanges
            .iter()
            .enumerate()
            .find(|(i, e)| !self.consumed[*i] && !e.request.is_standard());
        match missed {
            Some((position, e)) => Err(Divergence {
                position,
                expected: e.request.to_string(),
                got: "nothing: the host stopped first".into(),
            }),
            None => Ok(()),
        }
    }

    fn diverge(
        &mut self,
        position: usize,
        expected: String,
        got: String,
        op: Operation,
    ) -> UsbError {
        if self.divergence.is_none() {
            let d = Divergence {
                position,
                expected,
                got,
            };
            if let Some(report) = &self.report {
                if let Ok(mut r) = report.lock() {
                    r.push(d.clone());
                }
            }
            self.divergence = Some(d);
        }
        UsbError::new(ErrorKind::Other, op)
    }

    /// The next unconsumed exchange on `stream`, skipping recorded housekeeping the host did
    /// not ask for.
    fn next_on(&self, stream: u8) -> Option<usize> {
        let start = self.cursors.get(&stream).copied().unwrap_or(0);
        (start..self.conversation.exchanges.len()).find(|&i| {
            let r = &self.conversation.exchanges[i].request;
            !self.consumed[i] && r.endpoint() == stream && !r.is_standard()
        })
    }

    fn take(&mut self, index: usize) -> Outcome {
        self.consumed[index] = true;
        let stream = self.conversation.exchanges[index].request.endpoint();
        self.cursors.insert(stream, index + 1);
        self.conversation.exchanges[index].outcome.clone()
    }

    /// Matches one host request against the recording and answers with the recorded outcome.
    fn exchange(&mut self, got: Request, op: Operation) -> Result<Outcome, UsbError> {
        if self.divergence.is_some() {
            return Err(UsbError::new(ErrorKind::Other, op));
        }
        if got.is_standard() {
            return Ok(self.housekeeping(&got));
        }
        let stream = got.endpoint();
        let Some(index) = self.next_on(stream) else {
            let position = self.conversation.exchanges.len();
            return Err(self.diverge(
                position,
                "nothing: the recording ends here".into(),
                got.to_string(),
                op,
            ));
        };
        let expected = &self.conversation.exchanges[index].request;
        let matches = match (expected, &got) {
            (Request::ControlIn { setup: a, .. }, Request::ControlIn { setup: b, .. }) => a == b,
            (
                Request::ControlOut { setup: a, data: x },
                Request::ControlOut { setup: b, data: y },
            ) => a == b && x == y,
            (Request::BulkOut { data: x, .. }, Request::BulkOut { data: y, .. }) => x == y,
            (Request::BulkIn { .. }, Request::BulkIn { .. }) => true,
            _ => false,
        };
        if !matches {
            let expected = expected.to_string();
            return Err(self.diverge(index, expected, got.to_string(), op));
        }
        Ok(self.take(index))
    }

    /// A standard request: the recorded answer when the next control exchange is this very
    /// request, else an answer from the recorded descriptors, else success.
    fn housekeeping(&mut self, got: &Request) -> Outcome {
        let setup = got.setup();
        let next = (0..self.conversation.exchanges.len())
            .find(|&i| !self.consumed[i] && self.conversation.exchanges[i].request.endpoint() == 0);
        if let Some(i) = next {
            if self.conversation.exchanges[i].request.setup() == setup {
                self.consumed[i] = true;
                return self.conversation.exchanges[i].outcome.clone();
            }
        }
        match got {
            Request::ControlIn { setup, length } => match self.conversation.descriptor(*setup) {
                Some(d) => Outcome::In(d[..d.len().min(usize::from(*length))].to_vec()),
                None => Outcome::Failed(ErrorKind::Pipe),
            },
            _ => Outcome::Out { written: 0 },
        }
    }
}

fn into_in(outcome: Outcome, requested: usize, op: Operation) -> Result<Vec<u8>, UsbError> {
    match outcome {
        Outcome::In(mut data) => {
            if data.len() > requested {
                // The host asked for less than the device sent when recorded: babble.
                data.truncate(requested);
                return Err(UsbError::new(ErrorKind::Overflow, op));
            }
            Ok(data)
        }
        Outcome::Out { .. } => Ok(Vec::new()),
        Outcome::Failed(kind) => Err(UsbError::new(kind, op)),
        Outcome::Missing => Err(UsbError::new(ErrorKind::Timeout, op)),
    }
}

fn into_out(outcome: Outcome, op: Operation) -> Result<usize, UsbError> {
    match outcome {
        Outcome::Out { written } => Ok(written as usize),
        Outcome::In(_) => Ok(0),
        Outcome::Failed(kind) => Err(UsbError::new(kind, op)),
        Outcome::Missing => Err(UsbError::new(ErrorKind::Timeout, op)),
    }
}

impl UsbDevice for Replay {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        &self.device
    }

    fn configurations(&self) -> &[ConfigurationDescriptor] {
        &self.configs
    }

    fn speed(&self) -> Speed {
        self.speed
    }

    fn port_path(&self) -> Option<&PortPath> {
        self.port_path.as_ref()
    }

    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        Ok(self.active_config)
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError> {
        let setup = Control::new(
            0x00,
            standard_request::SET_CONFIGURATION,
            u16::from(value),
            0,
        );
        let op = Operation::SetConfiguration { value };
        into_out(
            self.exchange(
                Request::ControlOut {
                    setup,
                    data: Vec::new(),
                },
                op.clone(),
            )?,
            op,
        )?;
        self.active_config = value;
        Ok(())
    }

    fn claim_interface(&mut self, _interface: u8) -> Result<(), UsbError> {
        Ok(())
    }

    fn release_interface(&mut self, _interface: u8) -> Result<(), UsbError> {
        Ok(())
    }

    fn set_alternate_setting(&mut self, interface: u8, alternate: u8) -> Result<(), UsbError> {
        let setup = Control::new(
            0x01,
            standard_request::SET_INTERFACE,
            u16::from(alternate),
            u16::from(interface),
        );
        let op = Operation::SetAlternateSetting {
            interface,
            alternate_setting: alternate,
        };
        into_out(
            self.exchange(
                Request::ControlOut {
                    setup,
                    data: Vec::new(),
                },
                op.clone(),
            )?,
            op,
        )
        .map(|_| ())
    }

    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        _timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        let op = Operation::ControlIn { setup, length };
        if setup.direction() != Direction::In {
            return Err(UsbError::new(ErrorKind::InvalidParam, op));
        }
        let outcome = self.exchange(Request::ControlIn { setup, length }, op.clone())?;
        into_in(outcome, usize::from(length), op)
    }

    fn control_out(
        &mut self,
        setup: Control,
        data: &[u8],
        _timeout: Duration,
    ) -> Result<usize, UsbError> {
        let op = Operation::ControlOut {
            setup,
            length: data.len(),
        };
        let outcome = self.exchange(
            Request::ControlOut {
                setup,
                data: data.to_vec(),
            },
            op.clone(),
        )?;
        into_out(outcome, op)
    }

    fn bulk_in(
        &mut self,
        endpoint: u8,
        length: usize,
        _timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        let op = Operation::BulkIn { endpoint, length };
        let request = Request::BulkIn {
            endpoint,
            length: u32::try_from(length).unwrap_or(u32::MAX),
        };
        let outcome = self.exchange(request, op.clone())?;
        into_in(outcome, length, op)
    }

    fn bulk_out(
        &mut self,
        endpoint: u8,
        data: &[u8],
        _timeout: Duration,
    ) -> Result<usize, UsbError> {
        let op = Operation::BulkOut {
            endpoint,
            length: data.len(),
        };
        let request = Request::BulkOut {
            endpoint,
            data: data.to_vec(),
        };
        let outcome = self.exchange(request, op.clone())?;
        into_out(outcome, op)
    }

    fn reset(&mut self) -> Result<(), UsbError> {
        // A port reset is not a URB: usbmon never sees it, so there is nothing to compare.
        Ok(())
    }
}

/// A backend that presents recorded conversations as devices: each one is listed, announced
/// once by a watch, and opened as a fresh [`Replay`]. Divergences of every opened replay are
/// collected for [`ReplayBackend::divergences`], since the host code under test holds the
/// devices as `Box<dyn UsbDevice>`.
pub struct ReplayBackend {
    devices: Vec<(DeviceInfo, Conversation)>,
    report: Arc<Mutex<Vec<Divergence>>>,
}

impl ReplayBackend {
    /// A backend serving `conversations`, each on the bus and address it was recorded with.
    pub fn new(conversations: Vec<Conversation>) -> Result<Self, TraceError> {
        let mut devices = Vec::new();
        for c in conversations {
            let replay = Replay::new(c.clone())?;
            let info = DeviceInfo {
                id: DeviceId {
                    bus: u8::try_from(c.bus).unwrap_or(u8::MAX),
                    address: c.device,
                },
                port_path: None,
                speed: replay.speed,
                descriptor: replay.device.clone(),
            };
            devices.push((info, c));
        }
        Ok(Self {
            devices,
            report: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Every divergence seen so far, in the order they happened.
    pub fn divergences(&self) -> Vec<Divergence> {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl UsbBackend for ReplayBackend {
    fn devices(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        Ok(self.devices.iter().map(|(info, _)| info.clone()).collect())
    }

    fn open(&self, id: DeviceId) -> Result<Box<dyn UsbDevice>, UsbError> {
        let (_, conversation) = self
            .devices
            .iter()
            .find(|(info, _)| info.id == id)
            .ok_or_else(|| UsbError::new(ErrorKind::NoDevice, Operation::Open))?;
        let mut replay = Replay::new(conversation.clone())
            .map_err(|_| UsbError::new(ErrorKind::Other, Operation::Open))?;
        replay.report = Some(Arc::clone(&self.report));
        Ok(Box::new(replay))
    }

    fn watch(&self, mut sink: HotplugSink) -> Result<Watch, UsbError> {
        for (info, _) in &self.devices {
            sink(HotplugEvent::Arrived {
                device: info.clone(),
            });
        }
        Ok(Watch::new(()))
    }
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("exchanges", &self.conversation.exchanges.len())
            .field("divergence", &self.divergence)
            .finish()
    }
}
