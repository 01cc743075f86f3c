#![no_main]
use iotseal_fuzz::targets::{WindowOp, replay_window};
libfuzzer_sys::fuzz_target!(|ops: Vec<WindowOp>| replay_window(ops));
