#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sim::fuzzing::recovery_command(data));
