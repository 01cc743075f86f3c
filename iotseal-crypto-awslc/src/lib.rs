//! iotseal CryptoProvider on aws-lc-rs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
