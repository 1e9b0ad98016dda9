//! Generational storage: O(1) insert, lookup and removal, with keys that are never reused.
//!
//! A key packs a slot index (low 32 bits) and the slot's generation (high 32 bits). Removing an
//! entry bumps its slot's generation, so a stale key finds nothing. A slot whose generation would
//! wrap is retired rather than reused, which is what lets the machines promise that ids are never
//! reused.

use alloc::vec::Vec;

#[derive(Debug, Clone)]
enum Entry<T> {
    Occupied { generation: u32, value: T },
    Vacant { generation: u32, next_free: u32 },
}

const NONE: u32 = u32::MAX;

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

    /// A key that no value will ever be stored under, for something that needs a name but no
    /// entry (a checkout answered at once). Minting one costs a store, not an entry.
    pub(crate) fn skip_key(&mut self) -> u64 {
        if self.free_head == NONE {
            let index = u32::try_from(self.entries.len()).expect("slab holds at most 2^32-1 slots");
            assert!(index != NONE, "slab holds at most 2^32-1 slots");
            self.entries.push(Entry::Vacant {
                generation: 1,
                next_free: NONE,
            });
            self.free_head = index;
        }
        let index = self.free_head;
        let entry = &mut self.entries[index as usize];
        let Entry::Vacant {
            generation,
            next_free,
        } = *entry
        else {
            unreachable!("free list points at an occupied slot");
        };
        // The slot's next occupant gets the next generation; one that would wrap is retired.
        let next_generation = generation.wrapping_add(1);
        *entry = Entry::Vacant {
            generation: next_generation,
            next_free,
        };
        if next_generation == 0 {
            self.free_head = next_free;
        }
        pack(index, generation)
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
        let next_generation = gen_.wrapping_add(1);
        // A wrapped generation could collide with a key handed out long ago: retire the slot.
        let next_free = if next_generation == 0 {
            NONE
        } else {
            self.free_head
        };
        let old = core::mem::replace(
            entry,
            Entry::Vacant {
                generation: next_generation,
                next_free,
            },
        );
        if next_generation != 0 {
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
    fn skipped_keys_are_never_reused_or_found() {
        let mut s = Slab::default();
        let a = s.skip_key();
        let b = s.skip_key();
        assert_ne!(a, b);
        assert_eq!(s.get(a), None::<&&str>);
        assert_eq!(s.len(), 0);
        let c = s.insert("c");
        assert!(c != a && c != b);
        assert_eq!(s.remove(c), Some("c"));
        let d = s.skip_key();
        assert!(d != a && d != b && d != c);
        assert_eq!(s.remove(a), None);
        assert!(s.is_empty());
    }

    #[test]
    fn a_skipped_slot_whose_generation_wraps_is_retired() {
        let mut s: Slab<u8> = Slab::default();
        s.entries.push(Entry::Vacant {
            generation: u32::MAX,
            next_free: NONE,
        });
        s.free_head = 0;
        assert_eq!(s.skip_key(), pack(0, u32::MAX));
        assert_eq!(
            unpack(s.skip_key()).0,
            1,
            "the wrapped slot must not be reused"
        );
        assert_eq!(unpack(s.insert(1)).0, 1);
    }

    #[test]
    fn a_slot_whose_generation_wraps_is_retired() {
        let mut s: Slab<u8> = Slab::default();
        let k = s.insert(1);
        // Force the slot to its last generation.
        s.entries[0] = Entry::Occupied {
            generation: u32::MAX,
            value: 1,
        };
        let last = pack(0, u32::MAX);
        assert_ne!(k, last);
        assert_eq!(s.remove(last), Some(1));
        let fresh = s.insert(2);
        assert_eq!(unpack(fresh).0, 1, "the wrapped slot must not be reused");
    }
}
