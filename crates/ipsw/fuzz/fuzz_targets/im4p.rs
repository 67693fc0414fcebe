#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipsw::fuzzing::im4p(data));
