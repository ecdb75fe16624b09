//! Shared parts of the two demo programs (`backpressure` and `http_load`): the
//! machine-readable `RESULT` line, the live progress bar and monitor line, the memory guard
//! for the naive pattern, and running a mode as a child process of the same binary.
#![deny(missing_docs, unsafe_code)]

pub mod child;
pub mod live;
pub mod memory;
pub mod monitor;
pub mod report;
