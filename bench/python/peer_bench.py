"""The Python peer of `compare`: the same workloads through nb_aiopool's NbAioPool.

Each job returns its payload (``"task"`` repeated to --payload-bytes, then ``_{i}``);
the producer awaits ``pool.submit(coro)`` (backpressure), drops the returned future, and
ends with ``await pool.shutdown(wait=True)``. Prints one RESULT line, the format
`compare` parses: wall seconds, tasks/s, CPU µs per task, peak RSS (ru_maxrss).
"""
import argparse
import asyncio
import resource
import sys
import time

from nb_aiopool import NbAioPool


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workload", default="tiny", help="tiny or sleep:MS")
    p.add_argument("--tasks", "-n", type=int, default=1_000_000)
    p.add_argument("--concurrency", "-c", type=int, default=1000)
    p.add_argument("--queue", "-q", type=int, default=None, help="default: the concurrency")
    p.add_argument("--payload-bytes", type=int, default=400)
    a = p.parse_args(argv)
    if a.queue is None:
        a.queue = a.concurrency
    if a.workload == "tiny":
        a.sleep_s = None
    elif a.workload.startswith("sleep:"):
        a.sleep_s = int(a.workload[len("sleep:"):]) / 1000.0
    else:
        p.error(f"unknown workload {a.workload!r}")
    return a


async def tiny_job(payload):
    await asyncio.sleep(0)
    return payload


def sleep_job(seconds):
    async def job(payload):
        await asyncio.sleep(seconds)
        return payload

    return job


async def produce(a):
    prefix = ("task" * ((a.payload_bytes + 3) // 4))[: a.payload_bytes]
    job = tiny_job if a.sleep_s is None else sleep_job(a.sleep_s)
    pool = NbAioPool(max_concurrency=a.concurrency, max_queue_size=a.queue)
    done = 0

    def count(_fut):
        nonlocal done
        done += 1

    for i in range(a.tasks):
        fut = await pool.submit(job(f"{prefix}_{i}"))
        fut.add_done_callback(count)
    await pool.shutdown(wait=True)
    await asyncio.sleep(0)  # let the last done-callbacks run
    return done


def main(argv):
    a = parse_args(argv)
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    done = asyncio.run(produce(a))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if done != a.tasks:
        sys.exit(f"python: {done} of {a.tasks} jobs completed")
    print(
        f"RESULT variant=python workload={a.workload} tasks={a.tasks} "
        f"concurrency={a.concurrency} queue={a.queue} runtime=asyncio "
        f"wall_s={wall:.4f} tasks_per_s={a.tasks / wall:.0f} cpu_s={cpu:.3f} "
        f"cpu_us_per_task={cpu * 1e6 / a.tasks:.4f} "
        f"peak_rss_mib={r1.ru_maxrss / 1024:.2f} completed={done}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
