//! Fuzz harnesses for iotseal. Each target in `fuzz_targets/` is one line that calls a
//! function of [`targets`]; the corpus generator (`src/bin/gen_corpus.rs`) and the regression
//! tests (`tests/regressions.rs`) call the same functions. See `README.md`.

pub mod provider;
pub mod rng;
pub mod setup;
pub mod targets;
