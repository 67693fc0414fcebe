//! Recording and replaying USB conversations, as pcap files in the layout Linux's usbmon
//! writes (link type 220), so a trace recorded by restation, by `tshark -i usbmon1` or by
//! `cat /dev/usbmon1` in the VM bench all read the same way.
//!
//! - [`Recorder`] wraps any [`UsbDevice`](crate::UsbDevice) and writes every transfer it
//!   carries out as a usbmon submission + completion pair.
//! - [`Conversation`] turns usbmon records back into request/outcome [`Exchange`]s for one
//!   device.
//! - [`Replay`] is a [`UsbDevice`](crate::UsbDevice) that serves a recorded conversation back
//!   to host code and reports the first place where the host did something else
//!   ([`Divergence`]).
//!
//! ```
//! use std::time::Duration;
//! use usb::trace::{Conversation, Recorder, Replay, Timestamps};
//! use usb::{Control, UsbDevice};
//! # use usb::trace::doc_support::Echo;
//!
//! // Record a conversation with some device (here a stand-in that echoes bulk data).
//! let mut pcap = Vec::new();
//! let mut rec = Recorder::new(Echo::default(), &mut pcap, Timestamps::Sequential)?;
//! rec.bulk_out(0x02, b"ping", Duration::from_secs(1))?;
//! assert_eq!(rec.bulk_in(0x81, 64, Duration::from_secs(1))?, b"ping");
//! drop(rec);
//!
//! // Replay it: the same calls get the same answers without the device.
//! let conversation = Conversation::single_from_pcap(&pcap[..])?;
//! let mut replay = Replay::new(conversation)?;
//! replay.bulk_out(0x02, b"ping", Duration::from_secs(1))?;
//! assert_eq!(replay.bulk_in(0x81, 64, Duration::from_secs(1))?, b"ping");
//! assert!(replay.finish().is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conversation;
mod recorder;
mod replay;
pub mod usbmon;

#[doc(hidden)]
pub mod doc_support;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::DataLink;
use std::io::{Read, Write};

pub use conversation::{Conversation, Exchange, Outcome, Request};
pub use recorder::{Recorder, Timestamps};
pub use replay::{Divergence, Replay, ReplayBackend};
pub use usbmon::{EventType, Record, RecordError, XferType};

/// Largest captured data per record this module writes (and the pcap snap length).
pub const SNAPLEN: u32 = 1 << 20;

/// A trace that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The pcap container is broken or the writer failed.
    #[error("pcap: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    /// The pcap file holds another kind of capture.
    #[error(
        "pcap link type is {found}, expected {} (usbmon, 64-byte header)",
        usbmon::LINKTYPE_USB_LINUX_MMAPPED
    )]
    LinkType {
        /// The link type found.
        found: u32,
    },
    /// A packet that is not a usbmon record.
    #[error("packet {index}: {source}")]
    Record {
        /// 0-based packet number in the file.
        index: usize,
        /// What is wrong with it.
        source: RecordError,
    },
    /// The trace holds packets of several devices and one was needed.
    #[error("the trace holds {count} devices ({list}); name one")]
    SeveralDevices {
        /// How many.
        count: usize,
        /// `bus:address` of each.
        list: String,
    },
    /// The trace lacks the device descriptor, so a replay cannot present the device.
    #[error("the trace has no GET_DESCRIPTOR(device) answer for this device")]
    NoDeviceDescriptor,
    /// A recorded descriptor does not parse.
    #[error("recorded descriptor: {0}")]
    Descriptor(#[from] crate::DescriptorError),
}

/// Writes usbmon records into a pcap stream.
pub struct TraceWriter<W: Write> {
    pcap: PcapWriter<W>,
}

impl<W: Write> TraceWriter<W> {
    /// Starts a pcap stream with link type 220 on `writer`.
    pub fn new(writer: W) -> Result<Self, TraceError> {
        let header = PcapHeader {
            snaplen: SNAPLEN + usbmon::HEADER_LEN as u32,
            datalink: DataLink::USB_LINUX_MMAPPED,
            // Captures made on x86 and arm64 hosts are little-endian throughout.
            endianness: pcap_file::Endianness::Little,
            ..PcapHeader::default()
        };
        Ok(Self {
            pcap: PcapWriter::with_header(writer, header)?,
        })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record) -> Result<(), TraceError> {
        let bytes = record.to_bytes();
        let orig_len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.pcap
            .write_packet(&PcapPacket::new(record.timestamp, orig_len, &bytes))?;
        Ok(())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.pcap.into_writer()
    }
}

/// Reads every usbmon record of a pcap stream.
pub fn read_records(reader: impl Read) -> Result<Vec<Record>, TraceError> {
    let mut pcap = PcapReader::new(reader)?;
    let found = u32::from(pcap.header().datalink);
    if found != usbmon::LINKTYPE_USB_LINUX_MMAPPED {
        return Err(TraceError::LinkType { found });
    }
    let mut records = Vec::new();
    while let Some(packet) = pcap.next_packet() {
        let packet = packet?;
        let record = Record::parse(&packet.data).map_err(|source| TraceError::Record {
            index: records.len(),
            source,
        })?;
        records.push(record);
    }
    Ok(records)
}
