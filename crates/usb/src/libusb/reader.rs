//! [`BulkReader`]: a thread that keeps a bulk IN read outstanding back to back, so the phone
//! never waits for the host between two reads, and hands each completion over a channel.
//!
//! The usbmux protocol is sans-IO (the `usbmux` crate): its driver feeds it what arrives from
//! this reader and writes what it says to send with [`crate::UsbDevice::bulk_out`]. The reader
//! only moves bytes; it knows nothing of headers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{ErrorKind, Operation, UsbError};

/// The size of each bulk IN read, as usbmuxd does (PROTOCOLS.md §3).
pub const READ_SIZE: usize = 16384;

/// How long each read waits before the reader checks whether it was dropped. A read that
/// times out with data returns that data; one that times out empty is simply reissued.
pub const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// Completions buffered between the reader and a slow consumer (64 × 16 KiB = 1 MiB); when
/// full, the reader waits for the consumer instead of growing without bound.
pub const CHANNEL_CAPACITY: usize = 64;

/// One finished read: the bytes that came (never empty), or the error that ended the reader.
pub type BulkCompletion = Result<Vec<u8>, UsbError>;

/// Something a bulk IN read can be done on: the shared libusb handle, or a test double.
pub trait BulkSource: Send + Sync + 'static {
    /// One blocking bulk IN read into `buf`; the number of bytes read.
    fn read_bulk(&self, endpoint: u8, buf: &mut [u8], timeout: Duration)
        -> Result<usize, UsbError>;
}

impl BulkSource for rusb::DeviceHandle<rusb::Context> {
    fn read_bulk(
        &self,
        endpoint: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, UsbError> {
        rusb::DeviceHandle::read_bulk(self, endpoint, buf, super::convert::libusb_timeout(timeout))
            .map_err(|e| {
                super::convert::usb_error(
                    e,
                    Operation::BulkIn {
                        endpoint,
                        length: buf.len(),
                    },
                )
            })
    }
}

/// A running reader; it stops when dropped (within one [`READ_TIMEOUT`]), when its receiver
/// is dropped, or after sending an error that is not a timeout (the device left, the endpoint
/// stalled, ...): the driver decides whether to clear the halt and start another.
///
/// It holds an `Arc` of the device handle, so the handle stays open while the thread runs;
/// transfers on other endpoints go on through the [`crate::UsbDevice`] meanwhile (libusb
/// handles are thread safe).
#[derive(Debug)]
pub struct BulkReader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    endpoint: u8,
}

impl BulkReader {
    /// Starts reading `endpoint` on `source`; completions arrive on the returned receiver.
    pub fn spawn<S: BulkSource>(
        source: Arc<S>,
        endpoint: u8,
    ) -> Result<(Self, Receiver<BulkCompletion>), UsbError> {
        let (tx, rx) = sync_channel(CHANNEL_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("usb-bulk-in-{endpoint:#04x}"))
            .spawn(move || read_loop(&*source, endpoint, &flag, &tx))
            .map_err(|_| {
                UsbError::new(
                    ErrorKind::Other,
                    Operation::BulkIn {
                        endpoint,
                        length: READ_SIZE,
                    },
                )
            })?;
        Ok((
            Self {
                stop,
                thread: Some(thread),
                endpoint,
            },
            rx,
        ))
    }

    /// The endpoint being read.
    pub fn endpoint(&self) -> u8 {
        self.endpoint
    }

    /// Whether the thread has ended (after an error, or its receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for BulkReader {
    fn drop(&mut self) {
        // Not joined: the thread may be waiting for a consumer that is not reading. It sees
        // the flag after its current read and exits, dropping its handle reference.
        self.stop.store(true, Ordering::Release);
        self.thread.take();
    }
}

fn read_loop(
    source: &dyn BulkSource,
    endpoint: u8,
    stop: &AtomicBool,
    tx: &SyncSender<BulkCompletion>,
) {
    while !stop.load(Ordering::Acquire) {
        let mut buf = vec![0; READ_SIZE];
        match source.read_bulk(endpoint, &mut buf, READ_TIMEOUT) {
            Ok(0) => {}
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Interrupted) => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::RecvTimeoutError;
    use std::sync::Mutex;

    /// A phone's bulk IN endpoint: scripted answers, then timeouts forever.
    struct Script {
        answers: Mutex<Vec<Result<Vec<u8>, ErrorKind>>>,
        reads: Mutex<Vec<usize>>,
    }

    impl Script {
        fn new(mut answers: Vec<Result<Vec<u8>, ErrorKind>>) -> Arc<Self> {
            answers.reverse();
            Arc::new(Self {
                answers: Mutex::new(answers),
                reads: Mutex::new(Vec::new()),
            })
        }
    }

    impl BulkSource for Script {
        fn read_bulk(
            &self,
            endpoint: u8,
            buf: &mut [u8],
            timeout: Duration,
        ) -> Result<usize, UsbError> {
            self.reads.lock().unwrap().push(buf.len());
            let op = Operation::BulkIn {
                endpoint,
                length: buf.len(),
            };
            match self.answers.lock().unwrap().pop() {
                Some(Ok(data)) => {
                    buf[..data.len()].copy_from_slice(&data);
                    Ok(data.len())
                }
                Some(Err(kind)) => Err(UsbError::new(kind, op)),
                None => {
                    std::thread::sleep(timeout.min(Duration::from_millis(5)));
                    Err(UsbError::new(ErrorKind::Timeout, op))
                }
            }
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn delivers_data_in_order_skips_timeouts_and_ends_at_no_device() {
        let script = Script::new(vec![
            Ok(b"first".to_vec()),
            Err(ErrorKind::Timeout),
            Ok(vec![]),
            Ok(vec![0xAB; READ_SIZE]),
            Err(ErrorKind::Interrupted),
            Ok(b"last".to_vec()),
            Err(ErrorKind::NoDevice),
            Ok(b"never read".to_vec()),
        ]);
        let (reader, rx) = BulkReader::spawn(Arc::clone(&script), 0x85).unwrap();
        assert_eq!(reader.endpoint(), 0x85);
        assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), b"first");
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap().unwrap(),
            vec![0xAB; READ_SIZE]
        );
        assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), b"last");
        let e = rx.recv_timeout(WAIT).unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoDevice);
        assert_eq!(
            e.operation(),
            &Operation::BulkIn {
                endpoint: 0x85,
                length: READ_SIZE
            }
        );
        // The thread ended: the channel is closed, nothing after NoDevice was read.
        assert_eq!(rx.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected));
        assert_eq!(script.answers.lock().unwrap().len(), 1);
        assert!(script.reads.lock().unwrap().iter().all(|n| *n == READ_SIZE));
        assert!(reader.is_finished());
    }

    #[test]
    fn a_stall_is_reported_and_ends_the_reader() {
        let script = Script::new(vec![Ok(vec![1]), Err(ErrorKind::Pipe)]);
        let (_reader, rx) = BulkReader::spawn(script, 0x81).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), [1]);
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap().unwrap_err().kind(),
            ErrorKind::Pipe
        );
        assert_eq!(rx.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected));
    }

    #[test]
    fn dropping_the_reader_stops_the_thread() {
        let script = Script::new(vec![Ok(b"x".to_vec())]);
        let (reader, rx) = BulkReader::spawn(Arc::clone(&script), 0x85).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), b"x");
        drop(reader);
        // The thread notices within one read and drops its sender and its handle.
        assert_eq!(rx.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected));
        let deadline = std::time::Instant::now() + WAIT;
        while Arc::strong_count(&script) > 1 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(Arc::strong_count(&script), 1);
    }

    #[test]
    fn dropping_the_receiver_stops_the_thread() {
        // More completions than the channel holds, so a send fails whatever the timing.
        let script = Script::new(vec![Ok(b"a".to_vec()); CHANNEL_CAPACITY + 2]);
        let (reader, rx) = BulkReader::spawn(Arc::clone(&script), 0x85).unwrap();
        drop(rx);
        let deadline = std::time::Instant::now() + WAIT;
        while !reader.is_finished() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(reader.is_finished());
    }
}
