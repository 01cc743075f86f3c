//! Subcommands.

pub(crate) mod demo;
pub(crate) mod keygen;
pub(crate) mod suites;
