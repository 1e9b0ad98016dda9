//! Generational storage: O(1) insert, lookup and removal, with keys that are never reused.
//!
//! A key packs a slot index (low 32 bits) and the slot's generation (high 32 bits). Removing an
//! entry bumps its slot's generation, so a stale key finds nothing. A slot whose generation would
//! pass [`MAX_GENERATION`] is retired rather than reused, which is what lets the machines promise
//! that ids are never reused. Generations stay below 2^31, so no key has [`UNSTORED`] set: a
//! machine can mint ids for things it never stores with that bit, and they never equal a key.

use alloc::vec::Vec;

#[derive(Debug, Clone)]
enum Entry<T> {
    Occupied { generation: u32, value: T },
    Vacant { generation: u32, next_free: u32 },
}

const NONE: u32 = u32::MAX;

/// The last generation a slot gets before it is retired.
const MAX_GENERATION: u32 = u32::MAX >> 1;

/// A bit no key has (see the module docs).
pub(crate) const UNSTORED: u64 = 1 << 63;

/// A generational slab.
#[derive(Debug, Clone)]
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free_head: u32,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free_head: NONE,
            len: 0,
        }
    }
}

fn pack(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn unpack(key: u64) -> (usize, u32) {
    ((key & 0xffff_ffff) as usize, (key >> 32) as u32)
}

impl<T> Slab<T> {
    /// Stores `value` and returns its key.
    pub(crate) fn insert(&mut self, value: T) -> u64 {
        self.len += 1;
        if self.free_head != NONE {
            let index = self.free_head;
            let entry = &mut self.entries[index as usize];
            let Entry::Vacant {
                generation,
                next_free,
            } = *entry
            else {
                unreachable!("free list points at an occupied slot");
            };
            self.free_head = next_free;
            *entry = Entry::Occupied { generation, value };
            return pack(index, generation);
        }
        let index = u32::try_from(self.entries.len()).expect("slab holds at most 2^32-1 slots");
        assert!(index != NONE, "slab holds at most 2^32-1 slots");
        self.entries.push(Entry::Occupied {
            generation: 1,
            value,
        });
        pack(index, 1)
    }

    /// The value stored under `key`, if it is still there.
    pub(crate) fn get(&self, key: u64) -> Option<&T> {
        let (index, gen_) = unpack(key);
        match self.entries.get(index) {
            Some(Entry::Occupied { generation, value }) if *generation == gen_ => Some(value),
            _ => None,
        }
    }

    /// The value stored under `key`, mutably.
    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        let (index, gen_) = unpack(key);
        match self.entries.get_mut(index) {
            Some(Entry::Occupied { generation, value }) if *generation == gen_ => Some(value),
            _ => None,
        }
    }

    /// Removes and returns the value under `key`.
    pub(crate) fn remove(&mut self, key: u64) -> Option<T> {
        let (index, gen_) = unpack(key);
        let entry = self.entries.get_mut(index)?;
        match entry {
            Entry::Occupied { generation, .. } if *generation == gen_ => {}
            _ => return None,
        }
        let next_generation = gen_ + 1;
        // Past the last generation a key could collide with an id minted with UNSTORED (or,
        // wrapped, with a key handed out long ago): retire the slot.
        let retire = next_generation > MAX_GENERATION;
        let next_free = if retire { NONE } else { self.free_head };
        let old = core::mem::replace(
            entry,
            Entry::Vacant {
                generation: next_generation,
                next_free,
            },
        );
        if !retire {
            self.free_head = index as u32;
        }
        self.len -= 1;
        match old {
            Entry::Occupied { value, .. } => Some(value),
            Entry::Vacant { .. } => unreachable!(),
        }
    }

    /// Number of stored values.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Iterates over `(key, value)` in slot order (deterministic).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, e)| match e {
                Entry::Occupied { generation, value } => {
                    Some((pack(index as u32, *generation), value))
                }
                Entry::Vacant { .. } => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn stale_keys_find_nothing_and_keys_are_not_reused() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        let b = s.insert("b");
        assert_ne!(a, b);
        assert_eq!(s.len(), 1);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(b, &"b")]);
    }

    #[test]
    fn a_slot_at_its_last_generation_is_retired_and_no_key_is_unstored() {
        let mut s: Slab<u8> = Slab::default();
        let k = s.insert(1);
        // Force the slot to its last generation.
        s.entries[0] = Entry::Occupied {
            generation: MAX_GENERATION,
            value: 1,
        };
        let last = pack(0, MAX_GENERATION);
        assert_ne!(k, last);
        assert_eq!(
            last & UNSTORED,
            0,
            "the last generation's keys lack the bit"
        );
        assert_eq!(s.remove(last), Some(1));
        let fresh = s.insert(2);
        assert_eq!(unpack(fresh).0, 1, "the retired slot must not be reused");
        assert_eq!(fresh & UNSTORED, 0);
    }
}
