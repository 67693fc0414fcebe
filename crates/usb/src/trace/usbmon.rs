//! The usbmon record: the 64-byte header Linux's binary usbmon interface puts before each
//! captured URB event (`Documentation/usb/usbmon.rst`, "binary API", the mmapped layout), as
//! pcap files with link type 220 (`LINKTYPE_USB_LINUX_MMAPPED`) carry it. Fields are in the
//! capturing host's byte order; traces made on x86 and arm64 Linux are little-endian, and so is
//! everything this module writes and reads.

use std::time::Duration;

use crate::error::ErrorKind;

/// Length of the usbmon mmapped header.
pub const HEADER_LEN: usize = 64;

/// The pcap link type of usbmon records with the 64-byte header.
pub const LINKTYPE_USB_LINUX_MMAPPED: u32 = 220;

/// Whether the record is the submission of a URB or its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `'S'`: the host submitted the URB.
    Submit,
    /// `'C'`: the URB completed (successfully or with a status).
    Complete,
    /// `'E'`: the submission itself failed.
    Error,
}

impl EventType {
    fn to_byte(self) -> u8 {
        match self {
            EventType::Submit => b'S',
            EventType::Complete => b'C',
            EventType::Error => b'E',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'S' => Some(EventType::Submit),
            b'C' => Some(EventType::Complete),
            b'E' => Some(EventType::Error),
            _ => None,
        }
    }
}

/// The URB's transfer type, numbered as usbmon numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XferType {
    /// 0.
    Isochronous,
    /// 1.
    Interrupt,
    /// 2.
    Control,
    /// 3.
    Bulk,
}

impl XferType {
    fn to_byte(self) -> u8 {
        match self {
            XferType::Isochronous => 0,
            XferType::Interrupt => 1,
            XferType::Control => 2,
            XferType::Bulk => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(XferType::Isochronous),
            1 => Some(XferType::Interrupt),
            2 => Some(XferType::Control),
            3 => Some(XferType::Bulk),
            _ => None,
        }
    }
}

/// One usbmon event: header fields and the captured data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// URB id: the same for a submission and its completion.
    pub id: u64,
    /// Submission, completion or submission error.
    pub event: EventType,
    /// Transfer type.
    pub xfer_type: XferType,
    /// Endpoint address, bit 7 set for IN.
    pub endpoint: u8,
    /// Device address on the bus.
    pub device: u8,
    /// Bus number.
    pub bus: u16,
    /// The setup packet, on control submissions.
    pub setup: Option<[u8; 8]>,
    /// Time of the event.
    pub timestamp: Duration,
    /// 0 or a negative errno (on submissions usbmon writes -EINPROGRESS, -115).
    pub status: i32,
    /// URB length: asked for on a submission, actual on a completion.
    pub length: u32,
    /// The captured bytes (OUT data on a submission, IN data on a completion).
    pub data: Vec<u8>,
    /// Polling interval (interrupt and isochronous endpoints).
    pub interval: i32,
    /// Start frame (isochronous).
    pub start_frame: i32,
    /// The URB's transfer flags.
    pub xfer_flags: u32,
    /// Isochronous descriptor count.
    pub ndesc: u32,
}

/// -EINPROGRESS, the status usbmon writes on submissions.
pub const STATUS_IN_PROGRESS: i32 = -115;

/// A usbmon record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the 64-byte header.
    #[error("usbmon record of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// The event type byte is not `S`, `C` or `E`.
    #[error("usbmon record has unknown event type {0:#04x} (expected 'S', 'C' or 'E')")]
    EventType(u8),
    /// The transfer type byte is not 0–3.
    #[error("usbmon record has unknown transfer type {0} (expected 0-3)")]
    XferType(u8),
    /// `len_cap` says more bytes were captured than follow the header.
    #[error("usbmon record claims {claimed} captured bytes but {present} follow the header")]
    CapturedLength {
        /// `len_cap` from the header.
        claimed: u32,
        /// Bytes after the header.
        present: usize,
    },
    /// The timestamp's microseconds are out of range.
    #[error("usbmon record timestamp {sec} s {usec} us is out of range")]
    Timestamp {
        /// Seconds.
        sec: i64,
        /// Microseconds.
        usec: i32,
    },
}

impl Record {
    /// Reads a record from the bytes of one pcap packet.
    pub fn parse(bytes: &[u8]) -> Result<Record, RecordError> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(RecordError::Truncated { len: bytes.len() })?;
        let u32_at =
            |o: usize| u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
        let i32_at = |o: usize| u32_at(o) as i32;
        let mut id = [0u8; 8];
        id.copy_from_slice(&header[0..8]);
        let mut sec = [0u8; 8];
        sec.copy_from_slice(&header[16..24]);
        let sec = i64::from_le_bytes(sec);
        let usec = i32_at(24);
        let event = EventType::from_byte(header[8]).ok_or(RecordError::EventType(header[8]))?;
        let xfer_type = XferType::from_byte(header[9]).ok_or(RecordError::XferType(header[9]))?;
        // flag_setup is 0 when the setup packet is valid; flag_data is 0 when data is present.
        let setup = (header[14] == 0).then(|| {
            let mut s = [0u8; 8];
            s.copy_from_slice(&header[40..48]);
            s
        });
        let len_cap = u32_at(36);
        let rest = &bytes[HEADER_LEN..];
        let data = rest
            .get(..len_cap as usize)
            .ok_or(RecordError::CapturedLength {
                claimed: len_cap,
                present: rest.len(),
            })?
            .to_vec();
        if sec < 0 || !(0..1_000_000).contains(&usec) {
            return Err(RecordError::Timestamp { sec, usec });
        }
        Ok(Record {
            id: u64::from_le_bytes(id),
            event,
            xfer_type,
            endpoint: header[10],
            device: header[11],
            bus: u16::from_le_bytes([header[12], header[13]]),
            setup,
            timestamp: Duration::new(sec as u64, usec as u32 * 1000),
            status: i32_at(28),
            length: u32_at(32),
            data,
            interval: i32_at(48),
            start_frame: i32_at(52),
            xfer_flags: u32_at(56),
            ndesc: u32_at(60),
        })
    }

    /// The bytes of one pcap packet: the header and the captured data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.push(self.event.to_byte());
        out.push(self.xfer_type.to_byte());
        out.push(self.endpoint);
        out.push(self.device);
        out.extend_from_slice(&self.bus.to_le_bytes());
        out.push(if self.setup.is_some() { 0 } else { b'-' });
        out.push(if self.data.is_empty() { b'<' } else { 0 });
        // Durations past i64::MAX seconds do not come from a clock; saturate.
        let sec = i64::try_from(self.timestamp.as_secs()).unwrap_or(i64::MAX);
        out.extend_from_slice(&sec.to_le_bytes());
        out.extend_from_slice(&(self.timestamp.subsec_micros() as i32).to_le_bytes());
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        let len_cap = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len_cap.to_le_bytes());
        out.extend_from_slice(&self.setup.unwrap_or([0; 8]));
        out.extend_from_slice(&self.interval.to_le_bytes());
        out.extend_from_slice(&self.start_frame.to_le_bytes());
        out.extend_from_slice(&self.xfer_flags.to_le_bytes());
        out.extend_from_slice(&self.ndesc.to_le_bytes());
        out.extend_from_slice(&self.data[..len_cap as usize]);
        out
    }

    /// Whether the endpoint is an IN endpoint.
    pub fn is_in(&self) -> bool {
        self.endpoint & 0x80 != 0
    }

    /// A bulk IN completion unlinked by its timeout or a cancel (`-ENOENT`, `-ECONNRESET`)
    /// after bytes came: libusb hands those bytes to the program, so the read returned them.
    pub fn is_bulk_in_unlinked_with_bytes(&self) -> bool {
        self.xfer_type == XferType::Bulk
            && self.is_in()
            && matches!(self.status, -2 | -104)
            && !self.data.is_empty()
    }
}

/// The errno usbmon writes as a URB status for an error of `kind` (negative), 0 for none.
pub fn status_for(kind: Option<ErrorKind>) -> i32 {
    match kind {
        None => 0,
        Some(ErrorKind::NoDevice) => -19,     // ENODEV
        Some(ErrorKind::Pipe) => -32,         // EPIPE
        Some(ErrorKind::Timeout) => -110,     // ETIMEDOUT
        Some(ErrorKind::Io) => -71,           // EPROTO
        Some(ErrorKind::Overflow) => -75,     // EOVERFLOW
        Some(ErrorKind::Access) => -13,       // EACCES
        Some(ErrorKind::Busy) => -16,         // EBUSY
        Some(ErrorKind::NotFound) => -2,      // ENOENT
        Some(ErrorKind::InvalidParam) => -22, // EINVAL
        Some(ErrorKind::Interrupted) => -4,   // EINTR
        Some(ErrorKind::Malformed) | Some(ErrorKind::Other) => -38, // ENOSYS
    }
}

/// The error kind a completion status stands for, `None` for success. Linux reports a short
/// IN transfer (`-EREMOTEIO`, −121) and an unlinked URB (`-ECONNRESET`, −104) too: the first is
/// success with fewer bytes, the second a cancelled transfer (timeout from the host's view).
pub fn kind_for(status: i32) -> Option<ErrorKind> {
    match status {
        0 | -121 => None,
        -104 => Some(ErrorKind::Timeout),
        s => Some(ErrorKind::from_errno(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            id: 0xffff_8881_2345_6780,
            event: EventType::Submit,
            xfer_type: XferType::Control,
            endpoint: 0x00,
            device: 7,
            bus: 1,
            setup: Some([0x21, 1, 0, 0, 0, 0, 4, 0]),
            timestamp: Duration::new(1_700_000_000, 123_000),
            status: STATUS_IN_PROGRESS,
            length: 4,
            data: vec![1, 2, 3, 4],
            interval: 0,
            start_frame: 0,
            xfer_flags: 0,
            ndesc: 0,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let r = sample();
        let bytes = r.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 4);
        assert_eq!(bytes[8], b'S');
        assert_eq!(bytes[9], 2);
        assert_eq!(bytes[14], 0, "setup flag: 0 = setup present");
        assert_eq!(&bytes[40..48], &[0x21, 1, 0, 0, 0, 0, 4, 0]);
        assert_eq!(Record::parse(&bytes), Ok(r));
    }

    #[test]
    fn bad_records_are_typed_errors() {
        let bytes = sample().to_bytes();
        assert_eq!(
            Record::parse(&bytes[..10]),
            Err(RecordError::Truncated { len: 10 })
        );
        assert!(matches!(
            Record::parse(&bytes[..HEADER_LEN + 2]),
            Err(RecordError::CapturedLength {
                claimed: 4,
                present: 2
            })
        ));
        let mut b = bytes.clone();
        b[8] = b'X';
        assert_eq!(Record::parse(&b), Err(RecordError::EventType(b'X')));
        let mut b = bytes.clone();
        b[9] = 9;
        assert_eq!(Record::parse(&b), Err(RecordError::XferType(9)));
        let mut b = bytes;
        b[24..28].copy_from_slice(&2_000_000i32.to_le_bytes());
        assert!(matches!(
            Record::parse(&b),
            Err(RecordError::Timestamp { .. })
        ));
    }

    #[test]
    fn statuses_map_both_ways() {
        for kind in [
            ErrorKind::NoDevice,
            ErrorKind::Pipe,
            ErrorKind::Timeout,
            ErrorKind::Io,
            ErrorKind::Overflow,
            ErrorKind::Busy,
            ErrorKind::NotFound,
            ErrorKind::InvalidParam,
            ErrorKind::Interrupted,
            ErrorKind::Other,
        ] {
            assert_eq!(kind_for(status_for(Some(kind))), Some(kind), "{kind}");
        }
        assert_eq!(kind_for(0), None);
        assert_eq!(kind_for(-121), None, "short read is not an error");
    }
}
