//! The record layer: header, sessions, the replay window, acknowledgements and batches.

pub mod ack;
pub mod batch;
pub mod header;
mod session;
pub mod window;

pub use header::{ContentType, Header, MAX_SEQ};
pub use session::{MAX_EPOCH_SKIP, Opened, Role, Session, SessionConfig};
pub use window::{ReplayWindow, WINDOW_SIZE};

/// The largest plaintext of one record.
pub const MAX_PLAINTEXT: usize = 16 * 1024;
/// The largest record on the wire.
pub const MAX_RECORD_LEN: usize = MAX_PLAINTEXT + header::MAX_HEADER_LEN + crate::crypto::TAG_LEN;
