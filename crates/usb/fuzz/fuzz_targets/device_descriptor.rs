#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usb::fuzzing::device_descriptor(data));
