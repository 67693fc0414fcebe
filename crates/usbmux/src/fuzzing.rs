//! Entry points for the fuzz targets in `crates/usbmux/fuzz` and the corpus replay test.
//! Each runs one decoder on arbitrary bytes and checks its invariants; a panic is a bug.

use std::time::{Duration, Instant};

use crate::device::{Device, DeviceConfig};
use crate::frame::FrameReader;
use crate::header::{Header, HeaderVersion, MAX_PACKET};
use crate::message::{Message, TcpHeader, TCP_HEADER_LEN};
use crate::mux::Event;
use crate::socket::{DaemonResponse, RequestDecoder, ResponseDecoder};
use crate::Link;

/// Read sizes picked by the input's last byte (1 byte to 64 KiB), so the decoders see
/// many different cuts of the same stream.
fn chunks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    const CUTS: [usize; 8] = [1, 3, 16, 100, 512, 4096, 16384, 65536];
    let step = data
        .last()
        .and_then(|b| CUTS.get(usize::from(*b) % CUTS.len()))
        .copied()
        .unwrap_or(16384);
    data.chunks(step)
}

/// Mux stream decoding: byte 0 picks the header layout, the rest is the stream.
pub fn frame_reader(data: &[u8]) {
    let Some((first, stream)) = data.split_first() else {
        return;
    };
    let version = if first & 1 == 0 {
        HeaderVersion::V1
    } else {
        HeaderVersion::V2
    };
    let mut reader = FrameReader::new();
    'outer: for chunk in chunks(stream) {
        reader.push(chunk);
        loop {
            match reader.next_packet(version) {
                Ok(None) => break,
                Ok(Some(p)) => {
                    assert_eq!(
                        p.header.length as usize,
                        p.header.header_len() + p.payload.len()
                    );
                    // Re-encoding gives the same packet back.
                    let mut bytes = p.header.encode();
                    bytes.extend_from_slice(&p.payload);
                    let again = Header::decode(&bytes, version);
                    assert_eq!(again, Ok(p.header));
                    if let Ok(msg) = Message::decode(p.header.protocol, p.payload.clone()) {
                        let encoded = msg.encode(p.header.seq);
                        let h = Header::decode(&encoded, version);
                        assert!(h.is_ok());
                        let payload = bytes::Bytes::copy_from_slice(
                            encoded.get(p.header.header_len()..).unwrap_or(&[]),
                        );
                        let back = Message::decode(p.header.protocol, payload);
                        assert_eq!(back.as_ref().ok(), Some(&msg));
                    }
                }
                Err(e) if e.is_fatal() => break 'outer,
                Err(_) => {}
            }
        }
    }
}

/// The 20-byte TCP header.
pub fn tcp_header(data: &[u8]) {
    if let Ok(th) = TcpHeader::decode(data) {
        let encoded = th.encode();
        assert_eq!(encoded.len(), TCP_HEADER_LEN);
        assert_eq!(TcpHeader::decode(&encoded), Ok(th));
        assert_eq!(encoded.get(..4), data.get(..4));
        assert_eq!(encoded.get(4..12), data.get(4..12));
    }
}

fn check_outgoing(packet: &[u8]) {
    assert!(packet.len() <= MAX_PACKET);
    // The handshake VERSION goes out under a v1 header even when the link is already v2
    // by the time it is polled, so accept either layout, as long as the length is right.
    let whole = |layout| {
        Header::decode(packet, layout)
            .map(|h| h.length as usize == packet.len())
            .unwrap_or(false)
    };
    assert!(
        whole(HeaderVersion::V1) || whole(HeaderVersion::V2),
        "link produced an undecodable packet: {:02x?}",
        packet.get(..16)
    );
}

/// The host link fed arbitrary device bytes; it connects to a port once ready and reads
/// whatever arrives, so the data path is reached too.
pub fn link_input(data: &[u8]) {
    let mut now = Instant::now();
    let mut link = Link::new(now);
    let mut conns = Vec::new();
    for chunk in chunks(data) {
        now += Duration::from_millis(7);
        let result = link.handle_input(chunk, now);
        while let Some(ev) = link.poll_event() {
            if let Event::Readable { conn } = ev {
                while let Ok(Some(_)) = link.read(conn, 5000) {}
            }
        }
        if link.header_version().is_some() && conns.len() < 3 {
            if let Ok(c) = link.connect(62078, now) {
                let _ = link.send(c, &[0xAB; 70000]);
                conns.push(c);
            }
        }
        // Fire only what is due: jumping to the next deadline would time out the handshake
        // and every connect before the input gets a chance to reach them.
        if link.poll_timeout().is_some_and(|t| t <= now) {
            link.handle_timeout(now);
        }
        while let Some(p) = link.poll_transmit() {
            check_outgoing(&p);
        }
        if result.is_err() {
            assert!(link.error().is_some());
            assert!(link.handle_input(&[0], now).is_err());
            assert!(link.poll_transmit().is_none());
            return;
        }
    }
    for c in conns {
        let _ = link.close(c);
    }
}

/// The device side fed arbitrary host bytes.
pub fn device_input(data: &[u8]) {
    let mut now = Instant::now();
    let mut dev = Device::new(DeviceConfig::default(), now);
    dev.listen(62078);
    for chunk in chunks(data) {
        now += Duration::from_millis(7);
        let result = dev.handle_input(chunk, now);
        while let Some(ev) = dev.poll_event() {
            match ev {
                Event::Readable { conn } => while let Ok(Some(_)) = dev.read(conn, 5000) {},
                Event::Accepted { conn, .. } => {
                    let _ = dev.send(conn, &[0xCD; 60000]);
                }
                _ => {}
            }
        }
        // Fire only what is due: jumping to the next deadline would time out the handshake
        // and every connect before the input gets a chance to reach them.
        if dev.poll_timeout().is_some_and(|t| t <= now) {
            dev.handle_timeout(now);
        }
        while let Some(p) = dev.poll_transmit() {
            check_outgoing(&p);
        }
        if result.is_err() {
            assert!(dev.error().is_some());
            return;
        }
    }
}

/// usbmuxd socket, daemon side: decoding what clients send.
pub fn socket_requests(data: &[u8]) {
    let mut decoder = RequestDecoder::with_max_len(1 << 16);
    'outer: for chunk in chunks(data) {
        decoder.push(chunk);
        loop {
            match decoder.next_request() {
                Ok(None) => break,
                Ok(Some(req)) => {
                    if let Ok(bytes) = req.encode() {
                        let mut d = RequestDecoder::new();
                        d.push(&bytes);
                        if let Ok(Some(back)) = d.next_request() {
                            assert_eq!(back, req);
                        }
                    }
                }
                Err(e) if e.is_fatal() => break 'outer,
                Err(_) => {}
            }
        }
    }
}

/// usbmuxd socket, client side: decoding what a daemon sends.
pub fn socket_responses(data: &[u8]) {
    let mut decoder = ResponseDecoder::with_max_len(1 << 16);
    'outer: for chunk in chunks(data) {
        decoder.push(chunk);
        loop {
            match decoder.next_response() {
                Ok(None) => break,
                Ok(Some(resp)) => {
                    if let Ok(bytes) = resp.encode() {
                        let mut d = ResponseDecoder::new();
                        d.push(&bytes);
                        if let Ok(Some(back)) = d.next_response() {
                            let back: DaemonResponse = back;
                            assert_eq!(back, resp);
                        }
                    }
                }
                Err(e) if e.is_fatal() => break 'outer,
                Err(_) => {}
            }
        }
    }
}
