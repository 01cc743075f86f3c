//! [`MemoryStorage`], re-exported: what `storage = "memory:"` uses (volatile, for demos and
//! tests). The rest of the test support is in the `iotseal-testkit` crate.

pub use crate::storage::memory::MemoryStorage;
