//! The caller's tokens of waiting checkouts, mapped to their waiters: a small open-addressing
//! hash table (linear probing, backward-shift deletion).
//!
//! Every queued checkout inserts one entry and every answer or cancel removes one, so this is
//! on the pool's hot path. An ordered map costs a tree descent (and, with tokens that only
//! grow, node splits and merges) per operation; this table costs one hashed slot, usually in
//! one cache line. `no_std` has no hash map, and the core takes no dependencies, hence this.

use alloc::vec::Vec;

use crate::id::Token;

/// A waiter key that stands for "empty slot" (slab keys are never 0).
const EMPTY: u64 = 0;
/// The smallest table; it never shrinks below this.
const MIN_CAPACITY: usize = 16;

/// Token → waiter (slab key). At most half full, so probes stay short.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    slots: Vec<(Token, u64)>,
    len: usize,
}

impl Tokens {
    pub(crate) fn new() -> Tokens {
        Tokens {
            slots: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The slot `token` hashes to (Fibonacci hashing: spreads counters and strides alike).
    fn home(&self, token: Token) -> usize {
        let bits = self.slots.len().trailing_zeros();
        let hash = token.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // `bits` ≥ 4, so the shift is < 64; the result is < len, which fits usize.
        (hash >> (64 - bits)) as usize
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `token`, if any.
    fn find(&self, token: Token) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut i = self.home(token);
        loop {
            let (t, waiter) = self.slots[i];
            if waiter == EMPTY {
                return None;
            }
            if t == token {
                return Some(i);
            }
            i = (i + 1) & self.mask();
        }
    }

    pub(crate) fn get(&self, token: Token) -> Option<u64> {
        self.find(token).map(|i| self.slots[i].1)
    }

    pub(crate) fn contains(&self, token: Token) -> bool {
        self.find(token).is_some()
    }

    /// Adds `token` (which must be absent) for `waiter` (a slab key, never 0).
    pub(crate) fn insert(&mut self, token: Token, waiter: u64) {
        debug_assert!(waiter != EMPTY && !self.contains(token));
        if (self.len + 1) * 2 > self.slots.len() {
            self.resize((self.slots.len() * 2).max(MIN_CAPACITY));
        }
        self.place(token, waiter);
        self.len += 1;
    }

    fn place(&mut self, token: Token, waiter: u64) {
        let mut i = self.home(token);
        while self.slots[i].1 != EMPTY {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = (token, waiter);
    }

    pub(crate) fn remove(&mut self, token: Token) -> Option<u64> {
        let mut hole = self.find(token)?;
        let waiter = self.slots[hole].1;
        self.slots[hole].1 = EMPTY;
        self.len -= 1;
        // Backward shift: pull later entries of the probe run into the hole when the hole is
        // between their home and where they sit, so lookups never need tombstones.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let (t, w) = self.slots[j];
            if w == EMPTY {
                break;
            }
            let home = self.home(t);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = (t, w);
                self.slots[j].1 = EMPTY;
                hole = j;
            }
        }
        if self.len * 8 < self.slots.len() && self.slots.len() > MIN_CAPACITY {
            self.resize(self.slots.len() / 2);
        }
        Some(waiter)
    }

    fn resize(&mut self, capacity: usize) {
        let old = core::mem::replace(&mut self.slots, alloc::vec![(Token(0), EMPTY); capacity]);
        for (token, waiter) in old {
            if waiter != EMPTY {
                self.place(token, waiter);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    use super::Tokens;
    use crate::id::Token;
    use crate::rng::Rng;

    /// Random inserts, lookups and removes against an ordered map, with token patterns that
    /// collide on purpose (strides of powers of two, a small range) as well as counters.
    #[test]
    fn matches_an_ordered_map() {
        for seed in 0..40u64 {
            let mut rng = Rng::new(seed);
            let mut table = Tokens::new();
            let mut model = BTreeMap::new();
            let stride = 1u64 << (seed % 20);
            let mut next_waiter = 1u64;
            for step in 0..4_000u64 {
                let token = Token(match seed % 3 {
                    0 => rng.below(64),
                    1 => rng.below(512) * stride,
                    _ => step / 2 + rng.below(8),
                });
                match rng.below(3) {
                    0 | 1 if !model.contains_key(&token) => {
                        table.insert(token, next_waiter);
                        model.insert(token, next_waiter);
                        next_waiter += 1;
                    }
                    _ => assert_eq!(table.remove(token), model.remove(&token)),
                }
                assert_eq!(table.len(), model.len());
                let probe = Token(rng.below(1024) * stride);
                assert_eq!(table.get(probe), model.get(&probe).copied());
            }
            let keys: Vec<Token> = model.keys().copied().collect();
            for token in keys {
                assert_eq!(table.get(token), model.get(&token).copied());
                assert_eq!(table.remove(token), model.remove(&token));
            }
            assert_eq!(table.len(), 0);
            assert_eq!(table.get(Token(0)), None);
        }
    }

    #[test]
    fn grows_and_shrinks_back() {
        let mut table = Tokens::new();
        for t in 0..10_000u64 {
            table.insert(Token(t), t + 1);
        }
        assert!(table.slots.len() >= 20_000);
        for t in 0..10_000u64 {
            assert_eq!(table.remove(Token(t)), Some(t + 1));
        }
        assert_eq!(table.slots.len(), super::MIN_CAPACITY);
        assert_eq!(table.remove(Token(3)), None);
    }
}
