#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| iotseal_fuzz::targets::admin_json(data));
