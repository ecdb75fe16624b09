//! A counting global allocator for the test binaries that count what the heap holds
//! (`tests/allocations.rs`, `tests/memory_leaks.rs`, `tests/group_failures.rs`,
//! `tests/session_fixes_review.rs`, `tests/keys_at_scale.rs`,
//! `tests/flow_memory_with_unique_keys.rs`,
//! `tests/flow_control_across_runtimes_and_the_exit.rs`): included with
//! `mod counting_alloc;`, it becomes that binary's allocator (and only that binary's).
//! It counts:
//! - live blocks, of every thread ([`LIVE_BLOCKS`]): a collection that grows its capacity
//!   between rounds does not count;
//! - live bytes, of the calling thread ([`live_bytes`]): what a collection keeps does.
//!
//! A thread may also ask that its frees be slow ([`slow_frees`]), to hold it between two
//! steps that have no user code between them (a free is the only thing there to hook).
#![allow(dead_code)] // each binary uses a part

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

struct Counting;

/// Heap blocks allocated and not yet freed, by every thread.
pub static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// The bytes this thread allocated and has not freed (frees of other threads' blocks
    /// count where they happen).
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    /// While set, every free on this thread first sleeps 100 ms.
    static SLOW_FREES: Cell<bool> = const { Cell::new(false) };
}

/// Adds `n` to this thread's [`LIVE_BYTES`] (nothing during the thread's teardown).
fn count_bytes(n: isize) {
    let _ = LIVE_BYTES.try_with(|b| b.set(b.get() + n));
}

/// The bytes this thread allocated and has not freed, frees of other threads' blocks
/// counted where they happen (compare two readings on one thread).
pub fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

/// From now on, until called again with `false`, each free on this thread sleeps 100 ms
/// first.
pub fn slow_frees(on: bool) {
    SLOW_FREES.with(|s| s.set(on));
}

/// Waits (sleeping the thread, outside every runtime) until [`LIVE_BLOCKS`] has not
/// changed for 50 ms (at most 5 s): tasks' last drops and slot tasks' ends happen on a
/// runtime's threads, some late on a busy machine. Returns the count then.
pub fn settled_blocks() -> isize {
    let mut last = LIVE_BLOCKS.load(Ordering::SeqCst);
    let mut still = 0;
    for _ in 0..500 {
        std::thread::sleep(Duration::from_millis(10));
        let now = LIVE_BLOCKS.load(Ordering::SeqCst);
        if now == last {
            still += 1;
            if still == 5 {
                break;
            }
        } else {
            (last, still) = (now, 0);
        }
    }
    last
}

/// One block more of `size` bytes.
fn allocated(size: usize) {
    LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    count_bytes(size as isize);
}

// SAFETY: every call is passed on to `System` unchanged; only counters are added, and a
// free may sleep first.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            allocated(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if SLOW_FREES.try_with(Cell::get).unwrap_or(false) {
            std::thread::sleep(Duration::from_millis(100));
        }
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        count_bytes(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            allocated(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count_bytes(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
