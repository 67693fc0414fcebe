//! decode(encode(x)) == x for every message type: mux headers v1/v2, VERSION, CONTROL,
//! SETUP, the TCP header, and every usbmuxd client-socket request and response.

use bytes::Bytes;
use proptest::prelude::*;
use usbmux::socket::{
    ClientInfo, ClientRequest, DaemonResponse, DeviceProperties, DeviceRecord, Format, Listener,
    Request, RequestDecoder, Response, ResponseDecoder, ResultCode,
};
use usbmux::{
    Control, ControlKind, FrameReader, Header, HeaderVersion, Message, Protocol, Sequence, Setup,
    TcpFlags, TcpHeader, Version, MAX_INCOMING_PACKET,
};

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Version),
        Just(Protocol::Control),
        Just(Protocol::Setup),
        Just(Protocol::Tcp)
    ]
}

fn sequence() -> impl Strategy<Value = Option<Sequence>> {
    proptest::option::of(
        (any::<u16>(), any::<u16>()).prop_map(|(tx_seq, rx_seq)| Sequence { tx_seq, rx_seq }),
    )
}

fn tcp_header() -> impl Strategy<Value = TcpHeader> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<u16>(),
    )
        .prop_map(|(sport, dport, seq, ack, flags, window)| TcpHeader {
            sport,
            dport,
            seq,
            ack,
            flags: TcpFlags(flags),
            window,
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(major, minor, pad)| Message::Version(Version { major, minor, pad })),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(k, text)| {
            Message::Control(Control {
                kind: ControlKind::from_byte(k),
                text,
            })
        }),
        any::<u8>().prop_map(|b| Message::Setup(Setup(b))),
        (
            tcp_header(),
            proptest::collection::vec(any::<u8>(), 0..3000)
        )
            .prop_map(|(th, d)| Message::Tcp(th, Bytes::from(d))),
    ]
}

proptest! {
    #[test]
    fn mux_header(protocol in protocol(), seq in sequence(), extra in 0usize..MAX_INCOMING_PACKET - 16) {
        let h = Header::new(protocol, extra, seq);
        let bytes = h.encode();
        prop_assert_eq!(bytes.len(), h.header_len());
        prop_assert_eq!(Header::decode(&bytes, h.version()), Ok(h));
    }

    #[test]
    fn tcp_header_roundtrip(th in tcp_header()) {
        prop_assert_eq!(TcpHeader::decode(&th.encode()), Ok(th));
    }

    #[test]
    fn mux_messages(msg in message(), seq in sequence()) {
        let packet = msg.encode(seq);
        let version = if seq.is_some() { HeaderVersion::V2 } else { HeaderVersion::V1 };
        let mut reader = FrameReader::new();
        reader.push(&packet);
        let p = reader.next_packet(version).unwrap().unwrap();
        prop_assert_eq!(p.header.seq, seq);
        prop_assert_eq!(p.header.protocol, msg.protocol());
        prop_assert_eq!(Message::decode(p.header.protocol, p.payload).unwrap(), msg);
    }

    #[test]
    fn mux_stream_any_cut(msgs in proptest::collection::vec(message(), 1..8), cut in 1usize..20000) {
        let seq = Some(Sequence::default());
        let stream: Vec<u8> = msgs.iter().flat_map(|m| m.encode(seq)).collect();
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(cut) {
            reader.push(chunk);
            while let Some(p) = reader.next_packet(HeaderVersion::V2).unwrap() {
                got.push(Message::decode(p.header.protocol, p.payload).unwrap());
            }
        }
        prop_assert_eq!(got, msgs);
    }
}

// ---- usbmuxd socket -----------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9._-]{0,40}", "[^\\p{C}]{1,20}"]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn client_info() -> impl Strategy<Value = ClientInfo> {
    (
        opt_text(),
        opt_text(),
        opt_text(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(bundle_id, client_version_string, prog_name, lib_usbmux_version)| ClientInfo {
                bundle_id,
                client_version_string,
                prog_name,
                lib_usbmux_version,
            },
        )
}

fn plist_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Listen),
        (any::<u32>(), any::<u16>())
            .prop_map(|(device_id, port)| Request::Connect { device_id, port }),
        Just(Request::ListDevices),
        Just(Request::ListListeners),
        Just(Request::ReadBuid),
        text().prop_map(|pair_record_id| Request::ReadPairRecord { pair_record_id }),
        (
            text(),
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::option::of(any::<u32>())
        )
            .prop_map(
                |(pair_record_id, data, device_id)| Request::SavePairRecord {
                    pair_record_id,
                    data,
                    device_id
                }
            ),
        text().prop_map(|pair_record_id| Request::DeletePairRecord { pair_record_id }),
    ]
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        (any::<u32>(), client_info(), plist_request()).prop_map(|(tag, client, request)| {
            ClientRequest {
                tag,
                format: Format::Plist,
                client,
                request,
            }
        }),
        (
            any::<u32>(),
            prop_oneof![
                Just(Request::Listen),
                (any::<u32>(), any::<u16>())
                    .prop_map(|(device_id, port)| Request::Connect { device_id, port })
            ]
        )
            .prop_map(|(tag, request)| ClientRequest {
                tag,
                format: Format::Binary,
                client: ClientInfo::default(),
                request,
            }),
    ]
}

fn result_code() -> impl Strategy<Value = ResultCode> {
    any::<u32>().prop_map(ResultCode::from_number)
}

fn plist_record() -> impl Strategy<Value = DeviceRecord> {
    (
        any::<u32>(),
        prop_oneof![Just("USB".to_string()), Just("Network".to_string())],
        any::<u32>(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u16>()),
        text(),
        proptest::option::of(any::<u64>()),
        opt_text(),
    )
        .prop_map(
            |(device_id, connection_type, pid, location_id, product_id, serial, speed, usb)| {
                DeviceRecord {
                    device_id,
                    properties: DeviceProperties {
                        connection_type,
                        device_id: pid,
                        location_id,
                        product_id,
                        serial_number: serial,
                        connection_speed: speed,
                        usb_serial_number: usb,
                    },
                }
            },
        )
}

fn binary_record() -> impl Strategy<Value = DeviceRecord> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        "[A-Za-z0-9-]{0,255}",
    )
        .prop_map(|(device_id, location, product, serial)| DeviceRecord {
            device_id,
            properties: DeviceProperties {
                connection_type: "USB".into(),
                device_id,
                location_id: Some(location),
                product_id: Some(product),
                serial_number: serial,
                connection_speed: None,
                usb_serial_number: None,
            },
        })
}

fn listener() -> impl Strategy<Value = Listener> {
    (
        any::<bool>(),
        opt_text(),
        any::<u64>(),
        opt_text(),
        opt_text(),
        opt_text(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(blacklisted, bundle_id, conn_type, id_string, prog_name, cvs, lib)| Listener {
                blacklisted,
                bundle_id,
                conn_type,
                id_string,
                prog_name,
                client_version_string: cvs,
                lib_usbmux_version: lib,
            },
        )
}

fn plist_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        result_code().prop_map(Response::Result),
        plist_record().prop_map(Response::Attached),
        any::<u32>().prop_map(|device_id| Response::Detached { device_id }),
        any::<u32>().prop_map(|device_id| Response::Paired { device_id }),
        proptest::collection::vec(plist_record(), 0..5).prop_map(Response::DeviceList),
        text().prop_map(Response::Buid),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Response::PairRecordData),
        proptest::collection::vec(listener(), 0..4).prop_map(Response::ListenerList),
    ]
}

fn binary_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        result_code().prop_map(Response::Result),
        binary_record().prop_map(Response::Attached),
        any::<u32>().prop_map(|device_id| Response::Detached { device_id }),
        any::<u32>().prop_map(|device_id| Response::Paired { device_id }),
    ]
}

fn daemon_response() -> impl Strategy<Value = DaemonResponse> {
    prop_oneof![
        (any::<u32>(), plist_response()).prop_map(|(tag, response)| DaemonResponse {
            tag,
            format: Format::Plist,
            response
        }),
        (any::<u32>(), binary_response()).prop_map(|(tag, response)| DaemonResponse {
            tag,
            format: Format::Binary,
            response
        }),
    ]
}

proptest! {
    #[test]
    fn socket_header(length in any::<u32>(), version in any::<u32>(), message in any::<u32>(), tag in any::<u32>()) {
        let h = usbmux::socket::Header { length, version, message, tag };
        prop_assert_eq!(usbmux::socket::Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn socket_requests(reqs in proptest::collection::vec(client_request(), 1..5), cut in 1usize..400) {
        let stream: Vec<u8> = reqs.iter().flat_map(|r| r.encode().unwrap()).collect();
        let mut d = RequestDecoder::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(cut) {
            d.push(chunk);
            while let Some(r) = d.next_request().unwrap() {
                got.push(r);
            }
        }
        prop_assert_eq!(got, reqs);
    }

    #[test]
    fn socket_responses(resps in proptest::collection::vec(daemon_response(), 1..5), cut in 1usize..400) {
        let stream: Vec<u8> = resps.iter().flat_map(|r| r.encode().unwrap()).collect();
        let mut d = ResponseDecoder::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(cut) {
            d.push(chunk);
            while let Some(r) = d.next_response().unwrap() {
                got.push(r);
            }
        }
        prop_assert_eq!(got, resps);
    }
}

#[test]
fn binary_only_messages_refuse_binary_form() {
    let r = ClientRequest {
        tag: 1,
        format: Format::Binary,
        client: ClientInfo::default(),
        request: Request::ReadBuid,
    };
    assert!(matches!(
        r.encode(),
        Err(usbmux::socket::SocketError::NoBinaryForm("ReadBUID"))
    ));
}

#[test]
fn bytes_remaining_after_connect_belong_to_the_pipe() {
    let ok = DaemonResponse {
        tag: 3,
        format: Format::Plist,
        response: Response::Result(ResultCode::Ok),
    };
    let mut bytes = ok.encode().unwrap();
    bytes.extend_from_slice(b"first device bytes");
    let mut d = ResponseDecoder::new();
    d.push(&bytes);
    assert_eq!(d.next_response().unwrap(), Some(ok));
    assert_eq!(&d.into_remaining()[..], b"first device bytes");
}
