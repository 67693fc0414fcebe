//! Normal mode (iOS), device side: the usbmux interface with lockdownd's port listening.
//!
//! This is the shell the normal-mode work fills in (lockdownd's QueryType/GetValue/
//! EnterRecovery over the accepted connections). Until then a connection to 62078 is accepted
//! and what the host sends is read and dropped, so a host sees a phone that is there and
//! silent.

use std::time::Instant;

use usb::{Control, ErrorKind, Transfer};

use crate::fault::Point;
use crate::mux_port::{MuxPort, LOCKDOWN_PORT};
use crate::phone::{Core, ModeHandler, Touches};

/// Normal iOS.
#[derive(Debug)]
pub struct NormalMode {
    mux: MuxPort,
}

impl NormalMode {
    /// iOS booted: usbmux up, lockdownd listening.
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

pub(crate) fn drain(mux: &mut MuxPort) {
    while let Some(event) = mux.poll_event() {
        if let usbmux::Event::Readable { conn } = event {
            while let Ok(Some(_)) = mux.device().read(conn, 1 << 16) {}
        }
    }
}

impl ModeHandler for NormalMode {
    fn touches(&self, _core: &Core, _transfer: &Transfer<'_>) -> Touches {
        Touches {
            points: vec![Point::Normal],
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
