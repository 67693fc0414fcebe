#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usb::fuzzing::usbmon_record(data));
