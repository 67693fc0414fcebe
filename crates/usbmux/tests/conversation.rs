//! Host [`Link`] against the device-side [`Device`], wired together in memory with a fake
//! clock. Device → host bytes are concatenated and delivered in 16384-byte reads, as the USB
//! driver's bulk IN transfers do; host → device packets are delivered one per transfer.

use std::time::{Duration, Instant};

use usbmux::device::{Device, DeviceConfig};
use usbmux::{
    encode_tcp, CloseReason, ConnId, ConnectionError, Control, ControlKind, Event, FrameReader,
    Header, HeaderVersion, Link, LinkError, Message, Protocol, Sequence, StreamError, TcpFlags,
    TcpHeader, Version, MAX_PACKET, MAX_TCP_PAYLOAD,
};

const LOCKDOWN: u16 = 62078;
const READ_CHUNK: usize = 16384;

struct Bench {
    host: Link,
    phone: Device,
    now: Instant,
    host_events: Vec<Event>,
    phone_events: Vec<Event>,
    /// Every packet the host wrote, in order.
    host_sent: Vec<Vec<u8>>,
    /// Every packet the phone wrote, in order.
    phone_sent: Vec<Vec<u8>>,
}

impl Bench {
    fn new(config: DeviceConfig) -> Bench {
        let now = Instant::now();
        let mut phone = Device::new(config, now);
        phone.listen(LOCKDOWN);
        Bench {
            host: Link::new(now),
            phone,
            now,
            host_events: Vec::new(),
            phone_events: Vec::new(),
            host_sent: Vec::new(),
            phone_sent: Vec::new(),
        }
    }

    fn ready() -> Bench {
        let mut b = Bench::new(DeviceConfig::default());
        b.pump();
        assert!(b.host_events.contains(&Event::Ready {
            version: HeaderVersion::V2
        }));
        b
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(p) = self.host.poll_transmit() {
                assert!(p.len() <= MAX_PACKET);
                self.phone.handle_input(&p, self.now).unwrap();
                self.host_sent.push(p);
                moved = true;
            }
            let mut stream = Vec::new();
            while let Some(p) = self.phone.poll_transmit() {
                stream.extend_from_slice(&p);
                self.phone_sent.push(p);
            }
            for chunk in stream.chunks(READ_CHUNK) {
                self.host.handle_input(chunk, self.now).unwrap();
                moved = true;
            }
            self.host_events
                .extend(std::iter::from_fn(|| self.host.poll_event()));
            self.phone_events
                .extend(std::iter::from_fn(|| self.phone.poll_event()));
            if !moved {
                break;
            }
        }
    }

    fn connect(&mut self) -> (ConnId, ConnId) {
        let h = self.host.connect(LOCKDOWN, self.now).unwrap();
        self.pump();
        assert!(self.host_events.contains(&Event::Connected { conn: h }));
        let d = self
            .phone_events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Accepted { conn, port } if *port == LOCKDOWN => Some(*conn),
                _ => None,
            })
            .unwrap();
        (h, d)
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.host.handle_timeout(self.now);
        self.phone.handle_timeout(self.now);
    }
}

fn read_all_phone(phone: &mut Device, conn: ConnId) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = phone.read(conn, usize::MAX).unwrap() {
        out.extend_from_slice(&chunk);
    }
    out
}

fn read_all_host(host: &mut Link, conn: ConnId) -> Vec<u8> {
    let mut out = Vec::new();
    // A closed connection reads as `Closed` once drained: that is its end of stream.
    while let Ok(Some(chunk)) = host.read(conn, usize::MAX) {
        out.extend_from_slice(&chunk);
    }
    out
}

fn decode_tcp(packet: &[u8]) -> (TcpHeader, Vec<u8>) {
    let h = Header::decode(packet, HeaderVersion::V2).unwrap();
    assert_eq!(h.protocol, Protocol::Tcp);
    let payload = bytes::Bytes::copy_from_slice(&packet[16..]);
    match Message::decode(Protocol::Tcp, payload).unwrap() {
        Message::Tcp(th, data) => (th, data.to_vec()),
        other => panic!("not TCP: {other:?}"),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn handshake_v2() {
    let mut b = Bench::new(DeviceConfig::default());
    b.pump();
    // Host opens with VERSION 2.0 under a v1 header.
    let first = &b.host_sent[0];
    assert_eq!(
        Header::decode(first, HeaderVersion::V1).unwrap(),
        Header::new(Protocol::Version, 12, None)
    );
    assert_eq!(&first[8..], &Version::HOST.encode());
    // Device answers VERSION under a v1 header.
    assert_eq!(
        Header::decode(&b.phone_sent[0], HeaderVersion::V1)
            .unwrap()
            .protocol,
        Protocol::Version
    );
    // Host then sends SETUP 0x07 with a v2 header, tx_seq 0, rx_seq 0xFFFF.
    let setup = &b.host_sent[1];
    let h = Header::decode(setup, HeaderVersion::V2).unwrap();
    assert_eq!(h.protocol, Protocol::Setup);
    assert_eq!(
        h.seq,
        Some(Sequence {
            tx_seq: 0,
            rx_seq: 0xFFFF
        })
    );
    assert_eq!(&setup[16..], &[0x07]);
    assert_eq!(b.host.header_version(), Some(HeaderVersion::V2));
    assert_eq!(b.phone.header_version(), Some(HeaderVersion::V2));
    assert!(b.phone_events.contains(&Event::Ready {
        version: HeaderVersion::V2
    }));

    // Sequence numbers then count up on the host side.
    let (_h, _d) = b.connect();
    let seqs: Vec<u16> = b.host_sent[1..]
        .iter()
        .map(|p| {
            Header::decode(p, HeaderVersion::V2)
                .unwrap()
                .seq
                .unwrap()
                .tx_seq
        })
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u16).collect::<Vec<_>>());
}

#[test]
fn connect_is_syn_synack_ack() {
    let mut b = Bench::ready();
    let sent_before = b.host_sent.len();
    let (h, d) = b.connect();
    let (syn, _) = decode_tcp(&b.host_sent[sent_before]);
    assert_eq!(syn.flags, TcpFlags::SYN);
    assert_eq!((syn.seq, syn.ack), (0, 0));
    assert_eq!(syn.dport, LOCKDOWN);
    assert_eq!(syn.window, 512, "host advertises 131072 >> 8");
    let (syn_ack, _) = decode_tcp(b.phone_sent.last().unwrap());
    assert_eq!(syn_ack.flags, TcpFlags::SYN_ACK);
    let (ack, _) = decode_tcp(&b.host_sent[sent_before + 1]);
    assert_eq!(ack.flags, TcpFlags::ACK);
    assert_eq!((ack.seq, ack.ack), (1, 1));
    assert_ne!(h, ConnId(u64::MAX));
    assert_eq!(b.phone.send_capacity(d).unwrap(), 262144);
}

#[test]
fn refused_connect_is_an_event_with_the_reason() {
    let mut b = Bench::ready();
    let c = b.host.connect(1234, b.now).unwrap();
    b.pump();
    let refused = b
        .host_events
        .iter()
        .find_map(|e| match e {
            Event::Refused { conn, port, reason } if *conn == c => Some((*port, reason.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(refused.0, 1234);
    assert!(refused.1.contains("1234"), "{}", refused.1);
    assert_eq!(b.host.send(c, b"x"), Err(StreamError::Closed(c)));
    // The link lives on.
    let (h, d) = b.connect();
    b.host.send(h, b"still alive").unwrap();
    b.pump();
    assert_eq!(read_all_phone(&mut b.phone, d), b"still alive");
}

#[test]
fn data_both_ways() {
    let mut b = Bench::ready();
    let (h, d) = b.connect();
    let up = pattern(300_000, 1);
    let down = pattern(200_000, 2);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    let (mut up_off, mut down_off) = (0, 0);
    for _ in 0..1000 {
        up_off += b.host.send(h, &up[up_off..]).unwrap();
        down_off += b.phone.send(d, &down[down_off..]).unwrap();
        b.pump();
        got_up.extend(read_all_phone(&mut b.phone, d));
        got_down.extend(read_all_host(&mut b.host, h));
        b.advance(Duration::from_millis(31));
        if got_up.len() == up.len() && got_down.len() == down.len() {
            break;
        }
    }
    assert_eq!(got_up, up);
    assert_eq!(got_down, down);
}

#[test]
fn window_back_pressure() {
    let mut b = Bench::ready();
    let (h, d) = b.connect();
    let data = pattern(1_000_000, 3);
    // The send buffer takes 262144 bytes, then refuses more.
    let taken = b.host.send(h, &data).unwrap();
    assert_eq!(taken, 262144);
    assert_eq!(b.host.send_capacity(h).unwrap(), 0);
    let before = b.host_sent.len();
    b.pump();
    // The phone reads nothing: only its 131072-byte window may be in flight.
    let in_flight: usize = b.host_sent[before..]
        .iter()
        .map(|p| decode_tcp(p).1.len())
        .sum();
    assert_eq!(in_flight, 131072);
    assert!(b.host.poll_transmit().is_none());
    // Reading on the phone acknowledges, the window opens, more flows, Writable fires.
    let mut received = Vec::new();
    let mut offset = taken;
    for _ in 0..200 {
        received.extend(read_all_phone(&mut b.phone, d));
        b.advance(Duration::from_millis(31));
        b.pump();
        if b.host_events.contains(&Event::Writable { conn: h }) {
            offset += b.host.send(h, &data[offset..]).unwrap();
        }
        if received.len() == data.len() {
            break;
        }
    }
    assert!(b.host_events.contains(&Event::Writable { conn: h }));
    assert_eq!(received.len(), data.len());
    assert_eq!(received, data);
}

#[test]
fn large_writes_split_at_49116() {
    let mut b = Bench::ready();
    let (h, d) = b.connect();
    let data = pattern(100_000, 4);
    assert_eq!(b.host.send(h, &data).unwrap(), data.len());
    let before = b.host_sent.len();
    b.pump();
    let sizes: Vec<usize> = b.host_sent[before..]
        .iter()
        .map(|p| decode_tcp(p).1.len())
        .collect();
    assert_eq!(
        sizes,
        vec![MAX_TCP_PAYLOAD, MAX_TCP_PAYLOAD, 100_000 - 2 * 49116]
    );
    assert_eq!(MAX_TCP_PAYLOAD, 49116);
    assert_eq!(b.host_sent[before].len(), 49152);
    assert_eq!(read_all_phone(&mut b.phone, d), data);
}

#[test]
fn deferred_ack_is_flushed_by_the_timer() {
    let mut b = Bench::ready();
    let (h, d) = b.connect();
    b.phone.send(d, &pattern(1000, 5)).unwrap();
    b.pump();
    assert_eq!(b.host.poll_timeout(), None);
    let got = b.host.read(h, 400).unwrap().unwrap();
    assert_eq!(got.len(), 400);
    // Nothing leaves at once; the ACK waits for the timer.
    assert!(b.host.poll_transmit().is_none());
    let deadline = b.host.poll_timeout().unwrap();
    assert_eq!(deadline, b.now + Duration::from_millis(30));
    b.host.handle_timeout(deadline - Duration::from_millis(1));
    assert!(b.host.poll_transmit().is_none());
    b.host.handle_timeout(deadline);
    let ack = b.host.poll_transmit().unwrap();
    let (th, payload) = decode_tcp(&ack);
    assert_eq!(th.flags, TcpFlags::ACK);
    assert!(payload.is_empty());
    assert_eq!(th.ack, 1 + 400, "acknowledges what was read");
    assert_eq!(b.host.poll_timeout(), None);
}

#[test]
fn ack_rides_on_data() {
    let mut b = Bench::ready();
    let (h, d) = b.connect();
    b.phone.send(d, b"ping").unwrap();
    b.pump();
    assert_eq!(read_all_host(&mut b.host, h), b"ping");
    b.host.send(h, b"pong").unwrap();
    let p = b.host.poll_transmit().unwrap();
    let (th, payload) = decode_tcp(&p);
    assert_eq!(payload, b"pong");
    assert_eq!(th.ack, 5);
    assert_eq!(b.host.poll_timeout(), None);
}

#[test]
fn reset_from_device_carries_its_reason() {
    let mut b = Bench::ready();
    let (h, d) = b.connect();
    b.phone.send(d, b"last words").unwrap();
    b.pump();
    b.phone.reset(d, "service went away").unwrap();
    b.pump();
    assert!(b.host_events.contains(&Event::Closed {
        conn: h,
        reason: CloseReason::Reset {
            reason: "service went away".into()
        }
    }));
    // Data received before the RST is still readable, then the connection is gone.
    assert_eq!(read_all_host(&mut b.host, h), b"last words");
    assert_eq!(b.host.send(h, b"x"), Err(StreamError::Closed(h)));
    assert_eq!(
        b.host.read(h, 1),
        Err(StreamError::Closed(h)),
        "end of stream"
    );
}

#[test]
fn reset_from_host() {
    let mut b = Bench::ready();
    let (h, d) = b.connect();
    b.host.close(h).unwrap();
    b.pump();
    assert!(b.phone_events.contains(&Event::Closed {
        conn: d,
        reason: CloseReason::Reset {
            reason: "closed by host".into()
        }
    }));
    assert_eq!(b.host.close(h), Ok(()), "closing twice is fine");
    assert_eq!(
        b.host.read(ConnId(999), 1),
        Err(StreamError::Unknown(ConnId(999)))
    );
}

#[test]
fn many_connections_at_once() {
    let mut b = Bench::ready();
    let mut pairs = Vec::new();
    for _ in 0..40 {
        pairs.push(b.connect());
    }
    for (i, (h, _)) in pairs.iter().enumerate() {
        b.host.send(*h, &pattern(70_000 + i, i as u8)).unwrap();
    }
    let mut got = vec![Vec::new(); pairs.len()];
    for _ in 0..100 {
        b.pump();
        for (i, (_, d)) in pairs.iter().enumerate() {
            got[i].extend(read_all_phone(&mut b.phone, *d));
        }
        b.advance(Duration::from_millis(31));
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &pattern(70_000 + i, i as u8), "connection {i}");
    }
    // Round-robin: the first data packets go to different connections.
    let ports: std::collections::HashSet<u16> = b
        .host_sent
        .iter()
        .filter(|p| p.len() > 16 + 20 && p[3] == 6)
        .take(pairs.len())
        .map(|p| decode_tcp(p).0.sport)
        .collect();
    assert_eq!(ports.len(), pairs.len());
}

#[test]
fn v1_device() {
    let mut b = Bench::new(DeviceConfig {
        major: 1,
        ..DeviceConfig::default()
    });
    b.pump();
    assert_eq!(b.host.header_version(), Some(HeaderVersion::V1));
    assert!(b.host_events.contains(&Event::Ready {
        version: HeaderVersion::V1
    }));
    // No SETUP, v1 headers throughout.
    for p in &b.host_sent {
        let h = Header::decode(p, HeaderVersion::V1).unwrap();
        assert_ne!(h.protocol, Protocol::Setup);
    }
    let (h, d) = b.connect();
    let data = pattern(120_000, 9);
    b.host.send(h, &data).unwrap();
    b.pump();
    assert_eq!(read_all_phone(&mut b.phone, d), data);
    let last = b.host_sent.iter().rev().find(|p| p.len() > 1000).unwrap();
    assert_eq!(last.len(), 8 + 20 + (120_000 - 2 * 49124));
}

#[test]
fn control_messages_reach_the_host() {
    let mut b = Bench::ready();
    b.phone.send_control(&Control {
        kind: ControlKind::Error,
        text: b"thermal trip\n".to_vec(),
    });
    b.pump();
    let c = b
        .host_events
        .iter()
        .find_map(|e| match e {
            Event::Control(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(c.kind, ControlKind::Error);
    assert_eq!(c.text(), "thermal trip");
}

/// Packets crafted as a misbehaving device would send them.
fn device_tcp(th: TcpHeader, data: &[u8]) -> Vec<u8> {
    encode_tcp(Some(Sequence::default()), &th, data)
}

fn host_sport(b: &Bench) -> u16 {
    b.host_sent
        .iter()
        .filter_map(|p| {
            let h = Header::decode(p, HeaderVersion::V2).ok()?;
            (h.protocol == Protocol::Tcp).then(|| decode_tcp(p).0)
        })
        .find(|th| th.flags == TcpFlags::SYN)
        .unwrap()
        .sport
}

#[test]
fn data_for_unknown_connection_is_answered_with_rst() {
    let mut b = Bench::ready();
    let stray = device_tcp(
        TcpHeader {
            sport: LOCKDOWN,
            dport: 4242,
            seq: 77,
            ack: 1,
            flags: TcpFlags::ACK,
            window: 512,
        },
        b"who?",
    );
    b.host.handle_input(&stray, b.now).unwrap();
    let (rst, _) = decode_tcp(&b.host.poll_transmit().unwrap());
    assert_eq!(rst.flags, TcpFlags::RST);
    assert_eq!((rst.sport, rst.dport, rst.ack), (4242, LOCKDOWN, 77));
    // An RST for an unknown connection is not answered.
    let stray_rst = device_tcp(
        TcpHeader {
            flags: TcpFlags::RST,
            ..rst
        },
        b"",
    );
    b.host.handle_input(&stray_rst, b.now).unwrap();
    assert!(b.host.poll_transmit().is_none());
}

#[test]
fn window_overflow_resets_only_that_connection() {
    let mut b = Bench::ready();
    let (h, _d) = b.connect();
    let (other_h, other_d) = b.connect();
    let sport = host_sport(&b);
    let mut seq = 1u32;
    for _ in 0..3 {
        let p = device_tcp(
            TcpHeader {
                sport: LOCKDOWN,
                dport: sport,
                seq,
                ack: 1,
                flags: TcpFlags::ACK,
                window: 512,
            },
            &[0x55; MAX_TCP_PAYLOAD],
        );
        b.host.handle_input(&p, b.now).unwrap();
        seq += MAX_TCP_PAYLOAD as u32;
    }
    let events: Vec<Event> = std::iter::from_fn(|| b.host.poll_event()).collect();
    let closed = events
        .iter()
        .find_map(|e| match e {
            Event::Closed {
                conn,
                reason: CloseReason::Error(err),
            } if *conn == h => Some(err.clone()),
            _ => None,
        })
        .unwrap();
    assert!(matches!(
        closed,
        ConnectionError::WindowOverflow {
            window: 131072,
            buffered: 98232,
            received: 49116,
            ..
        }
    ));
    let (rst, reason) = decode_tcp(&b.host.poll_transmit().unwrap());
    assert_eq!(rst.flags, TcpFlags::RST);
    assert!(String::from_utf8_lossy(&reason).contains("window"));
    // The other connection still works.
    b.host.send(other_h, b"fine").unwrap();
    b.pump();
    assert_eq!(read_all_phone(&mut b.phone, other_d), b"fine");
}

#[test]
fn sequence_gap_resets_the_connection() {
    let mut b = Bench::ready();
    let (h, _d) = b.connect();
    let sport = host_sport(&b);
    let p = device_tcp(
        TcpHeader {
            sport: LOCKDOWN,
            dport: sport,
            seq: 500,
            ack: 1,
            flags: TcpFlags::ACK,
            window: 512,
        },
        b"out of order",
    );
    b.host.handle_input(&p, b.now).unwrap();
    assert!(std::iter::from_fn(|| b.host.poll_event()).any(|e| matches!(
        e,
        Event::Closed { conn, reason: CloseReason::Error(ConnectionError::OutOfOrder { expected: 1, got: 500, .. }) } if conn == h
    )));
}

#[test]
fn bad_magic_kills_the_link() {
    let mut b = Bench::ready();
    let (h, _d) = b.connect();
    let mut p = device_tcp(TcpHeader::default(), b"");
    p[8] = 0xAA;
    let err = b.host.handle_input(&p, b.now).unwrap_err();
    assert!(matches!(
        err,
        LinkError::Framing(usbmux::HeaderError::BadMagic { .. })
    ));
    assert!(std::iter::from_fn(|| b.host.poll_event()).any(|e| e
        == Event::Closed {
            conn: h,
            reason: CloseReason::LinkLost
        }));
    assert!(matches!(
        b.host.handle_input(&[], b.now),
        Err(LinkError::Dead(_))
    ));
    assert!(b.host.poll_transmit().is_none());
    assert!(matches!(
        b.host.connect(LOCKDOWN, b.now),
        Err(StreamError::LinkDown(_))
    ));
}

#[test]
fn unsupported_version_and_short_packets() {
    let now = Instant::now();
    let mut host = Link::new(now);
    let _ = host.poll_transmit();
    let answer = Message::Version(Version {
        major: 7,
        minor: 1,
        pad: 0,
    })
    .encode(None);
    assert_eq!(
        host.handle_input(&answer, now),
        Err(LinkError::UnsupportedVersion { major: 7, minor: 1 })
    );

    // Length smaller than the header.
    let mut host = Link::new(now);
    assert!(matches!(
        host.handle_input(&[0, 0, 0, 0, 0, 0, 0, 3], now),
        Err(LinkError::Framing(
            usbmux::HeaderError::LengthTooShort { .. }
        ))
    ));
    // A 4 GiB length.
    let mut host = Link::new(now);
    assert!(matches!(
        host.handle_input(&[0, 0, 0, 6, 0xFF, 0xFF, 0xFF, 0xFF], now),
        Err(LinkError::Framing(
            usbmux::HeaderError::LengthTooLong { .. }
        ))
    ));
    // Unknown protocol: skipped, reported, link alive.
    let mut host = Link::new(now);
    host.handle_input(&[0, 0, 0, 42, 0, 0, 0, 9, 0], now)
        .unwrap();
    assert!(matches!(
        host.poll_event(),
        Some(Event::Discarded(usbmux::Discard::UnknownProtocol {
            protocol: 42,
            ..
        }))
    ));
    host.handle_input(&Message::Version(Version::HOST).encode(None), now)
        .unwrap();
    assert_eq!(host.header_version(), Some(HeaderVersion::V2));
}

#[test]
fn frame_reader_cut_anywhere() {
    // Whatever the read size, the same packets come out.
    let mut stream = Vec::new();
    for i in 0..20u32 {
        stream.extend(encode_tcp(
            Some(Sequence {
                tx_seq: i as u16,
                rx_seq: 0,
            }),
            &TcpHeader {
                seq: i,
                ..TcpHeader::default()
            },
            &pattern(i as usize * 3000, i as u8),
        ));
    }
    for cut in [1usize, 7, 512, 16384, 65536] {
        let mut r = FrameReader::new();
        let mut n = 0;
        for chunk in stream.chunks(cut) {
            r.push(chunk);
            while let Some(p) = r.next_packet(HeaderVersion::V2).unwrap() {
                assert_eq!(p.payload.len(), 20 + n * 3000);
                n += 1;
            }
        }
        assert_eq!(n, 20);
    }
}

#[test]
fn reading_half_a_window_acks_at_once_and_device_honours_host_window() {
    let mut b = Bench::ready();
    let (h, d) = b.connect();
    let data = pattern(200_000, 11);
    assert_eq!(b.phone.send(d, &data).unwrap(), data.len());
    let before = b.phone_sent.len();
    b.pump();
    // The host reads nothing yet: the device stops at the host's 131072-byte window.
    let in_flight: usize = b.phone_sent[before..]
        .iter()
        .map(|p| decode_tcp(p).1.len())
        .sum();
    assert_eq!(in_flight, 131072);
    assert!(b.host_events.contains(&Event::Readable { conn: h }));
    // Reading half the window sends the ACK without waiting for the timer.
    let mut read = 0;
    while read < 65536 {
        read += b.host.read(h, 65536 - read).unwrap().unwrap().len();
    }
    let ack = b.host.poll_transmit().expect("immediate ACK");
    let (th, payload) = decode_tcp(&ack);
    assert!(payload.is_empty());
    assert_eq!(th.ack, 1 + 65536);
    b.phone.handle_input(&ack, b.now).unwrap();
    b.pump();
    let mut rest = Vec::new();
    for _ in 0..20 {
        rest.extend(read_all_host(&mut b.host, h));
        b.advance(Duration::from_millis(31));
        b.pump();
    }
    assert_eq!(65536 + rest.len(), data.len());
    assert_eq!(&rest[..], &data[65536..]);
}

#[test]
fn a_new_host_version_restarts_the_phone_mux() {
    // A host (usbmuxd restarting, or a second daemon) says VERSION to a phone whose mux is
    // already running with a connection open: the phone drops that connection, answers the
    // handshake again and accepts new connections.
    let mut b = Bench::ready();
    let (_old_host, old_phone) = b.connect();
    b.host = Link::new(b.now);
    b.host_events.clear();
    b.phone_events.clear();
    b.pump();
    assert!(b.host_events.contains(&Event::Ready {
        version: HeaderVersion::V2
    }));
    assert!(b.phone_events.contains(&Event::Closed {
        conn: old_phone,
        reason: CloseReason::LinkLost,
    }));
    assert_eq!(b.phone.stats().restarts, 1);
    let (h, d) = b.connect();
    b.host.send(h, b"again").unwrap();
    b.pump();
    assert_eq!(read_all_phone(&mut b.phone, d), b"again");
}

#[test]
fn unacknowledged_counts_queued_and_in_flight_bytes_until_the_device_acks() {
    let mut b = Bench::ready();
    let (h, d) = b.connect();
    assert_eq!(b.host.unacknowledged(h).unwrap(), 0);
    let data = pattern(300_000, 3);
    let mut sent = 0;
    while sent < data.len() {
        let n = b.host.send(h, &data[sent..]).unwrap();
        if n == 0 {
            break;
        }
        sent += n;
    }
    assert_eq!(b.host.unacknowledged(h).unwrap(), sent);
    // The phone reads (which acknowledges), the host sends the rest as the window opens.
    let mut got = Vec::new();
    for _ in 0..100 {
        b.pump();
        got.extend(read_all_phone(&mut b.phone, d));
        b.advance(Duration::from_millis(50));
        b.pump();
        if sent < data.len() {
            sent += b.host.send(h, &data[sent..]).unwrap();
        }
        if got.len() == data.len() && b.host.unacknowledged(h).unwrap() == 0 {
            break;
        }
    }
    assert_eq!(got, data);
    assert_eq!(b.host.unacknowledged(h).unwrap(), 0);
    b.host.close(h).unwrap();
    assert!(
        b.host.unacknowledged(h).is_err(),
        "a closed connection is gone"
    );
}
