//! A misbehaving peer must not make either side queue without bound, and nothing may wait
//! forever. Each test is the regression test of one finding of the usbmux review (M3, L2,
//! L4, zero-length reads); they use only the API that existed before the fixes, so they
//! also show the old behaviour failing. The typed events and counters are checked in
//! `tests/limits.rs`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use usbmux::device::DeviceConfig;
use usbmux::{Event, Link, StreamError, TcpFlags, TcpHeader};

fn stray(sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    tcp(
        TcpHeader {
            sport,
            dport,
            seq,
            ack: 1,
            flags: TcpFlags::ACK,
            window: 512,
        },
        b"?",
    )
}

/// M3: 100000 segments for no connection while bulk OUT is blocked (nothing polls
/// `poll_transmit`): one RST per port pair is enough, and few pairs are kept.
#[test]
fn stray_segments_queue_one_bare_rst_per_port_pair() {
    let now = Instant::now();
    let mut host = ready_host(now);
    for i in 0..100_000u32 {
        host.handle_input(&stray(LOCKDOWN, 4242, i), now).unwrap();
    }
    let sent: Vec<Vec<u8>> = std::iter::from_fn(|| host.poll_transmit()).collect();
    assert_eq!(sent.len(), 1, "one RST for one port pair");
    let (rst, reason) = decode_tcp(&sent[0]).unwrap();
    assert_eq!(rst.flags, TcpFlags::RST);
    assert_eq!((rst.sport, rst.dport, rst.ack), (4242, LOCKDOWN, 0));
    assert!(reason.is_empty(), "no reason text on stray RSTs");

    // Many pairs: the queue stops growing.
    for i in 0..100_000u32 {
        let dport = 1 + (i % 60_000) as u16;
        host.handle_input(&stray(LOCKDOWN + (i / 60_000) as u16, dport, i), now)
            .unwrap();
    }
    let pending = std::iter::from_fn(|| host.poll_transmit()).count();
    assert!(pending <= 256, "{pending} RSTs queued");
    // Once sent, a new stray is answered again.
    host.handle_input(&stray(LOCKDOWN, 4242, 7), now).unwrap();
    assert_eq!(std::iter::from_fn(|| host.poll_transmit()).count(), 1);
}

/// M3, device side: SYNs to a port nothing listens on, while bulk IN is blocked.
#[test]
fn device_refusals_are_coalesced_too() {
    let now = Instant::now();
    let mut dev = ready_device(DeviceConfig::default(), now);
    for i in 0..100_000u32 {
        dev.handle_input(&syn(1 + (i % 1000) as u16, 1234), now)
            .unwrap();
    }
    let sent: Vec<Vec<u8>> = std::iter::from_fn(|| dev.poll_transmit()).collect();
    assert!(sent.len() <= 1000, "{} RSTs queued", sent.len());
    let (rst, reason) = decode_tcp(&sent[0]).unwrap();
    assert_eq!(rst.flags, TcpFlags::RST);
    assert_eq!((rst.sport, rst.ack), (1234, 1));
    assert!(String::from_utf8_lossy(&reason).contains("1234"));
}

/// M3: one `Discarded` per bad packet is not queued forever when nobody polls.
#[test]
fn discarded_events_are_capped() {
    let now = Instant::now();
    let mut host = ready_host(now);
    let bad = unknown(20);
    for _ in 0..100_000 {
        host.handle_input(&bad, now).unwrap();
    }
    let events: Vec<Event> = std::iter::from_fn(|| host.poll_event()).collect();
    assert!(!events.is_empty());
    assert!(events.len() <= 64, "{} events queued", events.len());
    assert!(events.iter().all(|e| matches!(e, Event::Discarded(_))));
    // Polled: they flow again.
    host.handle_input(&bad, now).unwrap();
    assert!(matches!(host.poll_event(), Some(Event::Discarded(_))));
}

/// M3: log lines nobody polls: the oldest are dropped, the text held stays under 256 KiB.
#[test]
fn control_events_keep_the_newest_within_a_byte_cap() {
    let now = Instant::now();
    let mut host = ready_host(now);
    for i in 0..100u8 {
        let mut line = control(60000);
        let last = line.len() - 1;
        line[last] = i;
        host.handle_input(&line, now).unwrap();
    }
    let texts: Vec<Vec<u8>> = std::iter::from_fn(|| host.poll_event())
        .filter_map(|e| match e {
            Event::Control(c) => Some(c.text),
            _ => None,
        })
        .collect();
    let total: usize = texts.iter().map(Vec::len).sum();
    assert!(total <= 256 * 1024, "{total} bytes of log text queued");
    assert!(!texts.is_empty());
    assert_eq!(
        texts.last().and_then(|t| t.last()),
        Some(&99),
        "newest kept"
    );
}

/// M3: a `Readable` per segment is not needed; one pending per connection is enough.
#[test]
fn readable_events_are_coalesced_per_connection() {
    let now = Instant::now();
    let (mut host, conn, sport) = connected_host(now);
    for i in 0..10_000 {
        host.handle_input(&one_byte_segment(sport, i), now).unwrap();
    }
    let events: Vec<Event> = std::iter::from_fn(|| host.poll_event()).collect();
    assert_eq!(events.len(), 1, "{} Readable events queued", events.len());
    assert_eq!(events[0], Event::Readable { conn });
    // After polling, new data signals again.
    host.handle_input(&one_byte_segment(sport, 10_000), now)
        .unwrap();
    assert_eq!(host.poll_event(), Some(Event::Readable { conn }));
    let mut n = 0;
    while let Some(b) = host.read(conn, usize::MAX).unwrap() {
        n += b.len();
    }
    assert_eq!(n, 10_001);
}

/// L2: a device that never answers VERSION: the host gives up by itself.
#[test]
fn handshake_times_out() {
    let now = Instant::now();
    let mut host = Link::new(now);
    assert!(host.poll_transmit().is_some(), "VERSION goes out");
    let deadline = host.poll_timeout().expect("a handshake deadline");
    assert!(deadline > now && deadline <= now + Duration::from_secs(10));
    host.handle_timeout(deadline - Duration::from_millis(1));
    assert!(host.error().is_none(), "not before the deadline");
    host.handle_timeout(deadline);
    assert!(host.error().is_some());
    assert!(host.handle_input(&[], deadline).is_err());
    assert_eq!(host.poll_timeout(), None);
}

/// L2: a SYN the device never answers: the connect gives up by itself and says so.
#[test]
fn connect_times_out() {
    let now = Instant::now();
    let mut host = ready_host(now);
    let conn = host.connect(LOCKDOWN, now).unwrap();
    let syn = decode_tcp(&host.poll_transmit().unwrap()).unwrap().0;
    let deadline = host.poll_timeout().expect("a connect deadline");
    assert!(deadline > now && deadline <= now + Duration::from_secs(10));
    host.handle_timeout(deadline);
    assert_eq!(host.send(conn, b"x"), Err(StreamError::Closed(conn)));
    assert!(
        std::iter::from_fn(|| host.poll_event()).any(|e| !matches!(
            e,
            Event::Connected { .. } | Event::Readable { .. } | Event::Writable { .. }
        )),
        "the application is told"
    );
    let (rst, _) = decode_tcp(&host.poll_transmit().expect("an RST")).unwrap();
    assert_eq!(rst.flags, TcpFlags::RST);
    assert_eq!((rst.sport, rst.dport), (syn.sport, LOCKDOWN));
    assert_eq!(host.poll_timeout(), None);
    // A late SYN|ACK is answered with RST; the link lives on.
    let late = TcpHeader {
        sport: LOCKDOWN,
        dport: syn.sport,
        seq: 0,
        ack: 1,
        flags: TcpFlags::SYN_ACK,
        window: 512,
    };
    host.handle_input(&tcp(late, b""), deadline).unwrap();
    let (rst, _) = decode_tcp(&host.poll_transmit().unwrap()).unwrap();
    assert_eq!(rst.flags, TcpFlags::RST);
    assert!(host.error().is_none());
}

/// L4: the device side holds at most `max_connections` (64 by default).
#[test]
fn device_refuses_connections_beyond_its_limit() {
    let now = Instant::now();
    let mut dev = ready_device(DeviceConfig::default(), now);
    let mut accepted = 0;
    let mut refused = 0;
    for sport in 1..=1000u16 {
        dev.handle_input(&syn(sport, LOCKDOWN), now).unwrap();
        for p in std::iter::from_fn(|| dev.poll_transmit()) {
            let (th, _) = decode_tcp(&p).unwrap();
            assert_eq!(th.dport, sport);
            match th.flags {
                TcpFlags::SYN_ACK => accepted += 1,
                TcpFlags::RST => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert_eq!((accepted, refused), (64, 936));
    let events = std::iter::from_fn(|| dev.poll_event())
        .filter(|e| matches!(e, Event::Accepted { .. }))
        .count();
    assert_eq!(events, 64);
}

/// `read(conn, 0)` reads nothing and says so, instead of `Some(empty)` forever.
#[test]
fn zero_length_read_is_none() {
    let now = Instant::now();
    let (mut host, conn, sport) = connected_host(now);
    assert_eq!(host.read(conn, 0), Ok(None), "nothing waiting");
    host.handle_input(&one_byte_segment(sport, 0), now).unwrap();
    assert_eq!(host.read(conn, 0), Ok(None), "max 0 reads nothing");
    assert_eq!(host.read(conn, 10).unwrap().as_deref(), Some(&[0u8][..]));
    assert_eq!(host.read(conn, 0), Ok(None));
}
