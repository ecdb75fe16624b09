//! [`Registry`]: a process-wide map from a pool's id to the pool, held weakly, so that a
//! task's handle can reach its pool (an abort, a wait inside the pool) without keeping it
//! alive, and the paths that never need it pay nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

/// A pool's id: what its tasks keep to reach it. 32 bits, so that a task's result slot
/// keeps it and the number of the slot running the task in one word (`Shared`). Never 0;
/// unique among the pools alive, and given to a later pool once dropped (as the pool's
/// address was before: nothing keeps an id to reach a dropped pool, see `Registry`).
///
/// Dropping it frees the id: after the pool has left every registry.
pub(crate) struct PoolId(u32);

/// The ids in use: those below `next`, but for `free`.
struct Ids {
    next: u32,
    free: Vec<u32>,
}

static IDS: Mutex<Ids> = Mutex::new(Ids {
    next: 1,
    free: Vec::new(),
});

impl PoolId {
    /// An id no live pool has.
    ///
    /// # Panics
    ///
    /// With 2^32 - 1 pools alive at once (each takes hundreds of bytes: not reachable).
    pub(crate) fn new() -> Self {
        // Nothing panics under this lock but the `expect`, which leaves it consistent.
        let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.free.pop() {
            return PoolId(id);
        }
        let id = ids.next;
        ids.next = id
            .checked_add(1)
            .expect("nb_aiopool: more than 4 billion pools alive at once");
        PoolId(id)
    }

    pub(crate) fn get(&self) -> u32 {
        self.0
    }
}

impl Drop for PoolId {
    fn drop(&mut self) {
        IDS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(self.0);
    }
}

/// Pools by id, as the trait object `T` a caller needs of them.
pub(crate) struct Registry<T: ?Sized>(RwLock<BTreeMap<u32, Weak<T>>>);

impl<T: ?Sized> Registry<T> {
    pub(crate) const fn new() -> Self {
        Registry(RwLock::new(BTreeMap::new()))
    }

    /// Makes pool `id` reachable (until [`remove`](Self::remove)).
    pub(crate) fn insert(&self, id: u32, pool: Weak<T>) {
        // Nothing panics under this lock; recover the map if something ever did.
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, pool);
    }

    /// Pool `id` is being dropped.
    pub(crate) fn remove(&self, id: u32) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Pool `id`, if it is still alive.
    pub(crate) fn get(&self, id: u32) -> Option<Arc<T>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .and_then(Weak::upgrade)
    }
}

#[cfg(all(test, not(nb_aiopool_loom)))]
mod tests {
    use super::PoolId;
    use std::collections::HashSet;

    /// Ids in use are never 0 and never shared, also after some were freed and given
    /// again (other tests make pools meanwhile: only what holds under that is checked).
    #[test]
    fn live_pool_ids_are_unique_and_not_zero() {
        let mut live: Vec<PoolId> = (0..200).map(|_| PoolId::new()).collect();
        live.retain(|id| id.get() % 3 != 0);
        live.extend((0..100).map(|_| PoolId::new()));
        let ids: HashSet<u32> = live.iter().map(PoolId::get).collect();
        assert_eq!(ids.len(), live.len(), "an id given twice");
        assert!(!ids.contains(&0));
    }
}
