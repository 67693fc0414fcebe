//! Pure translations between rusb's vocabulary and this crate's: errors, speeds, port paths,
//! the device descriptor libusb caches, and timeouts.

use std::time::Duration;

use crate::descriptor::DeviceDescriptor;
use crate::device::Speed;
use crate::error::{ErrorKind, Operation, RawCode, UsbError};
use crate::port::PortPath;

/// The `libusb_error` value behind a [`rusb::Error`], `None` for [`rusb::Error::BadDescriptor`]
/// (rusb's own verdict on a string descriptor, not a libusb code).
///
/// rusb folds every code it does not know into [`rusb::Error::Other`], so that one comes back
/// as `LIBUSB_ERROR_OTHER` (−99) whatever libusb said.
pub fn libusb_code(error: rusb::Error) -> Option<i32> {
    Some(match error {
        rusb::Error::Io => -1,
        rusb::Error::InvalidParam => -2,
        rusb::Error::Access => -3,
        rusb::Error::NoDevice => -4,
        rusb::Error::NotFound => -5,
        rusb::Error::Busy => -6,
        rusb::Error::Timeout => -7,
        rusb::Error::Overflow => -8,
        rusb::Error::Pipe => -9,
        rusb::Error::Interrupted => -10,
        rusb::Error::NoMem => -11,
        rusb::Error::NotSupported => -12,
        rusb::Error::Other => -99,
        rusb::Error::BadDescriptor => return None,
    })
}

/// A [`UsbError`] for a rusb failure during `operation`, keeping the libusb code as
/// [`RawCode::Libusb`].
pub fn usb_error(error: rusb::Error, operation: Operation) -> UsbError {
    match libusb_code(error) {
        Some(code) => {
            UsbError::new(ErrorKind::from_libusb(code), operation).with_raw(RawCode::Libusb(code))
        }
        None => UsbError::new(ErrorKind::Malformed, operation),
    }
}

/// The link speed libusb reports, in this crate's terms.
pub fn speed_from(speed: rusb::Speed) -> Speed {
    match speed {
        rusb::Speed::Low => Speed::Low,
        rusb::Speed::Full => Speed::Full,
        rusb::Speed::High => Speed::High,
        rusb::Speed::Super => Speed::Super,
        rusb::Speed::SuperPlus => Speed::SuperPlus,
        // `rusb::Speed` is non-exhaustive: anything newer is still a speed we cannot name.
        _ => Speed::Unknown,
    }
}

/// The sysfs devpath (`<bus>-<port>.<port>...`) from libusb's bus number and port chain
/// (`libusb_get_port_numbers`). `None` for a root hub (no ports), bus 0, a zero port or a chain
/// deeper than USB allows: such a device has no slot to name.
///
/// ```
/// use usb::libusb::port_path_from;
///
/// assert_eq!(port_path_from(1, &[1, 3, 2]).map(|p| p.to_string()).as_deref(), Some("1-1.3.2"));
/// assert_eq!(port_path_from(2, &[]), None); // the root hub itself
/// ```
pub fn port_path_from(bus: u8, ports: &[u8]) -> Option<PortPath> {
    PortPath::new(bus, ports).ok()
}

/// A BCD field (`bcdUSB`, `bcdDevice`) back from the [`rusb::Version`] rusb decoded it into.
/// Exact for every valid BCD value; rusb's decoding already merged the invalid ones (a nibble
/// above 9), so those come back as the nearest valid encoding.
pub fn bcd_from(version: rusb::Version) -> u16 {
    let major = version.major();
    (u16::from(major / 10 % 16) << 12)
        | (u16::from(major % 10) << 8)
        | (u16::from(version.minor() & 0xf) << 4)
        | u16::from(version.sub_minor() & 0xf)
}

/// The device descriptor as libusb cached it at enumeration (no I/O with the device).
pub fn device_descriptor_from(d: &rusb::DeviceDescriptor) -> DeviceDescriptor {
    DeviceDescriptor {
        usb_version: bcd_from(d.usb_version()),
        class: d.class_code(),
        subclass: d.sub_class_code(),
        protocol: d.protocol_code(),
        max_packet_size_0: d.max_packet_size(),
        vendor_id: d.vendor_id(),
        product_id: d.product_id(),
        device_version: bcd_from(d.device_version()),
        manufacturer_index: d.manufacturer_string_index().unwrap_or(0),
        product_index: d.product_string_index().unwrap_or(0),
        serial_number_index: d.serial_number_string_index().unwrap_or(0),
        num_configurations: d.num_configurations(),
    }
}

/// The timeout handed to libusb: libusb reads 0 ms as "wait forever", so a zero (or sub-
/// millisecond) timeout becomes 1 ms, and one beyond `u32::MAX` ms is capped there.
pub fn libusb_timeout(timeout: Duration) -> Duration {
    timeout.clamp(
        Duration::from_millis(1),
        Duration::from_millis(u64::from(u32::MAX)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rusb_error_keeps_its_libusb_code_and_kind() {
        use rusb::Error as R;
        let cases = [
            (R::Io, -1, ErrorKind::Io),
            (R::InvalidParam, -2, ErrorKind::InvalidParam),
            (R::Access, -3, ErrorKind::Access),
            (R::NoDevice, -4, ErrorKind::NoDevice),
            (R::NotFound, -5, ErrorKind::NotFound),
            (R::Busy, -6, ErrorKind::Busy),
            (R::Timeout, -7, ErrorKind::Timeout),
            (R::Overflow, -8, ErrorKind::Overflow),
            (R::Pipe, -9, ErrorKind::Pipe),
            (R::Interrupted, -10, ErrorKind::Interrupted),
            (R::NoMem, -11, ErrorKind::Other),
            (R::NotSupported, -12, ErrorKind::Other),
            (R::Other, -99, ErrorKind::Other),
        ];
        for (error, code, kind) in cases {
            let op = Operation::BulkIn {
                endpoint: 0x85,
                length: 16384,
            };
            let e = usb_error(error, op.clone());
            assert_eq!(e.kind(), kind, "{error:?}");
            assert_eq!(e.raw(), Some(RawCode::Libusb(code)), "{error:?}");
            assert_eq!(e.operation(), &op);
        }
        let e = usb_error(R::BadDescriptor, Operation::Open);
        assert_eq!((e.kind(), e.raw()), (ErrorKind::Malformed, None));
        assert_eq!(
            usb_error(R::Pipe, Operation::Reset).to_string(),
            "USB reset failed: pipe (libusb -9)"
        );
    }

    #[test]
    fn speeds_map_one_to_one() {
        let cases = [
            (rusb::Speed::Unknown, Speed::Unknown),
            (rusb::Speed::Low, Speed::Low),
            (rusb::Speed::Full, Speed::Full),
            (rusb::Speed::High, Speed::High),
            (rusb::Speed::Super, Speed::Super),
            (rusb::Speed::SuperPlus, Speed::SuperPlus),
        ];
        for (from, to) in cases {
            assert_eq!(speed_from(from), to);
        }
        assert!(speed_from(rusb::Speed::Full).below_high_speed());
    }

    #[test]
    fn port_paths_are_sysfs_devpaths() {
        let p = port_path_from(3, &[1, 4, 2]).unwrap();
        assert_eq!(p.to_string(), "3-1.4.2");
        assert_eq!(p, "3-1.4.2".parse().unwrap());
        assert_eq!(port_path_from(1, &[7]).unwrap().to_string(), "1-7");
        // The deep hub chain from the field (PROTOCOLS §11) is still a slot.
        assert_eq!(
            port_path_from(1, &[1, 3, 2, 2]).unwrap().to_string(),
            "1-1.3.2.2"
        );
        assert_eq!(
            port_path_from(1, &[1; 7]).unwrap().to_string(),
            "1-1.1.1.1.1.1.1"
        );
        assert_eq!(port_path_from(1, &[]), None); // root hub
        assert_eq!(port_path_from(0, &[1]), None);
        assert_eq!(port_path_from(1, &[2, 0]), None);
        assert_eq!(port_path_from(1, &[1; 8]), None);
    }

    #[test]
    fn bcd_survives_rusbs_version_decoding() {
        for raw in 0..=u16::MAX {
            let valid = [raw >> 12, (raw >> 8) & 0xf, (raw >> 4) & 0xf, raw & 0xf]
                .iter()
                .all(|n| *n <= 9);
            if valid {
                assert_eq!(bcd_from(rusb::Version::from_bcd(raw)), raw, "{raw:#06x}");
            }
        }
        // iOS 15.2 on a phone: bcdDevice 0x1502.
        assert_eq!(bcd_from(rusb::Version(15, 0, 2)), 0x1502);
    }

    #[test]
    fn timeouts_never_mean_forever() {
        assert_eq!(libusb_timeout(Duration::ZERO), Duration::from_millis(1));
        assert_eq!(
            libusb_timeout(Duration::from_micros(10)),
            Duration::from_millis(1)
        );
        assert_eq!(
            libusb_timeout(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(
            libusb_timeout(Duration::MAX),
            Duration::from_millis(u64::from(u32::MAX))
        );
    }
}
