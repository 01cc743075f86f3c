//! Subcommands.

pub(crate) mod demo;
pub(crate) mod device;
pub(crate) mod gateway;
pub(crate) mod keygen;
pub(crate) mod suites;
