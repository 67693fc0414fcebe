//! DFU mode (SecureROM): sending an image (iBSS, iBEC, LLB...) with DFU 1.1 class requests on
//! interface 0, and the DFU vocabulary itself ([`Request`], [`State`], [`Status`],
//! [`StatusReply`]).
//!
//! DFU calls host-to-device transfer a *download*, so the engine is [`Download`] (what
//! libirecovery calls "send buffer"). It is sans-IO: [`Download::poll`] says what to do next
//! (a [`usb::Transfer`] with its timeout, or "wait: poll again not before T, give up at D"),
//! [`Download::handle`] takes the result with the time it came back. It never reads a clock
//! and never sleeps; [`run_download`] drives it against a [`usb::UsbDevice`] with a [`Clock`]
//! you pass in (the real one, or a fake one in tests), and [`run_download_cancellable`] lets
//! the progress callback stop it.
//!
//! Time limits: each transfer has [`Options::transfer_timeout`], each block
//! [`Options::block_deadline`], and the whole download [`Options::budget`] (a fixed deadline
//! and a minimum throughput, see [`crate::budget`]); running out of the budget fails with
//! [`Cause::OutOfTime`], saying how many bytes and which block the device had got to. Between
//! two GETSTATUS polls the engine waits `bwPollTimeout`, but never less than
//! [`Options::min_poll_interval`] (1 ms), so a device answering dfuDNBUSY with a poll timeout
//! of 0 is polled about a thousand times a second, not in a tight loop.
//!
//! The conversation:
//! 1. GETSTATE until the device is in `dfuIDLE` (from `dfuERROR`: CLRSTATUS; from any other
//!    state: ABORT), at most [`Options::prepare_attempts`] times.
//! 2. For each block of [`Options::block_size`] bytes: DNLOAD (`wValue` = block number), then
//!    GETSTATUS until `dfuDNLOAD-IDLE`, waiting `bwPollTimeout` (at least
//!    [`Options::min_poll_interval`]) between polls while the device says
//!    `dfuDNBUSY`/`dfuDNLOAD-SYNC`, up to [`Options::block_deadline`].
//! 3. The last block ends with the 16-byte DFU suffix ([`suffix`]); if the last data block has
//!    no room for it, the suffix goes alone in one more block (a block never exceeds
//!    `wTransferSize`). Port DFU (PID 0xF014) uses 0x40-byte blocks and no suffix.
//! 4. A zero-length DNLOAD, GETSTATUS until a manifest state, then a USB reset: the device
//!    re-enumerates (DFU → recovery, or DFU again on A12+ after iBSS).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use irecv::dfu::{Action, Download, Options};
//! use usb::{Completion, Transfer};
//!
//! let image = [0x11u8; 100];
//! let mut dl = Download::new(&image, Options::dfu())?;
//! let now = Instant::now();
//! // First the engine asks the device's state (GETSTATE, 1 byte).
//! let Action::Transfer { transfer: Transfer::ControlIn { setup, length: 1 }, .. } = dl.poll(now) else {
//!     panic!("expected GETSTATE")
//! };
//! assert_eq!((setup.request_type, setup.request), (0xA1, 5));
//! dl.handle(Ok(Completion::In(vec![2])), now)?; // dfuIDLE
//! // Then block 0: 100 bytes of image + the 16-byte suffix.
//! let Action::Transfer { transfer: Transfer::ControlOut { setup, data }, .. } = dl.poll(now) else {
//!     panic!("expected DNLOAD")
//! };
//! assert_eq!((setup.request_type, setup.request, setup.value), (0x21, 1, 0));
//! assert_eq!(data.len(), 116);
//! assert_eq!(&data[100..112], &irecv::dfu::SUFFIX_TAG);
//! # Ok::<(), irecv::dfu::DownloadError>(())
//! ```

use std::fmt;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use usb::{Completion, Control, ErrorKind, Transfer, UsbDevice, UsbError};

use crate::budget::{saturating_add, Budget, MinThroughput, Overrun};
pub use crate::recovery::Progress;

/// The DFU interface number on SecureROM.
pub const INTERFACE: u16 = 0;
/// Block size (`wTransferSize`) of SecureROM DFU.
pub const BLOCK_SIZE: usize = 0x800;
/// Block size of Port DFU.
pub const PORT_DFU_BLOCK_SIZE: usize = 0x40;
/// USB product id of Port DFU.
pub const PORT_DFU_PRODUCT_ID: u16 = 0xF014;
/// The first 12 bytes of the DFU suffix: bcdDevice, idProduct, idVendor = 0xFFFF each,
/// bcdDFU 0x0100, "UFD", bLength 16.
pub const SUFFIX_TAG: [u8; 12] = [
    0xff, 0xff, 0xff, 0xff, 0xac, 0x05, 0x00, 0x01, 0x55, 0x46, 0x44, 0x10,
];
/// Length of the DFU suffix: [`SUFFIX_TAG`] + CRC.
pub const SUFFIX_LENGTH: usize = 16;
/// Default timeout of one control transfer.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest wait between two GETSTATUS polls, whatever `bwPollTimeout` says (0 included).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// The budget of a SecureROM download: at most 10 minutes, and after 20 s the device must
/// average 8 KiB/s (four 2 KiB blocks a second; a real SecureROM takes hundreds). An iBSS of
/// 300 blocks from a device that keeps every block busy for 9.9 s fails after about 20 s, not
/// 50 minutes.
pub const DFU_BUDGET: Budget = Budget {
    deadline: Some(Duration::from_secs(600)),
    min_throughput: Some(MinThroughput {
        bytes_per_second: 8 * 1024,
        grace: Duration::from_secs(20),
    }),
};
/// The budget of a Port DFU download: 64-byte blocks are slow by nature, so the throughput
/// floor is 1 KiB/s after 30 s; at most 10 minutes.
pub const PORT_DFU_BUDGET: Budget = Budget {
    deadline: Some(Duration::from_secs(600)),
    min_throughput: Some(MinThroughput {
        bytes_per_second: 1024,
        grace: Duration::from_secs(30),
    }),
};

/// The CRC of a DFU image: CRC-32 (reflected, polynomial 0xEDB88320, initial value
/// 0xFFFFFFFF) over the payload and [`SUFFIX_TAG`], **without** the final xor — the bitwise
/// complement of the usual CRC-32.
pub fn crc(payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(payload);
    h.update(&SUFFIX_TAG);
    !h.finalize()
}

/// The 16-byte suffix that ends a DFU image: [`SUFFIX_TAG`] then [`crc`] little-endian.
pub fn suffix(payload: &[u8]) -> [u8; SUFFIX_LENGTH] {
    let mut s = [0u8; SUFFIX_LENGTH];
    s[..12].copy_from_slice(&SUFFIX_TAG);
    s[12..].copy_from_slice(&crc(payload).to_le_bytes());
    s
}

/// DFU class requests (DFU 1.1 table 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// DFU_DETACH (not used by SecureROM).
    Detach = 0,
    /// DFU_DNLOAD: host-to-device block, `wValue` = block number.
    Dnload = 1,
    /// DFU_UPLOAD: device-to-host block.
    Upload = 2,
    /// DFU_GETSTATUS: 6 bytes.
    GetStatus = 3,
    /// DFU_CLRSTATUS: leave `dfuERROR`.
    ClrStatus = 4,
    /// DFU_GETSTATE: 1 byte.
    GetState = 5,
    /// DFU_ABORT: back to `dfuIDLE`.
    Abort = 6,
}

impl Request {
    /// The control request on interface 0 (`0xA1` for device-to-host, `0x21` otherwise).
    pub fn setup(self, value: u16) -> Control {
        let request_type = match self {
            Self::Upload | Self::GetStatus | Self::GetState => 0xA1,
            _ => 0x21,
        };
        Control::new(request_type, self as u8, value, INTERFACE)
    }
}

/// `bState` (DFU 1.1 §6.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// appIDLE (0).
    AppIdle = 0,
    /// appDETACH (1).
    AppDetach = 1,
    /// dfuIDLE (2): ready for a download.
    DfuIdle = 2,
    /// dfuDNLOAD-SYNC (3): a block arrived, the host must ask GETSTATUS.
    DnloadSync = 3,
    /// dfuDNBUSY (4): writing the block; poll again after `bwPollTimeout`.
    DnBusy = 4,
    /// dfuDNLOAD-IDLE (5): ready for the next block.
    DnloadIdle = 5,
    /// dfuMANIFEST-SYNC (6): the zero-length DNLOAD came.
    ManifestSync = 6,
    /// dfuMANIFEST (7): checking/installing the image.
    Manifest = 7,
    /// dfuMANIFEST-WAIT-RESET (8): waiting for the host's reset.
    ManifestWaitReset = 8,
    /// dfuUPLOAD-IDLE (9).
    UploadIdle = 9,
    /// dfuERROR (10): CLRSTATUS to leave.
    Error = 10,
}

impl State {
    /// The state for a `bState` value, `None` if DFU 1.1 defines none.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::AppIdle,
            1 => Self::AppDetach,
            2 => Self::DfuIdle,
            3 => Self::DnloadSync,
            4 => Self::DnBusy,
            5 => Self::DnloadIdle,
            6 => Self::ManifestSync,
            7 => Self::Manifest,
            8 => Self::ManifestWaitReset,
            9 => Self::UploadIdle,
            10 => Self::Error,
            _ => return None,
        })
    }

    /// The DFU spec's name (`dfuDNBUSY`).
    pub fn name(self) -> &'static str {
        match self {
            Self::AppIdle => "appIDLE",
            Self::AppDetach => "appDETACH",
            Self::DfuIdle => "dfuIDLE",
            Self::DnloadSync => "dfuDNLOAD-SYNC",
            Self::DnBusy => "dfuDNBUSY",
            Self::DnloadIdle => "dfuDNLOAD-IDLE",
            Self::ManifestSync => "dfuMANIFEST-SYNC",
            Self::Manifest => "dfuMANIFEST",
            Self::ManifestWaitReset => "dfuMANIFEST-WAIT-RESET",
            Self::UploadIdle => "dfuUPLOAD-IDLE",
            Self::Error => "dfuERROR",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u8)
    }
}

/// `bStatus` (DFU 1.1 §6.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Status {
    /// OK (0).
    Ok = 0,
    /// errTARGET: the file is not for this device.
    ErrTarget = 1,
    /// errFILE: the file failed a verification.
    ErrFile = 2,
    /// errWRITE.
    ErrWrite = 3,
    /// errERASE.
    ErrErase = 4,
    /// errCHECK_ERASED.
    ErrCheckErased = 5,
    /// errPROG.
    ErrProg = 6,
    /// errVERIFY.
    ErrVerify = 7,
    /// errADDRESS.
    ErrAddress = 8,
    /// errNOTDONE: zero-length DNLOAD before the device expected the end.
    ErrNotDone = 9,
    /// errFIRMWARE: the firmware is corrupt.
    ErrFirmware = 10,
    /// errVENDOR.
    ErrVendor = 11,
    /// errUSBR: unexpected USB reset.
    ErrUsbr = 12,
    /// errPOR: unexpected power-on reset.
    ErrPor = 13,
    /// errUNKNOWN.
    ErrUnknown = 14,
    /// errSTALLEDPKT: the device stalled an unexpected request.
    ErrStalledPkt = 15,
}

impl Status {
    /// The status for a `bStatus` value, `None` if DFU 1.1 defines none.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Ok,
            1 => Self::ErrTarget,
            2 => Self::ErrFile,
            3 => Self::ErrWrite,
            4 => Self::ErrErase,
            5 => Self::ErrCheckErased,
            6 => Self::ErrProg,
            7 => Self::ErrVerify,
            8 => Self::ErrAddress,
            9 => Self::ErrNotDone,
            10 => Self::ErrFirmware,
            11 => Self::ErrVendor,
            12 => Self::ErrUsbr,
            13 => Self::ErrPor,
            14 => Self::ErrUnknown,
            15 => Self::ErrStalledPkt,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} ({})", *self as u8)
    }
}

/// A reply to GETSTATUS or GETSTATE that is not what DFU 1.1 allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not the number of bytes the request returns (6 for GETSTATUS, 1 for GETSTATE).
    #[error("expected {expected} bytes, got {got}")]
    Length {
        /// Bytes the request returns.
        expected: usize,
        /// Bytes that came.
        got: usize,
    },
    /// `bStatus` outside 0..=15.
    #[error("unknown bStatus {0:#04x}")]
    UnknownStatus(u8),
    /// `bState` outside 0..=10.
    #[error("unknown bState {0:#04x}")]
    UnknownState(u8),
}

/// The 6-byte GETSTATUS reply.
///
/// ```
/// use std::time::Duration;
/// use irecv::dfu::{State, Status, StatusReply};
///
/// let r = StatusReply::parse(&[0, 0x32, 0, 0, 4, 0])?;
/// assert_eq!((r.status, r.state), (Status::Ok, State::DnBusy));
/// assert_eq!(r.poll_timeout, Duration::from_millis(50));
/// assert_eq!(r.to_bytes(), [0, 0x32, 0, 0, 4, 0]);
/// # Ok::<(), irecv::dfu::ReplyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusReply {
    /// `bStatus`.
    pub status: Status,
    /// `bwPollTimeout`: how long to wait before the next GETSTATUS (24-bit milliseconds).
    pub poll_timeout: Duration,
    /// `bState`: the state the device entered with this request.
    pub state: State,
    /// `iString`.
    pub string_index: u8,
}

impl StatusReply {
    /// Length of the reply.
    pub const LENGTH: usize = 6;

    /// Parses the reply bytes.
    pub fn parse(data: &[u8]) -> Result<Self, ReplyError> {
        let [status, p0, p1, p2, state, string_index] = *data else {
            return Err(ReplyError::Length {
                expected: Self::LENGTH,
                got: data.len(),
            });
        };
        Ok(Self {
            status: Status::from_u8(status).ok_or(ReplyError::UnknownStatus(status))?,
            poll_timeout: Duration::from_millis(u64::from(u32::from_le_bytes([p0, p1, p2, 0]))),
            state: State::from_u8(state).ok_or(ReplyError::UnknownState(state))?,
            string_index,
        })
    }

    /// The reply as a device sends it; a poll timeout above 0xFFFFFF ms is clamped.
    pub fn to_bytes(&self) -> [u8; 6] {
        let ms = u32::try_from(self.poll_timeout.as_millis())
            .unwrap_or(u32::MAX)
            .min(0x00ff_ffff);
        let p = ms.to_le_bytes();
        [
            self.status as u8,
            p[0],
            p[1],
            p[2],
            self.state as u8,
            self.string_index,
        ]
    }
}

/// Parses the 1-byte GETSTATE reply.
pub fn parse_state(data: &[u8]) -> Result<State, ReplyError> {
    let [state] = *data else {
        return Err(ReplyError::Length {
            expected: 1,
            got: data.len(),
        });
    };
    State::from_u8(state).ok_or(ReplyError::UnknownState(state))
}

/// How to send an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Bytes per DNLOAD block, suffix included (0x800; Port DFU 0x40).
    pub block_size: usize,
    /// Whether the image ends with the 16-byte DFU suffix (not on Port DFU).
    pub suffix: bool,
    /// Timeout of each control transfer.
    pub transfer_timeout: Duration,
    /// How long a block may stay busy (`dfuDNBUSY`/`dfuDNLOAD-SYNC`) after its DNLOAD.
    pub block_deadline: Duration,
    /// How long the device may stay in `dfuMANIFEST-SYNC` before the reset is sent anyway.
    pub manifest_deadline: Duration,
    /// How many CLRSTATUS/ABORT rounds to try before giving up on reaching `dfuIDLE`.
    pub prepare_attempts: u8,
    /// How long the whole download may take, from the first transfer to the reset
    /// ([`DFU_BUDGET`], [`PORT_DFU_BUDGET`]; [`Budget::UNLIMITED`] for none).
    pub budget: Budget,
    /// The shortest wait between two GETSTATUS polls ([`MIN_POLL_INTERVAL`]): a
    /// `bwPollTimeout` below it is raised to it.
    pub min_poll_interval: Duration,
}

impl Options {
    /// SecureROM DFU: 0x800-byte blocks with the CRC suffix.
    pub fn dfu() -> Self {
        Self {
            block_size: BLOCK_SIZE,
            suffix: true,
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
            block_deadline: Duration::from_secs(10),
            manifest_deadline: Duration::from_secs(5),
            prepare_attempts: 3,
            budget: DFU_BUDGET,
            min_poll_interval: MIN_POLL_INTERVAL,
        }
    }

    /// Port DFU (PID 0xF014): 0x40-byte blocks, no suffix, [`PORT_DFU_BUDGET`].
    pub fn port_dfu() -> Self {
        Self {
            block_size: PORT_DFU_BLOCK_SIZE,
            suffix: false,
            budget: PORT_DFU_BUDGET,
            ..Self::dfu()
        }
    }

    /// The options for a device with this USB product id.
    pub fn for_product_id(product_id: u16) -> Self {
        if product_id == PORT_DFU_PRODUCT_ID {
            Self::port_dfu()
        } else {
            Self::dfu()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::dfu()
    }
}

/// Where in the conversation something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Bringing the device to `dfuIDLE`.
    Prepare,
    /// Sending blocks.
    Download,
    /// Zero-length DNLOAD and the GETSTATUS after it.
    Manifest,
    /// The final USB reset.
    Reset,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prepare => "prepare",
            Self::Download => "download",
            Self::Manifest => "manifest",
            Self::Reset => "reset",
        })
    }
}

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cause {
    /// A transfer failed; the USB error kind is kept.
    #[error(transparent)]
    Usb(UsbError),
    /// GETSTATUS reported an error status.
    #[error("device reported status {status} in state {state}")]
    Status {
        /// `bStatus`.
        status: Status,
        /// `bState`.
        state: State,
    },
    /// The device is in a state that makes no sense at this point.
    #[error("unexpected state {0}")]
    UnexpectedState(State),
    /// The GETSTATUS/GETSTATE reply was malformed.
    #[error("bad reply: {0}")]
    Reply(ReplyError),
    /// The block stayed busy past its deadline.
    #[error("still {state} after {waited:?}")]
    Deadline {
        /// The last state seen.
        state: State,
        /// How long it was polled.
        waited: Duration,
    },
    /// CLRSTATUS/ABORT did not bring the device to `dfuIDLE`.
    #[error("device stayed in {state} after {attempts} attempts to reach dfuIDLE")]
    NotIdle {
        /// The last state seen.
        state: State,
        /// CLRSTATUS/ABORT rounds tried.
        attempts: u8,
    },
    /// The device took fewer bytes than the block had.
    #[error("device took {written} of {expected} bytes")]
    ShortWrite {
        /// Bytes in the block.
        expected: usize,
        /// Bytes taken.
        written: usize,
    },
    /// A transfer completed with the wrong kind of completion (a backend bug).
    #[error("the transfer completed as {0:?}, which does not match what was asked")]
    Mismatch(Completion),
    /// Nothing to send.
    #[error("the image is empty")]
    EmptyImage,
    /// [`Options`] that cannot work (block size 0, or too small for the suffix).
    #[error("block size {block_size} cannot carry this image")]
    BadBlockSize {
        /// The block size asked for.
        block_size: usize,
    },
    /// The whole download ran out of its [`Options::budget`].
    #[error(
        "out of time after {elapsed:?} with {sent} of {total} image bytes acknowledged: {overrun}",
        sent = .progress.sent,
        total = .progress.total
    )]
    OutOfTime {
        /// The rule it broke.
        overrun: Overrun,
        /// Time since the download started.
        elapsed: Duration,
        /// Image bytes the device had acknowledged, of the total.
        progress: Progress,
    },
    /// The caller stopped the download ([`Download::cancel`], or the progress callback of
    /// [`run_download_cancellable`]).
    #[error(
        "cancelled with {sent} of {total} image bytes acknowledged",
        sent = .progress.sent,
        total = .progress.total
    )]
    Cancelled {
        /// Image bytes the device had acknowledged, of the total.
        progress: Progress,
    },
}

/// A failed download: where, at which block, what the device last said, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DownloadError {
    /// The phase it failed in.
    pub phase: Phase,
    /// The block being sent or polled (counted from 0, not wrapped like `wValue`).
    pub block: Option<u32>,
    /// The last DFU state the device reported.
    pub last_state: Option<State>,
    /// What went wrong.
    #[source]
    pub cause: Cause,
}

impl DownloadError {
    /// The USB error kind, if a transfer failed.
    pub fn usb_kind(&self) -> Option<ErrorKind> {
        match &self.cause {
            Cause::Usb(e) => Some(e.kind()),
            _ => None,
        }
    }

    /// The DFU status the device reported, if it reported an error status.
    pub fn status(&self) -> Option<Status> {
        match self.cause {
            Cause::Status { status, .. } => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DFU {} failed", self.phase)?;
        if let Some(b) = self.block {
            write!(f, " at block {b}")?;
        }
        if let Some(s) = self.last_state {
            write!(f, " (device in {s})")?;
        }
        write!(f, ": {}", self.cause)
    }
}

/// How a download ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// DNLOAD blocks sent with data (the zero-length one not counted).
    pub blocks: u32,
    /// The state the device reported after the zero-length DNLOAD, if it answered.
    pub manifest_state: Option<State>,
    /// How the device went away.
    pub departure: Departure,
}

/// How the device left at the end of a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The reset completed normally.
    Reset,
    /// The reset reported that the device is gone (NoDevice/NotFound): it re-enumerated.
    ReEnumerated,
    /// The device left the bus during manifestation, before the reset was sent.
    LeftDuringManifest,
}

/// What [`Download::poll`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Do this transfer now, then pass its result to [`Download::handle`].
    Transfer {
        /// The transfer.
        transfer: Transfer<'a>,
        /// Its timeout.
        timeout: Duration,
    },
    /// Nothing to do before `not_before`: poll again then. `deadline` is when the engine gives
    /// up on the device leaving its busy state (the block or manifest deadline, or the end of
    /// the budget if that comes first).
    Wait {
        /// Earliest instant of the next poll (`bwPollTimeout` after the last reply, at least
        /// [`Options::min_poll_interval`], at most `deadline`).
        not_before: Instant,
        /// The instant after which a busy reply fails the download.
        deadline: Instant,
    },
    /// The download is complete.
    Finished(Finished),
    /// The download failed: the same error [`Download::handle`] returned, the cancellation
    /// ([`Download::cancel`]), or the budget ran out at the instant given to
    /// [`Download::poll`] ([`Cause::OutOfTime`]).
    Failed(DownloadError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    GetState,
    ClearStatus,
    Abort,
    SendBlock,
    PollBlock {
        started: Instant,
        not_before: Instant,
        deadline: Instant,
    },
    SendFinish,
    PollManifest {
        not_before: Instant,
        deadline: Instant,
    },
    Reset,
    Finished(Finished),
    Failed(DownloadError),
}

/// The DFU download engine (sans-IO). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Download<'a> {
    data: &'a [u8],
    options: Options,
    /// The last block: the data that did not fill a whole block, then the suffix.
    last: Vec<u8>,
    blocks: u32,
    block: u32,
    step: Step,
    attempts: u8,
    last_state: Option<State>,
    manifest_state: Option<State>,
    sent: u64,
    /// When the budget's clock started ([`Download::start`] or the first `handle`).
    started: Option<Instant>,
}

impl<'a> Download<'a> {
    /// An engine that will send `data` with `options`.
    pub fn new(data: &'a [u8], options: Options) -> Result<Self, DownloadError> {
        let fail = |cause| DownloadError {
            phase: Phase::Prepare,
            block: None,
            last_state: None,
            cause,
        };
        if data.is_empty() {
            return Err(fail(Cause::EmptyImage));
        }
        let bs = options.block_size;
        if bs == 0 || (options.suffix && bs < SUFFIX_LENGTH) {
            return Err(fail(Cause::BadBlockSize { block_size: bs }));
        }
        let data_blocks = data.len().div_ceil(bs);
        let (blocks, last) = if options.suffix {
            let tail_start = (data_blocks - 1) * bs;
            let tail = data.get(tail_start..).unwrap_or_default();
            let mut last = Vec::with_capacity(bs);
            if tail.len() + SUFFIX_LENGTH <= bs {
                last.extend_from_slice(tail);
                last.extend_from_slice(&suffix(data));
                (data_blocks, last)
            } else {
                last.extend_from_slice(&suffix(data));
                (data_blocks + 1, last)
            }
        } else {
            (data_blocks, Vec::new())
        };
        let blocks =
            u32::try_from(blocks).map_err(|_| fail(Cause::BadBlockSize { block_size: bs }))?;
        Ok(Self {
            data,
            options,
            last,
            blocks,
            block: 0,
            step: Step::GetState,
            attempts: 0,
            last_state: None,
            manifest_state: None,
            sent: 0,
            started: None,
        })
    }

    /// Starts the budget's clock ([`Options::budget`]) at `now`, the instant of the first
    /// transfer. Only the first call counts; without one, the clock starts at the first
    /// [`Download::handle`].
    pub fn start(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    /// Stops the download: from now on [`Download::poll`] says [`Action::Failed`] with
    /// [`Cause::Cancelled`]. No effect once the download has finished or failed.
    pub fn cancel(&mut self) {
        if self.is_over() {
            return;
        }
        let (phase, block) = self.position();
        let progress = self.progress();
        self.fail(phase, block, Cause::Cancelled { progress });
    }

    fn is_over(&self) -> bool {
        matches!(self.step, Step::Finished(_) | Step::Failed(_))
    }

    /// The phase of the current step, and the block when it is about one.
    fn position(&self) -> (Phase, Option<u32>) {
        match self.step {
            Step::GetState | Step::ClearStatus | Step::Abort => (Phase::Prepare, None),
            Step::SendBlock | Step::PollBlock { .. } => (Phase::Download, Some(self.block)),
            Step::SendFinish | Step::PollManifest { .. } => (Phase::Manifest, None),
            Step::Reset | Step::Finished(_) | Step::Failed(_) => (Phase::Reset, None),
        }
    }

    /// When the budget runs out as things stand (a clock not yet started starts at `now`).
    fn budget_expiry(&self, now: Instant) -> Option<(Instant, Overrun)> {
        let p = self.progress();
        self.options
            .budget
            .expiry(self.started.unwrap_or(now), p.sent, p.total)
    }

    /// The rule broken if the budget has run out at `now`.
    fn broken_rule(&self, now: Instant) -> Option<Overrun> {
        let p = self.progress();
        let started = self.started.unwrap_or(now);
        self.options
            .budget
            .check(started, now, p.sent, p.total)
            .err()
    }

    fn out_of_time(&self, overrun: Overrun, now: Instant) -> Cause {
        Cause::OutOfTime {
            overrun,
            elapsed: now.saturating_duration_since(self.started.unwrap_or(now)),
            progress: self.progress(),
        }
    }

    /// The error for a budget that ran out at `now`, if it did and the download is not over.
    fn overrun(&self, now: Instant) -> Option<DownloadError> {
        if self.is_over() {
            return None;
        }
        let overrun = self.broken_rule(now)?;
        let (phase, block) = self.position();
        Some(DownloadError {
            phase,
            block,
            last_state: self.last_state,
            cause: self.out_of_time(overrun, now),
        })
    }

    /// Records the budget failure at `now`, if there is one.
    fn fail_if_out_of_time(&mut self, now: Instant) -> Result<(), DownloadError> {
        match self.overrun(now) {
            Some(e) => {
                self.step = Step::Failed(e.clone());
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// How many DNLOAD blocks carry data (suffix block included).
    pub fn block_count(&self) -> u32 {
        self.blocks
    }

    /// The bytes of block `index` as they go on the wire (empty past the last block).
    pub fn block(&self, index: u32) -> &[u8] {
        let bs = self.options.block_size;
        if self.options.suffix && Some(index) == self.blocks.checked_sub(1) {
            return &self.last;
        }
        let start = (index as usize).saturating_mul(bs);
        let end = start.saturating_add(bs).min(self.data.len());
        self.data.get(start..end).unwrap_or_default()
    }

    /// Image bytes acknowledged by the device so far, of the total.
    pub fn progress(&self) -> Progress {
        Progress {
            sent: self.sent,
            total: self.data.len() as u64,
        }
    }

    /// The last DFU state the device reported.
    pub fn last_state(&self) -> Option<State> {
        self.last_state
    }

    fn payload_in_block(&self, index: u32) -> u64 {
        let bs = self.options.block_size as u64;
        let start = u64::from(index).saturating_mul(bs);
        (self.data.len() as u64).saturating_sub(start).min(bs)
    }

    /// What to do at `now`. Pure: calling it twice gives the same answer. When the budget has
    /// run out at `now` it says [`Action::Failed`]; a transfer's timeout is cut so that it
    /// ends by the time the budget does (never below 1 ms).
    pub fn poll(&self, now: Instant) -> Action<'_> {
        if let Some(e) = self.overrun(now) {
            return Action::Failed(e);
        }
        let expiry = self.budget_expiry(now);
        let t = match expiry {
            Some((at, _)) => self
                .options
                .transfer_timeout
                .min(at.saturating_duration_since(now))
                .max(Duration::from_millis(1)),
            None => self.options.transfer_timeout,
        };
        let control_in = |request: Request, length| Action::Transfer {
            transfer: Transfer::ControlIn {
                setup: request.setup(0),
                length,
            },
            timeout: t,
        };
        let control_out = |request: Request, value, data| Action::Transfer {
            transfer: Transfer::ControlOut {
                setup: request.setup(value),
                data,
            },
            timeout: t,
        };
        match &self.step {
            Step::GetState => control_in(Request::GetState, 1),
            Step::ClearStatus => control_out(Request::ClrStatus, 0, &[]),
            Step::Abort => control_out(Request::Abort, 0, &[]),
            // wValue is the block number modulo 2^16 (it wraps after 128 MiB at 0x800).
            Step::SendBlock => {
                control_out(Request::Dnload, self.block as u16, self.block(self.block))
            }
            Step::PollBlock {
                not_before,
                deadline,
                ..
            }
            | Step::PollManifest {
                not_before,
                deadline,
            } => {
                let deadline = match expiry {
                    Some((at, _)) => at.min(*deadline),
                    None => *deadline,
                };
                let not_before = (*not_before).min(deadline);
                if now < not_before {
                    Action::Wait {
                        not_before,
                        deadline,
                    }
                } else {
                    control_in(Request::GetStatus, StatusReply::LENGTH as u16)
                }
            }
            Step::SendFinish => control_out(Request::Dnload, self.blocks as u16, &[]),
            Step::Reset => Action::Transfer {
                transfer: Transfer::Reset,
                timeout: t,
            },
            Step::Finished(f) => Action::Finished(*f),
            Step::Failed(e) => Action::Failed(e.clone()),
        }
    }

    fn fail(&mut self, phase: Phase, block: Option<u32>, cause: Cause) -> DownloadError {
        let e = DownloadError {
            phase,
            block,
            last_state: self.last_state,
            cause,
        };
        self.step = Step::Failed(e.clone());
        e
    }

    fn finish(&mut self, departure: Departure) {
        self.step = Step::Finished(Finished {
            blocks: self.blocks,
            manifest_state: self.manifest_state,
            departure,
        });
    }

    /// Takes the result of the transfer [`Download::poll`] asked for, completed at `now`.
    /// Call it exactly once per [`Action::Transfer`], never after an [`Action::Wait`]; after
    /// the download finished or failed it is a no-op. When the budget has run out by `now`
    /// the download fails with [`Cause::OutOfTime`] (also when the transfer failed: a
    /// timeout cut short by the budget is the budget's doing).
    pub fn handle(
        &mut self,
        result: Result<Completion, UsbError>,
        now: Instant,
    ) -> Result<(), DownloadError> {
        if self.is_over() {
            return Ok(());
        }
        self.start(now);
        match self.apply(result, now) {
            // Finishing (even by the device leaving) wins over the budget.
            Ok(()) => self.fail_if_out_of_time(now),
            Err(e) => match (&e.cause, self.broken_rule(now)) {
                (Cause::Usb(_), Some(overrun)) => {
                    let e = DownloadError {
                        cause: self.out_of_time(overrun, now),
                        ..e
                    };
                    self.step = Step::Failed(e.clone());
                    Err(e)
                }
                _ => Err(e),
            },
        }
    }

    fn apply(
        &mut self,
        result: Result<Completion, UsbError>,
        now: Instant,
    ) -> Result<(), DownloadError> {
        let block = Some(self.block);
        match self.step.clone() {
            Step::GetState => {
                let phase = Phase::Prepare;
                let state = match result {
                    Ok(Completion::In(bytes)) => {
                        parse_state(&bytes).map_err(|e| self.fail(phase, None, Cause::Reply(e)))?
                    }
                    Ok(other) => return Err(self.fail(phase, None, Cause::Mismatch(other))),
                    Err(e) => return Err(self.fail(phase, None, Cause::Usb(e))),
                };
                self.last_state = Some(state);
                if state == State::DfuIdle {
                    self.step = Step::SendBlock;
                    return Ok(());
                }
                if self.attempts >= self.options.prepare_attempts {
                    let attempts = self.attempts;
                    return Err(self.fail(phase, None, Cause::NotIdle { state, attempts }));
                }
                self.attempts += 1;
                self.step = if state == State::Error {
                    Step::ClearStatus
                } else {
                    Step::Abort
                };
            }
            Step::ClearStatus | Step::Abort => match result {
                Ok(Completion::Out { .. }) => self.step = Step::GetState,
                Ok(other) => return Err(self.fail(Phase::Prepare, None, Cause::Mismatch(other))),
                Err(e) => return Err(self.fail(Phase::Prepare, None, Cause::Usb(e))),
            },
            Step::SendBlock => {
                let expected = self.block(self.block).len();
                match result {
                    Ok(Completion::Out { written }) if written == expected => {
                        self.step = Step::PollBlock {
                            started: now,
                            not_before: now,
                            deadline: saturating_add(now, self.options.block_deadline),
                        };
                    }
                    Ok(Completion::Out { written }) => {
                        return Err(self.fail(
                            Phase::Download,
                            block,
                            Cause::ShortWrite { expected, written },
                        ))
                    }
                    Ok(other) => {
                        return Err(self.fail(Phase::Download, block, Cause::Mismatch(other)))
                    }
                    Err(e) => return Err(self.fail(Phase::Download, block, Cause::Usb(e))),
                }
            }
            Step::PollBlock {
                started, deadline, ..
            } => {
                let phase = Phase::Download;
                let reply = self.status_reply(phase, block, result)?;
                match reply.state {
                    State::DnloadIdle => {
                        self.sent += self.payload_in_block(self.block);
                        self.block = self.block.saturating_add(1);
                        self.step = if self.block == self.blocks {
                            Step::SendFinish
                        } else {
                            Step::SendBlock
                        };
                    }
                    State::DnBusy | State::DnloadSync => {
                        if now >= deadline {
                            return Err(self.fail(
                                phase,
                                block,
                                Cause::Deadline {
                                    state: reply.state,
                                    waited: now.saturating_duration_since(started),
                                },
                            ));
                        }
                        self.step = Step::PollBlock {
                            started,
                            not_before: self.next_poll(now, &reply).min(deadline),
                            deadline,
                        };
                    }
                    other => return Err(self.fail(phase, block, Cause::UnexpectedState(other))),
                }
            }
            Step::SendFinish => match result {
                Ok(Completion::Out { .. }) => {
                    self.step = Step::PollManifest {
                        not_before: now,
                        deadline: saturating_add(now, self.options.manifest_deadline),
                    }
                }
                Ok(other) => return Err(self.fail(Phase::Manifest, None, Cause::Mismatch(other))),
                Err(e) if e.kind() == ErrorKind::NoDevice => {
                    self.finish(Departure::LeftDuringManifest)
                }
                Err(e) => return Err(self.fail(Phase::Manifest, None, Cause::Usb(e))),
            },
            Step::PollManifest { deadline, .. } => {
                let phase = Phase::Manifest;
                if let Err(e) = &result {
                    if e.kind() == ErrorKind::NoDevice {
                        self.finish(Departure::LeftDuringManifest);
                        return Ok(());
                    }
                }
                let reply = self.status_reply(phase, None, result)?;
                self.manifest_state = Some(reply.state);
                match reply.state {
                    State::Manifest | State::ManifestWaitReset | State::DfuIdle => {
                        self.step = Step::Reset
                    }
                    State::ManifestSync if now >= deadline => self.step = Step::Reset,
                    State::ManifestSync => {
                        self.step = Step::PollManifest {
                            not_before: self.next_poll(now, &reply).min(deadline),
                            deadline,
                        }
                    }
                    other => return Err(self.fail(phase, None, Cause::UnexpectedState(other))),
                }
            }
            Step::Reset => match result {
                Ok(_) => self.finish(Departure::Reset),
                Err(e) if matches!(e.kind(), ErrorKind::NoDevice | ErrorKind::NotFound) => {
                    self.finish(Departure::ReEnumerated)
                }
                Err(e) => return Err(self.fail(Phase::Reset, None, Cause::Usb(e))),
            },
            Step::Finished(_) | Step::Failed(_) => {}
        }
        Ok(())
    }

    /// The instant of the next GETSTATUS after `reply` came at `now`: `bwPollTimeout` later,
    /// but at least [`Options::min_poll_interval`].
    fn next_poll(&self, now: Instant, reply: &StatusReply) -> Instant {
        saturating_add(now, reply.poll_timeout.max(self.options.min_poll_interval))
    }

    /// Parses a GETSTATUS result; an error status or `dfuERROR` fails the download.
    fn status_reply(
        &mut self,
        phase: Phase,
        block: Option<u32>,
        result: Result<Completion, UsbError>,
    ) -> Result<StatusReply, DownloadError> {
        let reply = match result {
            Ok(Completion::In(bytes)) => {
                StatusReply::parse(&bytes).map_err(|e| self.fail(phase, block, Cause::Reply(e)))?
            }
            Ok(other) => return Err(self.fail(phase, block, Cause::Mismatch(other))),
            Err(e) => return Err(self.fail(phase, block, Cause::Usb(e))),
        };
        self.last_state = Some(reply.state);
        if reply.status != Status::Ok || reply.state == State::Error {
            return Err(self.fail(
                phase,
                block,
                Cause::Status {
                    status: reply.status,
                    state: reply.state,
                },
            ));
        }
        Ok(reply)
    }
}

/// The time source of a blocking driver: the only place where waiting happens.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Blocks until `instant` (returns at once if it has passed).
    fn wait_until(&mut self, instant: Instant);
}

/// The real clock: `Instant::now()` and a thread sleep. For blocking drivers only.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wait_until(&mut self, instant: Instant) {
        let now = Instant::now();
        if instant > now {
            std::thread::sleep(instant - now);
        }
    }
}

/// Drives a [`Download`] of `data` to the end against `device` (blocking), calling `progress`
/// whenever the device acknowledges a block. Waits only where the engine names an instant.
/// To be able to stop it, use [`run_download_cancellable`].
pub fn run_download(
    device: &mut dyn UsbDevice,
    data: &[u8],
    options: Options,
    clock: &mut dyn Clock,
    progress: &mut dyn FnMut(Progress),
) -> Result<Finished, DownloadError> {
    let mut last = None;
    run_download_cancellable(device, data, options, clock, &mut |p| {
        if last != Some(p.sent) && p.sent != 0 {
            progress(p);
        }
        last = Some(p.sent);
        ControlFlow::Continue(())
    })
}

/// [`run_download`] with a callback that can stop it: `progress` is called whenever the device
/// acknowledges a block, and also before each wait for a busy device (with the same progress
/// as the last call), so that a stalled download can be stopped too. Returning
/// [`ControlFlow::Break`] ends the download with [`Cause::Cancelled`] (no further transfer,
/// no reset).
pub fn run_download_cancellable(
    device: &mut dyn UsbDevice,
    data: &[u8],
    options: Options,
    clock: &mut dyn Clock,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Finished, DownloadError> {
    let mut download = Download::new(data, options)?;
    download.start(clock.now());
    loop {
        let now = clock.now();
        let result = match download.poll(now) {
            Action::Transfer { transfer, timeout } => transfer.perform(device, timeout),
            Action::Wait { not_before, .. } => {
                if progress(download.progress()).is_break() {
                    download.cancel();
                    continue;
                }
                clock.wait_until(not_before);
                continue;
            }
            Action::Finished(f) => return Ok(f),
            Action::Failed(e) => return Err(e),
        };
        let before = download.progress().sent;
        download.handle(result, clock.now())?;
        if download.progress().sent != before && progress(download.progress()).is_break() {
            download.cancel();
        }
    }
}

/// Fuzz target bodies for the DFU reply parsers (see `fuzz/`).
#[doc(hidden)]
pub mod fuzzing {
    use super::{parse_state, StatusReply};

    /// GETSTATUS reply parser: what parses re-encodes to the same bytes and value.
    pub fn dfu_status(data: &[u8]) {
        if let Ok(r) = StatusReply::parse(data) {
            assert_eq!(r.to_bytes(), data);
            assert_eq!(StatusReply::parse(&r.to_bytes()), Ok(r));
        }
        if let Ok(s) = parse_state(data) {
            assert_eq!([s as u8], data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_an_independent_computation() {
        // Expected values computed with Python's zlib (standard CRC-32, which XORs the result
        // with 0xFFFFFFFF at the end), then complemented to undo that final XOR:
        //   tag = bytes.fromhex("ffffffffac05000155464410")
        //   hex(zlib.crc32(b"restation dfu suffix" + tag) ^ 0xffffffff)   -> 0xfb8514a5
        //   hex(zlib.crc32(bytes(range(256)) * 9 + tag) ^ 0xffffffff)     -> 0xeb9677b1
        //   hex(zlib.crc32(tag) ^ 0xffffffff)                             -> 0x93dc6053
        assert_eq!(crc(b"restation dfu suffix"), 0xfb85_14a5);
        let pattern: Vec<u8> = (0..=255u8).cycle().take(256 * 9).collect();
        assert_eq!(crc(&pattern), 0xeb96_77b1);
        assert_eq!(crc(&[]), 0x93dc_6053);
        let s = suffix(b"restation dfu suffix");
        assert_eq!(&s[..12], &SUFFIX_TAG);
        assert_eq!(&s[12..], &[0xa5, 0x14, 0x85, 0xfb]);
    }

    #[test]
    fn requests_have_the_right_setup() {
        assert_eq!(Request::Dnload.setup(7), Control::new(0x21, 1, 7, 0));
        assert_eq!(Request::GetStatus.setup(0), Control::new(0xA1, 3, 0, 0));
        assert_eq!(Request::ClrStatus.setup(0), Control::new(0x21, 4, 0, 0));
        assert_eq!(Request::GetState.setup(0), Control::new(0xA1, 5, 0, 0));
        assert_eq!(Request::Abort.setup(0), Control::new(0x21, 6, 0, 0));
    }

    #[test]
    fn status_reply_parse_and_errors() {
        let r = StatusReply::parse(&[0, 0x10, 0x27, 0, 5, 0]).unwrap();
        assert_eq!(r.poll_timeout, Duration::from_millis(10_000));
        assert_eq!(r.state, State::DnloadIdle);
        assert_eq!(
            StatusReply::parse(&[0, 0, 0, 0, 5]),
            Err(ReplyError::Length {
                expected: 6,
                got: 5
            })
        );
        assert_eq!(
            StatusReply::parse(&[16, 0, 0, 0, 5, 0]),
            Err(ReplyError::UnknownStatus(16))
        );
        assert_eq!(
            StatusReply::parse(&[0, 0, 0, 0, 11, 0]),
            Err(ReplyError::UnknownState(11))
        );
        assert_eq!(parse_state(&[10]), Ok(State::Error));
        assert_eq!(
            parse_state(&[]),
            Err(ReplyError::Length {
                expected: 1,
                got: 0
            })
        );
        let big = StatusReply {
            poll_timeout: Duration::from_secs(1_000_000),
            ..r
        };
        assert_eq!(&big.to_bytes()[1..4], &[0xff, 0xff, 0xff]);
    }

    #[test]
    fn block_layout() {
        let opts = Options::dfu();
        let data = vec![7u8; 0x800 * 2];
        let d = Download::new(&data, opts).unwrap();
        assert_eq!(d.block_count(), 3);
        assert_eq!(d.block(2).len(), 16);
        let data = vec![7u8; 0x800 + 0x7f0];
        let d = Download::new(&data, opts).unwrap();
        assert_eq!(d.block_count(), 2);
        assert_eq!(d.block(1).len(), 0x800);
        let data = vec![7u8; 0x7f1];
        let d = Download::new(&data, opts).unwrap();
        assert_eq!(d.block_count(), 2);
        assert_eq!((d.block(0).len(), d.block(1).len()), (0x7f1, 16));
        let d = Download::new(&data, Options::port_dfu()).unwrap();
        assert_eq!(d.block_count(), 32);
        assert_eq!(d.block(31).len(), 0x31);
        assert_eq!(
            Download::new(&[], opts).unwrap_err().cause,
            Cause::EmptyImage
        );
        let tiny = Options {
            block_size: 8,
            ..opts
        };
        assert!(matches!(
            Download::new(&data, tiny).unwrap_err().cause,
            Cause::BadBlockSize { block_size: 8 }
        ));
        assert_eq!(Options::for_product_id(0xF014), Options::port_dfu());
        assert_eq!(Options::for_product_id(0x1227), Options::dfu());
    }
}
