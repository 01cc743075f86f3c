//! The storage contract (tests/contract) on [`MemoryStorage`], the in-memory store.

mod contract;

use std::sync::Arc;

use iotseal_storage::SessionEvent;
use iotseal_storage::memory::MemoryStorage;

struct Memory(Arc<MemoryStorage>);

impl contract::Backend for Memory {
    type S = MemoryStorage;
    /// The gateway's cluster nodes may store readings of devices they learnt about from
    /// another node: the in-memory store does not check devices.
    const CHECKS_DEVICES: bool = false;

    async fn fresh(_test: &str) -> Option<Self> {
        Some(Self(Arc::default()))
    }

    fn storage(&self) -> &Arc<MemoryStorage> {
        &self.0
    }

    async fn events(&self, limit: u32) -> Vec<SessionEvent> {
        let mut v = self.0.events();
        v.reverse();
        v.truncate(limit as usize);
        v
    }

    async fn reopen(&mut self) -> Option<()> {
        None
    }
}

contract_suite!(Memory);
