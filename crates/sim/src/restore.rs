//! Restore mode (the restore ramdisk), device side: normal-mode USB ids and descriptors, the
//! usbmux interface, restored's port 62078 listening.
//!
//! This is the shell the restore-mode work fills in (restored's QueryType/HardwareInfo/
//! StartRestore message loop, the ASR sink on 12345). Until then a connection to 62078 is
//! accepted and what the host sends is read and dropped.

use std::time::Instant;

use usb::{Control, ErrorKind, Transfer};

use crate::fault::Point;
use crate::mux_port::{MuxPort, LOCKDOWN_PORT};
use crate::normal::drain;
use crate::phone::{Core, ModeHandler, Touches};

/// The restore ramdisk.
#[derive(Debug)]
pub struct RestoreMode {
    mux: MuxPort,
}

impl RestoreMode {
    /// The ramdisk booted: usbmux up, restored listening.
    pub fn new(_core: &mut Core, now: Instant) -> Self {
        Self {
            mux: MuxPort::new(&[LOCKDOWN_PORT], now),
        }
    }

    /// The mux.
    pub fn mux(&mut self) -> &mut MuxPort {
        &mut self.mux
    }
}

impl ModeHandler for RestoreMode {
    fn touches(&self, _core: &Core, _transfer: &Transfer<'_>) -> Touches {
        Touches {
            points: vec![Point::RestoreMode],
            span: None,
        }
    }

    fn control_in(
        &mut self,
        _: &mut Core,
        _: Control,
        _: u16,
        _: Instant,
    ) -> Result<Vec<u8>, ErrorKind> {
        Err(ErrorKind::Pipe)
    }

    fn control_out(
        &mut self,
        _: &mut Core,
        _: Control,
        _: &[u8],
        _: Instant,
    ) -> Result<usize, ErrorKind> {
        Err(ErrorKind::Pipe)
    }

    fn bulk_out(
        &mut self,
        core: &mut Core,
        endpoint: u8,
        data: &[u8],
        now: Instant,
    ) -> Result<usize, ErrorKind> {
        let r = self.mux.bulk_out(core, endpoint, data, now);
        drain(&mut self.mux);
        r
    }

    fn bulk_in(
        &mut self,
        core: &mut Core,
        endpoint: u8,
        length: usize,
        _now: Instant,
    ) -> Result<Vec<u8>, ErrorKind> {
        self.mux.bulk_in(core, endpoint, length)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.mux.poll_timeout()
    }

    fn handle_timeout(&mut self, _core: &mut Core, now: Instant) {
        self.mux.handle_timeout(now);
        drain(&mut self.mux);
    }
}
