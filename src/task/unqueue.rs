//! How an abort reaches the queue of its task's pool: a process-wide map from a pool's id
//! to its engine, as an [`Unqueue`]. Consulted only by an abort that decided a task's
//! outcome (a handle's `abort`, a group's, or a refused nested wait), so submits and runs
//! pay nothing for it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};

/// What an abort asks of the pool of its task.
pub(crate) trait Unqueue: Send + Sync {
    /// Task `job`, queued with `priority`, was just aborted: if it has not started, take
    /// it out of the queue now (its place freed, its end counted; its job dropped on its
    /// runtime). Never called under the pool's lock.
    fn aborted(self: Arc<Self>, job: u64, priority: i32);
}

type Pools = BTreeMap<usize, Weak<dyn Unqueue>>;

static POOLS: RwLock<Pools> = RwLock::new(BTreeMap::new());

/// Makes pool `id` reachable by the aborts of its tasks (until [`deregister`]).
pub(crate) fn register(id: usize, pool: Weak<dyn Unqueue>) {
    // Nothing panics under this lock; recover the map if something ever did.
    POOLS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, pool);
}

/// Pool `id` is being dropped.
pub(crate) fn deregister(id: usize) {
    POOLS.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
}

/// Tells pool `pool` that its task `job` was aborted (see [`Unqueue::aborted`]).
pub(crate) fn aborted(pool: usize, job: u64, priority: i32) {
    let found = POOLS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&pool)
        .and_then(Weak::upgrade);
    // The map's lock is released before the pool's is taken.
    if let Some(pool) = found {
        pool.aborted(job, priority);
    }
}
