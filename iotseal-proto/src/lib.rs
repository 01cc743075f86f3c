//! iotseal-proto: the sans-IO protocol core (see `docs/protocol.md`).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod crypto;
pub mod suite;
