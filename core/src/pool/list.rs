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
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub(crate) fn front(&self) -> Option<u64> {
        (self.head != NIL).then_some(self.head)
    }

    #[inline]
    pub(crate) fn back(&self) -> Option<u64> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// The links a node appended now gets. A caller that stores them in the node itself (for
    /// example while it already holds the node, or before inserting it into the slab) then calls
    /// [`List::attach_back`], saving the lookup of the node that [`List::push_back`] makes.
    #[inline]
    pub(crate) fn back_links(&self) -> Links {
        Links {
            prev: self.tail,
            next: NIL,
        }
    }

    /// Appends `key`, whose node already carries [`List::back_links`] (taken since the list last
    /// changed): links the old tail to it.
    pub(crate) fn attach_back<T>(
        &mut self,
        slab: &mut Slab<T>,
        key: u64,
        links: impl Fn(&mut T) -> &mut Links,
    ) {
        if self.tail == NIL {
            self.head = key;
        } else {
            links(slab.get_mut(self.tail).expect("tail exists")).next = key;
        }
        self.tail = key;
        self.len += 1;
    }

    /// Appends `key`, which must not be in this list.
    pub(crate) fn push_back<T>(
        &mut self,
        slab: &mut Slab<T>,
        key: u64,
        links: impl Fn(&mut T) -> &mut Links,
    ) {
        *links(slab.get_mut(key).expect("pushed node exists")) = self.back_links();
        self.attach_back(slab, key, links);
    }

    /// Unlinks `key`, whose links `node` the caller already took out of it (or removed from the
    /// slab with it): only the neighbours are looked up, not the node again.
    pub(crate) fn unlink<T>(
        &mut self,
        slab: &mut Slab<T>,
        key: u64,
        node: Links,
        links: impl Fn(&mut T) -> &mut Links,
    ) {
        let Links { prev, next } = node;
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
