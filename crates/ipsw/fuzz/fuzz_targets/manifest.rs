#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipsw::fuzzing::manifest(data));
