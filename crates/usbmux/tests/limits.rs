//! The typed side of the limits and timeouts (`tests/hostile_peer.rs` has the behaviour):
//! `Event::ConnectTimedOut`, `LinkError::HandshakeTimeout`, the `Stats` counters, and the
//! `Config` / `DeviceConfig` knobs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use usbmux::device::{Device, DeviceConfig};
use usbmux::{Config, Event, Link, LinkError, Stats, TcpFlags};

#[test]
fn handshake_timeout_is_typed_and_configurable() {
    let now = Instant::now();
    let config = Config {
        handshake_timeout: Duration::from_millis(1500),
        ..Config::default()
    };
    let mut host = Link::with_config(config, now);
    assert_eq!(host.poll_timeout(), Some(now + Duration::from_millis(1500)));
    host.handle_timeout(now + Duration::from_secs(2));
    let expected = LinkError::HandshakeTimeout {
        waited: Duration::from_millis(1500),
    };
    assert_eq!(host.error(), Some(&expected));
    assert_eq!(host.poll_event(), Some(Event::Failed(expected.clone())));
    assert_eq!(
        host.handle_input(&[], now),
        Err(LinkError::Dead(Box::new(expected)))
    );
}

#[test]
fn answered_handshake_has_no_deadline() {
    let now = Instant::now();
    let host = ready_host(now);
    assert_eq!(host.poll_timeout(), None);
    assert!(host.error().is_none());
}

#[test]
fn device_waits_for_its_host_as_long_as_it_takes() {
    let now = Instant::now();
    let mut dev = Device::new(DeviceConfig::default(), now);
    assert_eq!(dev.poll_timeout(), None);
    dev.handle_timeout(now + Duration::from_secs(3600));
    assert!(dev.error().is_none());
}

#[test]
fn connect_timeout_is_a_typed_event() {
    let now = Instant::now();
    let mut host = ready_host(now);
    let early = host.connect(LOCKDOWN, now).unwrap();
    let later = now + Duration::from_secs(2);
    let late = host.connect(1234, later).unwrap();
    assert_eq!(host.poll_timeout(), Some(now + Duration::from_secs(5)));
    host.handle_timeout(now + Duration::from_secs(5));
    let events: Vec<Event> = std::iter::from_fn(|| host.poll_event()).collect();
    assert_eq!(
        events,
        vec![Event::ConnectTimedOut {
            conn: early,
            port: LOCKDOWN
        }]
    );
    // The other one has its own deadline.
    assert_eq!(host.poll_timeout(), Some(later + Duration::from_secs(5)));
    host.handle_timeout(later + Duration::from_secs(5));
    assert_eq!(
        host.poll_event(),
        Some(Event::ConnectTimedOut {
            conn: late,
            port: 1234
        })
    );
}

#[test]
fn stats_count_what_was_dropped() {
    let now = Instant::now();
    let mut host = ready_host(now);
    let bad = unknown(20);
    for _ in 0..1000 {
        host.handle_input(&bad, now).unwrap();
    }
    for i in 0..10u16 {
        let stray = tcp(
            usbmux::TcpHeader {
                sport: LOCKDOWN,
                dport: 100 + i % 2,
                flags: TcpFlags::ACK,
                ..Default::default()
            },
            b"",
        );
        host.handle_input(&stray, now).unwrap();
    }
    for _ in 0..10 {
        host.handle_input(&control(60000), now).unwrap();
    }
    let stats = host.stats();
    assert_eq!(
        stats,
        Stats {
            discarded: 1000 + 10,
            discard_events_dropped: 1000 + 10 - 64,
            controls_dropped: 10 - 4,
            resets_coalesced: 8,
            connections_refused: 0,
            restarts: 0,
        }
    );
    // The events that were kept come out in the order they happened.
    let events: Vec<Event> = std::iter::from_fn(|| host.poll_event()).collect();
    assert_eq!(events.len(), 64 + 4);
    assert!(events[..64]
        .iter()
        .all(|e| matches!(e, Event::Discarded(_))));
    assert!(events[64..].iter().all(|e| matches!(e, Event::Control(_))));
}

#[test]
fn max_connections_is_configurable_and_frees_up() {
    let now = Instant::now();
    let config = DeviceConfig {
        max_connections: 2,
        ..DeviceConfig::default()
    };
    let mut dev = ready_device(config, now);
    for sport in 1..=3u16 {
        dev.handle_input(&syn(sport, LOCKDOWN), now).unwrap();
    }
    let answers: Vec<TcpFlags> = std::iter::from_fn(|| dev.poll_transmit())
        .map(|p| decode_tcp(&p).unwrap().0.flags)
        .collect();
    assert_eq!(
        answers,
        vec![TcpFlags::SYN_ACK, TcpFlags::SYN_ACK, TcpFlags::RST]
    );
    assert_eq!(dev.stats().connections_refused, 1);
    // A connection closed by the device frees a place.
    let first = std::iter::from_fn(|| dev.poll_event())
        .find_map(|e| match e {
            Event::Accepted { conn, .. } => Some(conn),
            _ => None,
        })
        .unwrap();
    dev.reset(first, "bye").unwrap();
    dev.handle_input(&syn(4, LOCKDOWN), now).unwrap();
    let last = std::iter::from_fn(|| dev.poll_transmit()).last().unwrap();
    assert_eq!(decode_tcp(&last).unwrap().0.flags, TcpFlags::SYN_ACK);
}

#[test]
fn device_refuses_connections_while_its_events_are_not_polled() {
    // A host opening and resetting connections in a loop leaves an `Accepted` and a
    // `Closed` each time; an application that does not poll must not pile them up forever.
    let now = Instant::now();
    let mut dev = ready_device(DeviceConfig::default(), now);
    for i in 0..5000u32 {
        let sport = 1 + (i % 60000) as u16;
        dev.handle_input(&syn(sport, LOCKDOWN), now).unwrap();
        let rst = tcp(
            usbmux::TcpHeader {
                sport,
                dport: LOCKDOWN,
                seq: 1,
                ack: 1,
                flags: TcpFlags::RST,
                window: 512,
            },
            b"",
        );
        dev.handle_input(&rst, now).unwrap();
        while dev.poll_transmit().is_some() {}
    }
    let events = std::iter::from_fn(|| dev.poll_event()).count();
    // 4096 + the RST that closed the last one + 64 `Discarded` (RSTs for refused SYNs).
    assert!(events <= 4096 + 1 + 64, "{events} events queued");
    assert!(dev.stats().connections_refused > 0);
    // Polled: connections are accepted again.
    dev.handle_input(&syn(7, LOCKDOWN), now).unwrap();
    assert!(matches!(dev.poll_event(), Some(Event::Accepted { .. })));
}
