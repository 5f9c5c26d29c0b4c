//! Sharing of equal values: a catalog's licenses mostly repeat their products'
//! license and feature definitions, so equal specs (and feature codes) are
//! kept once and handed out as `Arc`s. A change replaces the holder's `Arc`,
//! never writes through it.
//!
//! The table holds weak references, so a value no one uses any more is freed;
//! dead entries are dropped when the table reaches its limit, and past the
//! limit values are simply not shared (correct, only larger).

use std::hash::Hash;
use std::sync::{Arc, Weak};

use dashmap::DashMap;

/// Distinct values remembered per table for sharing.
pub const SHARED_VALUES_MAX: usize = 1 << 16;

/// Equal values shared, keyed by `K` (the serialised spec, or the string itself).
/// Sharded map; touched only when entities are written, never on the hot path.
#[derive(Debug)]
pub struct Sharer<K: Eq + Hash, T: ?Sized> {
    table: DashMap<K, Weak<T>, foldhash::fast::RandomState>,
}

impl<K: Eq + Hash, T: ?Sized> Default for Sharer<K, T> {
    fn default() -> Self {
        Sharer {
            table: DashMap::with_hasher(Default::default()),
        }
    }
}

impl<K: Eq + Hash, T: ?Sized> Sharer<K, T> {
    /// Forgets every shared value (a restore of the whole state).
    pub fn clear(&self) {
        self.table.clear();
    }

    /// The shared `Arc` for `key`, made by `make` when there is none alive.
    pub fn share(&self, key: K, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        if let Some(shared) = self.table.get(&key).and_then(|w| w.upgrade()) {
            return shared;
        }
        if self.table.len() >= SHARED_VALUES_MAX {
            self.table.retain(|_, w| w.strong_count() > 0);
            if self.table.len() >= SHARED_VALUES_MAX {
                return make();
            }
        }
        match self.table.entry(key) {
            dashmap::Entry::Occupied(mut e) => {
                if let Some(shared) = e.get().upgrade() {
                    return shared;
                }
                let shared = make();
                e.insert(Arc::downgrade(&shared));
                shared
            }
            dashmap::Entry::Vacant(e) => {
                let shared = make();
                e.insert(Arc::downgrade(&shared));
                shared
            }
        }
    }
}

impl Sharer<Box<str>, Box<str>> {
    /// The shared copy of `s` (a thin `Arc`), looked up without allocating
    /// when it exists.
    pub fn share_str(&self, s: &str) -> Arc<Box<str>> {
        if let Some(shared) = self.table.get(s).and_then(|w| w.upgrade()) {
            return shared;
        }
        self.share(s.into(), || Arc::new(s.into()))
    }
}

/// Shares a serialisable spec: equal serialisations, one `Arc`. The key is
/// the spec's JSON, which is self-describing: an encoding without type tags
/// (postcard) gives `{"x":1}` and `{"x":true}` in a `Value` one key, so two
/// different specs would share.
pub fn share_spec<T: serde::Serialize + Clone>(sharer: &Sharer<Box<[u8]>, T>, spec: &T) -> Arc<T> {
    match serde_json::to_vec(spec) {
        Ok(key) => sharer.share(key.into_boxed_slice(), || Arc::new(spec.clone())),
        Err(_) => Arc::new(spec.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_and_dead_ones_are_remade() {
        let s: Sharer<Box<str>, Box<str>> = Sharer::default();
        let a = s.share_str("f0");
        let b = s.share_str("f0");
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        let c = s.share_str("f0");
        assert_eq!(&**c, "f0");
        assert_eq!(Arc::strong_count(&c), 1);
    }
}
