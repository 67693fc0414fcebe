//! Helpers for the hostile-peer tests: a host or device driven by hand-made packets, as a
//! misbehaving phone (or host) would send them. Only the public API that existed before the
//! memory and timeout fixes is used, so these tests also run against the old code.

#![allow(dead_code)]

use std::time::Instant;

use usbmux::device::{Device, DeviceConfig};
use usbmux::{
    encode_packet, encode_tcp, Header, HeaderVersion, Link, Message, Protocol, Sequence, TcpFlags,
    TcpHeader, Version, MAGIC,
};

pub const LOCKDOWN: u16 = 62078;

/// A v2 TCP packet as the peer would send it.
pub fn tcp(th: TcpHeader, data: &[u8]) -> Vec<u8> {
    encode_tcp(Some(Sequence::default()), &th, data)
}

/// A v2 CONTROL packet (log line) of `text_len` filler bytes.
pub fn control(text_len: usize) -> Vec<u8> {
    let mut text = vec![b'x'; text_len];
    text.insert(0, 7);
    encode_packet(Protocol::Control, Some(Sequence::default()), &text, &[])
}

/// A v2 packet of an unknown protocol (9), `len` bytes in all.
pub fn unknown(len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&9u32.to_be_bytes());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&MAGIC.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.resize(len, 0xEE);
    p
}

/// Decodes one packet this side sent (v2).
pub fn decode_tcp(packet: &[u8]) -> Option<(TcpHeader, Vec<u8>)> {
    let h = Header::decode(packet, HeaderVersion::V2).ok()?;
    let payload = bytes::Bytes::copy_from_slice(packet.get(16..)?);
    match Message::decode(h.protocol, payload).ok()? {
        Message::Tcp(th, data) => Some((th, data.to_vec())),
        _ => None,
    }
}

/// A host whose handshake with a v2 device is done (the device answered VERSION).
pub fn ready_host(now: Instant) -> Link {
    let mut host = Link::new(now);
    let answer = Message::Version(Version::HOST).encode(None);
    host.handle_input(&answer, now).unwrap();
    while host.poll_transmit().is_some() {}
    while host.poll_event().is_some() {}
    host
}

/// A ready host with one connection to lockdownd that the "device" accepted; returns the
/// connection and the host's source port.
pub fn connected_host(now: Instant) -> (Link, usbmux::ConnId, u16) {
    let mut host = ready_host(now);
    let conn = host.connect(LOCKDOWN, now).unwrap();
    let syn = decode_tcp(&host.poll_transmit().unwrap()).unwrap().0;
    assert_eq!(syn.flags, TcpFlags::SYN);
    let syn_ack = TcpHeader {
        sport: LOCKDOWN,
        dport: syn.sport,
        seq: 0,
        ack: 1,
        flags: TcpFlags::SYN_ACK,
        window: 512,
    };
    host.handle_input(&tcp(syn_ack, b""), now).unwrap();
    while host.poll_transmit().is_some() {}
    while host.poll_event().is_some() {}
    (host, conn, syn.sport)
}

/// The data segment number `i` (1 byte, in sequence) the device sends on that connection.
pub fn one_byte_segment(sport: u16, i: u32) -> Vec<u8> {
    tcp(
        TcpHeader {
            sport: LOCKDOWN,
            dport: sport,
            seq: 1 + i,
            ack: 1,
            flags: TcpFlags::ACK,
            window: 512,
        },
        &[i as u8],
    )
}

/// A device listening on lockdownd whose handshake the host finished (VERSION + SETUP).
pub fn ready_device(config: DeviceConfig, now: Instant) -> Device {
    let mut dev = Device::new(config, now);
    dev.listen(LOCKDOWN);
    dev.handle_input(&Message::Version(Version::HOST).encode(None), now)
        .unwrap();
    let setup = encode_packet(Protocol::Setup, Some(Sequence::default()), &[7], &[]);
    dev.handle_input(&setup, now).unwrap();
    while dev.poll_transmit().is_some() {}
    while dev.poll_event().is_some() {}
    assert_eq!(dev.header_version(), Some(HeaderVersion::V2));
    dev
}

/// A SYN from host port `sport` to device port `dport`.
pub fn syn(sport: u16, dport: u16) -> Vec<u8> {
    tcp(
        TcpHeader {
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 512,
        },
        b"",
    )
}
