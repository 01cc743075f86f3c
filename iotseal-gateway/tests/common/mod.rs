//! Shared helpers of the gateway tests, from `iotseal-testkit`: an in-process gateway on
//! 127.0.0.1:0, a TLS client that trusts its self-signed certificate, and a device driven by
//! the core exactly like `iotseal-test/src/pair.rs`, over HTTPS.
#![allow(unused_imports, unreachable_pub)]

pub use iotseal_testkit::{
    Device, Env, Handshake, acked, framed, metric, now, open_acks, provider, root_trusting_config,
    seal_records,
};
