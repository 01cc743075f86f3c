//! Per-source-IP token buckets for new handshakes, in a bounded table.
//!
//! When the table is full, addresses not in it share one overflow bucket (so a flood of
//! spoofed-looking sources cannot push known clients out, and costs at most one bucket's rate).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

#[derive(Debug)]
struct Inner {
    buckets: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
}

/// The rate limiter.
#[derive(Debug)]
pub struct RateLimiter {
    inner: Mutex<Inner>,
    rate_per_ms: f64,
    burst: f64,
    capacity: usize,
}

impl RateLimiter {
    /// `rate` tokens per second, buckets of `burst`, at most `capacity` addresses.
    pub fn new(rate: f64, burst: f64, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                buckets: HashMap::new(),
                overflow: Bucket {
                    tokens: burst,
                    last_ms: 0,
                },
            }),
            rate_per_ms: rate / 1000.0,
            burst,
            capacity,
        }
    }

    fn refill(&self, b: &mut Bucket, now_ms: u64) {
        let dt = now_ms.saturating_sub(b.last_ms) as f64;
        b.tokens = (b.tokens + dt * self.rate_per_ms).min(self.burst);
        b.last_ms = b.last_ms.max(now_ms);
    }

    /// Takes one token for `ip`; false if none is left.
    pub fn allow(&self, ip: IpAddr, now_ms: u64) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        let full = inner.buckets.len() >= self.capacity;
        let b = match inner.buckets.get_mut(&ip) {
            Some(b) => b,
            None if full => &mut inner.overflow,
            None => inner.buckets.entry(ip).or_insert(Bucket {
                tokens: self.burst,
                last_ms: now_ms,
            }),
        };
        let mut bucket = *b;
        self.refill(&mut bucket, now_ms);
        let ok = bucket.tokens >= 1.0;
        if ok {
            bucket.tokens -= 1.0;
        }
        *b = bucket;
        ok
    }

    /// Forgets addresses whose bucket is full again (they would start full anyway).
    pub fn sweep(&self, now_ms: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (rate, burst) = (self.rate_per_ms, self.burst);
        g.buckets.retain(|_, b| {
            let dt = now_ms.saturating_sub(b.last_ms) as f64;
            b.tokens + dt * rate < burst
        });
    }

    /// Addresses tracked.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buckets
            .len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_and_table_is_bounded() {
        let rl = RateLimiter::new(2.0, 3.0, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        assert!(rl.allow(a, 1000));
        assert!(rl.allow(a, 1000));
        assert!(rl.allow(a, 1000));
        assert!(!rl.allow(a, 1000));
        assert!(rl.allow(a, 1500), "one token after 500 ms at 2/s");
        assert!(!rl.allow(a, 1500));
        rl.allow([10, 0, 0, 2].into(), 1500);
        rl.allow([10, 0, 0, 3].into(), 1500);
        assert_eq!(rl.len(), 2, "third address uses the overflow bucket");
        rl.sweep(100_000);
        assert!(rl.is_empty());
    }
}
