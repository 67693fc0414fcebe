//! One USB/IP connection, sans-IO: bytes from the client in, bytes to send out, with the
//! exported phones reached through [`Ports`].
//!
//! A connection starts with one operation. `OP_REQ_DEVLIST` is answered with every phone on
//! the bus and ends the connection; `OP_REQ_IMPORT` of a bus ID (`1-1` is port 0, `1-2` port 1,
//! ...) binds the connection to that port's current enumeration ([`Session`]), after which the
//! bytes are URB commands. When that enumeration leaves the bus (a mode change, a reboot, a
//! pulled cable) the connection is done: the driver closes it, the guest kernel sees the device
//! disconnect, and the phone's next enumeration is exported under the same bus ID for the next
//! import. Bytes that are not USB/IP end the connection with a typed [`WireError`].

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use usb::{ConfigurationDescriptor, DeviceDescriptor};

use crate::hub::VirtualHub;
use crate::phone::{Mode, Phone};

use super::session::Session;
use super::wire::{
    import_status, speed_code, Command, ExportedDevice, OpReply, OpRequest, UsbDevice,
    UsbInterface, WireError,
};

/// The bus ID port `port` (0-based) is exported as: `1-1`, `1-2`, ...
pub fn busid(port: usize) -> String {
    format!("1-{}", port + 1)
}

/// One phone enumeration offered for import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Port index.
    pub port: usize,
    /// The phone's enumeration counter at the time.
    pub generation: u64,
    /// The mode it is in.
    pub mode: Mode,
    /// What `OP_REP_DEVLIST` says about it.
    pub device: ExportedDevice,
}

/// Describes the phone's current enumeration as USB/IP does; `None` when it is off the bus.
pub fn export(port: usize, phone: &Phone, busnum: u32, devnum: u32) -> Option<Export> {
    if !phone.is_on_bus() {
        return None;
    }
    let identity = phone.identity();
    let d = DeviceDescriptor::parse(&identity.device).ok()?;
    let value = phone.core().active_configuration;
    let interfaces: Vec<UsbInterface> = identity
        .configuration(value)
        .and_then(|raw| ConfigurationDescriptor::parse(raw).ok())
        .map(|c| {
            c.interfaces
                .iter()
                .filter_map(|i| i.alt_settings.first())
                .map(|a| UsbInterface {
                    class: a.class,
                    subclass: a.subclass,
                    protocol: a.protocol,
                })
                .collect()
        })
        .unwrap_or_default();
    let busid = busid(port);
    let device = UsbDevice {
        path: format!("/sys/devices/platform/restation-sim/usb{busnum}/{busid}"),
        busid,
        busnum,
        devnum,
        speed: speed_code(phone.speed()),
        id_vendor: d.vendor_id,
        id_product: d.product_id,
        bcd_device: d.device_version,
        device_class: d.class,
        device_subclass: d.subclass,
        device_protocol: d.protocol,
        configuration_value: value,
        num_configurations: d.num_configurations,
        num_interfaces: u8::try_from(interfaces.len()).ok()?,
    };
    Some(Export {
        port,
        generation: phone.generation(),
        mode: phone.mode(),
        device: ExportedDevice { device, interfaces },
    })
}

/// The phones a connection can list, import and drive.
pub trait Ports {
    /// Every phone enumerated now.
    fn exports(&self) -> Vec<Export>;
    /// Runs `f` on the phone in port `port` (`None` when the port is empty).
    fn with_phone<R>(&self, port: usize, f: impl FnOnce(&mut Phone) -> R) -> Option<R>;
    /// Marks `port` imported; false when another connection has it.
    fn claim(&self, port: usize) -> bool;
    /// Ends an import of `port`.
    fn release(&self, port: usize);
}

/// The ports of a [`VirtualHub`], with the bookkeeping of which are imported.
#[derive(Debug)]
pub struct HubPorts {
    hub: VirtualHub,
    claimed: Mutex<BTreeSet<usize>>,
}

impl HubPorts {
    /// Exports every port of `hub`.
    pub fn new(hub: VirtualHub) -> HubPorts {
        HubPorts {
            hub,
            claimed: Mutex::new(BTreeSet::new()),
        }
    }

    /// The hub.
    pub fn hub(&self) -> &VirtualHub {
        &self.hub
    }

    /// Whether a connection has `port` imported.
    pub fn is_claimed(&self, port: usize) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&port)
    }
}

impl Ports for HubPorts {
    fn exports(&self) -> Vec<Export> {
        use usb::UsbBackend;
        let present = self.hub.devices().unwrap_or_default();
        (0..self.hub.port_count())
            .filter_map(|port| {
                let path = self.hub.port_path(port);
                let id = present
                    .iter()
                    .find(|d| d.port_path.as_ref() == path)
                    .map(|d| d.id);
                let busnum = id.map_or(1, |id| u32::from(id.bus));
                let devnum = id.map_or(port as u32 + 2, |id| u32::from(id.address));
                self.hub
                    .with_phone(port, |p| export(port, p, busnum, devnum))
                    .flatten()
            })
            .collect()
    }

    fn with_phone<R>(&self, port: usize, f: impl FnOnce(&mut Phone) -> R) -> Option<R> {
        self.hub.with_phone(port, f)
    }

    fn claim(&self, port: usize) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
    }

    fn release(&self, port: usize) {
        self.claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&port);
    }
}

/// What happened on a connection, for the driver's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A device list was sent.
    DevList {
        /// Devices listed.
        devices: usize,
    },
    /// An import succeeded.
    Imported {
        /// Port index.
        port: usize,
        /// Bus ID.
        busid: String,
        /// The phone's mode.
        mode: Mode,
        /// `idProduct`.
        product_id: u16,
    },
    /// An import was refused.
    ImportRefused {
        /// The bus ID asked for.
        busid: String,
        /// The status sent ([`import_status`]).
        status: u32,
    },
    /// The imported enumeration left the bus; the connection is done.
    Gone {
        /// Port index.
        port: usize,
        /// Bus ID.
        busid: String,
    },
}

#[derive(Debug)]
enum Phase {
    Op,
    Imported(Session),
    Done,
}

enum Step {
    Op(Result<Option<(OpRequest, usize)>, WireError>),
    Urb(Result<Option<(Command, usize)>, WireError>),
}

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    input: Vec<u8>,
    output: Vec<u8>,
    events: VecDeque<ConnectionEvent>,
    link_time: Duration,
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection {
    /// A connection waiting for its operation.
    pub fn new() -> Connection {
        Connection {
            phase: Phase::Op,
            input: Vec::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            link_time: Duration::ZERO,
        }
    }

    /// Takes bytes from the client. An error means the bytes are not USB/IP: the connection
    /// is done (flush what [`Connection::poll_transmit`] has, then close).
    pub fn handle_input<P: Ports>(
        &mut self,
        data: &[u8],
        ports: &P,
        now: Instant,
    ) -> Result<(), WireError> {
        if matches!(self.phase, Phase::Done) {
            return Ok(());
        }
        self.input.extend_from_slice(data);
        let mut used = 0;
        let result = loop {
            let rest = self.input.get(used..).unwrap_or_default();
            let step = match self.phase {
                Phase::Op => Step::Op(OpRequest::decode(rest)),
                Phase::Imported(_) => Step::Urb(Command::decode(rest)),
                Phase::Done => break Ok(()),
            };
            match step {
                Step::Op(Ok(Some((request, n)))) => {
                    used += n;
                    self.operation(request, ports);
                }
                Step::Urb(Ok(Some((command, n)))) => {
                    used += n;
                    self.command(command, ports, now);
                }
                Step::Op(Ok(None)) | Step::Urb(Ok(None)) => break Ok(()),
                Step::Op(Err(e)) | Step::Urb(Err(e)) => {
                    self.close(ports);
                    break Err(e);
                }
            }
        };
        self.input.drain(..used.min(self.input.len()));
        result
    }

    /// The phones' state may have changed (timers ran, another thread moved them): completes
    /// pending reads that have data, and notices a departed enumeration.
    pub fn handle_bus<P: Ports>(&mut self, ports: &P, now: Instant) {
        let Phase::Imported(session) = &mut self.phase else {
            return;
        };
        let mut out = Vec::new();
        let port = session.port();
        if ports
            .with_phone(port, |p| session.poll(p, now, &mut out))
            .is_none()
        {
            session.set_gone();
        }
        self.after_urb(out, ports);
    }

    /// Bytes to send to the client.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.output.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.output))
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ConnectionEvent> {
        self.events.pop_front()
    }

    /// Link time the phone spent answering since the last call; the driver charges it to the
    /// clock before sending the answers.
    pub fn take_link_time(&mut self) -> Duration {
        std::mem::take(&mut self.link_time)
    }

    /// Whether the connection is over (after its output is flushed).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The port this connection has imported.
    pub fn imported_port(&self) -> Option<usize> {
        match &self.phase {
            Phase::Imported(s) => Some(s.port()),
            _ => None,
        }
    }

    /// URBs waiting for the phone on this connection.
    pub fn waiting(&self) -> usize {
        match &self.phase {
            Phase::Imported(s) => s.waiting(),
            _ => 0,
        }
    }

    /// Ends the connection (the socket closed, or the driver stops): releases the import.
    pub fn close<P: Ports>(&mut self, ports: &P) {
        if let Phase::Imported(s) = &self.phase {
            ports.release(s.port());
        }
        self.phase = Phase::Done;
    }

    fn reply(&mut self, reply: OpReply) {
        // Replies are built from values that always fit their fields (bus IDs are short,
        // paths are ours); a reply that cannot be encoded is dropped rather than sent garbled.
        let mut out = Vec::new();
        if reply.encode(&mut out).is_ok() {
            self.output.extend_from_slice(&out);
        }
    }

    fn operation<P: Ports>(&mut self, request: OpRequest, ports: &P) {
        match request {
            OpRequest::DevList => {
                let devices: Vec<ExportedDevice> =
                    ports.exports().into_iter().map(|e| e.device).collect();
                self.events.push_back(ConnectionEvent::DevList {
                    devices: devices.len(),
                });
                self.reply(OpReply::DevList { devices });
                self.phase = Phase::Done;
            }
            OpRequest::Import { busid: wanted } => {
                let found = ports
                    .exports()
                    .into_iter()
                    .find(|e| e.device.device.busid == wanted);
                match found {
                    Some(e) if ports.claim(e.port) => {
                        self.events.push_back(ConnectionEvent::Imported {
                            port: e.port,
                            busid: wanted.clone(),
                            mode: e.mode,
                            product_id: e.device.device.id_product,
                        });
                        self.reply(OpReply::Imported(e.device.device));
                        self.phase = Phase::Imported(Session::new(e.port, wanted, e.generation));
                    }
                    found => {
                        let status = if found.is_some() {
                            import_status::BUSY
                        } else {
                            import_status::NOT_AVAILABLE
                        };
                        self.events.push_back(ConnectionEvent::ImportRefused {
                            busid: wanted,
                            status,
                        });
                        self.reply(OpReply::ImportRefused { status });
                        self.phase = Phase::Done;
                    }
                }
            }
        }
    }

    fn command<P: Ports>(&mut self, command: Command, ports: &P, now: Instant) {
        let Phase::Imported(session) = &mut self.phase else {
            return;
        };
        let mut out = Vec::new();
        match command {
            Command::Submit(submit) => {
                let port = session.port();
                if ports
                    .with_phone(port, |p| session.submit(p, submit, now, &mut out))
                    .is_none()
                {
                    session.set_gone();
                }
            }
            Command::Unlink(unlink) => session.unlink(unlink, &mut out),
        }
        self.after_urb(out, ports);
    }

    fn after_urb<P: Ports>(&mut self, out: Vec<super::wire::Return>, ports: &P) {
        for r in out {
            // The session builds replies whose lengths match their data; see `reply`.
            let mut bytes = Vec::new();
            if r.encode(&mut bytes).is_ok() {
                self.output.extend_from_slice(&bytes);
            }
        }
        let Phase::Imported(session) = &mut self.phase else {
            return;
        };
        self.link_time += session.take_link_time();
        if session.is_gone() {
            self.events.push_back(ConnectionEvent::Gone {
                port: session.port(),
                busid: session.busid().to_string(),
            });
            self.close(ports);
        }
    }
}
