#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usb::fuzzing::string_descriptor(data));
