//! Which session ids the gateway role may draw for new sessions.
//!
//! The session id is the gateway's choice (`docs/protocol.md` §7.3 step 10): any 32-bit value
//! no live or half-open session uses. A deployment may narrow the choice without touching the
//! wire format: a cluster of gateways cuts the id space into `partitions`
//! (`session_id % partitions`) and each node draws ids only inside the partitions it owns, so a
//! later request carrying the id can be routed to that node by anyone who sees the id.
//!
//! - [`SessionIdPolicy::Any`] (the default) draws 4 random bytes, big-endian, exactly as
//!   before the policy existed: same randomness consumed, same ids, same vectors.
//! - [`SessionIdPolicy::Partitioned`] draws 8 random bytes and maps them onto the ids whose
//!   partition is owned, uniformly up to a bias below 2^-32 (a 64-bit value reduced modulo at
//!   most 2^32 candidates). Every drawn id is inside an owned partition by construction: no
//!   rejection loop, so a node that owns one partition in 4096 draws as fast as one owning
//!   all of them.
//!
//! A [`PartitionSet`] is checked when it is made (at least one partition owned, every owned
//! partition below `partitions`, `partitions` between 1 and [`MAX_PARTITIONS`]), so drawing
//! cannot fail on a bad policy.

use core::fmt;

use crate::crypto::SecureRandom;
use crate::error::{ApiMisuse, Error, Limit};

/// The most partitions a [`PartitionSet`] may cut the session-id space into.
pub const MAX_PARTITIONS: u32 = 4096;

const WORDS: usize = (MAX_PARTITIONS / 64) as usize;

/// A set of owned partitions of the session-id space (a fixed-size bitmap, no allocation).
#[derive(Clone, PartialEq, Eq)]
pub struct PartitionSet {
    partitions: u32,
    owned: [u64; WORDS],
    count: u32,
}

impl fmt::Debug for PartitionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionSet")
            .field("partitions", &self.partitions)
            .field("owned", &DebugOwned(self))
            .finish()
    }
}

struct DebugOwned<'a>(&'a PartitionSet);

impl fmt::Debug for DebugOwned<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl PartitionSet {
    /// The partitions `owned` out of `partitions`.
    ///
    /// Errors: `partitions` above [`MAX_PARTITIONS`] → [`Limit::TooManyPartitions`];
    /// `partitions` zero or an owned partition not below it →
    /// [`ApiMisuse::BadPartition`]; nothing owned → [`ApiMisuse::NoOwnedPartition`].
    /// Duplicates are allowed (a set).
    pub fn new(partitions: u32, owned: impl IntoIterator<Item = u32>) -> Result<Self, Error> {
        if partitions > MAX_PARTITIONS {
            return Err(Limit::TooManyPartitions.into());
        }
        if partitions == 0 {
            return Err(ApiMisuse::BadPartition.into());
        }
        let mut set = Self {
            partitions,
            owned: [0; WORDS],
            count: 0,
        };
        for p in owned {
            if p >= partitions {
                return Err(ApiMisuse::BadPartition.into());
            }
            let (w, bit) = ((p / 64) as usize, 1u64 << (p % 64));
            if set.owned[w] & bit == 0 {
                set.owned[w] |= bit;
                set.count += 1;
            }
        }
        if set.count == 0 {
            return Err(ApiMisuse::NoOwnedPartition.into());
        }
        Ok(set)
    }

    /// Into how many partitions the id space is cut.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// How many partitions are owned (at least one).
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Always false: a set owns at least one partition.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether partition `p` is owned.
    pub fn contains(&self, p: u32) -> bool {
        p < self.partitions && self.owned[(p / 64) as usize] & (1u64 << (p % 64)) != 0
    }

    /// The owned partitions, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.partitions).filter(|p| self.contains(*p))
    }

    /// The partition of a session id.
    pub fn partition_of(&self, session_id: u32) -> u32 {
        session_id % self.partitions
    }

    /// Whether `session_id` falls in an owned partition.
    pub fn allows(&self, session_id: u32) -> bool {
        self.contains(self.partition_of(session_id))
    }

    /// Full rounds: `q` such that `q * partitions + p` fits in 32 bits for every `p`.
    fn full_rounds(&self) -> u64 {
        (1u64 << 32) / u64::from(self.partitions)
    }

    /// How many session ids fall in an owned partition (at most 2^32).
    pub fn id_count(&self) -> u64 {
        let q = self.full_rounds();
        // The last, partial round holds the partitions below `rest`.
        let rest = (1u64 << 32) - q * u64::from(self.partitions);
        let partial = self.iter().take_while(|p| u64::from(*p) < rest).count() as u64;
        q * u64::from(self.count) + partial
    }

    /// The `idx`-th owned partition (ascending), `idx < len()`.
    fn nth(&self, mut idx: u32) -> Option<u32> {
        for (w, word) in self.owned.iter().enumerate() {
            let c = word.count_ones();
            if idx < c {
                let mut bits = *word;
                for _ in 0..idx {
                    bits &= bits - 1; // clear the lowest set bit
                }
                return Some(w as u32 * 64 + bits.trailing_zeros());
            }
            idx -= c;
        }
        None
    }

    /// The `v`-th allowed session id in the order (round, partition), `v < id_count()`.
    fn id_at(&self, v: u64) -> Option<u32> {
        let k = u64::from(self.count);
        let full = self.full_rounds() * k;
        let (round, idx) = if v < full {
            (v / k, v % k)
        } else {
            (self.full_rounds(), v - full)
        };
        let p = self.nth(u32::try_from(idx).ok()?)?;
        let id = round * u64::from(self.partitions) + u64::from(p);
        u32::try_from(id).ok()
    }
}

/// Which session ids the gateway draws for new sessions (see the module documentation).
// One value per gateway configuration: its 520-byte bitmap is kept inline (no allocation).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SessionIdPolicy {
    /// Any 32-bit id (the default).
    #[default]
    Any,
    /// Only ids whose partition (`id % partitions`) is in the set.
    Partitioned(PartitionSet),
}

impl SessionIdPolicy {
    /// `Partitioned` with the partitions `owned` out of `partitions` (see
    /// [`PartitionSet::new`] for the errors).
    pub fn partitioned(
        partitions: u32,
        owned: impl IntoIterator<Item = u32>,
    ) -> Result<Self, Error> {
        PartitionSet::new(partitions, owned).map(Self::Partitioned)
    }

    /// Whether the policy allows `session_id`.
    pub fn allows(&self, session_id: u32) -> bool {
        match self {
            Self::Any => true,
            Self::Partitioned(s) => s.allows(session_id),
        }
    }

    /// Draws one id the policy allows from `rng` (uniform over the allowed ids, up to a bias
    /// below 2^-32 for `Partitioned`). The caller checks it is not in use.
    pub fn draw(&self, rng: &dyn SecureRandom) -> Result<u32, Error> {
        match self {
            Self::Any => {
                let mut b = [0u8; 4];
                rng.fill(&mut b)?;
                Ok(u32::from_be_bytes(b))
            }
            Self::Partitioned(s) => {
                let mut b = [0u8; 8];
                rng.fill(&mut b)?;
                let v = u64::from_be_bytes(b) % s.id_count();
                // Cannot fail for a set made by `PartitionSet::new`.
                s.id_at(v).ok_or(Error::ApiMisuse(ApiMisuse::BadPartition))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CryptoError;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicU64, Ordering};
    use proptest::prelude::*;

    /// A deterministic generator (splitmix64): injected randomness.
    #[derive(Debug)]
    struct Rng(AtomicU64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(AtomicU64::new(seed))
        }
        fn next(&self) -> u64 {
            let mut z = self
                .0
                .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                .wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    impl SecureRandom for Rng {
        fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
            for chunk in dest.chunks_mut(8) {
                let v = self.next().to_be_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            Ok(())
        }
    }

    /// Always the same bytes.
    #[derive(Debug)]
    struct Fixed(u8);

    impl SecureRandom for Fixed {
        fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
            dest.fill(self.0);
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Broken;

    impl SecureRandom for Broken {
        fn fill(&self, _: &mut [u8]) -> Result<(), CryptoError> {
            Err(CryptoError::RandomFailed)
        }
    }

    #[test]
    fn misuse_is_refused_with_typed_errors() {
        assert_eq!(
            PartitionSet::new(8, []),
            Err(Error::ApiMisuse(ApiMisuse::NoOwnedPartition))
        );
        assert_eq!(
            PartitionSet::new(0, [0]),
            Err(Error::ApiMisuse(ApiMisuse::BadPartition))
        );
        assert_eq!(
            PartitionSet::new(8, [1, 8]),
            Err(Error::ApiMisuse(ApiMisuse::BadPartition))
        );
        assert_eq!(
            PartitionSet::new(MAX_PARTITIONS + 1, [0]),
            Err(Error::Limit(Limit::TooManyPartitions))
        );
        assert_eq!(
            SessionIdPolicy::partitioned(u32::MAX, [1]),
            Err(Error::Limit(Limit::TooManyPartitions))
        );
        assert!(PartitionSet::new(MAX_PARTITIONS, [MAX_PARTITIONS - 1]).is_ok());
        // What a peer would be told if such an error ever surfaced: busy, nothing more.
        assert_eq!(
            Error::Limit(Limit::TooManyPartitions).refusal(),
            crate::Refusal::Busy
        );
    }

    #[test]
    fn any_draws_four_big_endian_bytes_as_before() {
        // The pre-policy code: 4 bytes from the provider, big-endian.
        let a = Rng::new(7);
        let b = Rng::new(7);
        for _ in 0..100 {
            let mut x = [0u8; 4];
            b.fill(&mut x).unwrap();
            assert_eq!(
                SessionIdPolicy::Any.draw(&a).unwrap(),
                u32::from_be_bytes(x)
            );
        }
        assert_eq!(SessionIdPolicy::default(), SessionIdPolicy::Any);
        assert_eq!(
            SessionIdPolicy::Any.draw(&Fixed(0xab)).unwrap(),
            0xabab_abab
        );
    }

    #[test]
    fn a_failing_random_source_is_an_error() {
        let p = SessionIdPolicy::partitioned(4, [1]).unwrap();
        assert!(matches!(p.draw(&Broken), Err(Error::Crypto(_))));
        assert!(matches!(
            SessionIdPolicy::Any.draw(&Broken),
            Err(Error::Crypto(_))
        ));
    }

    #[test]
    fn counts_and_edges() {
        // One partition of one: every id.
        let all = PartitionSet::new(1, [0]).unwrap();
        assert_eq!(all.id_count(), 1 << 32);
        assert_eq!(all.id_at(0), Some(0));
        assert_eq!(all.id_at((1 << 32) - 1), Some(u32::MAX));
        // 3 partitions: 2^32 = 3 * 1431655765 + 1, so partition 0 has one more id.
        let s = PartitionSet::new(3, [0, 2]).unwrap();
        assert_eq!(s.id_count(), 2 * 1_431_655_765 + 1);
        assert_eq!(s.id_at(s.id_count() - 1), Some(u32::MAX));
        assert_eq!(u32::MAX % 3, 0);
        assert_eq!(s.id_at(s.id_count()), None);
        let t = PartitionSet::new(3, [2]).unwrap();
        assert_eq!(t.id_count(), 1_431_655_765);
        assert_eq!(t.id_at(t.id_count() - 1), Some(u32::MAX - 1));
        // Extreme bytes map inside the owned partitions.
        let p = SessionIdPolicy::partitioned(4096, [4095]).unwrap();
        for b in [0x00, 0xff, 0x80] {
            assert_eq!(p.draw(&Fixed(b)).unwrap() % 4096, 4095);
        }
        let set = PartitionSet::new(64, [3, 3, 63, 0]).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 3, 63]);
        assert!(set.allows(64 + 3) && !set.allows(64 + 4));
    }

    #[test]
    fn deterministic_with_injected_randomness() {
        let p = SessionIdPolicy::partitioned(64, [5, 17, 40]).unwrap();
        let (a, b) = (Rng::new(42), Rng::new(42));
        let x: Vec<u32> = (0..50).map(|_| p.draw(&a).unwrap()).collect();
        let y: Vec<u32> = (0..50).map(|_| p.draw(&b).unwrap()).collect();
        assert_eq!(x, y);
        let c = Rng::new(43);
        let z: Vec<u32> = (0..50).map(|_| p.draw(&c).unwrap()).collect();
        assert_ne!(x, z);
    }

    #[test]
    fn partitioned_draws_spread_over_partitions_and_high_bits() {
        let owned = [1u32, 7, 8, 30, 63];
        let p = SessionIdPolicy::partitioned(64, owned).unwrap();
        let rng = Rng::new(1);
        let n = 50_000;
        let mut per_partition = [0u32; 64];
        let mut per_top_bits = [0u32; 16];
        for _ in 0..n {
            let id = p.draw(&rng).unwrap();
            per_partition[(id % 64) as usize] += 1;
            per_top_bits[(id >> 28) as usize] += 1;
        }
        for (i, c) in per_partition.iter().enumerate() {
            if owned.contains(&(i as u32)) {
                // Expected 10000 each; the binomial's sd is ~90: a band of +-6 %.
                assert!((9_400..=10_600).contains(c), "partition {i}: {c}");
            } else {
                assert_eq!(*c, 0, "partition {i} is not owned");
            }
        }
        for (i, c) in per_top_bits.iter().enumerate() {
            // Expected 3125 each; sd ~54.
            assert!((2_800..=3_450).contains(c), "top bits {i}: {c}");
        }
    }

    proptest! {
        #[test]
        fn every_drawn_id_is_in_an_owned_partition(
            partitions in 1u32..=MAX_PARTITIONS,
            picks in proptest::collection::vec(any::<u32>(), 1..20),
            seed in any::<u64>(),
        ) {
            let owned: Vec<u32> = picks.iter().map(|x| x % partitions).collect();
            let p = SessionIdPolicy::partitioned(partitions, owned.iter().copied()).unwrap();
            let rng = Rng::new(seed);
            for _ in 0..64 {
                let id = p.draw(&rng).unwrap();
                prop_assert!(owned.contains(&(id % partitions)), "id {id} partition {}", id % partitions);
                prop_assert!(p.allows(id));
            }
        }

        #[test]
        fn the_mapping_is_a_bijection_onto_the_allowed_ids(
            partitions in 1u32..=MAX_PARTITIONS,
            picks in proptest::collection::vec(any::<u32>(), 1..20),
            vs in proptest::collection::vec(any::<u64>(), 1..32),
        ) {
            let s = PartitionSet::new(partitions, picks.iter().map(|x| x % partitions)).unwrap();
            let n = s.id_count();
            prop_assert!(n > 0 && n <= 1 << 32);
            let mut seen = alloc::collections::BTreeMap::new();
            for v in vs.iter().map(|v| v % n).chain([0, n - 1]) {
                let id = s.id_at(v);
                prop_assert!(id.is_some(), "index {v} of {n}");
                let id = id.unwrap();
                prop_assert!(s.allows(id));
                // Distinct indices give distinct ids (injective on what we sample).
                if let Some(prev) = seen.insert(id, v) {
                    prop_assert_eq!(prev, v);
                }
            }
            prop_assert_eq!(s.id_at(n), None);
        }

        #[test]
        fn any_allows_everything_and_sets_allow_exactly_their_partitions(
            partitions in 1u32..=256,
            picks in proptest::collection::vec(any::<u32>(), 1..8),
            id in any::<u32>(),
        ) {
            prop_assert!(SessionIdPolicy::Any.allows(id));
            let owned: Vec<u32> = picks.iter().map(|x| x % partitions).collect();
            let p = SessionIdPolicy::partitioned(partitions, owned.iter().copied()).unwrap();
            prop_assert_eq!(p.allows(id), owned.contains(&(id % partitions)));
        }
    }
}
