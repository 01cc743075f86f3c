//! iotseal-gateway: runs the gateway role of the protocol core over HTTP/1.1 + TLS 1.3,
//! verifies and stores readings durably, manages devices, sessions and keys.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod storage;
