#![no_main]
use iotseal_fuzz::targets::{RecordInput, record_open};
libfuzzer_sys::fuzz_target!(|input: RecordInput| record_open(input));
