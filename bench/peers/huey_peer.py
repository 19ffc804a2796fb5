"""Huey peer on SQLite (`SqliteHuey`, WAL, fsync=True so every enqueue and dequeue is durable like
Tasklane's synchronous=FULL). Thread workers in one consumer; as shipped: idle workers poll from
0.1 s backing off to 10 s. Huey is at-most-once: a dequeue deletes the job before it runs, so a
job costs two commits (enqueue, dequeue) instead of three."""

import threading
import time

from huey import SqliteHuey
from huey.consumer import Consumer

from peer_common import guard, latencies, now, pct, report, timed_phase, usage

SYSTEM = "huey"


def make(a, fsync):
    return SqliteHuey(name="bench", filename=a.db_path, fsync=fsync, results=False)


def main(a):
    deadline = now() + a.timeout_s * 1000
    started = {}
    lock = threading.Lock()
    huey = make(a, True)

    @huey.task(name="noop")
    def noop(i):
        with lock:
            started[i] = now()

    def consumer():
        c = Consumer(huey, workers=a.workers, periodic=False, check_worker_health=False)
        c._set_signal_handlers = lambda: None  # the benchmark owns signals
        c.start()
        return c

    if a.workload in ("burn-down", "deep"):
        # Seeding is not timed: a second handle on the same file without fsync, one process.
        seeder = make(a, False)
        @seeder.task(name="noop")
        def seed_noop(i):
            pass

        for i in range(a.jobs):
            seed_noop(i)
        seeder.storage.close()
        timed_phase()
        cpu0, _ = usage()
        t0 = now()
        c = consumer()
        stop_at = min(deadline, t0 + a.limit_s * 1000)
        while (len(started) < a.jobs or huey.pending_count() > 0) and now() < stop_at:
            time.sleep(0.005)
        elapsed = (now() - t0) / 1000
        cpu1, rss = usage()
        fields = {"jobs": len(started), "jobs_per_s": round(len(started) / elapsed, 2),
                  "worker_cpu_s": cpu1 - cpu0, "peak_rss_mb": rss, "db_cpu_s": 0}
        if len(started) < a.jobs:
            fields["partial"] = f"stopped after {a.limit_s} s with {len(started)} of {a.jobs} jobs started"
    elif a.workload in ("pickup", "steady"):
        n = a.jobs if a.workload == "pickup" else round(a.rate * a.duration_s)
        interval = a.interval_ms if a.workload == "pickup" else 1000.0 / a.rate
        c = consumer()
        time.sleep(0.3)
        timed_phase()
        cpu0, _ = usage()
        returned = {}
        t0 = now()
        for i in range(n):  # one producer thread: each enqueue is a durable commit
            wait = t0 + i * interval - now()
            if wait > 0.5:
                time.sleep(wait / 1000)
            noop(i)
            returned[i] = now()
        stop_at = min(deadline, now() + a.limit_s * 1000)
        while len(started) < n and now() < stop_at:
            time.sleep(0.002)
        cpu1, rss = usage()
        with lock:
            lat, last = latencies(returned, dict(started))
        fields = {"jobs": len(lat), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                  "worker_cpu_s": cpu1 - cpu0, "peak_rss_mb": rss, "db_cpu_s": 0}
        if len(lat) < n:
            fields["partial"] = f"stopped {a.limit_s} s after the last enqueue with {len(lat)} of {n} jobs picked up"
        if a.workload == "steady":
            fields["offered_per_s"] = a.rate
            fields["jobs_per_s"] = round(len(lat) / ((last - t0) / 1000), 2)
    else:
        raise ValueError(f"workload {a.workload} is not supported by {SYSTEM}")
    report(a, SYSTEM, fields)
    c.stop(graceful=False)


if __name__ == "__main__":
    guard(SYSTEM, main)
