//! The virtual phone: one device that lives across modes (sans-IO).
//!
//! A [`Phone`] holds what survives a mode change (its [`Profile`], NVRAM, the record of what was
//! uploaded and shown, its fault state) and the state of the mode it is in now. The USB side is
//! plain calls with the time passed in: [`Phone::transfer`] answers one [`usb::Transfer`] the
//! way the current mode does (with the virtual time it took on the link), [`Phone::poll_event`]
//! says when it leaves the bus or arrives in a mode, and [`Phone::poll_timeout`] /
//! [`Phone::handle_timeout`] run its timers (re-enumeration after a mode change, spontaneous
//! panics, mux ACKs). It never reads a clock and never sleeps.
//!
//! Modes are a closed set ([`Mode`]) whose state lives in [`ModeState`]; each implements
//! [`ModeHandler`], which gets the [`Core`] (everything that is not mode state) to read the
//! profile, record uploads and ask for a bus change. Normal and restore mode plug in the same
//! way (`normal.rs`, `restore.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use usb::{standard_request, Completion, Control, ControlType, ErrorKind, Speed, Transfer};

use crate::check::{AcceptAll, ImageCheck, ImageContext, ImageKind, Verdict};
use crate::descriptors::{self, UsbIdentity};
use crate::dfu::DfuMode;
use crate::fault::{Action, FaultSpec, Point};
use crate::injector::{Faults, Span};
use crate::normal::NormalMode;
use crate::profile::{DfuStage, Profile};
use crate::recovery::RecoveryMode;
use crate::restore::RestoreMode;

/// Which iBoot stage answers in recovery mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecoveryStage {
    /// iBSS (after a DFU upload on devices before A12): can load iBEC and `go`, cannot `bootx`.
    Ibss,
    /// iBEC (after `go`, or after a DFU upload of iBEC): the restore stage.
    Ibec,
    /// The installed iBoot (EnterRecovery, auto-boot false, a panic).
    Iboot,
}

/// Where a phone is (or is going).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Normal iOS: usbmux + lockdownd.
    Normal,
    /// Recovery mode (iBoot).
    Recovery(RecoveryStage),
    /// DFU mode.
    Dfu(DfuStage),
    /// The restore ramdisk: usbmux + restored, normal-mode PIDs.
    Restore,
}

impl Mode {
    /// The fault point of this mode.
    pub fn point(self) -> Point {
        match self {
            Mode::Normal => Point::Normal,
            Mode::Recovery(_) => Point::Recovery,
            Mode::Dfu(_) => Point::Dfu,
            Mode::Restore => Point::RestoreMode,
        }
    }

    /// Short name (`recovery`, `dfu`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Recovery(_) => "recovery",
            Mode::Dfu(DfuStage::Port) => "port-dfu",
            Mode::Dfu(_) => "dfu",
            Mode::Restore => "restore",
        }
    }
}

/// What a phone did on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneEvent {
    /// It left the bus (unplugged, rebooting, changing mode).
    Left,
    /// It enumerated in `mode` with `product_id` at `speed`.
    Arrived {
        /// The mode.
        mode: Mode,
        /// `idProduct`.
        product_id: u16,
        /// Link speed.
        speed: Speed,
    },
}

/// A transfer's outcome and the virtual time it took on the link. A [`ErrorKind::Timeout`]
/// took the host's timeout, which the phone does not know: the driver adds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// What the host gets.
    pub result: Result<T, ErrorKind>,
    /// Time on the link.
    pub took: Duration,
}

/// How long a phone takes for each mode change: one table, in virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// DFU manifest + reset → the next stage enumerates.
    pub after_dfu: Duration,
    /// `go` → iBEC enumerates in recovery.
    pub after_go: Duration,
    /// `bootx` → the restore ramdisk enumerates.
    pub after_bootx: Duration,
    /// `reboot`/`reset` → iOS (or recovery) enumerates.
    pub after_reboot: Duration,
    /// lockdown EnterRecovery → recovery enumerates.
    pub after_enter_recovery: Duration,
    /// A panic → recovery enumerates.
    pub after_panic: Duration,
    /// A flap: away for this long.
    pub flap: Duration,
    /// Spontaneous panics and flaps strike this long after an arrival.
    pub spontaneous: Duration,
    /// An unplugged phone is plugged back in after this long (the technician re-seats the
    /// cable); `None` leaves it unplugged until [`Phone::replug`].
    pub replug: Option<Duration>,
    /// How long a DFU block stays in dfuDNBUSY (`bwPollTimeout`).
    pub dfu_block_busy: Duration,
    /// A phone that was refused an image in DFU comes back in DFU after this long.
    pub after_refused_dfu: Duration,
    /// Each step of a restore that is not a data request (partitioning, verifying,
    /// flashing) takes this long in restore mode.
    pub restore_step: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            after_dfu: Duration::from_secs(3),
            after_go: Duration::from_secs(4),
            after_bootx: Duration::from_secs(15),
            after_reboot: Duration::from_secs(30),
            after_enter_recovery: Duration::from_secs(10),
            after_panic: Duration::from_secs(12),
            flap: Duration::from_secs(2),
            spontaneous: Duration::from_secs(1),
            replug: Some(Duration::from_secs(5)),
            dfu_block_busy: Duration::from_millis(1),
            after_refused_dfu: Duration::from_secs(2),
            restore_step: Duration::from_secs(1),
        }
    }
}

/// How a phone starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Faults to inject.
    pub faults: FaultSpec,
    /// Seed of the fault generator (chance triggers).
    pub seed: u64,
    /// The mode it is in when plugged.
    pub start: Mode,
    /// Mode-change delays.
    pub timings: Timings,
    /// The size a progress trigger measures an upload against at each point: a device does
    /// not know an upload's size in advance. Byte triggers are exact. Defaults: DFU 1 MiB,
    /// recovery 8 MiB, restored 64 MiB of answers, ASR 4 GiB (ASR measures against the
    /// announced `Payload.Size` once the host sent it).
    pub upload_sizes: HashMap<Point, u64>,
}

impl Default for Options {
    fn default() -> Self {
        let mut upload_sizes = HashMap::new();
        upload_sizes.insert(Point::DfuUpload, 1 << 20);
        upload_sizes.insert(Point::RecoveryUpload, 8 << 20);
        // What the host sends restored (tickets, kernelcache, NOR images) in one restore.
        upload_sizes.insert(Point::Restored, 64 << 20);
        // Until the packet info announces the image size.
        upload_sizes.insert(Point::Asr, 4 << 30);
        Self {
            faults: FaultSpec::default(),
            seed: 0,
            start: Mode::Normal,
            timings: Timings::default(),
            upload_sizes,
        }
    }
}

/// One image the phone took in and what it did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// How it came.
    pub kind: ImageKind,
    /// Bytes (DFU suffix excluded).
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
    /// Whether the phone used it (CRC good, check accepted).
    pub accepted: bool,
    /// Why not, when refused.
    pub refusal: Option<String>,
}

/// A recovery-mode upload as it came off the wire, before any command used it: the bytes on
/// bulk OUT 0x04 after the upload request (`0x41`), up to the packet that ended the transfer
/// (short or zero-length). What `irecovery -f` sent, whether or not iBoot ever loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedUpload {
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

/// What the phone did that a bench (or a test) wants to see afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Every image taken in, in order.
    pub uploads: Vec<UploadRecord>,
    /// Every recovery-mode upload as it arrived, in order (see [`ReceivedUpload`]).
    pub received: Vec<ReceivedUpload>,
    /// The last `bgcolor`.
    pub bgcolor: Option<(u8, u8, u8)>,
    /// The last `setpicture`.
    pub picture: Option<u32>,
    /// Every recovery command received, as text.
    pub commands: Vec<String>,
    /// Every mode it arrived in, in order.
    pub arrivals: Vec<Mode>,
}

/// A bus change a mode asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reenumerate {
    pub into: Mode,
    pub after: Duration,
    /// The point whose `never-returns` faults apply.
    pub point: Option<Point>,
}

/// Everything of a phone except the state of its current mode.
pub struct Core {
    /// Who it is.
    pub profile: Profile,
    /// Saved environment (what `saveenv` wrote; read at boot).
    pub nvram: BTreeMap<String, String>,
    /// What it took in and showed.
    pub record: Record,
    /// Fault state.
    pub faults: Faults,
    /// Mode-change delays.
    pub timings: Timings,
    /// The personalization hook.
    pub image_check: Box<dyn ImageCheck>,
    /// Active configuration (`bConfigurationValue`, 0 unconfigured).
    pub active_configuration: u8,
    /// Set while the current transfer is struck by a `refuse` fault: the mode says no.
    pub refusing: bool,
    /// lockdownd's stored values (SetValue), kept across connections and reboots.
    pub lockdown: crate::normal::LockdownStore,
    pub(crate) upload_sizes: HashMap<Point, u64>,
    pub(crate) request: Option<Reenumerate>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("profile", &self.profile.product_type)
            .field("ecid", &self.profile.ecid)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Asks for the phone to leave the bus and come back in `into` after `after`; `point`
    /// names where `never-returns` faults apply.
    pub fn reenumerate(&mut self, into: Mode, after: Duration, point: Option<Point>) {
        self.request = Some(Reenumerate { into, after, point });
    }

    /// The mode a reboot ends in: normal unless the saved `auto-boot` is false.
    pub fn boot_target(&self) -> Mode {
        match self.nvram.get("auto-boot").map(String::as_str) {
            Some("false") => Mode::Recovery(RecoveryStage::Iboot),
            _ => Mode::Normal,
        }
    }

    /// Runs the personalization check on an image and records the result.
    pub fn take_image(&mut self, kind: ImageKind, data: &[u8]) -> Verdict {
        let p = &self.profile;
        let ctx = ImageContext {
            kind,
            data,
            ecid: p.ecid,
            chip_id: p.chip_id,
            board_id: p.board_id,
            ap_nonce: &p.ap_nonce,
            sep_nonce: p.sep_nonce.as_deref(),
        };
        let verdict = self.image_check.check(&ctx);
        self.record_image(kind, data, verdict.clone());
        verdict
    }

    /// Records an image without checking it (e.g. refused for a bad CRC).
    pub fn record_image(&mut self, kind: ImageKind, data: &[u8], verdict: Verdict) {
        use sha2::Digest;
        let sha256: [u8; 32] = sha2::Sha256::digest(data).into();
        let (accepted, refusal) = match verdict {
            Verdict::Accept => (true, None),
            Verdict::Refuse(why) => (false, Some(why)),
        };
        self.record.uploads.push(UploadRecord {
            kind,
            size: data.len() as u64,
            sha256,
            accepted,
            refusal,
        });
    }

    /// The size a progress trigger at `point` measures against.
    pub fn upload_size(&self, point: Point) -> u64 {
        self.upload_sizes.get(&point).copied().unwrap_or(1 << 20)
    }
}

/// Which fault points a transfer touches (besides `link`), and where it stands in an upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touches {
    /// Points, e.g. `[Dfu, DfuUpload]`.
    pub points: Vec<Point>,
    /// For upload transfers: the bytes before/after and the expected total.
    pub span: Option<Span>,
}

/// One mode's device side. Standard requests (descriptors, configuration) are answered by the
/// [`Phone`]; a handler sees class and vendor requests, bulk transfers and resets.
pub trait ModeHandler {
    /// Which fault points `transfer` touches.
    fn touches(&self, core: &Core, transfer: &Transfer<'_>) -> Touches;
    /// A class or vendor control IN. A mode that defines none stalls it, as a phone does.
    fn control_in(
        &mut self,
        _core: &mut Core,
        _setup: Control,
        _length: u16,
        _now: Instant,
    ) -> Result<Vec<u8>, ErrorKind> {
        Err(ErrorKind::Pipe)
    }
    /// A class or vendor control OUT. A mode that defines none stalls it, as a phone does.
    fn control_out(
        &mut self,
        _core: &mut Core,
        _setup: Control,
        _data: &[u8],
        _now: Instant,
    ) -> Result<usize, ErrorKind> {
        Err(ErrorKind::Pipe)
    }
    /// Bulk OUT.
    fn bulk_out(
        &mut self,
        core: &mut Core,
        endpoint: u8,
        data: &[u8],
        now: Instant,
    ) -> Result<usize, ErrorKind>;
    /// Bulk IN.
    fn bulk_in(
        &mut self,
        core: &mut Core,
        endpoint: u8,
        length: usize,
        now: Instant,
    ) -> Result<Vec<u8>, ErrorKind>;
    /// A USB port reset.
    fn reset(&mut self, _core: &mut Core, _now: Instant) -> Result<(), ErrorKind> {
        Ok(())
    }
    /// A transfer was stalled by a fault (DFU enters dfuERROR).
    fn stalled(&mut self, _core: &mut Core) {}
    /// The next instant [`ModeHandler::handle_timeout`] is due.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// Runs due timers.
    fn handle_timeout(&mut self, _core: &mut Core, _now: Instant) {}
    /// Bytes a bulk IN read would find ready now (the mux packets the mode has to send).
    fn in_pending(&mut self) -> usize {
        0
    }
}

/// The state of the current mode.
#[derive(Debug)]
pub enum ModeState {
    /// Normal iOS.
    Normal(NormalMode),
    /// iBoot.
    Recovery(RecoveryMode),
    /// SecureROM / iBSS DFU.
    Dfu(DfuMode),
    /// The restore ramdisk (boxed: its restore state is the largest).
    Restore(Box<RestoreMode>),
}

impl ModeState {
    fn new(mode: Mode, core: &mut Core, now: Instant) -> Self {
        match mode {
            Mode::Normal => ModeState::Normal(NormalMode::new(core, now)),
            Mode::Recovery(stage) => ModeState::Recovery(RecoveryMode::new(stage, core)),
            Mode::Dfu(stage) => ModeState::Dfu(DfuMode::new(stage)),
            Mode::Restore => ModeState::Restore(Box::new(RestoreMode::new(core, now))),
        }
    }

    fn handler(&mut self) -> &mut dyn ModeHandler {
        match self {
            ModeState::Normal(m) => m,
            ModeState::Recovery(m) => m,
            ModeState::Dfu(m) => m,
            ModeState::Restore(m) => m.as_mut(),
        }
    }

    fn handler_ref(&self) -> &dyn ModeHandler {
        match self {
            ModeState::Normal(m) => m,
            ModeState::Recovery(m) => m,
            ModeState::Dfu(m) => m,
            ModeState::Restore(m) => m.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Arrive(Mode),
    Panic,
    Flap,
}

/// Bytes per second a link moves at each speed (effective bulk throughput).
pub fn link_rate(speed: Speed) -> u64 {
    match speed {
        Speed::Low => 100_000,
        Speed::Full => 1_000_000,
        _ => 40_000_000,
    }
}

/// A virtual iPhone.
pub struct Phone {
    core: Core,
    mode: Mode,
    state: ModeState,
    identity: UsbIdentity,
    on_bus: bool,
    generation: u64,
    speed: Speed,
    cable_full_speed: bool,
    timers: Vec<(Instant, Timer)>,
    events: VecDeque<PhoneEvent>,
    /// The alternate setting selected per interface.
    alt_settings: BTreeMap<u8, u8>,
    bytes_moved: u64,
    link_busy: Duration,
    transfers: u64,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phone")
            .field("mode", &self.mode)
            .field("on_bus", &self.on_bus)
            .field("generation", &self.generation)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl Phone {
    /// A phone that is not plugged in yet; [`Phone::plug`] makes it arrive.
    pub fn new(profile: Profile, options: Options, now: Instant) -> Phone {
        let mut core = Core {
            faults: Faults::new(options.faults, options.seed ^ profile.ecid),
            profile,
            nvram: BTreeMap::new(),
            record: Record::default(),
            timings: options.timings,
            image_check: Box::new(AcceptAll),
            active_configuration: 0,
            refusing: false,
            upload_sizes: options.upload_sizes,
            lockdown: crate::normal::LockdownStore::default(),
            request: None,
        };
        for (k, v) in default_nvram(&core.profile) {
            core.nvram.insert(k.to_string(), v);
        }
        let mode = options.start;
        let state = ModeState::new(mode, &mut core, now);
        let identity = identity_for(mode, &core.profile);
        Phone {
            core,
            mode,
            state,
            identity,
            on_bus: false,
            generation: 0,
            speed: Speed::High,
            cable_full_speed: false,
            timers: Vec::new(),
            events: VecDeque::new(),
            alt_settings: BTreeMap::new(),
            bytes_moved: 0,
            link_busy: Duration::ZERO,
            transfers: 0,
        }
    }

    /// Replaces the personalization check (default: accept everything).
    pub fn set_image_check(&mut self, check: Box<dyn ImageCheck>) {
        self.core.image_check = check;
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.core.profile
    }

    /// Persistent state, record, faults.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The mode it is in (or last was, when off the bus).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The state of the current mode.
    pub fn mode_state(&self) -> &ModeState {
        &self.state
    }

    /// The state of the current mode, mutable (for the mode modules' own APIs).
    pub fn mode_state_mut(&mut self) -> (&mut ModeState, &mut Core) {
        (&mut self.state, &mut self.core)
    }

    /// What it presents on the bus now.
    pub fn identity(&self) -> &UsbIdentity {
        &self.identity
    }

    /// Whether it is enumerated.
    pub fn is_on_bus(&self) -> bool {
        self.on_bus
    }

    /// Counts enumerations: a handle opened in one is dead in the next.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Link speed of the current enumeration.
    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// Time the link was busy with this phone's transfers (bytes at the link rate plus each
    /// transfer's fixed cost), over the phone's life.
    pub fn link_busy(&self) -> Duration {
        self.link_busy
    }

    /// Transfers carried out over the phone's life (each costs the link its fixed
    /// per-transfer time besides its bytes).
    pub fn transfers(&self) -> u64 {
        self.transfers
    }

    /// Bytes moved in either direction on the bus, over the phone's life.
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_moved
    }

    /// The port's cable: a full-speed cable makes every enumeration full speed.
    pub fn set_cable_full_speed(&mut self, full: bool) {
        self.cable_full_speed = full;
    }

    /// The phone is plugged in: it enumerates now in its mode.
    pub fn plug(&mut self, now: Instant) {
        if !self.on_bus {
            self.timers.retain(|(_, t)| !matches!(t, Timer::Arrive(_)));
            self.arrive(self.mode, now);
        }
    }

    /// The cable is pulled: it leaves the bus and stays away.
    pub fn unplug(&mut self) {
        self.timers.clear();
        self.leave();
    }

    /// Plugs an unplugged phone back in (in the mode it was in; a restore in progress ends in
    /// recovery).
    pub fn replug(&mut self, now: Instant) {
        if self.on_bus
            || self
                .timers
                .iter()
                .any(|(_, t)| matches!(t, Timer::Arrive(_)))
        {
            return;
        }
        let mode = self.replug_mode();
        self.arrive(mode, now);
    }

    fn replug_mode(&self) -> Mode {
        match self.mode {
            Mode::Restore => Mode::Recovery(RecoveryStage::Iboot),
            m => m,
        }
    }

    /// The technician's button sequence for DFU mode: the phone leaves the bus (whatever it
    /// was doing) and enumerates in DFU mode (SecureROM) `after` later. A phone that is not
    /// on the bus (a cable pulled) is left alone.
    pub fn enter_dfu(&mut self, now: Instant, after: Duration) {
        if !self.on_bus {
            return;
        }
        self.timers.clear();
        self.leave();
        self.schedule_arrival(Mode::Dfu(DfuStage::SecureRom), now + after);
    }

    /// The technician's force restart: the phone leaves the bus (whatever it was doing) and
    /// boots `after` later: into recovery when a restore was under way (the restore ramdisk
    /// has wiped what iOS it had), else to its boot target. A phone off the bus is left alone.
    pub fn force_restart(&mut self, now: Instant, after: Duration) {
        if !self.on_bus {
            return;
        }
        let into = match self.mode {
            Mode::Restore => Mode::Recovery(RecoveryStage::Iboot),
            _ => self.core.boot_target(),
        };
        self.timers.clear();
        self.leave();
        self.schedule_arrival(into, now + after);
    }

    /// The next bus event.
    pub fn poll_event(&mut self) -> Option<PhoneEvent> {
        self.events.pop_front()
    }

    /// When [`Phone::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = self.timers.iter().map(|(t, _)| *t).min();
        let mode = if self.on_bus {
            self.state.handler_ref().poll_timeout()
        } else {
            None
        };
        match (own, mode) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        loop {
            let due = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, (t, _))| *t <= now)
                .min_by_key(|(_, (t, _))| *t)
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let (at, timer) = self.timers.remove(i);
            match timer {
                Timer::Arrive(mode) => self.arrive(mode, at),
                Timer::Panic if self.on_bus => self.panic(at),
                Timer::Flap if self.on_bus => self.flap(at),
                Timer::Panic | Timer::Flap => {}
            }
        }
        if self.on_bus {
            let h = self.state.handler();
            if h.poll_timeout().is_some_and(|t| t <= now) {
                h.handle_timeout(&mut self.core, now);
                self.apply_request(now);
            }
        }
    }

    fn leave(&mut self) {
        if self.on_bus {
            self.on_bus = false;
            self.events.push_back(PhoneEvent::Left);
        }
        // Spontaneous faults belong to the enumeration that just ended.
        self.timers.retain(|(_, t)| matches!(t, Timer::Arrive(_)));
    }

    fn arrive(&mut self, mode: Mode, now: Instant) {
        self.mode = mode;
        self.state = ModeState::new(mode, &mut self.core, now);
        self.identity = identity_for(mode, &self.core.profile);
        self.generation += 1;
        self.on_bus = true;
        self.core.active_configuration = 1;
        self.alt_settings.clear();
        self.core.record.arrivals.push(mode);
        let actions = self.core.faults.on_arrival(&[Point::Link, mode.point()]);
        let full = self.cable_full_speed || actions.contains(&Action::FullSpeed);
        self.speed = if full { Speed::Full } else { Speed::High };
        let soon = now + self.core.timings.spontaneous;
        if actions.contains(&Action::Panic) {
            self.timers.push((soon, Timer::Panic));
        } else if actions.contains(&Action::Flap) {
            self.timers.push((soon, Timer::Flap));
        }
        self.events.push_back(PhoneEvent::Arrived {
            mode,
            product_id: self.identity.product_id(),
            speed: self.speed,
        });
    }

    fn schedule_arrival(&mut self, mode: Mode, at: Instant) {
        self.timers.push((at, Timer::Arrive(mode)));
    }

    fn panic(&mut self, now: Instant) {
        self.leave();
        let at = now + self.core.timings.after_panic;
        self.schedule_arrival(Mode::Recovery(RecoveryStage::Iboot), at);
    }

    fn flap(&mut self, now: Instant) {
        self.leave();
        let at = now + self.core.timings.flap;
        self.schedule_arrival(self.replug_mode(), at);
    }

    fn pulled(&mut self, now: Instant) {
        self.leave();
        if let Some(after) = self.core.timings.replug {
            let mode = self.replug_mode();
            self.schedule_arrival(mode, now + after);
        }
    }

    fn apply_request(&mut self, now: Instant) {
        let Some(r) = self.core.request.take() else {
            return;
        };
        let never = r.point.is_some_and(|p| self.core.faults.on_mode_change(p));
        self.leave();
        if !never {
            self.schedule_arrival(r.into, now + r.after);
        }
    }

    /// The fixed cost of one transfer on this link: the host's turnaround between a transfer
    /// it waited for and the next one it submits (one microframe at high speed, one frame
    /// below). A transfer queued behind another one does not pay it: the host controller
    /// moves straight on, and a bulk IN read that was pending when the data came does not
    /// hold the link either.
    pub fn turnaround(&self) -> Duration {
        if self.speed == Speed::High {
            Duration::from_micros(125)
        } else {
            Duration::from_millis(1)
        }
    }

    /// Bytes a bulk IN read would find ready now (the mux packets of a normal or restore
    /// mode phone; 0 in the modes that answer on the control endpoint).
    pub fn in_pending(&mut self) -> usize {
        if !self.on_bus {
            return 0;
        }
        self.state.handler().in_pending()
    }

    /// The rate a transfer at these points moves at: the link speed, capped by `slow` faults.
    fn duration(&self, bytes: usize, slow: Option<u64>) -> Duration {
        let mut rate = link_rate(self.speed);
        if let Some(cap) = slow {
            rate = rate.min(cap.max(1));
        }
        let nanos = (bytes as u128 * 1_000_000_000) / u128::from(rate);
        self.turnaround() + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Answers one transfer at `now`.
    pub fn transfer(&mut self, transfer: Transfer<'_>, now: Instant) -> Answer<Completion> {
        self.handle_timeout(now);
        if !self.on_bus {
            return Answer {
                result: Err(ErrorKind::NoDevice),
                took: Duration::ZERO,
            };
        }
        let standard = match transfer {
            Transfer::ControlIn { setup, .. } | Transfer::ControlOut { setup, .. } => {
                setup.control_type() == ControlType::Standard
            }
            _ => false,
        };
        let touches = if standard || transfer == Transfer::Reset {
            Touches::default()
        } else {
            self.state.handler_ref().touches(&self.core, &transfer)
        };
        let mut points = vec![Point::Link];
        points.extend(touches.points.iter().copied());
        let actions = self.core.faults.on_transfer(&points, touches.span);

        let slow = actions
            .iter()
            .filter_map(|a| match a {
                Action::Slow { bytes_per_sec } => Some(*bytes_per_sec),
                _ => None,
            })
            .min();
        let out_len = match transfer {
            Transfer::ControlOut { data, .. } | Transfer::BulkOut { data, .. } => data.len(),
            _ => 0,
        };
        let fail = |kind, took| Answer {
            result: Err(kind),
            took,
        };
        // The symptoms, strongest first.
        if actions.contains(&Action::Unplug) {
            self.pulled(now);
            return fail(ErrorKind::NoDevice, self.duration(out_len / 2, slow));
        }
        if actions.contains(&Action::Panic) {
            self.panic(now);
            return fail(ErrorKind::NoDevice, self.duration(out_len / 2, slow));
        }
        if actions.contains(&Action::Flap) {
            self.flap(now);
            return fail(ErrorKind::NoDevice, self.duration(out_len / 2, slow));
        }
        if actions.contains(&Action::Timeout) {
            return fail(ErrorKind::Timeout, Duration::ZERO);
        }
        if actions.contains(&Action::Stall) {
            self.state.handler().stalled(&mut self.core);
            return fail(ErrorKind::Pipe, self.duration(0, slow));
        }
        if actions.contains(&Action::IoError) {
            return fail(ErrorKind::Io, self.duration(out_len, slow));
        }
        let corrupt = actions.contains(&Action::Corrupt);
        self.core.refusing = actions.contains(&Action::Refuse);

        let mut buffer;
        let result = match transfer {
            Transfer::ControlIn { setup, length } if standard => {
                self.standard_in(setup, length).map(Completion::In)
            }
            Transfer::ControlOut { setup, data } if standard => self
                .standard_out(setup, data)
                .map(|written| Completion::Out { written }),
            Transfer::ControlIn { setup, length } => self
                .state
                .handler()
                .control_in(&mut self.core, setup, length, now)
                .map(Completion::In),
            Transfer::ControlOut { setup, data } => {
                let data = if corrupt {
                    buffer = data.to_vec();
                    corrupt_bytes(&mut buffer);
                    &buffer[..]
                } else {
                    data
                };
                self.state
                    .handler()
                    .control_out(&mut self.core, setup, data, now)
                    .map(|written| Completion::Out { written })
            }
            Transfer::BulkOut { endpoint, data } => {
                let data = if corrupt {
                    buffer = data.to_vec();
                    corrupt_bytes(&mut buffer);
                    &buffer[..]
                } else {
                    data
                };
                self.state
                    .handler()
                    .bulk_out(&mut self.core, endpoint, data, now)
                    .map(|written| Completion::Out { written })
            }
            Transfer::BulkIn { endpoint, length } => {
                let r = self
                    .state
                    .handler()
                    .bulk_in(&mut self.core, endpoint, length, now);
                r.map(|mut bytes| {
                    if corrupt {
                        corrupt_bytes(&mut bytes);
                    }
                    Completion::In(bytes)
                })
            }
            Transfer::Reset => self
                .state
                .handler()
                .reset(&mut self.core, now)
                .map(|()| Completion::Reset),
        };
        self.core.refusing = false;
        let moved = match &result {
            Ok(Completion::In(b)) => b.len(),
            Ok(Completion::Out { written }) => *written,
            _ => out_len,
        };
        self.bytes_moved += moved as u64;
        self.transfers += 1;
        let took = self.duration(moved, slow);
        self.link_busy += took;
        self.apply_request(now);
        Answer { result, took }
    }

    /// Control IN (`transfer` for one request).
    pub fn control_in(&mut self, setup: Control, length: u16, now: Instant) -> Answer<Vec<u8>> {
        let a = self.transfer(Transfer::ControlIn { setup, length }, now);
        Answer {
            result: a.result.and_then(|c| match c {
                Completion::In(bytes) => Ok(bytes),
                _ => Err(ErrorKind::Other),
            }),
            took: a.took,
        }
    }

    /// Control OUT with `data` as the data stage.
    pub fn control_out(&mut self, setup: Control, data: &[u8], now: Instant) -> Answer<usize> {
        let a = self.transfer(Transfer::ControlOut { setup, data }, now);
        written(a)
    }

    /// Bulk OUT to `endpoint`; empty `data` is a zero-length packet.
    pub fn bulk_out(&mut self, endpoint: u8, data: &[u8], now: Instant) -> Answer<usize> {
        let a = self.transfer(Transfer::BulkOut { endpoint, data }, now);
        written(a)
    }

    /// Bulk IN of up to `length` bytes from `endpoint`.
    pub fn bulk_in(&mut self, endpoint: u8, length: usize, now: Instant) -> Answer<Vec<u8>> {
        let a = self.transfer(Transfer::BulkIn { endpoint, length }, now);
        Answer {
            result: a.result.and_then(|c| match c {
                Completion::In(bytes) => Ok(bytes),
                _ => Err(ErrorKind::Other),
            }),
            took: a.took,
        }
    }

    /// USB port reset.
    pub fn reset(&mut self, now: Instant) -> Answer<()> {
        let a = self.transfer(Transfer::Reset, now);
        Answer {
            result: a.result.map(|_| ()),
            took: a.took,
        }
    }

    fn standard_in(&mut self, setup: Control, length: u16) -> Result<Vec<u8>, ErrorKind> {
        let mut out = match setup.request {
            standard_request::GET_DESCRIPTOR => {
                let [index, ty] = setup.value.to_le_bytes();
                match ty {
                    1 => self.identity.device.to_vec(),
                    2 => self
                        .identity
                        .configurations
                        .get(usize::from(index))
                        .cloned()
                        .ok_or(ErrorKind::Pipe)?,
                    3 if index == 0 => vec![4, 3, 0x09, 0x04],
                    3 => {
                        let text = self.identity.string(index).ok_or(ErrorKind::Pipe)?;
                        usb::string::encode(text).map_err(|_| ErrorKind::Pipe)?
                    }
                    _ => return Err(ErrorKind::Pipe),
                }
            }
            standard_request::GET_CONFIGURATION => vec![self.core.active_configuration],
            standard_request::GET_STATUS => vec![0, 0],
            _ => return Err(ErrorKind::Pipe),
        };
        out.truncate(usize::from(length));
        Ok(out)
    }

    fn standard_out(&mut self, setup: Control, _data: &[u8]) -> Result<usize, ErrorKind> {
        match setup.request {
            standard_request::SET_CONFIGURATION => {
                let value = (setup.value & 0xff) as u8;
                if value != 0 && self.identity.configuration(value).is_none() {
                    return Err(ErrorKind::Pipe);
                }
                self.core.active_configuration = value;
                self.alt_settings.clear();
                Ok(0)
            }
            standard_request::SET_INTERFACE => {
                let interface = (setup.index & 0xff) as u8;
                let alt = (setup.value & 0xff) as u8;
                if !self.identity.has_interface(
                    self.core.active_configuration,
                    interface,
                    Some(alt),
                ) {
                    return Err(ErrorKind::Pipe);
                }
                self.alt_settings.insert(interface, alt);
                Ok(0)
            }
            // CLEAR_FEATURE (endpoint halt) and SET_FEATURE: nothing to clear here.
            1 | 3 => Ok(0),
            _ => Err(ErrorKind::Pipe),
        }
    }

    /// The alternate setting selected on `interface`.
    pub fn alt_setting(&self, interface: u8) -> u8 {
        self.alt_settings.get(&interface).copied().unwrap_or(0)
    }
}

fn written(a: Answer<Completion>) -> Answer<usize> {
    Answer {
        result: a.result.and_then(|c| match c {
            Completion::Out { written } => Ok(written),
            _ => Err(ErrorKind::Other),
        }),
        took: a.took,
    }
}

fn corrupt_bytes(bytes: &mut [u8]) {
    let mid = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(mid) {
        *b ^= 0x5A;
    }
}

fn identity_for(mode: Mode, profile: &Profile) -> UsbIdentity {
    match mode {
        Mode::Normal | Mode::Restore => descriptors::normal(profile),
        Mode::Recovery(_) => descriptors::recovery(profile),
        Mode::Dfu(stage) => descriptors::dfu(profile, stage),
    }
}

fn default_nvram(profile: &Profile) -> Vec<(&'static str, String)> {
    vec![
        ("auto-boot", "true".to_string()),
        ("boot-args", String::new()),
        ("build-style", "RELEASE".to_string()),
        ("build-version", profile.iboot_version.clone()),
        ("config_board", profile.board_config.clone()),
        ("idle-off", "true".to_string()),
        ("loadaddr", "0x800000000".to_string()),
        ("display-timeout", "0".to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(start: Mode, faults: &str) -> (Phone, Instant) {
        let now = Instant::now();
        let profile = Profile::for_product_type("iPhone10,3", 1).unwrap();
        let options = Options {
            start,
            faults: if faults.is_empty() {
                FaultSpec::default()
            } else {
                faults.parse().unwrap()
            },
            ..Options::default()
        };
        (Phone::new(profile, options, now), now)
    }

    fn command(p: &mut Phone, text: &str, now: Instant) -> Answer<Completion> {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        p.transfer(
            Transfer::ControlOut {
                setup: Control::new(0x40, 0, 0, 0),
                data: &data,
            },
            now,
        )
    }

    #[test]
    fn sans_io_reboot_leaves_then_arrives_when_the_timer_runs() {
        let (mut p, now) = phone(Mode::Recovery(RecoveryStage::Iboot), "");
        assert_eq!(p.poll_event(), None, "not plugged yet");
        p.plug(now);
        assert!(matches!(
            p.poll_event(),
            Some(PhoneEvent::Arrived {
                product_id: 0x1281,
                speed: Speed::High,
                ..
            })
        ));
        // Not saved: the reboot still boots iOS.
        let set = command(&mut p, "setenv auto-boot false", now);
        assert_eq!(set.result, Ok(Completion::Out { written: 23 }));
        let a = p.control_out(Control::new(0x40, 1, 0, 0), b"reboot\0", now);
        assert_eq!(a.result, Ok(7));
        assert!(a.took > Duration::ZERO);
        assert_eq!(p.poll_event(), Some(PhoneEvent::Left));
        let due = p.poll_timeout().unwrap();
        assert_eq!(due, now + Timings::default().after_reboot);
        p.handle_timeout(due - Duration::from_millis(1));
        assert_eq!(p.poll_event(), None);
        p.handle_timeout(due);
        assert!(matches!(
            p.poll_event(),
            Some(PhoneEvent::Arrived {
                mode: Mode::Normal,
                product_id: 0x12A8,
                ..
            })
        ));
        assert_eq!(p.generation(), 2);
        assert_eq!(
            p.core().record.commands,
            ["setenv auto-boot false", "reboot"]
        );
    }

    #[test]
    fn a_phone_off_the_bus_answers_no_device_and_replug_returns() {
        let (mut p, now) = phone(Mode::Dfu(DfuStage::SecureRom), "");
        p.plug(now);
        p.unplug();
        assert_eq!(p.reset(now).result, Err(ErrorKind::NoDevice));
        assert_eq!(p.bulk_in(0x81, 64, now).result, Err(ErrorKind::NoDevice));
        assert_eq!(p.poll_timeout(), None, "a pulled cable stays pulled");
        p.replug(now);
        assert!(p.is_on_bus());
        assert_eq!(p.mode(), Mode::Dfu(DfuStage::SecureRom));
        let events: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn the_dfu_button_sequence_takes_a_recovery_phone_to_dfu_after_the_delay() {
        let (mut p, now) = phone(Mode::Recovery(RecoveryStage::Iboot), "");
        p.plug(now);
        let generation = p.generation();
        p.enter_dfu(now, Duration::from_secs(1));
        assert!(!p.is_on_bus(), "it leaves the bus at once");
        assert_eq!(p.poll_timeout(), Some(now + Duration::from_secs(1)));
        p.handle_timeout(now + Duration::from_millis(999));
        assert!(!p.is_on_bus());
        p.handle_timeout(now + Duration::from_secs(1));
        assert!(p.is_on_bus());
        assert_eq!(p.mode(), Mode::Dfu(DfuStage::SecureRom));
        assert_eq!(p.generation(), generation + 1);
        // A phone whose cable is pulled does not answer the buttons.
        p.unplug();
        p.enter_dfu(now, Duration::ZERO);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn a_force_restart_takes_a_phone_out_of_restore_mode_into_recovery() {
        let (mut p, now) = phone(Mode::Restore, "");
        p.plug(now);
        p.force_restart(now, Duration::from_millis(500));
        assert!(!p.is_on_bus());
        p.handle_timeout(now + Duration::from_millis(500));
        assert_eq!(p.mode(), Mode::Recovery(RecoveryStage::Iboot));
        // From iOS it boots iOS again.
        let (mut p, now) = phone(Mode::Normal, "");
        p.plug(now);
        p.force_restart(now, Duration::ZERO);
        p.handle_timeout(now);
        assert_eq!(p.mode(), Mode::Normal);
    }

    #[test]
    fn standard_requests_serve_the_mode_identity() {
        let (mut p, now) = phone(Mode::Dfu(DfuStage::SecureRom), "link:stall@#2x1");
        p.plug(now);
        let get = |p: &mut Phone, value: u16, index: u16| {
            p.transfer(
                Transfer::ControlIn {
                    setup: Control::new(0x80, 6, value, index),
                    length: 255,
                },
                now,
            )
            .result
        };
        let Ok(Completion::In(device)) = get(&mut p, 0x0100, 0) else {
            panic!()
        };
        assert_eq!(device, p.identity().device);
        assert_eq!(get(&mut p, 0x0200, 0), Err(ErrorKind::Pipe), "the fault");
        let Ok(Completion::In(config)) = get(&mut p, 0x0200, 0) else {
            panic!()
        };
        assert_eq!(config.len(), 25);
        assert_eq!(
            get(&mut p, 0x0201, 0),
            Err(ErrorKind::Pipe),
            "one configuration"
        );
        let Ok(Completion::In(s)) = get(&mut p, 0x0304, 0x0409) else {
            panic!()
        };
        assert!(usb::string::decode(&s)
            .unwrap()
            .contains("SRTG:[iBoot-3332"));
    }
}
