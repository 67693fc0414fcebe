//! From usbmon records (submissions and completions, interleaved, several devices) to one
//! device's conversation: each URB as a request and what came of it.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use crate::control::{Control, Direction};
use crate::error::ErrorKind;

use super::usbmon::{kind_for, EventType, Record, XferType};
use super::{read_records, TraceError};

/// What the host asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Control transfer device-to-host.
    ControlIn {
        /// The setup packet.
        setup: Control,
        /// `wLength`.
        length: u16,
    },
    /// Control transfer host-to-device with its data stage.
    ControlOut {
        /// The setup packet.
        setup: Control,
        /// The data stage as captured.
        data: Vec<u8>,
    },
    /// Bulk (or interrupt) read.
    BulkIn {
        /// Endpoint address.
        endpoint: u8,
        /// Bytes asked for.
        length: u32,
    },
    /// Bulk (or interrupt) write.
    BulkOut {
        /// Endpoint address.
        endpoint: u8,
        /// The bytes as captured.
        data: Vec<u8>,
    },
}

impl Request {
    /// The endpoint the request went to (0 for control).
    pub fn endpoint(&self) -> u8 {
        match self {
            Request::ControlIn { .. } | Request::ControlOut { .. } => 0,
            Request::BulkIn { endpoint, .. } | Request::BulkOut { endpoint, .. } => *endpoint,
        }
    }

    /// The setup packet of a control request.
    pub fn setup(&self) -> Option<Control> {
        match self {
            Request::ControlIn { setup, .. } | Request::ControlOut { setup, .. } => Some(*setup),
            _ => None,
        }
    }

    /// Whether this is a standard request (`bmRequestType` type bits 0): descriptors,
    /// configuration, interface, features. The kernel and libusb issue these on their own
    /// (enumeration, caching), so replays treat them as housekeeping, not conversation.
    pub fn is_standard(&self) -> bool {
        self.setup().is_some_and(|s| s.request_type & 0x60 == 0)
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::ControlIn { setup, length } => {
                write!(f, "control IN {setup} wLength={length}")
            }
            Request::ControlOut { setup, data } => {
                write!(f, "control OUT {setup} data {}", Preview(data))
            }
            Request::BulkIn { endpoint, length } => {
                write!(f, "bulk IN {endpoint:#04x} ({length} bytes)")
            }
            Request::BulkOut { endpoint, data } => {
                write!(f, "bulk OUT {endpoint:#04x} data {}", Preview(data))
            }
        }
    }
}

/// A few bytes of a buffer in hex and its length, for divergence reports.
pub(crate) struct Preview<'a>(pub &'a [u8]);

impl std::fmt::Display for Preview<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} bytes:", self.0.len())?;
        for b in self.0.iter().take(16) {
            write!(f, " {b:02x}")?;
        }
        if self.0.len() > 16 {
            f.write_str(" …")?;
        }
        f.write_str("]")
    }
}

/// What came of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An IN request completed with these bytes.
    In(Vec<u8>),
    /// An OUT request completed; the device took this many bytes.
    Out {
        /// Bytes taken.
        written: u32,
    },
    /// The request failed (completion status, or a failed submission).
    Failed(ErrorKind),
    /// No completion was recorded (the capture stopped first).
    Missing,
}

/// One URB: the request, its outcome, and when it was submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// What the host asked.
    pub request: Request,
    /// What came of it.
    pub outcome: Outcome,
    /// Submission time as recorded.
    pub submitted: Duration,
}

/// One device's side of a trace: every URB to or from it, in submission order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Bus number.
    pub bus: u16,
    /// Device address.
    pub device: u8,
    /// The URBs, in the order the host submitted them.
    pub exchanges: Vec<Exchange>,
}

impl Conversation {
    /// Splits records into one conversation per device, in order of first appearance.
    /// Completions are paired with their submissions by URB id; isochronous URBs are skipped
    /// (no phone protocol uses them).
    pub fn from_records(records: &[Record]) -> Vec<Conversation> {
        let mut conversations: Vec<Conversation> = Vec::new();
        // (bus, device, urb id) → (conversation, exchange) of submissions awaiting completion.
        let mut pending: HashMap<(u16, u8, u64), (usize, usize)> = HashMap::new();
        for record in records {
            if record.xfer_type == XferType::Isochronous {
                continue;
            }
            let c = match conversations
                .iter()
                .position(|c| c.bus == record.bus && c.device == record.device)
            {
                Some(c) => c,
                None => {
                    conversations.push(Conversation {
                        bus: record.bus,
                        device: record.device,
                        exchanges: Vec::new(),
                    });
                    conversations.len() - 1
                }
            };
            let key = (record.bus, record.device, record.id);
            match record.event {
                EventType::Submit => {
                    let Some(request) = request_of(record) else {
                        continue;
                    };
                    let exchanges = &mut conversations[c].exchanges;
                    exchanges.push(Exchange {
                        request,
                        outcome: Outcome::Missing,
                        submitted: record.timestamp,
                    });
                    pending.insert(key, (c, exchanges.len() - 1));
                }
                EventType::Complete | EventType::Error => {
                    let Some((c, e)) = pending.remove(&key) else {
                        // A completion whose submission happened before the capture began.
                        continue;
                    };
                    let exchange = &mut conversations[c].exchanges[e];
                    exchange.outcome = match (record.event, kind_for(record.status)) {
                        (EventType::Error, kind) => {
                            Outcome::Failed(kind.unwrap_or(ErrorKind::Other))
                        }
                        (_, Some(_)) if record.is_bulk_in_unlinked_with_bytes() => {
                            Outcome::In(record.data.clone())
                        }
                        (_, Some(kind)) => Outcome::Failed(kind),
                        (_, None) => match exchange.request {
                            Request::ControlIn { .. } | Request::BulkIn { .. } => {
                                Outcome::In(record.data.clone())
                            }
                            Request::ControlOut { .. } | Request::BulkOut { .. } => Outcome::Out {
                                written: record.length,
                            },
                        },
                    };
                }
            }
        }
        conversations
    }

    /// Reads a pcap stream and splits it per device.
    pub fn from_pcap(reader: impl Read) -> Result<Vec<Conversation>, TraceError> {
        Ok(Self::from_records(&read_records(reader)?))
    }

    /// Reads a pcap stream that holds exactly one device.
    pub fn single_from_pcap(reader: impl Read) -> Result<Conversation, TraceError> {
        let mut all = Self::from_pcap(reader)?;
        if all.len() == 1 {
            if let Some(one) = all.pop() {
                return Ok(one);
            }
        }
        Err(TraceError::SeveralDevices {
            count: all.len(),
            list: all
                .iter()
                .map(|c| format!("{}:{}", c.bus, c.device))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The answer recorded for a standard GET_DESCRIPTOR with this setup (the longest one when
    /// the host asked several times, as enumeration does for configurations).
    pub fn descriptor(&self, setup: Control) -> Option<&[u8]> {
        self.exchanges
            .iter()
            .filter(|e| matches!(e.request, Request::ControlIn { setup: s, .. } if s == setup))
            .filter_map(|e| match &e.outcome {
                Outcome::In(data) => Some(data.as_slice()),
                _ => None,
            })
            .max_by_key(|d| d.len())
    }
}

fn request_of(record: &Record) -> Option<Request> {
    match record.xfer_type {
        XferType::Control => {
            let (setup, length) = Control::parse_setup_packet(&record.setup?).ok()?;
            Some(match setup.direction() {
                Direction::In => Request::ControlIn { setup, length },
                Direction::Out => Request::ControlOut {
                    setup,
                    data: record.data.clone(),
                },
            })
        }
        XferType::Bulk | XferType::Interrupt => Some(if record.is_in() {
            Request::BulkIn {
                endpoint: record.endpoint,
                length: record.length,
            }
        } else {
            Request::BulkOut {
                endpoint: record.endpoint,
                data: record.data.clone(),
            }
        }),
        XferType::Isochronous => None,
    }
}
