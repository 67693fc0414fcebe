//! [`RusbOutQueue`]: bulk OUT transfers queued on a libusb handle as asynchronous transfers,
//! so that the host controller runs them back to back (see [`BulkOutQueue`]).
//!
//! libusb completes an asynchronous transfer by calling its callback from whichever thread is
//! handling the context's events: this queue's own waits, or another thread's synchronous
//! transfer on the same context (a mux reader), which libusb lets handle them too. The
//! callback only sets the transfer's `done` flag; the queue reaps in order.

use std::collections::VecDeque;
use std::ffi::{c_int, c_uint, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusb::ffi::{self, constants};
use rusb::{Context, DeviceHandle, UsbContext};

use crate::device::{BulkOutQueue, QueuedFailure};
use crate::error::{ErrorKind, Operation, RawCode, UsbError};

/// How many transfers a queue keeps in flight at most.
pub const LIMIT: usize = 8;

/// How long one wait for events lasts before the queue looks again (a transfer always ends
/// by its own timeout; this only bounds how long a wait sits inside libusb).
const EVENT_WAIT: Duration = Duration::from_millis(500);

/// Consecutive failures of libusb's event handling after which a wait gives its transfer up.
const GIVE_UP_AFTER: u32 = 50;

/// One submitted transfer: the libusb transfer, the buffer it reads from and the flag its
/// callback sets. Boxed, so the flag's address (the callback's `user_data`) never moves.
struct Pending {
    index: u64,
    transfer: NonNull<ffi::libusb_transfer>,
    length: usize,
    /// Owned here until the transfer has completed: libusb reads from it meanwhile.
    _data: Vec<u8>,
    done: AtomicI32,
}

/// Bulk OUT transfers queued on one endpoint of a libusb handle.
pub(crate) struct RusbOutQueue {
    handle: Arc<DeviceHandle<Context>>,
    endpoint: u8,
    submitted: u64,
    in_flight: VecDeque<Box<Pending>>,
    failed: Option<QueuedFailure>,
}

// SAFETY: the raw transfers are owned by the queue and touched by libusb only between their
// submission and their callback, under libusb's own locking; the queue itself is used through
// `&mut self` by one thread at a time. Nothing in it is tied to the thread that made it.
unsafe impl Send for RusbOutQueue {}

/// The completion callback: marks the transfer done. Runs on a thread handling events.
extern "system" fn transfer_done(transfer: *mut ffi::libusb_transfer) {
    // SAFETY: `user_data` is the `done` flag of the boxed `Pending` owning this transfer,
    // which stays alive until the queue has seen the flag set (reap and drop both wait).
    unsafe {
        let done = (*transfer).user_data as *const AtomicI32;
        (*done).store(1, Ordering::Release);
    }
}

/// The libusb error code equivalent to a transfer's completion status.
fn status_code(status: c_int) -> i32 {
    match status {
        constants::LIBUSB_TRANSFER_TIMED_OUT => -7,
        constants::LIBUSB_TRANSFER_STALL => -9,
        constants::LIBUSB_TRANSFER_NO_DEVICE => -4,
        constants::LIBUSB_TRANSFER_OVERFLOW => -8,
        constants::LIBUSB_TRANSFER_CANCELLED => -10,
        _ => -1,
    }
}

impl RusbOutQueue {
    pub(crate) fn new(handle: Arc<DeviceHandle<Context>>, endpoint: u8) -> Self {
        Self {
            handle,
            endpoint,
            submitted: 0,
            in_flight: VecDeque::new(),
            failed: None,
        }
    }

    fn op(&self, length: usize) -> Operation {
        Operation::BulkOut {
            endpoint: self.endpoint,
            length,
        }
    }

    /// Lets libusb run the callbacks of transfers that have completed, waiting up to `wait`
    /// (or until `completed` is set, when given).
    fn handle_events(&self, wait: Duration, completed: Option<&AtomicI32>) -> c_int {
        let tv = libc_timeval(wait);
        let flag = completed.map_or(std::ptr::null_mut(), AtomicI32::as_ptr);
        // SAFETY: the context outlives the handle we hold; `tv` and `flag` are valid for the
        // call (libusb reads `*flag` under its event lock, where our callback writes it).
        unsafe {
            ffi::libusb_handle_events_timeout_completed(self.handle.context().as_raw(), &tv, flag)
        }
    }

    /// Waits until the oldest transfer has completed.
    fn wait_front(&mut self) {
        let mut errors = 0u32;
        loop {
            let Some(front) = self.in_flight.front() else {
                return;
            };
            if front.done.load(Ordering::Acquire) != 0 {
                return;
            }
            let rc = self.handle_events(EVENT_WAIT, Some(&front.done));
            if rc < 0 && rc != ffi::constants::LIBUSB_ERROR_INTERRUPTED {
                // Event handling itself failing again and again: cancel, so the transfer
                // completes (as cancelled) rather than the wait never ending.
                errors += 1;
                if errors == 3 {
                    // SAFETY: the transfer is submitted and not yet reaped.
                    unsafe { ffi::libusb_cancel_transfer(front.transfer.as_ptr()) };
                }
                if errors >= GIVE_UP_AFTER {
                    // libusb still owns the transfer and its buffer: they are leaked rather
                    // than freed under it, and the transfer counts as failed.
                    if let Some(pending) = self.in_flight.pop_front() {
                        let error = UsbError::new(ErrorKind::Io, self.op(pending.length))
                            .with_raw(RawCode::Libusb(rc));
                        self.failed.get_or_insert(QueuedFailure {
                            index: pending.index,
                            error,
                        });
                        std::mem::forget(pending);
                    }
                    errors = 0;
                }
            } else {
                errors = 0;
            }
        }
    }

    /// Reaps the completed transfers at the front, in order; the first failure is kept.
    fn retire(&mut self) {
        while let Some(front) = self.in_flight.front() {
            if front.done.load(Ordering::Acquire) == 0 {
                break;
            }
            let Some(pending) = self.in_flight.pop_front() else {
                break;
            };
            let transfer = pending.transfer.as_ptr();
            // SAFETY: the callback ran, so libusb is done with the transfer: we own it again.
            let (status, actual) = unsafe { ((*transfer).status, (*transfer).actual_length) };
            // SAFETY: allocated by libusb_alloc_transfer, completed, freed once here.
            unsafe { ffi::libusb_free_transfer(transfer) };
            let op = self.op(pending.length);
            let error = if status != constants::LIBUSB_TRANSFER_COMPLETED {
                let code = status_code(status);
                Some(
                    UsbError::new(ErrorKind::from_libusb(code), op).with_raw(RawCode::Libusb(code)),
                )
            } else if usize::try_from(actual).map_or(true, |n| n < pending.length) {
                // The device took fewer bytes than the transfer had.
                Some(UsbError::new(ErrorKind::Other, op))
            } else {
                None
            };
            if let Some(error) = error {
                self.failed.get_or_insert(QueuedFailure {
                    index: pending.index,
                    error,
                });
            }
        }
    }

    fn report(&mut self) -> Result<(), QueuedFailure> {
        self.failed.take().map_or(Ok(()), Err)
    }
}

fn libc_timeval(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(d.subsec_micros() as i32),
    }
}

impl BulkOutQueue for RusbOutQueue {
    fn endpoint(&self) -> u8 {
        self.endpoint
    }

    fn submit(&mut self, mut data: Vec<u8>, timeout: Duration) -> Result<(), QueuedFailure> {
        self.handle_events(Duration::ZERO, None);
        self.retire();
        while self.in_flight.len() >= LIMIT {
            self.wait_front();
            self.retire();
        }
        self.report()?;
        let index = self.submitted;
        self.submitted += 1;
        let length = data.len();
        let fail = |kind: ErrorKind| QueuedFailure {
            index,
            error: UsbError::new(kind, self.op(length)),
        };
        let Ok(c_length) = c_int::try_from(length) else {
            return Err(fail(ErrorKind::InvalidParam));
        };
        // SAFETY: plain allocation; a null answer is handled below.
        let Some(transfer) = NonNull::new(unsafe { ffi::libusb_alloc_transfer(0) }) else {
            return Err(fail(ErrorKind::Other));
        };
        let buffer = data.as_mut_ptr();
        let pending = Box::new(Pending {
            index,
            transfer,
            length,
            _data: data,
            done: AtomicI32::new(0),
        });
        let millis = super::convert::libusb_timeout(timeout).as_millis();
        let millis = c_uint::try_from(millis).unwrap_or(c_uint::MAX);
        // SAFETY: the transfer was just allocated; the buffer (moved into `pending`, its heap
        // block unchanged) and the flag live in the box until the transfer is reaped; the
        // handle outlives the queue's transfers (the queue holds an Arc of it and drop waits
        // for every transfer).
        let rc = unsafe {
            ffi::libusb_fill_bulk_transfer(
                transfer.as_ptr(),
                self.handle.as_raw(),
                self.endpoint,
                buffer,
                c_length,
                transfer_done,
                (&pending.done as *const AtomicI32)
                    .cast_mut()
                    .cast::<c_void>(),
                millis,
            );
            ffi::libusb_submit_transfer(transfer.as_ptr())
        };
        if rc != 0 {
            // SAFETY: not submitted, so ours to free.
            unsafe { ffi::libusb_free_transfer(transfer.as_ptr()) };
            return Err(QueuedFailure {
                index,
                error: UsbError::new(ErrorKind::from_libusb(rc), self.op(length))
                    .with_raw(RawCode::Libusb(rc)),
            });
        }
        self.in_flight.push_back(pending);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), QueuedFailure> {
        while !self.in_flight.is_empty() {
            self.wait_front();
            self.retire();
        }
        self.report()
    }

    fn check(&mut self) -> Result<(), QueuedFailure> {
        self.handle_events(Duration::ZERO, None);
        self.retire();
        self.report()
    }

    fn in_flight(&mut self) -> usize {
        self.handle_events(Duration::ZERO, None);
        self.retire();
        self.in_flight.len()
    }
}

impl Drop for RusbOutQueue {
    fn drop(&mut self) {
        for pending in &self.in_flight {
            if pending.done.load(Ordering::Acquire) == 0 {
                // SAFETY: submitted and not reaped; cancelling one that has just completed
                // only returns NOT_FOUND.
                unsafe { ffi::libusb_cancel_transfer(pending.transfer.as_ptr()) };
            }
        }
        // Every transfer must have called back before its buffer and flag are freed.
        while !self.in_flight.is_empty() {
            self.wait_front();
            self.retire();
        }
    }
}
