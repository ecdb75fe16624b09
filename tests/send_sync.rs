//! The public types are `Send`/`Sync` where users need them to be, and handles are `Unpin`.

use std::future::Future;
use std::pin::Pin;

use nb_aiopool::*;

fn send<T: Send>() {}
fn sync<T: Sync>() {}
fn unpin<T: Unpin>() {}
fn unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
fn error<T: std::error::Error + Send + Sync + 'static>() {}

/// A future that is `Send` but not `Sync`, as many are.
type NotSyncFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

#[test]
fn public_types_are_send_and_sync() {
    send::<CommonAioPool>();
    sync::<CommonAioPool>();
    send::<NoQueueAioPool>();
    sync::<NoQueueAioPool>();
    send::<SmartAioPool>();
    sync::<SmartAioPool>();
    send::<SmartAioPoolBuilder>();
    sync::<SmartAioPoolBuilder>();
    send::<TaskHandle<String>>();
    sync::<TaskHandle<String>>();
    unpin::<TaskHandle<String>>();
    send::<AbortHandle>();
    sync::<AbortHandle>();
    send::<PoolStats>();
    send::<ShutdownReport>();

    error::<TaskError>();
    error::<SubmitError<NotSyncFuture>>();
    error::<TrySubmitError<NotSyncFuture>>();
    error::<RunError<NotSyncFuture>>();
}

/// Handles can be used inside `catch_unwind` (a review found `TaskHandle` had lost both
/// traits when its result slot moved into the task's cell).
#[test]
fn handles_are_unwind_safe() {
    unwind_safe::<TaskHandle<String>>();
    unwind_safe::<TaskHandle<std::cell::Cell<u8>>>();
    unwind_safe::<AbortHandle>();
}

#[test]
fn submit_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let common = CommonAioPool::new(1, 1);
    is_send(&common.submit(async {}));
    is_send(&common.run(async {}));
    is_send(&common.shutdown());
    let no_queue = NoQueueAioPool::new(1);
    is_send(&no_queue.submit(async {}));
    is_send(&no_queue.wait());
    let smart = SmartAioPool::new(1);
    is_send(&smart.submit(|| async {}));
    is_send(&smart.wait_for_all());
    is_send(&shutdown_all_common_aiopools());
    is_send(&wait_all_no_queue_aiopools());
    is_send(&shutdown_all_smart_aiopools());
}

#[test]
fn errors_print_without_debug_on_the_task() {
    struct Opaque;
    impl Future for Opaque {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            std::task::Poll::Ready(())
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pool = CommonAioPool::new(1, 1);
    rt.block_on(pool.shutdown());
    let err = pool.try_submit(Opaque).unwrap_err();
    assert_eq!(format!("{err:?}"), "Closed(..)");
    assert_eq!(
        err.to_string(),
        "closed: the pool is shut down (or, for a task group with cancel-on-error, one of its tasks failed) and accepts no tasks"
    );
}
