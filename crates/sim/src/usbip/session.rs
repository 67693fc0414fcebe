//! One imported enumeration of a phone, sans-IO: URBs from the client in, completions out.
//!
//! Every transfer is answered by the [`Phone`] itself: standard requests (GET_DESCRIPTOR,
//! SET_CONFIGURATION, SET_INTERFACE, CLEAR_FEATURE) from the descriptors of its current mode,
//! class and vendor requests and bulk traffic by the mode. A bulk or interrupt IN the phone has
//! nothing for yet stays *pending* (a real device NAKs it) and completes when the phone has
//! data: [`Session::poll`] retries pending reads after every transfer and whenever the phone's
//! timers ran. A transfer the phone never answers (a `timeout` fault) stays pending until the
//! client unlinks it, as on a real bus.
//!
//! Linux's `vhci-hcd` resets the port locally and never tells the server; what reaches the
//! server is the first read of the device descriptor after the reset (64 bytes with the kernel's
//! default enumeration scheme, 8 with the old one). The session takes that read as the USB reset
//! and hands the phone a [`usb::Transfer::Reset`] first, so a DFU phone waiting for its reset
//! after manifestation boots what it received, as it would on a cable.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use usb::{standard_request, Completion, Control, Direction, ErrorKind, Speed, Transfer};

use crate::phone::{Answer, Phone};

use super::wire::{errno, transfer_flags, CmdSubmit, CmdUnlink, RetSubmit, RetUnlink, Return};

/// A read waiting for the phone to have data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    seqnum: u32,
    endpoint: u8,
    length: usize,
    flags: u32,
    number_of_packets: u32,
}

enum Outcome {
    Done(RetSubmit),
    Pending(Pending),
    /// The phone will never answer (the host's timeout ends it with an unlink).
    Stuck,
}

/// The URB side of one imported phone enumeration.
#[derive(Debug)]
pub struct Session {
    port: usize,
    busid: String,
    generation: u64,
    pending: VecDeque<Pending>,
    stuck: Vec<u32>,
    link_time: Duration,
    gone: bool,
}

/// The negated errno a URB completes with for a phone's [`ErrorKind`].
pub fn status_for(kind: ErrorKind) -> i32 {
    -match kind {
        ErrorKind::Pipe | ErrorKind::NotFound => errno::EPIPE,
        ErrorKind::NoDevice => errno::ENODEV,
        ErrorKind::Io | ErrorKind::Malformed => errno::EPROTO,
        ErrorKind::Overflow => errno::EOVERFLOW,
        ErrorKind::InvalidParam => errno::EINVAL,
        ErrorKind::Busy => errno::EBUSY,
        ErrorKind::Interrupted => errno::EINTR,
        ErrorKind::Access => errno::EACCES,
        ErrorKind::Timeout | ErrorKind::Other => errno::EIO,
    }
}

fn ret(
    seqnum: u32,
    number_of_packets: u32,
    status: i32,
    data: Vec<u8>,
    actual: usize,
) -> RetSubmit {
    RetSubmit {
        seqnum,
        status,
        actual_length: u32::try_from(actual).unwrap_or(u32::MAX),
        start_frame: 0,
        number_of_packets: if number_of_packets == super::wire::NOT_ISO {
            number_of_packets
        } else {
            0
        },
        error_count: 0,
        data,
        iso: Vec::new(),
    }
}

/// Whether `setup` is the kernel's first device-descriptor read after a port reset.
fn is_reset_probe(setup: Control, length: u16) -> bool {
    setup.request_type == 0x80
        && setup.request == standard_request::GET_DESCRIPTOR
        && setup.value == 0x0100
        && matches!(length, 8 | 64)
}

/// A hub-class SET_FEATURE(PORT_RESET), which some USB/IP clients send for a reset.
fn is_port_reset(setup: Control) -> bool {
    setup.request_type == 0x23 && setup.request == 3 && setup.value == 4
}

impl Session {
    /// A session on enumeration `generation` of the phone in `port`, exported as `busid`.
    pub fn new(port: usize, busid: String, generation: u64) -> Session {
        Session {
            port,
            busid,
            generation,
            pending: VecDeque::new(),
            stuck: Vec::new(),
            link_time: Duration::ZERO,
            gone: false,
        }
    }

    /// The port index.
    pub fn port(&self) -> usize {
        self.port
    }

    /// The bus ID.
    pub fn busid(&self) -> &str {
        &self.busid
    }

    /// The enumeration this session belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether that enumeration has left the bus (the connection must close).
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// Marks the enumeration gone (its port was emptied).
    pub fn set_gone(&mut self) {
        self.gone = true;
    }

    /// URBs waiting for the phone (pending reads and unanswered transfers).
    pub fn waiting(&self) -> usize {
        self.pending.len() + self.stuck.len()
    }

    /// Link time the phone's answers took since the last call (the driver charges it to the
    /// clock).
    pub fn take_link_time(&mut self) -> Duration {
        std::mem::take(&mut self.link_time)
    }

    fn alive(&self, phone: &Phone) -> bool {
        phone.is_on_bus() && phone.generation() == self.generation
    }

    /// Carries out one submitted URB on `phone`; completions (this one's, and pending reads it
    /// made ready) go to `out`.
    pub fn submit(
        &mut self,
        phone: &mut Phone,
        cmd: CmdSubmit,
        now: Instant,
        out: &mut Vec<Return>,
    ) {
        if !self.alive(phone) {
            self.gone = true;
            return;
        }
        let outcome = if cmd.is_control() {
            self.control(phone, &cmd, now)
        } else {
            self.data(phone, &cmd, now)
        };
        match outcome {
            Outcome::Done(r) => out.push(Return::Submit(r)),
            Outcome::Pending(p) => self.pending.push_back(p),
            Outcome::Stuck => self.stuck.push(cmd.seqnum),
        }
        self.poll(phone, now, out);
    }

    /// Answers an unlink: a URB still waiting is cancelled (`-ECONNRESET`, and it gets no
    /// `RET_SUBMIT`); one that completed already gets status 0.
    pub fn unlink(&mut self, cmd: CmdUnlink, out: &mut Vec<Return>) {
        let target = cmd.unlink_seqnum;
        let cancelled = if let Some(at) = self.pending.iter().position(|p| p.seqnum == target) {
            self.pending.remove(at).is_some()
        } else if let Some(at) = self.stuck.iter().position(|s| *s == target) {
            self.stuck.remove(at);
            true
        } else {
            false
        };
        out.push(Return::Unlink(RetUnlink {
            seqnum: cmd.seqnum,
            status: if cancelled { -errno::ECONNRESET } else { 0 },
        }));
    }

    /// Completes pending reads the phone has data for now (oldest first on each endpoint),
    /// and notices when the enumeration left the bus.
    pub fn poll(&mut self, phone: &mut Phone, now: Instant, out: &mut Vec<Return>) {
        let mut blocked: Vec<u8> = Vec::new();
        let mut i = 0;
        while let Some(p) = self.pending.get(i).copied() {
            if !self.alive(phone) {
                break;
            }
            if blocked.contains(&p.endpoint) {
                i += 1;
                continue;
            }
            let a = phone.transfer(
                Transfer::BulkIn {
                    endpoint: p.endpoint,
                    length: p.length,
                },
                now,
            );
            if a.result == Err(ErrorKind::Timeout) {
                blocked.push(p.endpoint);
                i += 1;
                continue;
            }
            self.pending.remove(i);
            if let Outcome::Done(r) =
                self.finish(a, p.seqnum, p.number_of_packets, p.length, p.flags)
            {
                out.push(Return::Submit(r));
            }
        }
        if !self.alive(phone) {
            self.gone = true;
        }
    }

    fn finish(
        &mut self,
        answer: Answer<Completion>,
        seqnum: u32,
        number_of_packets: u32,
        requested: usize,
        flags: u32,
    ) -> Outcome {
        if answer.result != Err(ErrorKind::Timeout) {
            self.link_time += answer.took;
        }
        match answer.result {
            Ok(Completion::In(mut bytes)) => {
                bytes.truncate(requested);
                let short = bytes.len() < requested && flags & transfer_flags::SHORT_NOT_OK != 0;
                let status = if short { -errno::EREMOTEIO } else { 0 };
                let n = bytes.len();
                Outcome::Done(ret(seqnum, number_of_packets, status, bytes, n))
            }
            Ok(Completion::Out { written }) => Outcome::Done(ret(
                seqnum,
                number_of_packets,
                0,
                Vec::new(),
                written.min(requested),
            )),
            Ok(Completion::Reset) => {
                Outcome::Done(ret(seqnum, number_of_packets, 0, Vec::new(), 0))
            }
            Err(ErrorKind::Timeout) => Outcome::Stuck,
            Err(kind) => Outcome::Done(ret(
                seqnum,
                number_of_packets,
                status_for(kind),
                Vec::new(),
                0,
            )),
        }
    }

    fn control(&mut self, phone: &mut Phone, cmd: &CmdSubmit, now: Instant) -> Outcome {
        let nop = cmd.number_of_packets;
        let (setup, w_length) = match Control::parse_setup_packet(&cmd.setup) {
            Ok(parsed) => parsed,
            Err(_) => return Outcome::Done(ret(cmd.seqnum, nop, -errno::EINVAL, Vec::new(), 0)),
        };
        let buffer = cmd.transfer_buffer_length as usize;
        if is_port_reset(setup) {
            let a = phone.transfer(Transfer::Reset, now);
            return self.finish(a, cmd.seqnum, nop, 0, cmd.transfer_flags);
        }
        match cmd.direction {
            Direction::In => {
                if is_reset_probe(setup, w_length) {
                    let reset = phone.reset(now);
                    self.link_time += reset.took;
                }
                let length = w_length.min(u16::try_from(buffer).unwrap_or(u16::MAX));
                let a = phone.transfer(Transfer::ControlIn { setup, length }, now);
                self.finish(a, cmd.seqnum, nop, usize::from(length), cmd.transfer_flags)
            }
            Direction::Out => {
                let a = phone.transfer(
                    Transfer::ControlOut {
                        setup,
                        data: &cmd.data,
                    },
                    now,
                );
                self.finish(a, cmd.seqnum, nop, cmd.data.len(), cmd.transfer_flags)
            }
        }
    }

    fn data(&mut self, phone: &mut Phone, cmd: &CmdSubmit, now: Instant) -> Outcome {
        let nop = cmd.number_of_packets;
        if !matches!(nop, 0 | super::wire::NOT_ISO) {
            // The phones have no isochronous endpoint in use; nothing to stream.
            return Outcome::Done(ret(cmd.seqnum, 0, -errno::EPIPE, Vec::new(), 0));
        }
        let length = cmd.transfer_buffer_length as usize;
        match cmd.direction {
            Direction::In => {
                let endpoint = cmd.ep | 0x80;
                let a = phone.transfer(Transfer::BulkIn { endpoint, length }, now);
                if a.result == Err(ErrorKind::Timeout) {
                    return Outcome::Pending(Pending {
                        seqnum: cmd.seqnum,
                        endpoint,
                        length,
                        flags: cmd.transfer_flags,
                        number_of_packets: nop,
                    });
                }
                self.finish(a, cmd.seqnum, nop, length, cmd.transfer_flags)
            }
            Direction::Out => {
                let endpoint = cmd.ep;
                let a = phone.transfer(
                    Transfer::BulkOut {
                        endpoint,
                        data: &cmd.data,
                    },
                    now,
                );
                let packet = if phone.speed() == Speed::High {
                    512
                } else {
                    64
                };
                let zlp = cmd.transfer_flags & transfer_flags::ZERO_PACKET != 0
                    && !cmd.data.is_empty()
                    && cmd.data.len() % packet == 0
                    && a.result.is_ok();
                let outcome = self.finish(a, cmd.seqnum, nop, length, cmd.transfer_flags);
                if zlp {
                    let z = phone.transfer(
                        Transfer::BulkOut {
                            endpoint,
                            data: &[],
                        },
                        now,
                    );
                    self.link_time += z.took;
                }
                outcome
            }
        }
    }
}
