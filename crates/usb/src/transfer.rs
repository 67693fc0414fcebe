//! [`Transfer`]: one USB operation described as data, so that sans-IO protocol engines can say
//! "do this next" without holding a device, and drivers, simulators and trace recorders can
//! all carry it out or write it down.

use std::time::Duration;

use crate::control::Control;
use crate::device::UsbDevice;
use crate::error::{Operation, UsbError};

/// One operation on a device, borrowed from the engine that wants it done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer<'a> {
    /// Control transfer device-to-host, asking for `length` bytes.
    ControlIn {
        /// The request.
        setup: Control,
        /// `wLength`.
        length: u16,
    },
    /// Control transfer host-to-device with `data` as the data stage (may be empty).
    ControlOut {
        /// The request.
        setup: Control,
        /// The data stage.
        data: &'a [u8],
    },
    /// Bulk read of up to `length` bytes.
    BulkIn {
        /// Endpoint address (bit 7 set).
        endpoint: u8,
        /// Bytes asked for.
        length: usize,
    },
    /// Bulk write; an empty `data` is a zero-length packet.
    BulkOut {
        /// Endpoint address.
        endpoint: u8,
        /// The bytes.
        data: &'a [u8],
    },
    /// USB port reset.
    Reset,
}

impl Transfer<'_> {
    /// The [`Operation`] to name in a [`UsbError`] about this transfer.
    pub fn operation(&self) -> Operation {
        match *self {
            Self::ControlIn { setup, length } => Operation::ControlIn { setup, length },
            Self::ControlOut { setup, data } => Operation::ControlOut {
                setup,
                length: data.len(),
            },
            Self::BulkIn { endpoint, length } => Operation::BulkIn { endpoint, length },
            Self::BulkOut { endpoint, data } => Operation::BulkOut {
                endpoint,
                length: data.len(),
            },
            Self::Reset => Operation::Reset,
        }
    }

    /// Carries the transfer out on `device`.
    pub fn perform(
        &self,
        device: &mut dyn UsbDevice,
        timeout: Duration,
    ) -> Result<Completion, UsbError> {
        match *self {
            Self::ControlIn { setup, length } => device
                .control_in(setup, length, timeout)
                .map(Completion::In),
            Self::ControlOut { setup, data } => device
                .control_out(setup, data, timeout)
                .map(|written| Completion::Out { written }),
            Self::BulkIn { endpoint, length } => device
                .bulk_in(endpoint, length, timeout)
                .map(Completion::In),
            Self::BulkOut { endpoint, data } => device
                .bulk_out(endpoint, data, timeout)
                .map(|written| Completion::Out { written }),
            Self::Reset => device.reset().map(|()| Completion::Reset),
        }
    }
}

/// How a [`Transfer`] completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// An IN transfer: the bytes that came (possibly fewer than asked for).
    In(Vec<u8>),
    /// An OUT transfer: how many bytes the device took.
    Out {
        /// Bytes written.
        written: usize,
    },
    /// The reset was done.
    Reset,
}
