//! Memory actually held by a host link against a hostile phone, measured with a counting
//! global allocator (per thread, so the tests can run in parallel). The limits checked are
//! the ones documented on `Link`: about twice the window and twice the send buffer per
//! connection, plus fixed caps, whatever the device sends.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

use common::*;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
}

// SAFETY: every call is forwarded to `System` unchanged; only a per-thread counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(|l| l.get())
}

const MIB: isize = 1 << 20;

/// M1: each 1-byte segment arrives in the same bulk-IN read as a 60000-byte packet. The
/// window charges 1 byte per segment; the memory held must not be 60000 bytes per segment.
#[test]
fn one_byte_segments_do_not_pin_the_read_buffer() {
    let now = Instant::now();
    let (mut host, conn, sport) = connected_host(now);
    let filler = unknown(60000);
    let base = live();
    const N: u32 = 500;
    for i in 0..N {
        let mut chunk = one_byte_segment(sport, i);
        chunk.extend_from_slice(&filler);
        host.handle_input(&chunk, now).unwrap();
        drop(chunk);
        // The application polls its events but has not read yet.
        while host.poll_event().is_some() {}
    }
    let held = live() - base;
    assert!(
        held < MIB,
        "{N} one-byte segments made the host hold {held} bytes"
    );
    // Every byte is still there, in order.
    let mut got = Vec::new();
    while let Some(b) = host.read(conn, usize::MAX).unwrap() {
        got.extend_from_slice(&b);
    }
    assert_eq!(got, (0..N).map(|i| i as u8).collect::<Vec<_>>());
}

/// M1 + M3, the review's reproduction: per bulk-IN read, one 1-byte segment then a
/// 60000-byte CONTROL log line; the application neither reads nor polls events.
#[test]
fn segments_and_log_lines_from_a_hostile_phone_stay_bounded() {
    let now = Instant::now();
    let (mut host, _conn, sport) = connected_host(now);
    let line = control(60000);
    let base = live();
    const N: u32 = 400;
    for i in 0..N {
        let mut chunk = one_byte_segment(sport, i);
        chunk.extend_from_slice(&line);
        host.handle_input(&chunk, now).unwrap();
    }
    let held = live() - base;
    // 256 KiB of log text + the connection's buffer + the frame reader.
    assert!(
        held < 2 * MIB,
        "{N} segments + log lines made the host hold {held} bytes"
    );
}

/// The send side when the device never acknowledges: `send` takes `send_buffer` bytes,
/// whatever the size of the writes, and the memory held follows.
#[test]
fn send_buffer_bounds_memory_even_for_one_byte_writes() {
    let now = Instant::now();
    let (mut host, conn, _sport) = connected_host(now);
    let base = live();
    let mut taken = 0;
    while host.send(conn, b"x").unwrap() == 1 {
        taken += 1;
        // The USB driver writes what it can; the device acknowledges nothing.
        while host.poll_transmit().is_some() {}
    }
    assert_eq!(taken, 262144 + 131072, "send buffer + the device's window");
    let held = live() - base;
    assert!(
        held < 2 * 262144 + 65536,
        "held {held} bytes for {taken} sent"
    );
}
