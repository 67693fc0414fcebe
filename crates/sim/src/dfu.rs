//! DFU mode, device side (SecureROM, or iBSS serving DFU on A12+): the DFU 1.1 state machine
//! on interface 0.
//!
//! | request | in state | goes to |
//! |---|---|---|
//! | DNLOAD with data (≤ wTransferSize) | dfuIDLE, dfuDNLOAD-IDLE, dfuDNLOAD-SYNC | dfuDNLOAD-SYNC |
//! | GETSTATUS | dfuDNLOAD-SYNC | dfuDNBUSY (`bwPollTimeout` = the busy time), then dfuDNLOAD-IDLE |
//! | DNLOAD, zero length | dfuDNLOAD-IDLE | dfuMANIFEST-SYNC |
//! | GETSTATUS | dfuMANIFEST-SYNC | suffix + CRC checked: dfuMANIFEST, or dfuERROR (errFILE) |
//! | GETSTATUS | dfuMANIFEST | dfuMANIFEST-WAIT-RESET |
//! | USB reset | dfuMANIFEST(-WAIT-RESET) | leaves the bus, boots the image |
//! | CLRSTATUS / ABORT | any | dfuIDLE, upload dropped |
//! | anything out of place | | stall (PIPE), dfuERROR (errSTALLEDPKT) |
//!
//! The image must end with the 16-byte suffix `ff ff ff ff ac 05 00 01 55 46 44 10` + CRC-32
//! (init 0xFFFFFFFF, no final xor) over everything before the CRC; Port DFU has no suffix.
//! A manifested image goes through the [`crate::check::ImageCheck`]: accepted, the phone
//! re-enumerates in the next stage (SecureROM → recovery(iBSS), or DFU(iBSS) on A12+; iBSS
//! DFU → recovery(iBEC)); refused, it comes back in DFU having booted nothing.

use std::time::{Duration, Instant};

use irecv::dfu::{State, Status, StatusReply, SUFFIX_LENGTH, SUFFIX_TAG};
use usb::{Control, ErrorKind, Transfer};

use crate::check::{ImageKind, Verdict};
use crate::fault::Point;
use crate::injector::Span;
use crate::phone::{Core, Mode, ModeHandler, RecoveryStage, Touches};
use crate::profile::DfuStage;

/// What happened at manifestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manifested {
    /// CRC good and the check accepted: boots at the reset.
    Boot,
    /// The check refused: nothing boots; the phone comes back in DFU at the reset.
    Refused,
}

/// The DFU device.
#[derive(Debug, Clone)]
pub struct DfuMode {
    stage: DfuStage,
    state: State,
    status: Status,
    image: Vec<u8>,
    blocks: u32,
    busy_until: Option<Instant>,
    manifested: Option<Manifested>,
}

impl DfuMode {
    /// A device in dfuIDLE.
    pub fn new(stage: DfuStage) -> Self {
        Self {
            stage,
            state: State::DfuIdle,
            status: Status::Ok,
            image: Vec::new(),
            blocks: 0,
            busy_until: None,
            manifested: None,
        }
    }

    /// The stage answering.
    pub fn stage(&self) -> DfuStage {
        self.stage
    }

    /// `bState`.
    pub fn state(&self) -> State {
        self.state
    }

    /// `bStatus`.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Bytes received in the current download.
    pub fn received(&self) -> usize {
        self.image.len()
    }

    /// Data blocks received in the current download.
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    fn transfer_size(&self) -> usize {
        match self.stage {
            DfuStage::Port => irecv::dfu::PORT_DFU_BLOCK_SIZE,
            _ => irecv::dfu::BLOCK_SIZE,
        }
    }

    fn error(&mut self, status: Status) {
        self.state = State::Error;
        self.status = status;
    }

    fn stall(&mut self) -> ErrorKind {
        self.error(Status::ErrStalledPkt);
        ErrorKind::Pipe
    }

    fn clear(&mut self) {
        self.state = State::DfuIdle;
        self.status = Status::Ok;
        self.image.clear();
        self.blocks = 0;
        self.busy_until = None;
        self.manifested = None;
    }

    fn reply(&self, poll: Duration) -> Vec<u8> {
        StatusReply {
            status: self.status,
            poll_timeout: poll,
            state: self.state,
            string_index: 0,
        }
        .to_bytes()
        .to_vec()
    }

    /// Checks the suffix; returns the payload.
    fn payload(&self) -> Option<&[u8]> {
        if self.stage == DfuStage::Port {
            return Some(&self.image);
        }
        let split = self.image.len().checked_sub(SUFFIX_LENGTH)?;
        let (payload, suffix) = self.image.split_at(split);
        let (tag, crc) = suffix.split_at(12);
        if tag != SUFFIX_TAG {
            return None;
        }
        let crc = u32::from_le_bytes(crc.try_into().ok()?);
        let covered = self.image.get(..self.image.len() - 4)?;
        (!crc32fast::hash(covered) == crc).then_some(payload)
    }

    fn manifest(&mut self, core: &mut Core) {
        let kind = ImageKind::Dfu(self.stage);
        let Some(payload) = self.payload() else {
            let image = std::mem::take(&mut self.image);
            core.record_image(
                kind,
                &image,
                Verdict::Refuse("DFU suffix or CRC mismatch".to_string()),
            );
            self.error(Status::ErrFile);
            return;
        };
        let payload = payload.to_vec();
        self.manifested = Some(match core.take_image(kind, &payload) {
            Verdict::Accept => Manifested::Boot,
            Verdict::Refuse(_) => Manifested::Refused,
        });
        self.state = State::Manifest;
    }

    fn next_mode(&self, core: &Core) -> Mode {
        match self.stage {
            DfuStage::SecureRom | DfuStage::Port if core.profile.chip.dfu_after_ibss => {
                Mode::Dfu(DfuStage::Ibss)
            }
            DfuStage::SecureRom | DfuStage::Port => Mode::Recovery(RecoveryStage::Ibss),
            DfuStage::Ibss => Mode::Recovery(RecoveryStage::Ibec),
        }
    }
}

const DNLOAD: u8 = 1;
const UPLOAD: u8 = 2;
const GETSTATUS: u8 = 3;
const CLRSTATUS: u8 = 4;
const GETSTATE: u8 = 5;
const ABORT: u8 = 6;

impl ModeHandler for DfuMode {
    fn touches(&self, core: &Core, transfer: &Transfer<'_>) -> Touches {
        match transfer {
            Transfer::ControlOut { setup, data }
                if setup.request_type == 0x21 && setup.request == DNLOAD =>
            {
                let before = self.image.len() as u64;
                Touches {
                    points: vec![Point::Dfu, Point::DfuUpload],
                    span: Some(Span {
                        before,
                        after: before + data.len() as u64,
                        total: core.upload_size(Point::DfuUpload),
                    }),
                }
            }
            _ => Touches {
                points: vec![Point::Dfu],
                span: None,
            },
        }
    }

    fn control_in(
        &mut self,
        core: &mut Core,
        setup: Control,
        length: u16,
        now: Instant,
    ) -> Result<Vec<u8>, ErrorKind> {
        if setup.request_type != 0xA1 {
            return Err(self.stall());
        }
        let mut out = match setup.request {
            GETSTATUS => {
                if core.refusing {
                    self.error(Status::ErrTarget);
                }
                let mut poll = Duration::ZERO;
                match self.state {
                    State::DnloadSync => {
                        let busy = core.timings.dfu_block_busy;
                        if busy.is_zero() {
                            self.state = State::DnloadIdle;
                        } else {
                            self.state = State::DnBusy;
                            self.busy_until = Some(now + busy);
                            poll = busy;
                        }
                    }
                    State::DnBusy => match self.busy_until {
                        Some(t) if now < t => poll = t - now,
                        _ => {
                            self.state = State::DnloadIdle;
                            self.busy_until = None;
                        }
                    },
                    State::ManifestSync => self.manifest(core),
                    State::Manifest => self.state = State::ManifestWaitReset,
                    _ => {}
                }
                self.reply(poll)
            }
            GETSTATE => vec![self.state as u8],
            UPLOAD => return Err(self.stall()),
            _ => return Err(self.stall()),
        };
        out.truncate(usize::from(length));
        Ok(out)
    }

    fn control_out(
        &mut self,
        core: &mut Core,
        setup: Control,
        data: &[u8],
        _now: Instant,
    ) -> Result<usize, ErrorKind> {
        if setup.request_type != 0x21 {
            return Err(self.stall());
        }
        match setup.request {
            DNLOAD => {
                if core.refusing {
                    self.error(Status::ErrTarget);
                    return Ok(data.len());
                }
                // dfuDNLOAD-SYNC too: libirecovery sends a last block that has no room for the
                // 16-byte suffix, then the suffix alone, with no GETSTATUS in between, and
                // SecureROM takes both (the VM bench's `irecovery -f` of a 256 KiB file).
                if !matches!(
                    self.state,
                    State::DfuIdle | State::DnloadIdle | State::DnloadSync
                ) {
                    return Err(self.stall());
                }
                if data.len() > self.transfer_size() {
                    return Err(self.stall());
                }
                if data.is_empty() {
                    if self.state == State::DfuIdle {
                        // Nothing to manifest.
                        self.error(Status::ErrNotDone);
                        return Err(ErrorKind::Pipe);
                    }
                    self.state = State::ManifestSync;
                    return Ok(0);
                }
                self.image.extend_from_slice(data);
                self.blocks += 1;
                self.state = State::DnloadSync;
                Ok(data.len())
            }
            CLRSTATUS | ABORT => {
                self.clear();
                Ok(0)
            }
            _ => Err(self.stall()),
        }
    }

    fn bulk_out(
        &mut self,
        _core: &mut Core,
        _endpoint: u8,
        _data: &[u8],
        _now: Instant,
    ) -> Result<usize, ErrorKind> {
        // DFU mode has no bulk endpoints.
        Err(ErrorKind::NotFound)
    }

    fn bulk_in(
        &mut self,
        _core: &mut Core,
        _endpoint: u8,
        _length: usize,
        _now: Instant,
    ) -> Result<Vec<u8>, ErrorKind> {
        Err(ErrorKind::NotFound)
    }

    fn reset(&mut self, core: &mut Core, _now: Instant) -> Result<(), ErrorKind> {
        let manifesting = matches!(self.state, State::Manifest | State::ManifestWaitReset);
        match (manifesting, self.manifested) {
            (true, Some(Manifested::Boot)) => {
                let next = self.next_mode(core);
                if self.stage != DfuStage::Ibss && core.profile.nonce_rolls_after_ibss {
                    core.profile.roll_ap_nonce();
                }
                core.reenumerate(next, core.timings.after_dfu, Some(Point::DfuUpload));
            }
            (true, Some(Manifested::Refused)) => {
                core.reenumerate(Mode::Dfu(self.stage), core.timings.after_refused_dfu, None);
            }
            _ => self.clear(),
        }
        Ok(())
    }

    fn stalled(&mut self, _core: &mut Core) {
        self.error(Status::ErrStalledPkt);
    }
}
