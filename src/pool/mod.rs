//! The three public pools, over the engine: each file holds one pool type and its
//! forwarding methods; `core` is the private core the two future-taking pools
//! share; `registry` holds their process-wide lists and the `*_all_*` functions.

pub(crate) mod common;
pub(crate) mod core;
pub(crate) mod group;
pub(crate) mod no_queue;
pub(crate) mod registry;
pub(crate) mod smart;
pub(crate) mod stream;
