//! The USB/IP protocol on the wire (version 1.1.1, `0x0111`), sans-IO: every message as a
//! value, encoded to bytes and decoded from a byte stream.
//!
//! A TCP connection starts with one *operation*: `OP_REQ_DEVLIST` (answered by
//! `OP_REP_DEVLIST`, then the server closes) or `OP_REQ_IMPORT` (answered by `OP_REP_IMPORT`;
//! when the import succeeded the connection then carries URB traffic). URB traffic is
//! `USBIP_CMD_SUBMIT` / `USBIP_CMD_UNLINK` from the client (the guest's `vhci-hcd`) and
//! `USBIP_RET_SUBMIT` / `USBIP_RET_UNLINK` from the server. Every integer is big-endian; the
//! 8-byte SETUP packet inside a submit is copied as it is on USB (little-endian fields).
//!
//! Decoders take a buffer that may hold a partial message: `Ok(None)` asks for more bytes,
//! `Ok(Some((message, used)))` says how many bytes the message took. Lengths that come from the
//! peer are capped ([`MAX_TRANSFER_LENGTH`], [`MAX_ISO_PACKETS`], [`MAX_DEVICES`]) before
//! anything is allocated, so junk costs a typed [`WireError`], never a panic or a huge buffer.

use usb::Direction;

/// Protocol version in every operation header.
pub const VERSION: u16 = 0x0111;
/// Operation code: list exported devices.
pub const OP_REQ_DEVLIST: u16 = 0x8005;
/// Operation code: the exported devices.
pub const OP_REP_DEVLIST: u16 = 0x0005;
/// Operation code: import one device.
pub const OP_REQ_IMPORT: u16 = 0x8003;
/// Operation code: the import's answer.
pub const OP_REP_IMPORT: u16 = 0x0003;
/// URB command: submit.
pub const USBIP_CMD_SUBMIT: u32 = 1;
/// URB command: unlink.
pub const USBIP_CMD_UNLINK: u32 = 2;
/// URB reply: a submit completed.
pub const USBIP_RET_SUBMIT: u32 = 3;
/// URB reply: an unlink was handled.
pub const USBIP_RET_UNLINK: u32 = 4;

/// Bytes of an operation header (version, code, status).
pub const OP_HEADER_LEN: usize = 8;
/// Bytes of every URB header (basic header + the command's own fields + padding).
pub const HEADER_LEN: usize = 48;
/// Bytes of the `path` field.
pub const PATH_LEN: usize = 256;
/// Bytes of the `busid` field.
pub const BUSID_LEN: usize = 32;
/// Bytes of the `usb_device` structure (path … bNumInterfaces).
pub const DEVICE_LEN: usize = 312;
/// Bytes of one interface entry in `OP_REP_DEVLIST`.
pub const INTERFACE_LEN: usize = 4;
/// Bytes of one isochronous packet descriptor.
pub const ISO_DESCRIPTOR_LEN: usize = 16;

/// The largest `transfer_buffer_length` / `actual_length` accepted (16 MiB).
pub const MAX_TRANSFER_LENGTH: u32 = 16 << 20;
/// The most isochronous packets accepted in one URB.
pub const MAX_ISO_PACKETS: u32 = 1024;
/// The most devices accepted in one `OP_REP_DEVLIST`.
pub const MAX_DEVICES: u32 = 1024;
/// `number_of_packets` of a transfer that is not isochronous, as the protocol document asks
/// for it (Linux's `vhci-hcd` sends 0 instead; both mean "no ISO descriptors follow").
pub const NOT_ISO: u32 = 0xFFFF_FFFF;

/// Bits of `transfer_flags` (the `USBIP_URB_*` values).
pub mod transfer_flags {
    /// A short IN transfer is an error (`-EREMOTEIO`).
    pub const SHORT_NOT_OK: u32 = 0x0001;
    /// Isochronous: start as soon as possible.
    pub const ISO_ASAP: u32 = 0x0002;
    /// The buffer is already DMA-mapped (meaningless across the network).
    pub const NO_TRANSFER_DMA_MAP: u32 = 0x0004;
    /// An OUT transfer that fills its last packet is followed by a zero-length packet.
    pub const ZERO_PACKET: u32 = 0x0040;
    /// No completion interrupt needed.
    pub const NO_INTERRUPT: u32 = 0x0080;
    /// Free the buffer with the URB.
    pub const FREE_BUFFER: u32 = 0x0100;
    /// The data stage goes device to host.
    pub const DIR_IN: u32 = 0x0200;
}

/// `OP_REP_IMPORT` status values.
pub mod import_status {
    /// Imported.
    pub const OK: u32 = 0;
    /// Refused: no such device, or not available.
    pub const NOT_AVAILABLE: u32 = 1;
    /// Refused: someone else has it imported.
    pub const BUSY: u32 = 2;
}

/// Linux errno values used as URB status (sent negated).
pub mod errno {
    /// The URB was unlinked (`-ECONNRESET`).
    pub const ECONNRESET: i32 = 104;
    /// The endpoint stalled (`-EPIPE`).
    pub const EPIPE: i32 = 32;
    /// The device is gone (`-ENODEV`).
    pub const ENODEV: i32 = 19;
    /// The host controller or device shut down (`-ESHUTDOWN`).
    pub const ESHUTDOWN: i32 = 108;
    /// Protocol error on the link (`-EPROTO`).
    pub const EPROTO: i32 = 71;
    /// The device sent more than asked for (`-EOVERFLOW`).
    pub const EOVERFLOW: i32 = 75;
    /// A short IN transfer with `SHORT_NOT_OK` (`-EREMOTEIO`).
    pub const EREMOTEIO: i32 = 121;
    /// Invalid request (`-EINVAL`).
    pub const EINVAL: i32 = 22;
    /// Busy (`-EBUSY`).
    pub const EBUSY: i32 = 16;
    /// Interrupted (`-EINTR`).
    pub const EINTR: i32 = 4;
    /// Generic I/O error (`-EIO`).
    pub const EIO: i32 = 5;
    /// Permission denied (`-EACCES`).
    pub const EACCES: i32 = 13;
}

/// `enum usb_device_speed` values carried in `speed`.
pub fn speed_code(speed: usb::Speed) -> u32 {
    match speed {
        usb::Speed::Unknown => 0,
        usb::Speed::Low => 1,
        usb::Speed::Full => 2,
        usb::Speed::High => 3,
        usb::Speed::Super => 5,
        usb::Speed::SuperPlus => 6,
    }
}

/// Bytes that are not a USB/IP message (or a message that cannot be written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The operation header names another protocol version.
    #[error("USB/IP version {found:#06x}, expected {VERSION:#06x}")]
    Version {
        /// What came.
        found: u16,
    },
    /// An operation code this side does not take here.
    #[error("operation code {code:#06x} is not one of {expected}")]
    UnknownOperation {
        /// What came.
        code: u16,
        /// What was expected, for the message.
        expected: &'static str,
    },
    /// A URB command code this side does not take here.
    #[error("URB command {command:#010x} is not one of {expected}")]
    UnknownCommand {
        /// What came.
        command: u32,
        /// What was expected, for the message.
        expected: &'static str,
    },
    /// `direction` is neither 0 (OUT) nor 1 (IN).
    #[error("direction {value} is neither 0 (OUT) nor 1 (IN)")]
    Direction {
        /// What came.
        value: u32,
    },
    /// `ep` is not an endpoint number (0..=15).
    #[error("endpoint number {value} is not in 0..=15")]
    Endpoint {
        /// What came.
        value: u32,
    },
    /// A transfer length above the cap.
    #[error("{field} of {length} bytes is above the {MAX_TRANSFER_LENGTH}-byte cap")]
    TransferTooLong {
        /// `transfer_buffer_length` or `actual_length`.
        field: &'static str,
        /// What came.
        length: u32,
    },
    /// More isochronous packets than the cap.
    #[error("{count} isochronous packets, at most {MAX_ISO_PACKETS}")]
    TooManyIsoPackets {
        /// What came.
        count: u32,
    },
    /// More devices than the cap.
    #[error("{count} devices in a device list, at most {MAX_DEVICES}")]
    TooManyDevices {
        /// What came.
        count: u32,
    },
    /// A fixed-size string field without its terminating NUL.
    #[error("the {field} field has no terminating NUL")]
    Unterminated {
        /// `path` or `busid`.
        field: &'static str,
    },
    /// A string field that is not UTF-8.
    #[error("the {field} field is not UTF-8")]
    NotUtf8 {
        /// `path` or `busid`.
        field: &'static str,
    },
    /// A string too long for its field (encoding).
    #[error("{field} of {length} bytes does not fit its field (at most {max})")]
    FieldTooLong {
        /// `path` or `busid`.
        field: &'static str,
        /// Its length.
        length: usize,
        /// The most that fits.
        max: usize,
    },
    /// A string with a NUL inside (encoding).
    #[error("{field} holds a NUL byte")]
    InteriorNul {
        /// `path` or `busid`.
        field: &'static str,
    },
    /// `OP_REP_DEVLIST` with a non-zero status.
    #[error("device list refused with status {status}")]
    DevListStatus {
        /// What came.
        status: u32,
    },
    /// A device entry whose `bNumInterfaces` does not match its interface list (encoding).
    #[error("bNumInterfaces says {declared}, {listed} interfaces listed")]
    InterfaceCount {
        /// `bNumInterfaces`.
        declared: u8,
        /// Entries given.
        listed: usize,
    },
    /// A message whose data does not match its length field (encoding).
    #[error("{field} says {declared} bytes, {actual} given")]
    DataLength {
        /// The length field.
        field: &'static str,
        /// Its value.
        declared: u32,
        /// Bytes given.
        actual: usize,
    },
    /// ISO descriptors that do not match `number_of_packets` (encoding).
    #[error("number_of_packets is {declared}, {listed} ISO descriptors given")]
    IsoCount {
        /// The field.
        declared: u32,
        /// Descriptors given.
        listed: usize,
    },
    /// An import refusal with status 0 (encoding).
    #[error("a refused import needs a non-zero status")]
    ZeroRefusal,
    /// A `USBIP_RET_SUBMIT` for a sequence number the client never submitted.
    #[error("RET_SUBMIT for sequence number {seqnum}, which is not pending")]
    UnknownSeqnum {
        /// What came.
        seqnum: u32,
    },
}

/// One device as `OP_REP_DEVLIST` and `OP_REP_IMPORT` describe it (`struct usbip_usb_device`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsbDevice {
    /// Where the device sits on the exporting host (sysfs path), at most 255 bytes.
    pub path: String,
    /// Bus ID (`1-1`), at most 31 bytes.
    pub busid: String,
    /// Bus number.
    pub busnum: u32,
    /// Device address on that bus.
    pub devnum: u32,
    /// `enum usb_device_speed` ([`speed_code`]).
    pub speed: u32,
    /// `idVendor`.
    pub id_vendor: u16,
    /// `idProduct`.
    pub id_product: u16,
    /// `bcdDevice`.
    pub bcd_device: u16,
    /// `bDeviceClass`.
    pub device_class: u8,
    /// `bDeviceSubClass`.
    pub device_subclass: u8,
    /// `bDeviceProtocol`.
    pub device_protocol: u8,
    /// The active `bConfigurationValue`.
    pub configuration_value: u8,
    /// `bNumConfigurations`.
    pub num_configurations: u8,
    /// `bNumInterfaces` of the active configuration.
    pub num_interfaces: u8,
}

impl UsbDevice {
    /// The `devid` a client puts in every URB header: `busnum << 16 | devnum`.
    pub fn devid(&self) -> u32 {
        (self.busnum << 16) | (self.devnum & 0xFFFF)
    }
}

/// One interface entry of `OP_REP_DEVLIST` (`struct usbip_usb_interface`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UsbInterface {
    /// `bInterfaceClass`.
    pub class: u8,
    /// `bInterfaceSubClass`.
    pub subclass: u8,
    /// `bInterfaceProtocol`.
    pub protocol: u8,
}

/// A device in `OP_REP_DEVLIST`: the device and its interfaces (`bNumInterfaces` of them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExportedDevice {
    /// The device.
    pub device: UsbDevice,
    /// Its interfaces.
    pub interfaces: Vec<UsbInterface>,
}

/// What a client asks first on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpRequest {
    /// `OP_REQ_DEVLIST`.
    DevList,
    /// `OP_REQ_IMPORT` of the device with this bus ID.
    Import {
        /// The bus ID (at most 31 bytes).
        busid: String,
    },
}

/// The server's answer to an [`OpRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpReply {
    /// `OP_REP_DEVLIST`.
    DevList {
        /// The exported devices.
        devices: Vec<ExportedDevice>,
    },
    /// `OP_REP_IMPORT`, status 0: the device; URB traffic follows.
    Imported(UsbDevice),
    /// `OP_REP_IMPORT` with a non-zero status ([`import_status`]); nothing follows.
    ImportRefused {
        /// The status.
        status: u32,
    },
}

/// One isochronous packet descriptor (carried, never interpreted here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IsoPacketDescriptor {
    /// Offset in the transfer buffer.
    pub offset: u32,
    /// Length asked for.
    pub length: u32,
    /// Length moved.
    pub actual_length: u32,
    /// Status of this packet.
    pub status: u32,
}

/// `USBIP_CMD_SUBMIT`: one URB.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CmdSubmit {
    /// Sequence number (the reply carries it back).
    pub seqnum: u32,
    /// `busnum << 16 | devnum` of the imported device.
    pub devid: u32,
    /// Direction of the data stage.
    pub direction: Direction,
    /// Endpoint number (0..=15; 0 is the control endpoint).
    pub ep: u8,
    /// `USBIP_URB_*` flags ([`transfer_flags`]).
    pub transfer_flags: u32,
    /// Bytes of the transfer buffer.
    pub transfer_buffer_length: u32,
    /// ISO start frame (0 otherwise).
    pub start_frame: u32,
    /// ISO packet count; 0 or [`NOT_ISO`] when not isochronous.
    pub number_of_packets: u32,
    /// Polling interval.
    pub interval: u32,
    /// The SETUP packet of a control transfer (zeros otherwise).
    pub setup: [u8; 8],
    /// The OUT data (`transfer_buffer_length` bytes); empty for IN.
    pub data: Vec<u8>,
    /// ISO packet descriptors (`number_of_packets` of them for an ISO transfer).
    pub iso: Vec<IsoPacketDescriptor>,
}

/// `USBIP_CMD_UNLINK`: cancel a submitted URB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CmdUnlink {
    /// Sequence number of this request.
    pub seqnum: u32,
    /// `devid` of the imported device.
    pub devid: u32,
    /// Sequence number of the submit to cancel.
    pub unlink_seqnum: u32,
}

/// `USBIP_RET_SUBMIT`: a URB completed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetSubmit {
    /// The submit's sequence number.
    pub seqnum: u32,
    /// 0, or a negated Linux errno ([`errno`]).
    pub status: i32,
    /// Bytes moved.
    pub actual_length: u32,
    /// ISO start frame (0 otherwise).
    pub start_frame: u32,
    /// ISO packet count; 0 or [`NOT_ISO`] when not isochronous.
    pub number_of_packets: u32,
    /// ISO packets in error.
    pub error_count: u32,
    /// The IN data (`actual_length` bytes); empty for OUT.
    pub data: Vec<u8>,
    /// ISO packet descriptors.
    pub iso: Vec<IsoPacketDescriptor>,
}

/// `USBIP_RET_UNLINK`: an unlink was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetUnlink {
    /// The unlink's sequence number.
    pub seqnum: u32,
    /// `-ECONNRESET` when the URB was cancelled, 0 when it had completed already.
    pub status: i32,
}

/// What a client sends after a successful import.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// `USBIP_CMD_SUBMIT`.
    Submit(CmdSubmit),
    /// `USBIP_CMD_UNLINK`.
    Unlink(CmdUnlink),
}

/// What a server sends after a successful import.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Return {
    /// `USBIP_RET_SUBMIT`.
    Submit(RetSubmit),
    /// `USBIP_RET_UNLINK`.
    Unlink(RetUnlink),
}

// ---- primitives -------------------------------------------------------------------------

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, c, d, e]) => u32::from_be_bytes([a, c, d, e]),
        _ => 0,
    }
}

fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_string(
    out: &mut Vec<u8>,
    s: &str,
    len: usize,
    field: &'static str,
) -> Result<(), WireError> {
    let bytes = s.as_bytes();
    if bytes.len() >= len {
        return Err(WireError::FieldTooLong {
            field,
            length: bytes.len(),
            max: len - 1,
        });
    }
    if bytes.contains(&0) {
        return Err(WireError::InteriorNul { field });
    }
    out.extend_from_slice(bytes);
    out.resize(out.len() + (len - bytes.len()), 0);
    Ok(())
}

fn get_string(b: &[u8], at: usize, len: usize, field: &'static str) -> Result<String, WireError> {
    let raw = b.get(at..at + len).unwrap_or_default();
    let end = raw
        .iter()
        .position(|&c| c == 0)
        .ok_or(WireError::Unterminated { field })?;
    let text = raw.get(..end).unwrap_or_default();
    std::str::from_utf8(text)
        .map(str::to_string)
        .map_err(|_| WireError::NotUtf8 { field })
}

fn check_version(b: &[u8]) -> Result<(), WireError> {
    match be16(b, 0) {
        VERSION => Ok(()),
        found => Err(WireError::Version { found }),
    }
}

fn iso_count(number_of_packets: u32) -> Result<usize, WireError> {
    match number_of_packets {
        0 | NOT_ISO => Ok(0),
        n if n > MAX_ISO_PACKETS => Err(WireError::TooManyIsoPackets { count: n }),
        n => Ok(n as usize),
    }
}

fn check_length(field: &'static str, length: u32) -> Result<usize, WireError> {
    if length > MAX_TRANSFER_LENGTH {
        Err(WireError::TransferTooLong { field, length })
    } else {
        Ok(length as usize)
    }
}

fn put_iso(out: &mut Vec<u8>, iso: &[IsoPacketDescriptor]) {
    for d in iso {
        put32(out, d.offset);
        put32(out, d.length);
        put32(out, d.actual_length);
        put32(out, d.status);
    }
}

fn get_iso(b: &[u8], at: usize, count: usize) -> Vec<IsoPacketDescriptor> {
    (0..count)
        .map(|i| {
            let o = at + i * ISO_DESCRIPTOR_LEN;
            IsoPacketDescriptor {
                offset: be32(b, o),
                length: be32(b, o + 4),
                actual_length: be32(b, o + 8),
                status: be32(b, o + 12),
            }
        })
        .collect()
}

fn check_iso(number_of_packets: u32, iso: &[IsoPacketDescriptor]) -> Result<(), WireError> {
    if iso_count(number_of_packets)? != iso.len() {
        return Err(WireError::IsoCount {
            declared: number_of_packets,
            listed: iso.len(),
        });
    }
    Ok(())
}

fn direction_code(d: Direction) -> u32 {
    match d {
        Direction::Out => 0,
        Direction::In => 1,
    }
}

fn direction_from(value: u32) -> Result<Direction, WireError> {
    match value {
        0 => Ok(Direction::Out),
        1 => Ok(Direction::In),
        value => Err(WireError::Direction { value }),
    }
}

// ---- usb_device -------------------------------------------------------------------------

impl UsbDevice {
    /// Appends the 312-byte structure.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        put_string(out, &self.path, PATH_LEN, "path")?;
        put_string(out, &self.busid, BUSID_LEN, "busid")?;
        put32(out, self.busnum);
        put32(out, self.devnum);
        put32(out, self.speed);
        put16(out, self.id_vendor);
        put16(out, self.id_product);
        put16(out, self.bcd_device);
        out.extend_from_slice(&[
            self.device_class,
            self.device_subclass,
            self.device_protocol,
            self.configuration_value,
            self.num_configurations,
            self.num_interfaces,
        ]);
        Ok(())
    }

    /// Reads the structure at the start of `b` (which holds at least [`DEVICE_LEN`] bytes).
    fn decode(b: &[u8]) -> Result<UsbDevice, WireError> {
        let o = PATH_LEN + BUSID_LEN;
        Ok(UsbDevice {
            path: get_string(b, 0, PATH_LEN, "path")?,
            busid: get_string(b, PATH_LEN, BUSID_LEN, "busid")?,
            busnum: be32(b, o),
            devnum: be32(b, o + 4),
            speed: be32(b, o + 8),
            id_vendor: be16(b, o + 12),
            id_product: be16(b, o + 14),
            bcd_device: be16(b, o + 16),
            device_class: byte(b, o + 18),
            device_subclass: byte(b, o + 19),
            device_protocol: byte(b, o + 20),
            configuration_value: byte(b, o + 21),
            num_configurations: byte(b, o + 22),
            num_interfaces: byte(b, o + 23),
        })
    }
}

// ---- operations -------------------------------------------------------------------------

fn op_header(out: &mut Vec<u8>, code: u16, status: u32) {
    put16(out, VERSION);
    put16(out, code);
    put32(out, status);
}

impl OpRequest {
    /// Appends the request.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            OpRequest::DevList => op_header(out, OP_REQ_DEVLIST, 0),
            OpRequest::Import { busid } => {
                let mut body = Vec::with_capacity(BUSID_LEN);
                put_string(&mut body, busid, BUSID_LEN, "busid")?;
                op_header(out, OP_REQ_IMPORT, 0);
                out.extend_from_slice(&body);
            }
        }
        Ok(())
    }

    /// Reads one request from the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Option<(OpRequest, usize)>, WireError> {
        if b.len() >= 2 {
            check_version(b)?;
        }
        if b.len() < 4 {
            return Ok(None);
        }
        match be16(b, 2) {
            OP_REQ_DEVLIST if b.len() >= OP_HEADER_LEN => {
                Ok(Some((OpRequest::DevList, OP_HEADER_LEN)))
            }
            OP_REQ_IMPORT if b.len() >= OP_HEADER_LEN + BUSID_LEN => {
                let busid = get_string(b, OP_HEADER_LEN, BUSID_LEN, "busid")?;
                Ok(Some((
                    OpRequest::Import { busid },
                    OP_HEADER_LEN + BUSID_LEN,
                )))
            }
            OP_REQ_DEVLIST | OP_REQ_IMPORT => Ok(None),
            code => Err(WireError::UnknownOperation {
                code,
                expected: "OP_REQ_DEVLIST, OP_REQ_IMPORT",
            }),
        }
    }
}

impl OpReply {
    /// Appends the reply.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let mut body = Vec::new();
        match self {
            OpReply::DevList { devices } => {
                put32(&mut body, devices.len() as u32);
                for d in devices {
                    if usize::from(d.device.num_interfaces) != d.interfaces.len() {
                        return Err(WireError::InterfaceCount {
                            declared: d.device.num_interfaces,
                            listed: d.interfaces.len(),
                        });
                    }
                    d.device.encode(&mut body)?;
                    for i in &d.interfaces {
                        body.extend_from_slice(&[i.class, i.subclass, i.protocol, 0]);
                    }
                }
                op_header(out, OP_REP_DEVLIST, 0);
            }
            OpReply::Imported(device) => {
                device.encode(&mut body)?;
                op_header(out, OP_REP_IMPORT, import_status::OK);
            }
            OpReply::ImportRefused { status } => {
                if *status == import_status::OK {
                    return Err(WireError::ZeroRefusal);
                }
                op_header(out, OP_REP_IMPORT, *status);
            }
        }
        out.extend_from_slice(&body);
        Ok(())
    }

    /// Reads one reply from the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Option<(OpReply, usize)>, WireError> {
        if b.len() >= 2 {
            check_version(b)?;
        }
        if b.len() >= 4 && !matches!(be16(b, 2), OP_REP_DEVLIST | OP_REP_IMPORT) {
            return Err(WireError::UnknownOperation {
                code: be16(b, 2),
                expected: "OP_REP_DEVLIST, OP_REP_IMPORT",
            });
        }
        if b.len() < OP_HEADER_LEN {
            return Ok(None);
        }
        let status = be32(b, 4);
        if be16(b, 2) == OP_REP_IMPORT {
            if status != import_status::OK {
                return Ok(Some((OpReply::ImportRefused { status }, OP_HEADER_LEN)));
            }
            let end = OP_HEADER_LEN + DEVICE_LEN;
            let Some(raw) = b.get(OP_HEADER_LEN..end) else {
                return Ok(None);
            };
            return Ok(Some((OpReply::Imported(UsbDevice::decode(raw)?), end)));
        }
        if status != 0 {
            return Err(WireError::DevListStatus { status });
        }
        if b.len() < OP_HEADER_LEN + 4 {
            return Ok(None);
        }
        let count = be32(b, OP_HEADER_LEN);
        if count > MAX_DEVICES {
            return Err(WireError::TooManyDevices { count });
        }
        let mut at = OP_HEADER_LEN + 4;
        let mut devices = Vec::new();
        for _ in 0..count {
            let Some(raw) = b.get(at..at + DEVICE_LEN) else {
                return Ok(None);
            };
            let device = UsbDevice::decode(raw)?;
            at += DEVICE_LEN;
            let n = usize::from(device.num_interfaces);
            let Some(list) = b.get(at..at + n * INTERFACE_LEN) else {
                return Ok(None);
            };
            let interfaces = list
                .chunks_exact(INTERFACE_LEN)
                .map(|c| UsbInterface {
                    class: byte(c, 0),
                    subclass: byte(c, 1),
                    protocol: byte(c, 2),
                })
                .collect();
            at += n * INTERFACE_LEN;
            devices.push(ExportedDevice { device, interfaces });
        }
        Ok(Some((OpReply::DevList { devices }, at)))
    }
}

// ---- URB traffic ------------------------------------------------------------------------

fn basic_header(out: &mut Vec<u8>, command: u32, seqnum: u32, devid: u32, dir: u32, ep: u32) {
    put32(out, command);
    put32(out, seqnum);
    put32(out, devid);
    put32(out, dir);
    put32(out, ep);
}

impl CmdSubmit {
    /// Whether this is a control transfer (endpoint 0).
    pub fn is_control(&self) -> bool {
        self.ep == 0
    }

    /// Appends the command, its OUT data and its ISO descriptors.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let expected = match self.direction {
            Direction::Out => self.transfer_buffer_length as usize,
            Direction::In => 0,
        };
        if self.data.len() != expected {
            return Err(WireError::DataLength {
                field: "transfer_buffer_length",
                declared: self.transfer_buffer_length,
                actual: self.data.len(),
            });
        }
        check_length("transfer_buffer_length", self.transfer_buffer_length)?;
        check_iso(self.number_of_packets, &self.iso)?;
        if self.ep > 15 {
            return Err(WireError::Endpoint {
                value: u32::from(self.ep),
            });
        }
        basic_header(
            out,
            USBIP_CMD_SUBMIT,
            self.seqnum,
            self.devid,
            direction_code(self.direction),
            u32::from(self.ep),
        );
        put32(out, self.transfer_flags);
        put32(out, self.transfer_buffer_length);
        put32(out, self.start_frame);
        put32(out, self.number_of_packets);
        put32(out, self.interval);
        out.extend_from_slice(&self.setup);
        out.extend_from_slice(&self.data);
        put_iso(out, &self.iso);
        Ok(())
    }
}

impl CmdUnlink {
    /// Appends the command.
    pub fn encode(&self, out: &mut Vec<u8>) {
        basic_header(out, USBIP_CMD_UNLINK, self.seqnum, self.devid, 0, 0);
        put32(out, self.unlink_seqnum);
        out.resize(out.len() + 24, 0);
    }
}

impl Command {
    /// Appends the command.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            Command::Submit(s) => s.encode(out),
            Command::Unlink(u) => {
                u.encode(out);
                Ok(())
            }
        }
    }

    /// Reads one command from the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Option<(Command, usize)>, WireError> {
        if b.len() >= 4 && !matches!(be32(b, 0), USBIP_CMD_SUBMIT | USBIP_CMD_UNLINK) {
            return Err(WireError::UnknownCommand {
                command: be32(b, 0),
                expected: "USBIP_CMD_SUBMIT, USBIP_CMD_UNLINK",
            });
        }
        if b.len() < HEADER_LEN {
            return Ok(None);
        }
        let seqnum = be32(b, 4);
        let devid = be32(b, 8);
        if be32(b, 0) == USBIP_CMD_UNLINK {
            let unlink = CmdUnlink {
                seqnum,
                devid,
                unlink_seqnum: be32(b, 20),
            };
            return Ok(Some((Command::Unlink(unlink), HEADER_LEN)));
        }
        let direction = direction_from(be32(b, 12))?;
        let ep = match be32(b, 16) {
            v @ 0..=15 => v as u8,
            value => return Err(WireError::Endpoint { value }),
        };
        let transfer_buffer_length = be32(b, 24);
        let length = check_length("transfer_buffer_length", transfer_buffer_length)?;
        let number_of_packets = be32(b, 32);
        let iso = iso_count(number_of_packets)?;
        let data_len = match direction {
            Direction::Out => length,
            Direction::In => 0,
        };
        let end = HEADER_LEN + data_len + iso * ISO_DESCRIPTOR_LEN;
        if b.len() < end {
            return Ok(None);
        }
        let mut setup = [0u8; 8];
        if let Some(s) = b.get(40..48) {
            setup.copy_from_slice(s);
        }
        let submit = CmdSubmit {
            seqnum,
            devid,
            direction,
            ep,
            transfer_flags: be32(b, 20),
            transfer_buffer_length,
            start_frame: be32(b, 28),
            number_of_packets,
            interval: be32(b, 36),
            setup,
            data: b
                .get(HEADER_LEN..HEADER_LEN + data_len)
                .unwrap_or_default()
                .to_vec(),
            iso: get_iso(b, HEADER_LEN + data_len, iso),
        };
        Ok(Some((Command::Submit(submit), end)))
    }
}

impl RetSubmit {
    /// Appends the reply, its IN data and its ISO descriptors. `data` is written as given:
    /// empty for an OUT transfer, `actual_length` bytes for an IN one.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        if !self.data.is_empty() && self.data.len() != self.actual_length as usize {
            return Err(WireError::DataLength {
                field: "actual_length",
                declared: self.actual_length,
                actual: self.data.len(),
            });
        }
        check_length("actual_length", self.actual_length)?;
        check_iso(self.number_of_packets, &self.iso)?;
        basic_header(out, USBIP_RET_SUBMIT, self.seqnum, 0, 0, 0);
        put32(out, self.status as u32);
        put32(out, self.actual_length);
        put32(out, self.start_frame);
        put32(out, self.number_of_packets);
        put32(out, self.error_count);
        out.resize(out.len() + 8, 0);
        out.extend_from_slice(&self.data);
        put_iso(out, &self.iso);
        Ok(())
    }
}

impl RetUnlink {
    /// Appends the reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        basic_header(out, USBIP_RET_UNLINK, self.seqnum, 0, 0, 0);
        put32(out, self.status as u32);
        out.resize(out.len() + 24, 0);
    }
}

impl Return {
    /// Appends the reply.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            Return::Submit(s) => s.encode(out),
            Return::Unlink(u) => {
                u.encode(out);
                Ok(())
            }
        }
    }

    /// Reads one reply from the start of `b`. A `RET_SUBMIT` does not say its direction, so
    /// `direction_of` tells it from the sequence number of the submit it answers (the client
    /// knows what it submitted); `None` there is [`WireError::UnknownSeqnum`].
    pub fn decode(
        b: &[u8],
        direction_of: impl Fn(u32) -> Option<Direction>,
    ) -> Result<Option<(Return, usize)>, WireError> {
        if b.len() >= 4 && !matches!(be32(b, 0), USBIP_RET_SUBMIT | USBIP_RET_UNLINK) {
            return Err(WireError::UnknownCommand {
                command: be32(b, 0),
                expected: "USBIP_RET_SUBMIT, USBIP_RET_UNLINK",
            });
        }
        if b.len() < HEADER_LEN {
            return Ok(None);
        }
        let seqnum = be32(b, 4);
        let status = be32(b, 20) as i32;
        if be32(b, 0) == USBIP_RET_UNLINK {
            return Ok(Some((
                Return::Unlink(RetUnlink { seqnum, status }),
                HEADER_LEN,
            )));
        }
        let direction = direction_of(seqnum).ok_or(WireError::UnknownSeqnum { seqnum })?;
        let actual_length = be32(b, 24);
        let length = check_length("actual_length", actual_length)?;
        let number_of_packets = be32(b, 32);
        let iso = iso_count(number_of_packets)?;
        let data_len = match direction {
            Direction::In => length,
            Direction::Out => 0,
        };
        let end = HEADER_LEN + data_len + iso * ISO_DESCRIPTOR_LEN;
        if b.len() < end {
            return Ok(None);
        }
        let ret = RetSubmit {
            seqnum,
            status,
            actual_length,
            start_frame: be32(b, 28),
            number_of_packets,
            error_count: be32(b, 36),
            data: b
                .get(HEADER_LEN..HEADER_LEN + data_len)
                .unwrap_or_default()
                .to_vec(),
            iso: get_iso(b, HEADER_LEN + data_len, iso),
        };
        Ok(Some((Return::Submit(ret), end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> UsbDevice {
        UsbDevice {
            path: "/sys/devices/platform/restation-sim/usb1/1-1".into(),
            busid: "1-1".into(),
            busnum: 1,
            devnum: 2,
            speed: speed_code(usb::Speed::High),
            id_vendor: 0x05AC,
            id_product: 0x1281,
            bcd_device: 0,
            device_class: 0,
            device_subclass: 0,
            device_protocol: 0,
            configuration_value: 1,
            num_configurations: 1,
            num_interfaces: 2,
        }
    }

    #[test]
    fn layouts_match_the_protocol_document() {
        let mut out = Vec::new();
        OpRequest::DevList.encode(&mut out).unwrap();
        assert_eq!(out, [0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0]);
        let mut out = Vec::new();
        OpReply::Imported(device()).encode(&mut out).unwrap();
        assert_eq!(out.len(), OP_HEADER_LEN + DEVICE_LEN);
        // Offsets from the start of the reply, as the protocol document numbers them.
        assert_eq!(&out[0x108..0x10C], b"1-1\0");
        assert_eq!(be32(&out, 0x128), 1);
        assert_eq!(be16(&out, 0x136), 0x1281);
        assert_eq!(out[0x13F], 2, "bNumInterfaces");
        assert_eq!(UsbDevice::devid(&device()), 0x0001_0002);
        let list = OpReply::DevList {
            devices: vec![ExportedDevice {
                device: device(),
                interfaces: vec![
                    UsbInterface {
                        class: 0xFE,
                        subclass: 1,
                        protocol: 2,
                    },
                    UsbInterface {
                        class: 0xFF,
                        subclass: 0xFF,
                        protocol: 0x51,
                    },
                ],
            }],
        };
        let mut out = Vec::new();
        list.encode(&mut out).unwrap();
        assert_eq!(out.len(), 0x0C + 0x138 + 2 * 4);
        assert_eq!(&out[0x144..0x148], &[0xFE, 1, 2, 0]);
    }

    #[test]
    fn a_submit_header_is_48_bytes_and_out_data_follows() {
        let cmd = CmdSubmit {
            seqnum: 7,
            devid: 0x10002,
            direction: Direction::Out,
            ep: 4,
            transfer_flags: transfer_flags::ZERO_PACKET,
            transfer_buffer_length: 3,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
            data: vec![1, 2, 3],
            iso: vec![],
        };
        let mut out = Vec::new();
        cmd.encode(&mut out).unwrap();
        assert_eq!(out.len(), HEADER_LEN + 3);
        assert_eq!(be32(&out, 16), 4);
        for cut in 0..out.len() {
            assert_eq!(Command::decode(&out[..cut]), Ok(None), "prefix of {cut}");
        }
        assert_eq!(
            Command::decode(&out),
            Ok(Some((Command::Submit(cmd), HEADER_LEN + 3)))
        );
    }

    #[test]
    fn junk_gets_typed_errors() {
        assert_eq!(
            OpRequest::decode(b"GET / HTTP/1.1\r\n"),
            Err(WireError::Version { found: 0x4745 })
        );
        assert_eq!(
            OpRequest::decode(&[0x01, 0x11, 0x12, 0x34]),
            Err(WireError::UnknownOperation {
                code: 0x1234,
                expected: "OP_REQ_DEVLIST, OP_REQ_IMPORT"
            })
        );
        let mut huge = Vec::new();
        basic_header(&mut huge, USBIP_CMD_SUBMIT, 1, 0, 0, 1);
        put32(&mut huge, 0);
        put32(&mut huge, u32::MAX);
        huge.resize(HEADER_LEN, 0);
        assert_eq!(
            Command::decode(&huge),
            Err(WireError::TransferTooLong {
                field: "transfer_buffer_length",
                length: u32::MAX
            })
        );
        let mut bad = huge.clone();
        bad[12..16].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            Command::decode(&bad),
            Err(WireError::Direction { value: 7 })
        );
        let mut import = vec![0x01, 0x11, 0x80, 0x03, 0, 0, 0, 0];
        import.extend_from_slice(&[b'x'; 32]);
        assert_eq!(
            OpRequest::decode(&import),
            Err(WireError::Unterminated { field: "busid" })
        );
        assert_eq!(
            Return::decode(&[0, 0, 0, 3, 0, 0, 0, 9], |_| None),
            Ok(None)
        );
        let mut ret = Vec::new();
        RetUnlink {
            seqnum: 9,
            status: -errno::ECONNRESET,
        }
        .encode(&mut ret);
        ret[3] = 3;
        assert_eq!(
            Return::decode(&ret, |_| None),
            Err(WireError::UnknownSeqnum { seqnum: 9 })
        );
    }
}
