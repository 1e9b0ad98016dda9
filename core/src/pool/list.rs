//! Intrusive doubly linked lists over slab entries: O(1) push, pop and removal from the middle,
//! which is what lets cancel, eviction and expiry avoid scanning a queue.

use crate::slab::Slab;

/// A slab key that stands for "no node". Slab keys are never 0 (generations start at 1).
const NIL: u64 = 0;

/// The links a node carries for one list it can be in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Links {
    prev: u64,
    next: u64,
}

impl Links {
    /// The next node's key (0: none). For invariant checks.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }
}

/// The head of one list. The nodes live in a slab; `links` picks the node's links for this list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct List {
    head: u64,
    tail: u64,
    len: usize,
}

impl List {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn front(&self) -> Option<u64> {
        (self.head != NIL).then_some(self.head)
    }

    pub(crate) fn back(&self) -> Option<u64> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// Appends `key`, which must not be in this list.
    pub(crate) fn push_back<T>(
        &mut self,
        slab: &mut Slab<T>,
        key: u64,
        links: fn(&mut T) -> &mut Links,
    ) {
        let node = links(slab.get_mut(key).expect("pushed node exists"));
        *node = Links {
            prev: self.tail,
            next: NIL,
        };
        if self.tail == NIL {
            self.head = key;
        } else {
            links(slab.get_mut(self.tail).expect("tail exists")).next = key;
        }
        self.tail = key;
        self.len += 1;
    }

    /// Unlinks `key`, which must be in this list.
    pub(crate) fn remove<T>(
        &mut self,
        slab: &mut Slab<T>,
        key: u64,
        links: fn(&mut T) -> &mut Links,
    ) {
        let Links { prev, next } =
            core::mem::take(links(slab.get_mut(key).expect("removed node exists")));
        if prev == NIL {
            debug_assert_eq!(self.head, key);
            self.head = next;
        } else {
            links(slab.get_mut(prev).expect("prev exists")).next = next;
        }
        if next == NIL {
            debug_assert_eq!(self.tail, key);
            self.tail = prev;
        } else {
            links(slab.get_mut(next).expect("next exists")).prev = prev;
        }
        self.len -= 1;
    }
}
