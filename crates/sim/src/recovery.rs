//! Recovery mode, device side (iBoot): commands, environment, uploads, console output.
//!
//! - Commands come in vendor control OUT `0x40` (`bRequest` 0; 1 for `go`/`bootx`/`reset`/
//!   `reboot`), parsed by [`crate::command::Command`]. A `refuse` fault stalls them.
//! - `getenv NAME` stores the value; the next control IN `0xC0` returns it with a NUL.
//! - `setenv` changes the running environment; `saveenv` writes it to NVRAM (the phone's
//!   [`crate::phone::Core::nvram`], which survives reboots and decides `auto-boot`).
//! - An upload starts with control OUT `0x41`, then bulk OUT 0x04 chunks; a zero-length packet
//!   ends it. `ramdisk`, `devicetree`, `firmware`, `rsepfirmware`, `go` and `bootx` consume it.
//! - `go` (with an upload) boots iBEC: the phone re-enumerates in recovery (iBEC stage).
//! - `bootx` boots the restore ramdisk only after `ramdisk` and `devicetree` and with a
//!   kernelcache uploaded; otherwise it prints an error and stays, as iBoot does.
//! - `reboot`/`reset` re-enumerate in normal mode, or recovery when the saved `auto-boot` is
//!   false.
//! - Console lines come out on bulk IN 0x81 (interface 1 alt 1); with nothing to say, a read
//!   times out.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use usb::{Control, ErrorKind, Transfer};

use crate::check::{ImageKind, Verdict};
use crate::command::Command;
use crate::fault::Point;
use crate::injector::Span;
use crate::phone::{Core, Mode, ModeHandler, RecoveryStage, Touches};

/// Bulk OUT endpoint of uploads.
pub const UPLOAD_ENDPOINT: u8 = 0x04;
/// `wMaxPacketSize` of the upload endpoint: a packet shorter than this ends a transfer.
const UPLOAD_MAX_PACKET: usize = 512;
/// Bulk IN endpoint of console output.
pub const CONSOLE_IN: u8 = 0x81;
/// Bulk OUT endpoint of console input.
pub const CONSOLE_OUT: u8 = 0x02;

/// What iBoot has loaded for a `bootx`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// `ramdisk` ran with an upload.
    pub ramdisk: bool,
    /// `devicetree` ran with an upload.
    pub devicetree: bool,
    /// `rsepfirmware` ran with an upload.
    pub rsep: bool,
    /// How many `firmware` images.
    pub firmware: u32,
}

/// The iBoot device.
#[derive(Debug, Clone)]
pub struct RecoveryMode {
    stage: RecoveryStage,
    env: BTreeMap<String, String>,
    answer: Option<Vec<u8>>,
    upload: Vec<u8>,
    upload_ended: bool,
    /// The current upload is in [`crate::phone::Record::received`] already.
    upload_recorded: bool,
    loaded: Loaded,
    console: VecDeque<Vec<u8>>,
}

impl RecoveryMode {
    /// iBoot at `stage`, with the environment read from NVRAM.
    pub fn new(stage: RecoveryStage, core: &mut Core) -> Self {
        let mut m = Self {
            stage,
            env: core.nvram.clone(),
            answer: None,
            upload: Vec::new(),
            upload_ended: false,
            upload_recorded: false,
            loaded: Loaded::default(),
            console: VecDeque::new(),
        };
        m.say(&format!(
            "{} for {}, Copyright 2007-2024, Apple Inc.",
            core.profile.iboot_version, core.profile.board_config
        ));
        m.say("Entering recovery mode, starting command prompt");
        m
    }

    /// The stage answering.
    pub fn stage(&self) -> RecoveryStage {
        self.stage
    }

    /// The running environment.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// What is loaded for `bootx`.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// Bytes of the pending upload, and whether its zero-length packet came.
    pub fn pending_upload(&self) -> (usize, bool) {
        (self.upload.len(), self.upload_ended)
    }

    fn record_received(&mut self, core: &mut Core) {
        use sha2::Digest;
        if self.upload_recorded || self.upload.is_empty() {
            return;
        }
        self.upload_recorded = true;
        core.record.received.push(crate::phone::ReceivedUpload {
            size: self.upload.len() as u64,
            sha256: sha2::Sha256::digest(&self.upload).into(),
        });
    }

    fn say(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.console.push_back(bytes);
    }

    fn take_upload(&mut self) -> Option<Vec<u8>> {
        self.upload_ended = false;
        self.upload_recorded = false;
        if self.upload.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.upload))
        }
    }

    /// Loads the pending upload as `what`; false (and a console line) when there is none or
    /// the check refuses it.
    fn load(&mut self, core: &mut Core, what: &'static str) -> bool {
        let Some(image) = self.take_upload() else {
            self.say(&format!("{what}: no image uploaded"));
            return false;
        };
        match core.take_image(ImageKind::Recovery(what), &image) {
            Verdict::Accept => {
                self.say(&format!("loaded {what} ({} bytes)", image.len()));
                true
            }
            Verdict::Refuse(why) => {
                self.say(&format!("{what}: image refused: {why}"));
                false
            }
        }
    }

    fn run(&mut self, core: &mut Core, command: Command) {
        match command {
            Command::Getenv(name) => {
                let mut value = self
                    .env
                    .get(&name)
                    .cloned()
                    .unwrap_or_default()
                    .into_bytes();
                value.push(0);
                self.answer = Some(value);
            }
            Command::Setenv { name, value } => {
                self.env.insert(name, value);
            }
            Command::Saveenv => core.nvram = self.env.clone(),
            Command::Bgcolor(r, g, b) => core.record.bgcolor = Some((r, g, b)),
            Command::Setpicture(n) => core.record.picture = Some(n),
            Command::Go => {
                if self.load(core, "go") {
                    core.reenumerate(
                        Mode::Recovery(RecoveryStage::Ibec),
                        core.timings.after_go,
                        Some(Point::Go),
                    );
                }
            }
            Command::Bootx => {
                if self.stage == RecoveryStage::Ibss {
                    self.say("bootx: not supported by iBSS");
                } else if !(self.loaded.ramdisk && self.loaded.devicetree) {
                    let missing = match (self.loaded.ramdisk, self.loaded.devicetree) {
                        (false, false) => "ramdisk and devicetree",
                        (false, true) => "ramdisk",
                        _ => "devicetree",
                    };
                    self.say(&format!("bootx: no {missing} loaded"));
                    // The kernelcache stays pending; iBoot keeps its load buffer.
                } else if self.upload.is_empty() {
                    self.say("bootx: no kernelcache uploaded");
                } else if self.load(core, "bootx") {
                    core.reenumerate(Mode::Restore, core.timings.after_bootx, Some(Point::Bootx));
                }
            }
            Command::Reboot | Command::Reset => {
                let target = core.boot_target();
                core.reenumerate(target, core.timings.after_reboot, None);
            }
            Command::Ramdisk => self.loaded.ramdisk |= self.load(core, "ramdisk"),
            Command::Devicetree => self.loaded.devicetree |= self.load(core, "devicetree"),
            Command::Rsepfirmware => self.loaded.rsep |= self.load(core, "rsepfirmware"),
            Command::Firmware => {
                if self.load(core, "firmware") {
                    self.loaded.firmware += 1;
                }
            }
            Command::Unknown { word, .. } => self.say(&format!("Command '{word}' not found")),
        }
    }
}

impl ModeHandler for RecoveryMode {
    fn touches(&self, core: &Core, transfer: &Transfer<'_>) -> Touches {
        match transfer {
            Transfer::ControlOut { setup, data } if setup.request_type == 0x40 => {
                let mut points = vec![Point::Recovery];
                match Command::parse(data) {
                    Ok(Command::Go) => points.push(Point::Go),
                    Ok(Command::Bootx) => points.push(Point::Bootx),
                    _ => {}
                }
                Touches { points, span: None }
            }
            Transfer::BulkOut {
                endpoint: UPLOAD_ENDPOINT,
                data,
            } => {
                let before = self.upload.len() as u64;
                Touches {
                    points: vec![Point::RecoveryUpload],
                    span: Some(Span {
                        before,
                        after: before + data.len() as u64,
                        total: core.upload_size(Point::RecoveryUpload),
                    }),
                }
            }
            _ => Touches {
                points: vec![Point::Recovery],
                span: None,
            },
        }
    }

    fn control_in(
        &mut self,
        core: &mut Core,
        setup: Control,
        length: u16,
        _now: Instant,
    ) -> Result<Vec<u8>, ErrorKind> {
        if core.refusing || setup.request_type != 0xC0 || setup.request != 0 {
            return Err(ErrorKind::Pipe);
        }
        let mut answer = self.answer.clone().unwrap_or_else(|| vec![0]);
        answer.truncate(usize::from(length));
        Ok(answer)
    }

    fn control_out(
        &mut self,
        core: &mut Core,
        setup: Control,
        data: &[u8],
        _now: Instant,
    ) -> Result<usize, ErrorKind> {
        match (setup.request_type, setup.request) {
            (0x40, 0 | 1) => {
                if core.refusing {
                    return Err(ErrorKind::Pipe);
                }
                match Command::parse(data) {
                    Ok(command) => {
                        core.record.commands.push(command.to_string());
                        self.run(core, command);
                    }
                    Err(e) => self.say(&format!("bad command: {e}")),
                }
                Ok(data.len())
            }
            (0x41, 0) => {
                if core.refusing {
                    return Err(ErrorKind::Pipe);
                }
                self.upload.clear();
                self.upload_ended = false;
                self.upload_recorded = false;
                Ok(data.len())
            }
            _ => Err(ErrorKind::Pipe),
        }
    }

    fn bulk_out(
        &mut self,
        core: &mut Core,
        endpoint: u8,
        data: &[u8],
        _now: Instant,
    ) -> Result<usize, ErrorKind> {
        match endpoint {
            UPLOAD_ENDPOINT => {
                if data.is_empty() {
                    self.upload_ended = true;
                } else {
                    if self.upload_recorded {
                        // More bytes after an ended transfer: the record will cover them all.
                        self.upload_recorded = false;
                    }
                    self.upload.extend_from_slice(data);
                }
                // A short packet (or a zero-length one) ends the bulk transfer.
                if data.len() % UPLOAD_MAX_PACKET != 0 || data.is_empty() {
                    self.record_received(core);
                }
                Ok(data.len())
            }
            CONSOLE_OUT => Ok(data.len()),
            _ => Err(ErrorKind::NotFound),
        }
    }

    fn bulk_in(
        &mut self,
        _core: &mut Core,
        endpoint: u8,
        length: usize,
        _now: Instant,
    ) -> Result<Vec<u8>, ErrorKind> {
        if endpoint != CONSOLE_IN {
            return Err(ErrorKind::NotFound);
        }
        let Some(mut line) = self.console.pop_front() else {
            return Err(ErrorKind::Timeout);
        };
        if line.len() > length {
            let rest = line.split_off(length);
            self.console.push_front(rest);
        }
        Ok(line)
    }
}
