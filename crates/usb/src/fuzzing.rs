//! Bodies of the fuzz targets in `crates/usb/fuzz`, callable from tests so the committed corpus
//! is replayed by a plain `cargo test`. Each runs one decoder on arbitrary bytes and checks that
//! what decodes re-encodes to something that decodes to the same value.

use crate::{string, ConfigurationDescriptor, Control, DeviceDescriptor, PortPath};

/// Device descriptor parser.
pub fn device_descriptor(data: &[u8]) {
    if let Ok(d) = DeviceDescriptor::parse(data) {
        assert_eq!(DeviceDescriptor::parse(&d.to_bytes()).as_ref(), Ok(&d));
    }
}

/// Configuration descriptor parser (with interfaces, alt settings, endpoints, extras).
pub fn configuration_descriptor(data: &[u8]) {
    if let Ok(c) = ConfigurationDescriptor::parse(data) {
        // Everything inside wTotalLength was kept, so the re-encoding fits the same limits.
        let bytes = c.to_bytes().expect("a parsed configuration re-encodes");
        assert_eq!(ConfigurationDescriptor::parse(&bytes).as_ref(), Ok(&c));
        assert!(bytes.len() <= data.len());
    }
}

/// String descriptor (text) decoder.
pub fn string_descriptor(data: &[u8]) {
    if let Ok(s) = string::decode(data) {
        let bytes = string::encode(&s).expect("a decoded string re-encodes");
        assert_eq!(string::decode(&bytes).as_ref(), Ok(&s));
    }
}

/// String descriptor 0 (language table) decoder.
pub fn language_ids(data: &[u8]) {
    if let Ok(l) = string::decode_languages(data) {
        let bytes = string::encode_languages(&l).expect("a decoded table re-encodes");
        assert_eq!(string::decode_languages(&bytes).as_ref(), Ok(&l));
    }
}

/// Port path parser (text from sysfs/udev or a user).
pub fn port_path(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = text.parse::<PortPath>() {
            assert_eq!(p.to_string(), text);
            assert!(p.depth() >= 1 && p.depth() <= PortPath::MAX_DEPTH);
        }
    }
}

/// SETUP packet parser (as a trace replayer reads it).
pub fn setup_packet(data: &[u8]) {
    if let Ok((c, len)) = Control::parse_setup_packet(data) {
        assert_eq!(c.to_setup_packet(len), data);
        let rebuilt = Control::build(
            c.direction(),
            c.control_type(),
            c.recipient(),
            c.request,
            c.value,
            c.index,
        );
        assert_eq!(rebuilt, c);
    }
}

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target with its name, for the corpus replay test and the seed writer.
pub const TARGETS: &[(&str, Target)] = &[
    ("device_descriptor", device_descriptor),
    ("configuration_descriptor", configuration_descriptor),
    ("string_descriptor", string_descriptor),
    ("language_ids", language_ids),
    ("port_path", port_path),
    ("setup_packet", setup_packet),
    ("usbmon_record", usbmon_record),
    ("usbmon_pcap", usbmon_pcap),
];

/// One usbmon record (64-byte header + data): what parses re-encodes to the same record.
pub fn usbmon_record(data: &[u8]) {
    if let Ok(r) = crate::trace::Record::parse(data) {
        assert_eq!(crate::trace::Record::parse(&r.to_bytes()).as_ref(), Ok(&r));
    }
}

/// A whole pcap file of usbmon records, split into conversations and opened as replays.
pub fn usbmon_pcap(data: &[u8]) {
    if let Ok(records) = crate::trace::read_records(data) {
        for c in crate::trace::Conversation::from_records(&records) {
            let _ = crate::trace::Replay::new(c);
        }
    }
}
