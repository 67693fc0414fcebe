//! Recovery mode (iBoot): commands, environment variables, file uploads and device output.
//!
//! - A **command** is ASCII text + NUL in a vendor control OUT (`0x40`, `bRequest` 0; `go`,
//!   `bootx`, `reset` and `reboot` use `bRequest` 1). Those four make the phone leave the bus,
//!   often before the transfer completes, so a PIPE or NO_DEVICE error after them is reported
//!   as [`CommandOutcome::DeviceLeft`], not as a failure ([`Command::interpret`]).
//! - **getenv** is the command `getenv NAME` then a vendor control IN (`0xC0`, `bRequest` 0)
//!   of up to 255 bytes holding the NUL-terminated value ([`parse_getenv_answer`]).
//! - An **upload** is a vendor control OUT to the interface (`0x41`, `bRequest` 0) then the
//!   file on bulk OUT endpoint 0x04 in 0x8000-byte chunks, and a zero-length packet when the
//!   size is a multiple of 512. [`Upload`] is the sans-IO engine (next transfer out, result
//!   in), [`run_upload`] drives it on a [`UsbDevice`], and [`run_upload_cancellable`] with your
//!   options and clock and a progress callback that can stop it. Besides each transfer's
//!   timeout, the whole upload has a [`UploadOptions::budget`] (by default: after 30 s the
//!   phone must average 64 KiB/s, see [`crate::budget`]); running out of it fails with
//!   [`UploadCause::OutOfTime`].
//! - Device **output** (the iBoot console) comes on bulk IN 0x81 of interface 1 alt 1, on
//!   PIDs above 0x1281 ([`claim_interfaces`], [`read_output`]).
//!
//! ```
//! use irecv::recovery::{Command, CommandOutcome};
//! use usb::{Completion, ErrorKind, Operation, Transfer, UsbError};
//!
//! let go = Command::new("go")?;
//! let Transfer::ControlOut { setup, data } = go.transfer() else { unreachable!() };
//! assert_eq!((setup.request_type, setup.request), (0x40, 1));
//! assert_eq!(data, b"go\0");
//! // The phone jumps to the new image and drops off the bus mid-transfer: that is success.
//! let stall = UsbError::new(ErrorKind::Pipe, go.transfer().operation());
//! assert!(matches!(go.interpret(Err(stall)), Ok(CommandOutcome::DeviceLeft { .. })));
//!
//! let setenv = Command::setenv("auto-boot", "false")?;
//! assert_eq!(setenv.text(), "setenv auto-boot false");
//! assert_eq!(irecv::recovery::parse_getenv_answer(b"false\0\0\0")?, "false");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use usb::{Completion, Control, ErrorKind, Transfer, UsbDevice, UsbError};

use crate::budget::{Budget, MinThroughput, Overrun};
use crate::dfu::{Clock, SystemClock};

/// Bulk OUT endpoint for uploads.
pub const UPLOAD_ENDPOINT: u8 = 0x04;
/// Bulk IN endpoint of the iBoot console (interface 1 alt 1).
pub const OUTPUT_ENDPOINT: u8 = 0x81;
/// Bytes per bulk write of an upload.
pub const CHUNK_SIZE: usize = 0x8000;
/// An upload whose size is a multiple of this ends with a zero-length packet.
pub const ZLP_MULTIPLE: usize = 512;
/// The longest command: with its NUL it must stay below 256 bytes.
pub const MAX_COMMAND_LENGTH: usize = 254;
/// Bytes asked for in the getenv answer.
pub const GETENV_ANSWER_LENGTH: u16 = 255;
/// Default timeout of one transfer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first PID whose iBoot has the console interface (interface 1 alt 1).
pub const FIRST_PID_WITH_CONSOLE: u16 = 0x1282;
/// The default budget of an upload: no fixed deadline (files range from a 1 MB iBEC to a
/// 200 MB ramdisk), but after 30 s the phone must average 64 KiB/s, fifteen times slower than
/// a full-speed cable. 100 MB at one 32 KiB chunk per 9.9 s fails after about 30 s, not hours.
pub const UPLOAD_BUDGET: Budget = Budget {
    deadline: None,
    min_throughput: Some(MinThroughput {
        bytes_per_second: 64 * 1024,
        grace: Duration::from_secs(30),
    }),
};

/// How far an upload got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Progress {
    /// Bytes the device took so far.
    pub sent: u64,
    /// Bytes in the file.
    pub total: u64,
}

impl Progress {
    /// `sent / total` in 0.0..=1.0.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.sent as f64 / self.total as f64
        }
    }
}

/// Text that cannot be sent as an iBoot command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Nothing to send.
    #[error("empty command")]
    Empty,
    /// With its NUL the command would not fit iBoot's 256-byte buffer.
    #[error("command is {length} bytes, at most {MAX_COMMAND_LENGTH} fit")]
    TooLong {
        /// Bytes in the command.
        length: usize,
    },
    /// iBoot commands are ASCII.
    #[error("non-ASCII byte at {position}")]
    NotAscii {
        /// Byte offset.
        position: usize,
    },
    /// NUL, newline and other control characters would cut or split the command.
    #[error("control character {byte:#04x} at {position}")]
    ControlCharacter {
        /// Byte offset.
        position: usize,
        /// The byte.
        byte: u8,
    },
    /// An environment variable name must be one non-empty word.
    #[error("invalid environment variable name {0:?}")]
    VariableName(String),
}

/// What happened to a command the device was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The device took it.
    Accepted,
    /// The command (`go`, `bootx`, `reset`, `reboot`) made the device leave the bus, as
    /// expected; the error that showed it is kept.
    DeviceLeft {
        /// The PIPE or NO_DEVICE error.
        error: UsbError,
    },
}

/// An iBoot command, checked and ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Text + NUL.
    bytes: Vec<u8>,
    request: u8,
}

impl Command {
    /// A command from its text. `go`, `bootx`, `reset` and `reboot` (as the first word) are
    /// sent with `bRequest` 1 and may make the device leave the bus.
    pub fn new(text: &str) -> Result<Self, CommandError> {
        if text.is_empty() {
            return Err(CommandError::Empty);
        }
        if text.len() > MAX_COMMAND_LENGTH {
            return Err(CommandError::TooLong { length: text.len() });
        }
        for (position, &byte) in text.as_bytes().iter().enumerate() {
            if !byte.is_ascii() {
                return Err(CommandError::NotAscii { position });
            }
            if byte.is_ascii_control() {
                return Err(CommandError::ControlCharacter { position, byte });
            }
        }
        let first = text.split(' ').next().unwrap_or_default();
        let request = u8::from(matches!(first, "go" | "bootx" | "reset" | "reboot"));
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(0);
        Ok(Self { bytes, request })
    }

    /// `getenv NAME`; read the answer with [`GETENV_ANSWER`] and [`parse_getenv_answer`].
    pub fn getenv(name: &str) -> Result<Self, CommandError> {
        check_name(name)?;
        Self::new(&format!("getenv {name}"))
    }

    /// `setenv NAME VALUE` (the value may contain spaces, e.g. boot-args).
    pub fn setenv(name: &str, value: &str) -> Result<Self, CommandError> {
        check_name(name)?;
        Self::new(&format!("setenv {name} {value}"))
    }

    /// `saveenv`: writes the environment to NVRAM.
    pub fn saveenv() -> Self {
        Self {
            bytes: b"saveenv\0".to_vec(),
            request: 0,
        }
    }

    /// The command text (without the NUL).
    pub fn text(&self) -> &str {
        let text = self.bytes.strip_suffix(&[0]).unwrap_or(&self.bytes);
        std::str::from_utf8(text).unwrap_or_default()
    }

    /// Whether the device is expected to leave the bus after it (`bRequest` 1).
    pub fn disconnects(&self) -> bool {
        self.request == 1
    }

    /// The control request: `0x40`, `bRequest` 0 or 1.
    pub fn setup(&self) -> Control {
        Control::new(0x40, self.request, 0, 0)
    }

    /// The transfer that sends the command (text + NUL).
    pub fn transfer(&self) -> Transfer<'_> {
        Transfer::ControlOut {
            setup: self.setup(),
            data: &self.bytes,
        }
    }

    /// Judges the result of [`Command::transfer`]: for commands that make the device leave,
    /// PIPE and NO_DEVICE are [`CommandOutcome::DeviceLeft`]; any other error fails.
    pub fn interpret(
        &self,
        result: Result<Completion, UsbError>,
    ) -> Result<CommandOutcome, RecoveryError> {
        match result {
            Ok(_) => Ok(CommandOutcome::Accepted),
            Err(error)
                if self.disconnects()
                    && matches!(error.kind(), ErrorKind::Pipe | ErrorKind::NoDevice) =>
            {
                Ok(CommandOutcome::DeviceLeft { error })
            }
            Err(source) => Err(RecoveryError::Command {
                command: self.text().to_owned(),
                source,
            }),
        }
    }
}

fn check_name(name: &str) -> Result<(), CommandError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CommandError::VariableName(name.chars().take(64).collect()));
    }
    Ok(())
}

/// The control IN that reads a getenv answer: `0xC0`, `bRequest` 0, 255 bytes.
pub const GETENV_ANSWER: Transfer<'static> = Transfer::ControlIn {
    setup: Control::new(0xC0, 0, 0, 0),
    length: GETENV_ANSWER_LENGTH,
};

/// A getenv answer that is not a NUL-terminated text value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The device sent no bytes.
    #[error("empty getenv answer")]
    NoAnswer,
    /// No NUL in the answer: the value was cut off.
    #[error("getenv answer of {length} bytes has no NUL terminator")]
    Unterminated {
        /// Bytes that came.
        length: usize,
    },
    /// The value is not UTF-8 text.
    #[error("getenv value is not text (invalid UTF-8 at byte {position})")]
    NotText {
        /// Offset of the first invalid byte.
        position: usize,
    },
}

/// The value in a getenv answer: the text up to the first NUL.
pub fn parse_getenv_answer(data: &[u8]) -> Result<String, EnvError> {
    if data.is_empty() {
        return Err(EnvError::NoAnswer);
    }
    let end = data
        .iter()
        .position(|&b| b == 0)
        .ok_or(EnvError::Unterminated { length: data.len() })?;
    let value = data.get(..end).unwrap_or_default();
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|e| EnvError::NotText {
            position: e.valid_up_to(),
        })
}

/// Why an upload failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadCause {
    /// A transfer failed; the USB error kind is kept.
    #[error(transparent)]
    Usb(UsbError),
    /// The device took fewer bytes than the chunk had.
    #[error("device took {written} of {expected} bytes")]
    ShortWrite {
        /// Bytes in the chunk.
        expected: usize,
        /// Bytes taken.
        written: usize,
    },
    /// A transfer completed with the wrong kind of completion (a backend bug).
    #[error("the transfer completed as {0:?}, which does not match what was asked")]
    Mismatch(Completion),
    /// Nothing to send.
    #[error("the file is empty")]
    EmptyFile,
    /// Chunk size 0.
    #[error("chunk size must not be 0")]
    ZeroChunkSize,
    /// More chunks than a chunk index (`u32`) can count: a tiny chunk size for a big file.
    #[error("{chunks} chunks of {chunk_size} bytes are too many (at most 2^32)")]
    TooManyChunks {
        /// Chunks the file would take.
        chunks: u64,
        /// The chunk size asked for.
        chunk_size: usize,
    },
    /// The whole upload ran out of its [`UploadOptions::budget`]; the error's `offset` says
    /// how many bytes the device had taken.
    #[error("out of time after {elapsed:?} ({total} bytes in the file): {overrun}")]
    OutOfTime {
        /// The rule it broke.
        overrun: Overrun,
        /// Time since the upload started.
        elapsed: Duration,
        /// Bytes in the file.
        total: u64,
    },
    /// The caller stopped the upload ([`Upload::cancel`], or the progress callback of
    /// [`run_upload_cancellable`]).
    #[error("cancelled")]
    Cancelled,
}

/// Which transfer of an upload failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadStep {
    /// Building the upload.
    Setup,
    /// The `0x41` control request that starts it.
    Start,
    /// A bulk chunk (counted from 0).
    Chunk(u32),
    /// The final zero-length packet.
    ZeroLengthPacket,
}

/// A failed upload: which transfer, at which byte offset, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recovery upload failed at {step:?} (offset {offset}): {cause}")]
pub struct UploadError {
    /// The transfer that failed.
    pub step: UploadStep,
    /// Bytes the device had taken before it.
    pub offset: u64,
    /// What went wrong.
    #[source]
    pub cause: UploadCause,
}

impl UploadError {
    /// The same failure, placed at an earlier transfer (a queued one that failed while later
    /// ones were being queued).
    fn at(self, (step, offset): (Option<UploadStep>, u64)) -> Self {
        Self {
            step: step.unwrap_or(self.step),
            offset,
            ..self
        }
    }

    /// The USB error kind, if a transfer failed.
    pub fn usb_kind(&self) -> Option<ErrorKind> {
        match &self.cause {
            UploadCause::Usb(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// How to upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    /// Bytes per bulk write (0x8000).
    pub chunk_size: usize,
    /// Sizes that are a multiple of this end with a zero-length packet (512, the bulk
    /// endpoint's packet size at high speed).
    pub zlp_multiple: usize,
    /// Timeout of each transfer.
    pub timeout: Duration,
    /// How long the whole upload may take ([`UPLOAD_BUDGET`]; [`Budget::UNLIMITED`] for no
    /// limit). Enforced by [`Upload::poll_at`] and [`Upload::handle_at`], which get the time.
    pub budget: Budget,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            chunk_size: CHUNK_SIZE,
            zlp_multiple: ZLP_MULTIPLE,
            timeout: DEFAULT_TIMEOUT,
            budget: UPLOAD_BUDGET,
        }
    }
}

/// What [`Upload::poll`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadAction<'a> {
    /// Do this transfer, then pass its result to [`Upload::handle`].
    Transfer {
        /// The transfer.
        transfer: Transfer<'a>,
        /// Its timeout.
        timeout: Duration,
    },
    /// The device has the whole file.
    Finished(Progress),
    /// The upload failed: the same error [`Upload::handle`] returned, the cancellation
    /// ([`Upload::cancel`]), or the budget ran out at the instant given to
    /// [`Upload::poll_at`] ([`UploadCause::OutOfTime`]).
    Failed(UploadError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum UpStep {
    Start,
    Chunk,
    ZeroLengthPacket,
    Finished,
    Failed(UploadError),
}

/// The recovery upload engine (sans-IO): start request, bulk chunks, optional zero-length
/// packet. Time comes in with [`Upload::poll_at`] / [`Upload::handle_at`], which enforce
/// [`UploadOptions::budget`]; [`Upload::poll`] / [`Upload::handle`] are the same without a
/// clock (and so without the budget).
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    data: &'a [u8],
    options: UploadOptions,
    step: UpStep,
    sent: usize,
    chunk: u32,
    /// When the budget's clock started ([`Upload::start`] or the first `handle_at`).
    started: Option<Instant>,
}

impl<'a> Upload<'a> {
    /// An engine that will upload `data`.
    pub fn new(data: &'a [u8], options: UploadOptions) -> Result<Self, UploadError> {
        let fail = |cause| UploadError {
            step: UploadStep::Setup,
            offset: 0,
            cause,
        };
        if data.is_empty() {
            return Err(fail(UploadCause::EmptyFile));
        }
        if options.chunk_size == 0 {
            return Err(fail(UploadCause::ZeroChunkSize));
        }
        let chunks = data.len().div_ceil(options.chunk_size) as u64;
        if chunks > u64::from(u32::MAX) + 1 {
            return Err(fail(UploadCause::TooManyChunks {
                chunks,
                chunk_size: options.chunk_size,
            }));
        }
        Ok(Self {
            data,
            options,
            step: UpStep::Start,
            sent: 0,
            chunk: 0,
            started: None,
        })
    }

    /// Starts the budget's clock ([`UploadOptions::budget`]) at `now`, the instant of the
    /// first transfer. Only the first call counts; without one, the clock starts at the first
    /// [`Upload::handle_at`].
    pub fn start(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    /// Stops the upload: from now on [`Upload::poll`] says [`UploadAction::Failed`] with
    /// [`UploadCause::Cancelled`]. No effect once the upload has finished or failed.
    pub fn cancel(&mut self) {
        if let Some(step) = self.current_step() {
            self.fail(step, UploadCause::Cancelled);
        }
    }

    /// The transfer the upload is at; `None` once it has finished or failed.
    fn current_step(&self) -> Option<UploadStep> {
        match self.step {
            UpStep::Start => Some(UploadStep::Start),
            UpStep::Chunk => Some(UploadStep::Chunk(self.chunk)),
            UpStep::ZeroLengthPacket => Some(UploadStep::ZeroLengthPacket),
            UpStep::Finished | UpStep::Failed(_) => None,
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

    fn out_of_time(&self, overrun: Overrun, now: Instant) -> UploadCause {
        UploadCause::OutOfTime {
            overrun,
            elapsed: now.saturating_duration_since(self.started.unwrap_or(now)),
            total: self.data.len() as u64,
        }
    }

    /// The error for a budget that ran out at `now`, if it did and the upload is not over.
    fn overrun(&self, now: Instant) -> Option<UploadError> {
        let step = self.current_step()?;
        let overrun = self.broken_rule(now)?;
        Some(UploadError {
            step,
            offset: self.sent as u64,
            cause: self.out_of_time(overrun, now),
        })
    }

    /// Records the budget failure at `now`, if there is one.
    fn fail_if_out_of_time(&mut self, now: Instant) -> Result<(), UploadError> {
        match self.overrun(now) {
            Some(e) => {
                self.step = UpStep::Failed(e.clone());
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Whether this upload ends with a zero-length packet.
    pub fn needs_zero_length_packet(&self) -> bool {
        self.options.zlp_multiple != 0 && self.data.len() % self.options.zlp_multiple == 0
    }

    /// Bytes taken so far, of the total.
    pub fn progress(&self) -> Progress {
        Progress {
            sent: self.sent as u64,
            total: self.data.len() as u64,
        }
    }

    fn current_chunk(&self) -> &'a [u8] {
        let end = self
            .sent
            .saturating_add(self.options.chunk_size)
            .min(self.data.len());
        self.data.get(self.sent..end).unwrap_or_default()
    }

    /// What to do next at `now`. Pure: calling it twice gives the same answer. When the
    /// budget has run out at `now` it says [`UploadAction::Failed`]; a transfer's timeout is
    /// cut so that it ends by the time the budget does (never below 1 ms).
    pub fn poll_at(&self, now: Instant) -> UploadAction<'a> {
        if let Some(e) = self.overrun(now) {
            return UploadAction::Failed(e);
        }
        match (self.poll(), self.budget_expiry(now)) {
            (UploadAction::Transfer { transfer, timeout }, Some((at, _))) => {
                UploadAction::Transfer {
                    transfer,
                    timeout: timeout
                        .min(at.saturating_duration_since(now))
                        .max(Duration::from_millis(1)),
                }
            }
            (action, _) => action,
        }
    }

    /// Takes the result of the transfer [`Upload::poll_at`] asked for, completed at `now`.
    /// When the budget has run out by `now` the upload fails with [`UploadCause::OutOfTime`]
    /// (also when the transfer failed: a timeout cut short by the budget is the budget's
    /// doing). After the upload finished or failed it is a no-op.
    pub fn handle_at(
        &mut self,
        result: Result<Completion, UsbError>,
        now: Instant,
    ) -> Result<(), UploadError> {
        if self.current_step().is_none() {
            return Ok(());
        }
        self.start(now);
        match self.handle(result) {
            Ok(()) => self.fail_if_out_of_time(now),
            Err(e) => match (&e.cause, self.broken_rule(now)) {
                (UploadCause::Usb(_), Some(overrun)) => {
                    let e = UploadError {
                        cause: self.out_of_time(overrun, now),
                        ..e
                    };
                    self.step = UpStep::Failed(e.clone());
                    Err(e)
                }
                _ => Err(e),
            },
        }
    }

    /// What to do next, without a clock: [`UploadOptions::budget`] is not enforced (use
    /// [`Upload::poll_at`] for that).
    pub fn poll(&self) -> UploadAction<'a> {
        let timeout = self.options.timeout;
        let transfer = match &self.step {
            UpStep::Start => Transfer::ControlOut {
                setup: Control::new(0x41, 0, 0, 0),
                data: &[],
            },
            UpStep::Chunk => Transfer::BulkOut {
                endpoint: UPLOAD_ENDPOINT,
                data: self.current_chunk(),
            },
            UpStep::ZeroLengthPacket => Transfer::BulkOut {
                endpoint: UPLOAD_ENDPOINT,
                data: &[],
            },
            UpStep::Finished => return UploadAction::Finished(self.progress()),
            UpStep::Failed(e) => return UploadAction::Failed(e.clone()),
        };
        UploadAction::Transfer { transfer, timeout }
    }

    fn fail(&mut self, step: UploadStep, cause: UploadCause) -> UploadError {
        let e = UploadError {
            step,
            offset: self.sent as u64,
            cause,
        };
        self.step = UpStep::Failed(e.clone());
        e
    }

    fn after_data(&self) -> UpStep {
        if self.sent < self.data.len() {
            UpStep::Chunk
        } else if self.needs_zero_length_packet() {
            UpStep::ZeroLengthPacket
        } else {
            UpStep::Finished
        }
    }

    /// Takes the result of the transfer [`Upload::poll`] asked for, without a clock (see
    /// [`Upload::handle_at`]).
    pub fn handle(&mut self, result: Result<Completion, UsbError>) -> Result<(), UploadError> {
        let (step, expected) = match self.step {
            UpStep::Start => (UploadStep::Start, 0),
            UpStep::Chunk => (UploadStep::Chunk(self.chunk), self.current_chunk().len()),
            UpStep::ZeroLengthPacket => (UploadStep::ZeroLengthPacket, 0),
            UpStep::Finished | UpStep::Failed(_) => return Ok(()),
        };
        let written = match result {
            Ok(Completion::Out { written }) => written,
            Ok(other) => return Err(self.fail(step, UploadCause::Mismatch(other))),
            Err(e) => return Err(self.fail(step, UploadCause::Usb(e))),
        };
        if step != UploadStep::Start && written != expected {
            return Err(self.fail(step, UploadCause::ShortWrite { expected, written }));
        }
        match step {
            UploadStep::Chunk(_) => {
                self.sent += written;
                // Past the last chunk the index is no longer used; `new` made sure every
                // chunk's index fits.
                self.chunk = self.chunk.saturating_add(1);
                self.step = self.after_data();
            }
            UploadStep::Start => self.step = self.after_data(),
            _ => self.step = UpStep::Finished,
        }
        Ok(())
    }
}

/// Which part of a recovery conversation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// The text cannot be a command.
    #[error(transparent)]
    InvalidCommand(#[from] CommandError),
    /// Sending a command failed.
    #[error("command {command:?} failed")]
    Command {
        /// The command text.
        command: String,
        /// The USB error.
        #[source]
        source: UsbError,
    },
    /// Reading the getenv answer failed.
    #[error("reading the value of {name:?} failed")]
    GetenvRead {
        /// The variable.
        name: String,
        /// The USB error.
        #[source]
        source: UsbError,
    },
    /// The getenv answer was not a value.
    #[error("bad value for {name:?}")]
    GetenvAnswer {
        /// The variable.
        name: String,
        /// Why.
        #[source]
        source: EnvError,
    },
    /// A command that must not make the device leave made it leave.
    #[error("the device left the bus after {command:?}")]
    UnexpectedDisconnect {
        /// The command text.
        command: String,
    },
    /// An upload failed.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// Selecting the configuration or claiming an interface failed.
    #[error("opening the recovery interfaces failed")]
    Open(#[source] UsbError),
    /// Reading device output failed.
    #[error("reading device output failed")]
    Output(#[source] UsbError),
}

impl RecoveryError {
    /// The USB error kind, if a transfer failed.
    pub fn usb_kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Command { source, .. }
            | Self::GetenvRead { source, .. }
            | Self::Open(source)
            | Self::Output(source) => Some(source.kind()),
            Self::Upload(e) => e.usb_kind(),
            _ => None,
        }
    }
}

/// Which interfaces [`claim_interfaces`] set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interfaces {
    /// Whether interface 1 alt 1 (console output on bulk IN 0x81) is claimed.
    pub console: bool,
}

/// Selects configuration 1 (if it is not active), claims interface 0 and, on PIDs above
/// 0x1281, interface 1 with alternate setting 1 for the console.
pub fn claim_interfaces(device: &mut dyn UsbDevice) -> Result<Interfaces, RecoveryError> {
    if device.active_configuration().map_err(RecoveryError::Open)? != 1 {
        device.set_configuration(1).map_err(RecoveryError::Open)?;
    }
    device.claim_interface(0).map_err(RecoveryError::Open)?;
    let console = device.product_id() >= FIRST_PID_WITH_CONSOLE;
    if console {
        device.claim_interface(1).map_err(RecoveryError::Open)?;
        device
            .set_alternate_setting(1, 1)
            .map_err(RecoveryError::Open)?;
    }
    Ok(Interfaces { console })
}

/// Sends a command (blocking).
pub fn send_command(
    device: &mut dyn UsbDevice,
    command: &Command,
    timeout: Duration,
) -> Result<CommandOutcome, RecoveryError> {
    command.interpret(command.transfer().perform(device, timeout))
}

fn send_staying(
    device: &mut dyn UsbDevice,
    command: &Command,
    timeout: Duration,
) -> Result<(), RecoveryError> {
    match send_command(device, command, timeout)? {
        CommandOutcome::Accepted => Ok(()),
        CommandOutcome::DeviceLeft { .. } => Err(RecoveryError::UnexpectedDisconnect {
            command: command.text().to_owned(),
        }),
    }
}

/// Reads an environment variable (blocking): `getenv NAME`, then the answer.
pub fn getenv(
    device: &mut dyn UsbDevice,
    name: &str,
    timeout: Duration,
) -> Result<String, RecoveryError> {
    send_staying(device, &Command::getenv(name)?, timeout)?;
    let answer = match GETENV_ANSWER.perform(device, timeout) {
        Ok(Completion::In(bytes)) => bytes,
        Ok(_) => Vec::new(),
        Err(source) => {
            return Err(RecoveryError::GetenvRead {
                name: name.to_owned(),
                source,
            })
        }
    };
    parse_getenv_answer(&answer).map_err(|source| RecoveryError::GetenvAnswer {
        name: name.to_owned(),
        source,
    })
}

/// Sets an environment variable (blocking); [`saveenv`] makes it survive a reboot.
pub fn setenv(
    device: &mut dyn UsbDevice,
    name: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), RecoveryError> {
    send_staying(device, &Command::setenv(name, value)?, timeout)
}

/// Writes the environment to NVRAM (blocking).
pub fn saveenv(device: &mut dyn UsbDevice, timeout: Duration) -> Result<(), RecoveryError> {
    send_staying(device, &Command::saveenv(), timeout)
}

/// Uploads `data` with the default options (blocking), calling `progress` after each chunk.
/// The budget ([`UPLOAD_BUDGET`]) is timed with the real clock ([`SystemClock`]); for your own
/// options and clock, or to be able to stop it, use [`run_upload_cancellable`].
pub fn run_upload(
    device: &mut dyn UsbDevice,
    data: &[u8],
    progress: &mut dyn FnMut(Progress),
) -> Result<Progress, RecoveryError> {
    let mut upload = Upload::new(data, UploadOptions::default())?;
    drive_upload(device, &mut upload, progress)
}

/// Uploads `data` with `options` (blocking), timing the budget with `clock` (only its
/// `now` is used: an upload never waits). `progress` is called after each chunk; returning
/// [`ControlFlow::Break`] stops the upload with [`UploadCause::Cancelled`] before the next
/// transfer.
pub fn run_upload_cancellable(
    device: &mut dyn UsbDevice,
    data: &[u8],
    options: UploadOptions,
    clock: &dyn Clock,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Progress, RecoveryError> {
    let mut upload = Upload::new(data, options)?;
    drive_upload_cancellable(device, &mut upload, clock, progress)
}

/// Drives an [`Upload`] to the end (blocking), calling `progress` after each chunk; the
/// budget is timed with the real clock ([`SystemClock`]).
pub fn drive_upload(
    device: &mut dyn UsbDevice,
    upload: &mut Upload<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Progress, RecoveryError> {
    drive_upload_cancellable(device, upload, &SystemClock, &mut |p| {
        progress(p);
        ControlFlow::Continue(())
    })
}

/// Drives an [`Upload`] to the end (blocking), timing its budget with `clock`; `progress` is
/// called after each chunk and may stop the upload (see [`run_upload_cancellable`]).
pub fn drive_upload_cancellable(
    device: &mut dyn UsbDevice,
    upload: &mut Upload<'_>,
    clock: &dyn Clock,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Progress, RecoveryError> {
    upload.start(clock.now());
    let mut queued = Queued::default();
    loop {
        match upload.poll_at(clock.now()) {
            UploadAction::Transfer { transfer, timeout } => {
                let before = upload.progress().sent;
                let step = upload.current_step();
                let result = match transfer {
                    Transfer::BulkOut { endpoint, data } => {
                        queued.write(device, endpoint, data, timeout, (step, before))
                    }
                    // Any other request waits for the queued chunks.
                    _ => queued
                        .flush()
                        .map_err(|(e, at)| (e, Some(at)))
                        .and_then(|()| transfer.perform(device, timeout).map_err(|e| (e, None))),
                };
                match result {
                    Ok(completion) => upload.handle_at(Ok(completion), clock.now())?,
                    Err((e, at)) => {
                        upload
                            .handle_at(Err(e), clock.now())
                            .map_err(|error| match at {
                                Some(at) => error.at(at),
                                None => error,
                            })?
                    }
                }
                if upload.progress().sent != before && progress(upload.progress()).is_break() {
                    upload.cancel();
                }
            }
            UploadAction::Finished(p) => {
                // Finished once the device has taken the last queued chunk.
                if let Err((e, at)) = queued.flush() {
                    return Err(RecoveryError::Upload(
                        UploadError {
                            step: UploadStep::ZeroLengthPacket,
                            offset: p.sent,
                            cause: UploadCause::Usb(e),
                        }
                        .at(at),
                    ));
                }
                return Ok(p);
            }
            UploadAction::Failed(e) => return Err(e.into()),
        }
    }
}

/// Where a queued transfer was in the upload: its step and the bytes taken before it.
type Place = (Option<UploadStep>, u64);

/// The upload's bulk transfers, through the backend's queue when it has one so that the host
/// controller runs the chunks back to back. A chunk counts as sent once queued; a queued
/// chunk's failure comes back with a later transfer (or the flush at the end) and is
/// reported at its own step and offset.
#[derive(Default)]
struct Queued {
    queue: Option<Box<dyn usb::BulkOutQueue>>,
    /// The place of each transfer submitted on `queue`, by its index there.
    places: Vec<Place>,
}

impl Queued {
    /// Writes one bulk transfer: queued when the backend can, else at once.
    fn write(
        &mut self,
        device: &mut dyn UsbDevice,
        endpoint: u8,
        data: &[u8],
        timeout: Duration,
        place: Place,
    ) -> Result<Completion, (UsbError, Option<Place>)> {
        if self
            .queue
            .as_ref()
            .is_some_and(|q| q.endpoint() != endpoint)
        {
            self.flush().map_err(|(e, at)| (e, Some(at)))?;
        }
        if self.queue.is_none() {
            self.queue = device.bulk_out_queue(endpoint);
            self.places.clear();
        }
        let Some(queue) = self.queue.as_mut() else {
            return device
                .bulk_out(endpoint, data, timeout)
                .map(|written| Completion::Out { written })
                .map_err(|e| (e, None));
        };
        self.places.push(place);
        match queue.submit(data.to_vec(), timeout) {
            Ok(()) => Ok(Completion::Out {
                written: data.len(),
            }),
            Err(failure) => Err(self.failed(failure)),
        }
    }

    /// Waits for the queued transfers and ends the queue.
    fn flush(&mut self) -> Result<(), (UsbError, Place)> {
        let Some(mut queue) = self.queue.take() else {
            return Ok(());
        };
        queue.flush().map_err(|failure| {
            let (e, place) = self.failed(failure);
            (e, place.unwrap_or((None, 0)))
        })
    }

    fn failed(&self, failure: usb::QueuedFailure) -> (UsbError, Option<Place>) {
        let place = usize::try_from(failure.index)
            .ok()
            .and_then(|i| self.places.get(i))
            .copied();
        (failure.error, place)
    }
}

/// Reads up to `length` bytes of console output from bulk IN 0x81 (blocking). A timeout means
/// the device had nothing to say and gives an empty vector.
pub fn read_output(
    device: &mut dyn UsbDevice,
    length: usize,
    timeout: Duration,
) -> Result<Vec<u8>, RecoveryError> {
    match device.bulk_in(OUTPUT_ENDPOINT, length, timeout) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == ErrorKind::Timeout => Ok(Vec::new()),
        Err(e) => Err(RecoveryError::Output(e)),
    }
}

/// Fuzz target bodies for the recovery parsers (see `fuzz/`).
#[doc(hidden)]
pub mod fuzzing {
    use super::parse_getenv_answer;

    /// getenv answer parser: a value has no NUL and parses back from `value + NUL + junk`.
    pub fn getenv_answer(data: &[u8]) {
        if let Ok(value) = parse_getenv_answer(data) {
            assert!(!value.as_bytes().contains(&0));
            assert!(value.len() < data.len());
            let mut again = value.clone().into_bytes();
            again.push(0);
            again.extend_from_slice(b"junk");
            assert_eq!(parse_getenv_answer(&again), Ok(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_checked() {
        assert_eq!(Command::new(""), Err(CommandError::Empty));
        assert_eq!(
            Command::new(&"a".repeat(255)),
            Err(CommandError::TooLong { length: 255 })
        );
        assert!(Command::new(&"a".repeat(254)).is_ok());
        assert_eq!(
            Command::new("setenv x é"),
            Err(CommandError::NotAscii { position: 9 })
        );
        assert_eq!(
            Command::new("go\nreboot"),
            Err(CommandError::ControlCharacter {
                position: 2,
                byte: b'\n'
            })
        );
        assert_eq!(
            Command::new("a\0b"),
            Err(CommandError::ControlCharacter {
                position: 1,
                byte: 0
            })
        );
        assert!(matches!(
            Command::getenv("two words"),
            Err(CommandError::VariableName(_))
        ));
        assert!(matches!(
            Command::setenv("", "x"),
            Err(CommandError::VariableName(_))
        ));
    }

    #[test]
    fn disconnecting_commands_use_request_1() {
        for text in ["go", "bootx", "reset", "reboot", "go 0x800000"] {
            let c = Command::new(text).unwrap();
            assert!(c.disconnects(), "{text}");
            assert_eq!(c.setup(), Control::new(0x40, 1, 0, 0));
        }
        for text in [
            "gooo",
            "setenv auto-boot false",
            "saveenv",
            "bgcolor 255 0 0",
            "resetx",
        ] {
            let c = Command::new(text).unwrap();
            assert!(!c.disconnects(), "{text}");
            assert_eq!(c.setup(), Control::new(0x40, 0, 0, 0));
        }
        assert_eq!(Command::saveenv(), Command::new("saveenv").unwrap());
        assert_eq!(Command::saveenv().text(), "saveenv");
    }

    #[test]
    fn getenv_answers() {
        assert_eq!(parse_getenv_answer(b"rd=md0 -v\0"), Ok("rd=md0 -v".into()));
        assert_eq!(parse_getenv_answer(b"\0garbage"), Ok(String::new()));
        assert_eq!(parse_getenv_answer(b""), Err(EnvError::NoAnswer));
        assert_eq!(
            parse_getenv_answer(b"abc"),
            Err(EnvError::Unterminated { length: 3 })
        );
        assert_eq!(
            parse_getenv_answer(b"ab\xff\0"),
            Err(EnvError::NotText { position: 2 })
        );
    }

    #[test]
    fn pipe_after_a_normal_command_is_a_failure() {
        let c = Command::new("setenv auto-boot false").unwrap();
        let e = UsbError::new(ErrorKind::Pipe, c.transfer().operation());
        let err = c.interpret(Err(e)).unwrap_err();
        assert_eq!(err.usb_kind(), Some(ErrorKind::Pipe));
        // ...and a timeout after `go` is a failure too: only PIPE/NO_DEVICE mean "left".
        let go = Command::new("go").unwrap();
        let e = UsbError::new(ErrorKind::Timeout, go.transfer().operation());
        assert!(go.interpret(Err(e)).is_err());
    }

    #[test]
    fn chunk_index_never_overflows() {
        // `self.chunk += 1` used to overflow past u32::MAX chunks.
        let data = [7u8; 4];
        let opts = UploadOptions {
            chunk_size: 1,
            ..UploadOptions::default()
        };
        let mut up = Upload::new(&data, opts).unwrap();
        up.handle(Ok(Completion::Out { written: 0 })).unwrap(); // START
        up.chunk = u32::MAX;
        up.handle(Ok(Completion::Out { written: 1 })).unwrap();
        assert_eq!(up.progress().sent, 1);
        assert_eq!(up.chunk, u32::MAX);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn more_chunks_than_an_index_counts_are_refused() {
        // 4 GiB + 1 of zeroes: never touched, so the pages are never really allocated.
        let data = vec![0u8; (1 << 32) + 1];
        let opts = UploadOptions {
            chunk_size: 1,
            ..UploadOptions::default()
        };
        assert_eq!(
            Upload::new(&data, opts).unwrap_err().cause,
            UploadCause::TooManyChunks {
                chunks: (1 << 32) + 1,
                chunk_size: 1
            }
        );
        // 2^32 chunks exactly fit (indices 0..=u32::MAX).
        assert!(Upload::new(&data[..1 << 32], opts).is_ok());
    }

    #[test]
    fn upload_rejects_empty_and_zero_chunk() {
        assert_eq!(
            Upload::new(&[], UploadOptions::default())
                .unwrap_err()
                .cause,
            UploadCause::EmptyFile
        );
        let opts = UploadOptions {
            chunk_size: 0,
            ..UploadOptions::default()
        };
        assert_eq!(
            Upload::new(&[1], opts).unwrap_err().cause,
            UploadCause::ZeroChunkSize
        );
    }
}
