//! A phone handle whose bulk OUT transfers are queued to a writer thread and whose bulk IN
//! comes from a reader thread, so that a blocking driver ([`super::session::Pump`]) keeps the
//! link busy while it prepares the next bytes: during a restore the ASR chunks are read from
//! the IPSW and checksummed while the previous ones are on the wire, and the phone's
//! acknowledgements are read while data goes out.
//!
//! [`Overlapped::bulk_out`] returns once the transfer is queued (at most [`DEPTH`] wait), as
//! an asynchronous URB submission does; a failed transfer is reported by the next call. The
//! writer hands the transfers to the backend's queue ([`usb::BulkOutQueue`]) when it has one,
//! so the host controller runs them back to back with no turnaround between two. Every other
//! request runs on the writer thread after the queued transfers have completed, so a control
//! request never overtakes data sent before it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel as channel;
use usb::{
    ConfigurationDescriptor, Control, DeviceDescriptor, ErrorKind, Operation, PortPath, Speed,
    UsbDevice, UsbError,
};

/// Transfers queued ahead of the one on the wire.
pub const DEPTH: usize = 4;
/// How often the writer looks at its queued transfers while it waits for a command.
const CHECK_EVERY: Duration = Duration::from_millis(5);
/// How long the reader waits in one read before checking whether to stop.
const PIPE_TIMEOUT: Duration = Duration::from_millis(50);

type Call = Box<dyn FnOnce(&mut dyn UsbDevice) + Send>;

enum Command {
    Out {
        endpoint: u8,
        data: Vec<u8>,
        timeout: Duration,
    },
    Call(Call),
}

/// A phone handle with a writer and a reader thread (see the module).
pub struct Overlapped {
    commands: Option<channel::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    incoming: channel::Receiver<Result<Vec<u8>, UsbError>>,
    /// Bytes read from the phone that did not fit the caller's buffer.
    rest: Vec<u8>,
    in_endpoint: u8,
    /// The first failure of a queued transfer, reported by the next call.
    failed: Arc<Mutex<Option<UsbError>>>,
    descriptor: DeviceDescriptor,
    configurations: Vec<ConfigurationDescriptor>,
    speed: Speed,
    port_path: Option<PortPath>,
}

impl std::fmt::Debug for Overlapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlapped")
            .field("in_endpoint", &self.in_endpoint)
            .finish_non_exhaustive()
    }
}

impl Overlapped {
    /// Wraps `dev`, reading `in_endpoint` on a thread of its own; `Err(dev)` back when the
    /// backend cannot read that endpoint from another thread.
    pub fn new(
        mut dev: Box<dyn UsbDevice>,
        in_endpoint: u8,
    ) -> Result<Overlapped, Box<dyn UsbDevice>> {
        let Some(pipe) = dev.bulk_in_pipe(in_endpoint) else {
            return Err(dev);
        };
        let descriptor = dev.device_descriptor().clone();
        let configurations = dev.configurations().to_vec();
        let speed = dev.speed();
        let port_path = dev.port_path().cloned();
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(None));
        let (in_tx, incoming) = channel::bounded(64);
        let reader = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("restore-in".into())
                .spawn(move || super::session::read_loop(pipe, &in_tx, &stop, PIPE_TIMEOUT))
                .ok()
        };
        let (commands, rx) = channel::bounded::<Command>(DEPTH);
        let writer = {
            let failed = Arc::clone(&failed);
            std::thread::Builder::new()
                .name("restore-out".into())
                .spawn(move || write_loop(dev, &rx, &failed))
                .ok()
        };
        Ok(Overlapped {
            commands: Some(commands),
            writer,
            reader,
            stop,
            incoming,
            rest: Vec::new(),
            in_endpoint,
            failed,
            descriptor,
            configurations,
            speed,
            port_path,
        })
    }

    fn failure(&self) -> Result<(), UsbError> {
        match self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn send(&self, command: Command, op: Operation) -> Result<(), UsbError> {
        self.failure()?;
        self.commands
            .as_ref()
            .and_then(|c| c.send(command).ok())
            .ok_or_else(|| UsbError::new(ErrorKind::NoDevice, op))
    }

    /// Runs `f` on the device, after every transfer queued before it.
    fn call<R: Send + 'static>(
        &mut self,
        op: Operation,
        f: impl FnOnce(&mut dyn UsbDevice) -> Result<R, UsbError> + Send + 'static,
    ) -> Result<R, UsbError> {
        let (tx, rx) = channel::bounded(1);
        self.send(
            Command::Call(Box::new(move |dev| {
                let _ = tx.send(f(dev));
            })),
            op.clone(),
        )?;
        let answer = rx
            .recv()
            .unwrap_or_else(|_| Err(UsbError::new(ErrorKind::NoDevice, op)));
        self.failure()?;
        answer
    }
}

fn write_loop(
    mut dev: Box<dyn UsbDevice>,
    rx: &channel::Receiver<Command>,
    failed: &Mutex<Option<UsbError>>,
) {
    let fail = |e: UsbError| {
        failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(e);
    };
    // Bulk OUT goes through the backend's queue when it has one, so the host controller
    // runs the transfers back to back; otherwise one blocking write after another.
    let mut queue: Option<Box<dyn usb::BulkOutQueue>> = None;
    loop {
        // While transfers are in flight, look at them every few milliseconds between
        // commands: a failure must reach the driver even when it only waits for the phone.
        let busy = queue.as_mut().is_some_and(|q| q.in_flight() > 0);
        let command = if busy {
            match rx.recv_timeout(CHECK_EVERY) {
                Ok(command) => command,
                Err(channel::RecvTimeoutError::Timeout) => {
                    if let Some(Err(e)) = queue.as_mut().map(|q| q.check()) {
                        fail(e.error);
                    }
                    continue;
                }
                Err(channel::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(command) => command,
                Err(_) => break,
            }
        };
        match command {
            Command::Out {
                endpoint,
                data,
                timeout,
            } => {
                // After a failure the rest of the queue is dropped: the link is broken.
                let broken = failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_some();
                if broken {
                    continue;
                }
                if queue.as_ref().is_some_and(|q| q.endpoint() != endpoint) {
                    if let Some(Err(e)) = queue.take().map(|mut q| q.flush()) {
                        fail(e.error);
                        continue;
                    }
                }
                if queue.is_none() {
                    queue = dev.bulk_out_queue(endpoint);
                }
                let result = match queue.as_mut() {
                    Some(q) => q.submit(data, timeout).map_err(|e| e.error),
                    None => dev.bulk_out(endpoint, &data, timeout).map(drop),
                };
                if let Err(e) = result {
                    fail(e);
                }
            }
            Command::Call(f) => {
                // A request never overtakes data queued before it.
                if let Some(Err(e)) = queue.as_mut().map(|q| q.flush()) {
                    fail(e.error);
                }
                f(&mut *dev)
            }
        }
    }
    if let Some(Err(e)) = queue.as_mut().map(|q| q.flush()) {
        fail(e.error);
    }
}

impl Drop for Overlapped {
    fn drop(&mut self) {
        // The writer sends what is queued, then ends; the reader stops at its next timeout.
        self.commands.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.stop.store(true, Ordering::Release);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl UsbDevice for Overlapped {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        &self.descriptor
    }

    fn configurations(&self) -> &[ConfigurationDescriptor] {
        &self.configurations
    }

    fn speed(&self) -> Speed {
        self.speed
    }

    fn port_path(&self) -> Option<&PortPath> {
        self.port_path.as_ref()
    }

    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        self.call(Operation::GetConfiguration, |d| d.active_configuration())
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError> {
        self.call(Operation::SetConfiguration { value }, move |d| {
            d.set_configuration(value)
        })
    }

    fn claim_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.call(Operation::ClaimInterface { interface }, move |d| {
            d.claim_interface(interface)
        })
    }

    fn release_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.call(Operation::ReleaseInterface { interface }, move |d| {
            d.release_interface(interface)
        })
    }

    fn set_alternate_setting(
        &mut self,
        interface: u8,
        alternate_setting: u8,
    ) -> Result<(), UsbError> {
        let op = Operation::SetAlternateSetting {
            interface,
            alternate_setting,
        };
        self.call(op, move |d| {
            d.set_alternate_setting(interface, alternate_setting)
        })
    }

    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        self.call(Operation::ControlIn { setup, length }, move |d| {
            d.control_in(setup, length, timeout)
        })
    }

    fn control_out(
        &mut self,
        setup: Control,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        let data = data.to_vec();
        let op = Operation::ControlOut {
            setup,
            length: data.len(),
        };
        self.call(op, move |d| d.control_out(setup, &data, timeout))
    }

    fn bulk_in(
        &mut self,
        endpoint: u8,
        length: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        self.failure()?;
        let op = Operation::BulkIn { endpoint, length };
        if endpoint != self.in_endpoint {
            return self.call(op, move |d| d.bulk_in(endpoint, length, timeout));
        }
        let mut bytes = if self.rest.is_empty() {
            match self.incoming.recv_timeout(timeout) {
                Ok(r) => r?,
                Err(channel::RecvTimeoutError::Timeout) => {
                    return Err(UsbError::new(ErrorKind::Timeout, op))
                }
                Err(channel::RecvTimeoutError::Disconnected) => {
                    return Err(UsbError::new(ErrorKind::NoDevice, op))
                }
            }
        } else {
            std::mem::take(&mut self.rest)
        };
        if bytes.len() > length {
            self.rest = bytes.split_off(length);
        }
        Ok(bytes)
    }

    fn bulk_out(
        &mut self,
        endpoint: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        self.send(
            Command::Out {
                endpoint,
                data: data.to_vec(),
                timeout,
            },
            Operation::BulkOut {
                endpoint,
                length: data.len(),
            },
        )?;
        Ok(data.len())
    }

    fn reset(&mut self) -> Result<(), UsbError> {
        self.call(Operation::Reset, |d| d.reset())
    }
}
