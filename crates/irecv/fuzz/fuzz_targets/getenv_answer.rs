#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| irecv::recovery::fuzzing::getenv_answer(data));
