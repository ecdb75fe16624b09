//! [`Registry`]: a process-wide map from a pool's id to the pool, held weakly, so that a
//! task's handle can reach its pool (an abort, a wait inside the pool) without keeping it
//! alive, and the paths that never need it pay nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};

/// Pools by id, as the trait object `T` a caller needs of them.
pub(crate) struct Registry<T: ?Sized>(RwLock<BTreeMap<usize, Weak<T>>>);

impl<T: ?Sized> Registry<T> {
    pub(crate) const fn new() -> Self {
        Registry(RwLock::new(BTreeMap::new()))
    }

    /// Makes pool `id` reachable (until [`remove`](Self::remove)).
    pub(crate) fn insert(&self, id: usize, pool: Weak<T>) {
        // Nothing panics under this lock; recover the map if something ever did.
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, pool);
    }

    /// Pool `id` is being dropped.
    pub(crate) fn remove(&self, id: usize) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Pool `id`, if it is still alive.
    pub(crate) fn get(&self, id: usize) -> Option<Arc<T>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .and_then(Weak::upgrade)
    }
}
