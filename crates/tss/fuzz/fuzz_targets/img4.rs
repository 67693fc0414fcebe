#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tss::fuzzing::img4(data));
