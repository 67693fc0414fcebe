//! [`Recorder`]: a [`UsbDevice`] wrapper that writes every transfer to a usbmon-layout pcap.

use std::io::Write;
use std::time::Duration;

use crate::control::{standard_request, Control};
use crate::descriptor::{descriptor_type, ConfigurationDescriptor, DeviceDescriptor};
use crate::device::{Speed, UsbDevice};
use crate::error::UsbError;
use crate::port::PortPath;
use crate::DeviceId;

use super::usbmon::{status_for, EventType, Record, XferType, STATUS_IN_PROGRESS};
use super::{TraceError, TraceWriter};

/// Where the times written into a trace come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamps {
    /// The wall clock, as usbmon writes them.
    Wall,
    /// One microsecond per event from zero: byte-identical files for identical conversations,
    /// for traces kept as test fixtures.
    Sequential,
}

/// Records every transfer carried out on `D` into a pcap stream, as the kernel's usbmon would
/// see it: a submission record and a completion record per URB. Operations that are not URBs
/// (claiming an interface, a port reset) are not on the wire and are not recorded.
///
/// A failure to write the trace never fails the USB conversation: the recorder stops writing
/// and keeps the error for [`Recorder::trace_error`].
pub struct Recorder<D: UsbDevice, W: Write> {
    inner: D,
    writer: Option<TraceWriter<W>>,
    error: Option<TraceError>,
    id: DeviceId,
    next_urb: u64,
    timestamps: Timestamps,
    sequence: u64,
}

impl<D: UsbDevice, W: Write> Recorder<D, W> {
    /// Starts recording `inner` into `writer` as device 1 on bus 1. Writes the enumeration
    /// reads of the device and configuration descriptors first, so a replay can present the
    /// device without it.
    pub fn new(inner: D, writer: W, timestamps: Timestamps) -> Result<Self, TraceError> {
        Self::with_id(inner, writer, timestamps, DeviceId { bus: 1, address: 1 })
    }

    /// Like [`Recorder::new`], naming the bus and address written into each record.
    pub fn with_id(
        inner: D,
        writer: W,
        timestamps: Timestamps,
        id: DeviceId,
    ) -> Result<Self, TraceError> {
        let mut rec = Recorder {
            inner,
            writer: Some(TraceWriter::new(writer)?),
            error: None,
            id,
            next_urb: 1,
            timestamps,
            sequence: 0,
        };
        let device = rec.inner.device_descriptor().to_bytes();
        rec.log_in(
            Control::get_descriptor(descriptor_type::DEVICE, 0, 0),
            device.len() as u16,
            Ok(&device),
        );
        let configs: Vec<Vec<u8>> = rec
            .inner
            .configurations()
            .iter()
            .filter_map(|c| c.to_bytes().ok())
            .collect();
        for (index, bytes) in configs.iter().enumerate() {
            let index = u8::try_from(index).unwrap_or(u8::MAX);
            rec.log_in(
                Control::get_descriptor(descriptor_type::CONFIGURATION, index, 0),
                u16::try_from(bytes.len()).unwrap_or(u16::MAX),
                Ok(bytes),
            );
        }
        if let Some(e) = rec.error.take() {
            return Err(e);
        }
        Ok(rec)
    }

    /// The first error writing the trace, if any (recording stopped there).
    pub fn trace_error(&self) -> Option<&TraceError> {
        self.error.as_ref()
    }

    /// Stops recording; gives back the device and the writer.
    pub fn into_parts(self) -> (D, Option<W>) {
        (self.inner, self.writer.map(TraceWriter::into_inner))
    }

    /// The recorded device.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    fn now(&mut self) -> Duration {
        match self.timestamps {
            Timestamps::Wall => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
            Timestamps::Sequential => {
                self.sequence += 1;
                Duration::from_micros(self.sequence)
            }
        }
    }

    fn write(&mut self, record: Record) {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.write(&record) {
                self.error = Some(e);
                self.writer = None;
            }
        }
    }

    fn record(&mut self, urb: u64, event: EventType, xfer: XferType, endpoint: u8) -> Record {
        Record {
            id: urb,
            event,
            xfer_type: xfer,
            endpoint,
            device: self.id.address,
            bus: u16::from(self.id.bus),
            setup: None,
            timestamp: self.now(),
            status: 0,
            length: 0,
            data: Vec::new(),
            interval: 0,
            start_frame: 0,
            xfer_flags: 0,
            ndesc: 0,
        }
    }

    fn urb(&mut self) -> u64 {
        let id = self.next_urb;
        self.next_urb += 1;
        id
    }

    /// Logs a control IN URB and its completion.
    fn log_in(&mut self, setup: Control, length: u16, result: Result<&[u8], &UsbError>) {
        let urb = self.urb();
        let mut s = self.record(urb, EventType::Submit, XferType::Control, 0x80);
        s.setup = Some(setup.to_setup_packet(length));
        s.status = STATUS_IN_PROGRESS;
        s.length = u32::from(length);
        self.write(s);
        let mut c = self.record(urb, EventType::Complete, XferType::Control, 0x80);
        match result {
            Ok(data) => {
                c.length = data.len() as u32;
                c.data = capped(data);
            }
            Err(e) => c.status = status_for(Some(e.kind())),
        }
        self.write(c);
    }

    /// Logs an OUT URB (control or bulk) and its completion.
    fn log_out(
        &mut self,
        xfer: XferType,
        endpoint: u8,
        setup: Option<Control>,
        data: &[u8],
        result: Result<usize, &UsbError>,
    ) {
        let urb = self.urb();
        let mut s = self.record(urb, EventType::Submit, xfer, endpoint);
        let length = u16::try_from(data.len()).unwrap_or(u16::MAX);
        s.setup = setup.map(|c| c.to_setup_packet(length));
        s.status = STATUS_IN_PROGRESS;
        s.length = data.len() as u32;
        s.data = capped(data);
        self.write(s);
        let mut c = self.record(urb, EventType::Complete, xfer, endpoint);
        match result {
            Ok(n) => c.length = n as u32,
            Err(e) => c.status = status_for(Some(e.kind())),
        }
        self.write(c);
    }
}

fn capped(data: &[u8]) -> Vec<u8> {
    data[..data.len().min(super::SNAPLEN as usize)].to_vec()
}

impl<D: UsbDevice, W: Write + Send> UsbDevice for Recorder<D, W> {
    fn device_descriptor(&self) -> &DeviceDescriptor {
        self.inner.device_descriptor()
    }

    fn configurations(&self) -> &[ConfigurationDescriptor] {
        self.inner.configurations()
    }

    fn speed(&self) -> Speed {
        self.inner.speed()
    }

    fn port_path(&self) -> Option<&PortPath> {
        self.inner.port_path()
    }

    fn active_configuration(&mut self) -> Result<u8, UsbError> {
        // libusb answers this from its cache; nothing crosses the wire.
        self.inner.active_configuration()
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), UsbError> {
        let result = self.inner.set_configuration(value);
        let setup = Control::new(
            0x00,
            standard_request::SET_CONFIGURATION,
            u16::from(value),
            0,
        );
        self.log_out(
            XferType::Control,
            0,
            Some(setup),
            &[],
            result.as_ref().map(|_| 0usize),
        );
        result
    }

    fn claim_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.inner.claim_interface(interface)
    }

    fn release_interface(&mut self, interface: u8) -> Result<(), UsbError> {
        self.inner.release_interface(interface)
    }

    fn set_alternate_setting(&mut self, interface: u8, alternate: u8) -> Result<(), UsbError> {
        let result = self.inner.set_alternate_setting(interface, alternate);
        let setup = Control::new(
            0x01,
            standard_request::SET_INTERFACE,
            u16::from(alternate),
            u16::from(interface),
        );
        self.log_out(
            XferType::Control,
            0,
            Some(setup),
            &[],
            result.as_ref().map(|_| 0usize),
        );
        result
    }

    fn control_in(
        &mut self,
        setup: Control,
        length: u16,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        let result = self.inner.control_in(setup, length, timeout);
        self.log_in(setup, length, result.as_deref());
        result
    }

    fn control_out(
        &mut self,
        setup: Control,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        let result = self.inner.control_out(setup, data, timeout);
        self.log_out(
            XferType::Control,
            0,
            Some(setup),
            data,
            result.as_ref().copied(),
        );
        result
    }

    fn bulk_in(
        &mut self,
        endpoint: u8,
        length: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, UsbError> {
        let result = self.inner.bulk_in(endpoint, length, timeout);
        let urb = self.urb();
        let mut s = self.record(urb, EventType::Submit, XferType::Bulk, endpoint);
        s.status = STATUS_IN_PROGRESS;
        s.length = u32::try_from(length).unwrap_or(u32::MAX);
        self.write(s);
        let mut c = self.record(urb, EventType::Complete, XferType::Bulk, endpoint);
        match &result {
            Ok(data) => {
                c.length = data.len() as u32;
                c.data = capped(data);
            }
            Err(e) => c.status = status_for(Some(e.kind())),
        }
        self.write(c);
        result
    }

    fn bulk_out(
        &mut self,
        endpoint: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        let result = self.inner.bulk_out(endpoint, data, timeout);
        self.log_out(
            XferType::Bulk,
            endpoint,
            None,
            data,
            result.as_ref().copied(),
        );
        result
    }

    fn reset(&mut self) -> Result<(), UsbError> {
        self.inner.reset()
    }
}
