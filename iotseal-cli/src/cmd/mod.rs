//! Subcommands.

pub(crate) mod attack;
pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod device;
pub(crate) mod duration;
pub(crate) mod gateway;
pub(crate) mod keygen;
pub(crate) mod load;
pub(crate) mod local;
pub(crate) mod report;
pub(crate) mod simulate;
pub(crate) mod suites;
