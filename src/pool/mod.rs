//! The three public pools, over the engine. The modules form a DAG: `core` (the private
//! generic core every pool forwards to) and `recipe` (SmartAioPool's jobs) at the bottom;
//! `group` and `stream` (task groups and map streams, over any core) above them;
//! `registry` (the future pools' process-wide lists and `*_all_*` functions); and one file
//! per public pool type on top, with plain forwarding methods.

pub(crate) mod common;
pub(crate) mod core;
pub(crate) mod group;
pub(crate) mod no_queue;
pub(crate) mod recipe;
pub(crate) mod registry;
pub(crate) mod smart;
pub(crate) mod stream;
