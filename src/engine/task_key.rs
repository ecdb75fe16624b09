//! A task's key ([`SubmitOptions::key`](crate::SubmitOptions::key)) as flow control keeps
//! it: the name with its hash, computed once when the task is submitted.
//!
//! Flow control's scans look a key up at every queued job they visit (how many of its
//! jobs run, how many the scan counted so far), and a start may visit hundreds of jobs;
//! with the name hashed at each lookup, hashing was most of a pool's work with keys in
//! use (RELIABILITY.md, 379). The hash is std's (SipHash with keys drawn
//! once per process), so names that come from outside (hosts found by a crawl) cannot be
//! chosen to collide.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, OnceLock};

/// A task's key: its name and the name's hash. Equal names give equal keys, whichever
/// `Arc` holds them.
#[derive(Clone)]
pub(crate) struct TaskKey {
    hash: u64,
    name: Arc<str>,
}

impl TaskKey {
    /// Hashes `name` (once: maps of [`KeyMap`] use the hash kept here).
    pub(crate) fn new(name: Arc<str>) -> Self {
        static HASHER: OnceLock<RandomState> = OnceLock::new();
        let hash = HASHER.get_or_init(RandomState::new).hash_one(&*name);
        TaskKey { hash, name }
    }
}

impl PartialEq for TaskKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.name, &other.name) || self.name == other.name)
    }
}

impl Eq for TaskKey {}

impl Hash for TaskKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl From<&str> for TaskKey {
    fn from(name: &str) -> Self {
        TaskKey::new(name.into())
    }
}

/// A map by [`TaskKey`] that uses the key's own hash instead of hashing it again.
pub(crate) type KeyMap<V> = HashMap<TaskKey, V, BuildHasherDefault<KeptHash>>;

/// The hasher of a [`KeyMap`]: the hash is the one its key kept.
#[derive(Default)]
pub(crate) struct KeptHash(u64);

impl Hasher for KeptHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    /// Not used by [`TaskKey`] (which writes its hash as one `u64`); folds the bytes in,
    /// so that the hasher is still a hasher.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_are_one_key_in_a_map() {
        let mut map = KeyMap::default();
        map.insert(TaskKey::from("host-a"), 1);
        *map.get_mut(&TaskKey::new(Arc::from("host-a")))
            .expect("the same key") += 1;
        map.insert(TaskKey::from("host-b"), 5);
        assert_eq!(map.len(), 2);
        assert_eq!(map[&TaskKey::from("host-a")], 2);
        assert_ne!(TaskKey::from("host-a"), TaskKey::from("host-b"));
        assert_eq!(format!("{:?}", TaskKey::from("h")), "\"h\"");
    }
}
