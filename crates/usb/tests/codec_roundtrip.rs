//! Property tests: for every codec in `usb`, decode(encode(x)) == x.

use proptest::prelude::*;
use usb::{
    string, AltSetting, ConfigurationDescriptor, Control, DeviceDescriptor, EndpointDescriptor,
    Interface, LanguageId, PortPath,
};

fn device_descriptor() -> impl Strategy<Value = DeviceDescriptor> {
    (
        (
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
        ),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
        ),
    )
        .prop_map(
            |((u, c, s, p, m, v), (pid, d, mi, pi, si, n))| DeviceDescriptor {
                usb_version: u,
                class: c,
                subclass: s,
                protocol: p,
                max_packet_size_0: m,
                vendor_id: v,
                product_id: pid,
                device_version: d,
                manufacturer_index: mi,
                product_index: pi,
                serial_number_index: si,
                num_configurations: n,
            },
        )
}

/// Class descriptors: complete, with types that are not device/config/interface/endpoint.
fn class_descriptors() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (0x06u8..=0xff, prop::collection::vec(any::<u8>(), 0..12)),
        0..3,
    )
    .prop_map(|ds| {
        let mut out = Vec::new();
        for (ty, body) in ds {
            out.push(body.len() as u8 + 2);
            out.push(ty);
            out.extend_from_slice(&body);
        }
        out
    })
}

fn endpoint() -> impl Strategy<Value = EndpointDescriptor> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..3),
        class_descriptors(),
    )
        .prop_map(
            |(address, attributes, max_packet_size, interval, extension, extra)| {
                EndpointDescriptor {
                    address,
                    attributes,
                    max_packet_size,
                    interval,
                    extension,
                    extra,
                }
            },
        )
}

fn alt_setting() -> impl Strategy<Value = AltSetting> {
    (
        any::<u8>(),
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()),
        prop::collection::vec(any::<u8>(), 0..2),
        class_descriptors(),
        prop::collection::vec(endpoint(), 0..4),
    )
        .prop_map(
            |(
                alternate_setting,
                (class, subclass, protocol, string_index),
                extension,
                extra,
                endpoints,
            )| {
                AltSetting {
                    interface_number: 0, // set by the interface below
                    alternate_setting,
                    class,
                    subclass,
                    protocol,
                    string_index,
                    extension,
                    extra,
                    endpoints,
                }
            },
        )
}

fn configuration() -> impl Strategy<Value = ConfigurationDescriptor> {
    (
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()),
        prop::collection::vec(any::<u8>(), 0..2),
        class_descriptors(),
        prop::collection::btree_map(
            any::<u8>(),
            prop::collection::vec(alt_setting(), 1..3),
            0..4,
        ),
    )
        .prop_map(
            |((value, string_index, attributes, max_power), extension, extra, interfaces)| {
                ConfigurationDescriptor {
                    value,
                    string_index,
                    attributes,
                    max_power,
                    extension,
                    extra,
                    interfaces: interfaces
                        .into_iter()
                        .map(|(number, mut alts)| {
                            for a in &mut alts {
                                a.interface_number = number;
                            }
                            Interface {
                                number,
                                alt_settings: alts,
                            }
                        })
                        .collect(),
                }
            },
        )
}

proptest! {
    #[test]
    fn device_descriptor_round_trips(d in device_descriptor()) {
        prop_assert_eq!(DeviceDescriptor::parse(&d.to_bytes()), Ok(d));
    }

    #[test]
    fn configuration_descriptor_round_trips(c in configuration()) {
        let bytes = c.to_bytes().unwrap();
        prop_assert_eq!(usize::from(u16::from_le_bytes([bytes[2], bytes[3]])), bytes.len());
        prop_assert_eq!(ConfigurationDescriptor::parse(&bytes), Ok(c));
    }

    #[test]
    fn string_descriptor_round_trips(s in "\\PC{0,60}") {
        // Up to 60 chars; astral ones take 2 units, so at most 120 units: always encodable.
        prop_assert_eq!(string::decode(&string::encode(&s).unwrap()), Ok(s));
    }

    #[test]
    fn language_table_round_trips(ids in prop::collection::vec(any::<u16>(), 0..126)) {
        let ids: Vec<LanguageId> = ids.into_iter().map(LanguageId).collect();
        prop_assert_eq!(string::decode_languages(&string::encode_languages(&ids).unwrap()), Ok(ids));
    }

    #[test]
    fn port_path_round_trips(bus in 1u8..=255, ports in prop::collection::vec(1u8..=255, 1..=7)) {
        let p = PortPath::new(bus, &ports).unwrap();
        prop_assert_eq!(p.to_string().parse::<PortPath>(), Ok(p.clone()));
        let json = serde_json::to_string(&p).unwrap();
        prop_assert_eq!(serde_json::from_str::<PortPath>(&json).unwrap(), p);
    }

    #[test]
    fn setup_packet_round_trips(rt in any::<u8>(), r in any::<u8>(), v in any::<u16>(), i in any::<u16>(), len in any::<u16>()) {
        let c = Control::new(rt, r, v, i);
        prop_assert_eq!(Control::parse_setup_packet(&c.to_setup_packet(len)), Ok((c, len)));
    }

    #[test]
    fn parsers_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        for (_, target) in usb::fuzzing::TARGETS {
            target(&data);
        }
    }
}
