#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tss::fuzzing::im4m(data));
