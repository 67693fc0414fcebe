//! The phases of a restore and the one table of their deadlines.
//!
//! Every wait in a restore is a wait for an event (the same ECID back on the bus in the
//! expected mode, a message from restored, a transfer's completion) with the deadline of the
//! phase it belongs to. The references wait with fixed sleeps and timeouts scattered through
//! the code (10 s, 60 s, 300 s, 2 s after `ramdisk`); here they are one table, each entry
//! with the reason for its size, and a bench with slow phones can scale them all at once.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What a restore is doing, or waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Asking Apple's signing server (or the configured one) for a ticket.
    Personalize,
    /// lockdown `EnterRecovery` sent: waiting for the phone to come back in recovery.
    EnterRecovery,
    /// iBSS sent over DFU (before A12): waiting for recovery mode (iBSS).
    IbssBootRecovery,
    /// iBSS sent over DFU (A12 and later): waiting for DFU mode again (iBSS's DFU).
    IbssBootDfu,
    /// iBEC started: waiting for recovery mode (iBEC).
    IbecBoot,
    /// A component going to the phone (DFU or recovery upload).
    Upload,
    /// `bootx` sent: waiting for the restore ramdisk (restore mode, restored on 62078).
    RamdiskBoot,
    /// restored's message loop and the ASR stream; the deadline is for silence, not total.
    Restore,
    /// Final status received: waiting for the phone to boot the new iOS.
    FinalReboot,
}

impl Phase {
    /// Every phase, in the order a restore from normal mode meets them.
    pub const ALL: [Phase; 9] = [
        Phase::Personalize,
        Phase::EnterRecovery,
        Phase::IbssBootRecovery,
        Phase::IbssBootDfu,
        Phase::IbecBoot,
        Phase::Upload,
        Phase::RamdiskBoot,
        Phase::Restore,
        Phase::FinalReboot,
    ];

    /// The name used in events, the API and the history.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Personalize => "personalize",
            Phase::EnterRecovery => "enter-recovery",
            Phase::IbssBootRecovery => "ibss-boot-recovery",
            Phase::IbssBootDfu => "ibss-boot-dfu",
            Phase::IbecBoot => "ibec-boot",
            Phase::Upload => "upload",
            Phase::RamdiskBoot => "ramdisk-boot",
            Phase::Restore => "restore",
            Phase::FinalReboot => "final-reboot",
        }
    }

    /// The mode the phone must come back in to end this wait, for the waiting phases.
    pub fn awaited_mode(self) -> Option<AwaitedMode> {
        match self {
            Phase::EnterRecovery => Some(AwaitedMode::Recovery),
            Phase::IbssBootRecovery | Phase::IbecBoot => Some(AwaitedMode::Recovery),
            Phase::IbssBootDfu => Some(AwaitedMode::Dfu),
            Phase::RamdiskBoot => Some(AwaitedMode::Restore),
            Phase::FinalReboot => Some(AwaitedMode::Normal),
            Phase::Personalize | Phase::Upload | Phase::Restore => None,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The mode a waiting phase expects the phone in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AwaitedMode {
    /// iOS (lockdownd).
    Normal,
    /// Recovery (iBoot, iBSS or iBEC).
    Recovery,
    /// DFU.
    Dfu,
    /// The restore ramdisk (restored).
    Restore,
}

/// Per-phase deadlines: the one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Deadlines {
    /// A signing request, all retries included.
    pub personalize: Duration,
    /// "Trust this computer?" showing on a normal-mode phone (lockdown `Pair` answered
    /// `PairingDialogResponsePending`), within [`Phase::EnterRecovery`]: a person has to walk
    /// over and tap it, and may have to unlock the phone first.
    pub pair: Duration,
    /// Normal → recovery: iOS shuts down and iBoot starts (slow phones take most of a minute).
    pub enter_recovery: Duration,
    /// iBSS booting after a DFU upload (seconds on a healthy phone).
    pub ibss_boot: Duration,
    /// iBEC booting after `go` or a DFU upload.
    pub ibec_boot: Duration,
    /// One component upload going silent (no progress) for this long fails it.
    pub upload_stall: Duration,
    /// `bootx` to restored answering: the kernel boots the ramdisk (old phones are slow).
    pub ramdisk_boot: Duration,
    /// restored silent for this long (no message, no ASR progress) fails the restore; a
    /// filesystem step can be quiet for minutes.
    pub restore_stall: Duration,
    /// Final status to the new iOS enumerating (first boot after an erase migrates data).
    pub final_reboot: Duration,
    /// A person asked to do something at the phone between attempts (put it in DFU mode, move
    /// it to another port): they may be busy with another phone first.
    pub operator: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            personalize: Duration::from_secs(60),
            pair: Duration::from_secs(120),
            enter_recovery: Duration::from_secs(90),
            ibss_boot: Duration::from_secs(30),
            ibec_boot: Duration::from_secs(30),
            upload_stall: Duration::from_secs(30),
            ramdisk_boot: Duration::from_secs(180),
            restore_stall: Duration::from_secs(600),
            final_reboot: Duration::from_secs(600),
            operator: Duration::from_secs(600),
        }
    }
}

impl Deadlines {
    /// The deadline of `phase`.
    pub fn of(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Personalize => self.personalize,
            Phase::EnterRecovery => self.enter_recovery,
            Phase::IbssBootRecovery | Phase::IbssBootDfu => self.ibss_boot,
            Phase::IbecBoot => self.ibec_boot,
            Phase::Upload => self.upload_stall,
            Phase::RamdiskBoot => self.ramdisk_boot,
            Phase::Restore => self.restore_stall,
            Phase::FinalReboot => self.final_reboot,
        }
    }

    /// Every deadline multiplied by `factor` (a bench of slow phones; a fast virtual one).
    pub fn scaled(&self, factor: f64) -> Deadlines {
        let s = |d: Duration| d.mul_f64(factor.clamp(0.001, 1000.0));
        Deadlines {
            personalize: s(self.personalize),
            pair: s(self.pair),
            enter_recovery: s(self.enter_recovery),
            ibss_boot: s(self.ibss_boot),
            ibec_boot: s(self.ibec_boot),
            upload_stall: s(self.upload_stall),
            ramdisk_boot: s(self.ramdisk_boot),
            restore_stall: s(self.restore_stall),
            final_reboot: s(self.final_reboot),
            operator: s(self.operator),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_has_a_deadline_and_waits_name_their_mode() {
        let d = Deadlines::default();
        for phase in Phase::ALL {
            assert!(d.of(phase) >= Duration::from_secs(30), "{phase}");
        }
        assert_eq!(
            Phase::RamdiskBoot.awaited_mode(),
            Some(AwaitedMode::Restore)
        );
        assert_eq!(Phase::Upload.awaited_mode(), None);
        let fast = d.scaled(0.01);
        assert_eq!(fast.of(Phase::IbssBootDfu), Duration::from_millis(300));
        assert!(d.pair >= Duration::from_secs(30));
        assert_eq!(fast.pair, Duration::from_millis(1200));
        assert_eq!(fast.operator, Duration::from_secs(6));
    }
}
