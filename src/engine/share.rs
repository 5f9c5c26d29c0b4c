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
pub fn share_spec<T: Spec>(sharer: &SpecSharer<T>, spec: &T) -> Arc<T> {
    if let Some(hit) = sharer.recent_equal(spec) {
        return hit;
    }
    let shared = match serde_json::to_vec(spec) {
        Ok(key) => sharer
            .table
            .share(key.into_boxed_slice(), || Arc::new(spec.clone())),
        Err(_) => Arc::new(spec.clone()),
    };
    sharer.remember(&shared);
    shared
}

/// Specs remembered per [`SpecSharer`] as shared last, bytes aside: a
/// catalog repeats a product's few license and feature specs license after
/// license, so comparing against them first spares serialising each spec
/// for its key (8 % of a million-license catalog load).
pub const RECENT_SPECS_MAX: usize = 8;

/// A spec type that may be shared: comparable, and able to say when its
/// equality is exact. `PartialEq` on a float calls 0.0 and -0.0 equal where
/// their JSON differs, so a spec holding a float is shared by its JSON only.
pub trait Spec: serde::Serialize + Clone + PartialEq {
    fn holds_float(&self) -> bool;
}

/// True when `v` holds a floating-point number anywhere.
pub fn value_holds_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(value_holds_float),
        serde_json::Value::Object(m) => m.values().any(value_holds_float),
        _ => false,
    }
}

/// The sharing of one spec type: the table keyed by the spec's JSON, and
/// the specs shared last.
#[derive(Debug)]
pub struct SpecSharer<T> {
    table: Sharer<Box<[u8]>, T>,
    /// Newest first, at most [`RECENT_SPECS_MAX`]; held for a few
    /// comparisons only (specs are shared when entities are written).
    recent: parking_lot::Mutex<std::collections::VecDeque<Arc<T>>>,
}

impl<T> Default for SpecSharer<T> {
    fn default() -> Self {
        SpecSharer {
            table: Sharer::default(),
            recent: parking_lot::Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

impl<T: Spec> SpecSharer<T> {
    /// Forgets every shared value (a restore of the whole state).
    pub fn clear(&self) {
        self.table.clear();
        self.recent.lock().clear();
    }

    fn recent_equal(&self, spec: &T) -> Option<Arc<T>> {
        if spec.holds_float() {
            return None;
        }
        self.recent.lock().iter().find(|r| ***r == *spec).cloned()
    }

    fn remember(&self, shared: &Arc<T>) {
        if shared.holds_float() {
            return;
        }
        let mut recent = self.recent.lock();
        if recent.iter().any(|r| Arc::ptr_eq(r, shared)) {
            return;
        }
        if recent.len() >= RECENT_SPECS_MAX {
            recent.pop_back();
        }
        recent.push_front(Arc::clone(shared));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(code: &str, metadata: serde_json::Value) -> crate::engine::model::FeatureSpec {
        serde_json::from_value(serde_json::json!({"code": code, "metadata": metadata}))
            .expect("spec")
    }

    /// Equal specs share, found among the recent ones or by their JSON; a
    /// spec holding a float is shared by its JSON only, so 0.0 and -0.0 stay
    /// apart.
    #[test]
    fn equal_specs_share_and_floats_share_only_by_json() {
        let s: SpecSharer<crate::engine::model::FeatureSpec> = SpecSharer::default();
        let a = share_spec(&s, &feature("a", serde_json::json!({"n": 1})));
        let b = share_spec(&s, &feature("b", serde_json::Value::Null));
        assert!(Arc::ptr_eq(
            &a,
            &share_spec(&s, &feature("a", serde_json::json!({"n": 1})))
        ));
        assert!(Arc::ptr_eq(
            &b,
            &share_spec(&s, &feature("b", serde_json::Value::Null))
        ));
        // Past the recent ones: found by the JSON key.
        let many: Vec<_> = (0..RECENT_SPECS_MAX * 2)
            .map(|i| share_spec(&s, &feature(&format!("x{i}"), serde_json::Value::Null)))
            .collect();
        assert_eq!(s.recent.lock().len(), RECENT_SPECS_MAX);
        assert!(Arc::ptr_eq(
            &a,
            &share_spec(&s, &feature("a", serde_json::json!({"n": 1})))
        ));
        let zero = share_spec(&s, &feature("z", serde_json::json!({"v": 0.0})));
        let minus = share_spec(&s, &feature("z", serde_json::json!({"v": -0.0})));
        assert!(!Arc::ptr_eq(&zero, &minus));
        assert_eq!(
            serde_json::to_string(&minus.metadata).expect("json"),
            r#"{"v":-0.0}"#
        );
        drop(many);
    }

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
