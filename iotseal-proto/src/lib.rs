//! iotseal-proto: the sans-IO protocol core (see `docs/protocol.md`).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod codec;
pub mod crypto;
pub mod error;
pub mod handshake;
pub mod key_schedule;
pub mod reading;
pub mod record;
pub mod suite;
pub mod time;

pub use crypto::CryptoProvider;
pub use error::{Error, Refusal};
pub use suite::{AeadId, KemId, SigAlg, Suite};
pub use time::Time;
