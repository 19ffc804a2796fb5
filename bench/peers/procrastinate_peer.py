"""Procrastinate peer (PostgreSQL). One configuration: procrastinate 3 has no batched fetch or
acknowledgement; the worker uses LISTEN/NOTIFY (its default) with `concurrency` = workers."""

import asyncio

import procrastinate

from peer_common import guard, latencies, now, pct, report, timed_phase, usage

SYSTEM = "procrastinate"


async def main(a):
    deadline = now() + a.timeout_s * 1000
    started = {}
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=a.dsn, min_size=a.workers + 4, max_size=a.workers + 4))

    @app.task(name="noop", queue="bench")
    async def noop(i):
        started[i] = now()

    async with app.open_async():
        exists = await app.connector.execute_query_one_async(
            "select to_regclass('procrastinate_jobs') is not null as e")
        if not exists["e"]:
            await app.schema_manager.apply_schema_async()
        worker_opts = dict(concurrency=a.workers, install_signal_handlers=False, queues=["bench"])
        if a.workload in ("burn-down", "deep"):
            for s in range(0, a.jobs, 1000):
                await noop.batch_defer_async(*({"i": i} for i in range(s, min(a.jobs, s + 1000))))
            timed_phase()
            cpu0, _ = usage()
            t0 = now()
            # wait=False: the worker returns once the queue is empty and its jobs are finished.
            try:
                await asyncio.wait_for(app.run_worker_async(wait=False, **worker_opts),
                                       timeout=min(a.limit_s, (deadline - t0) / 1000))
                partial = None
            except asyncio.TimeoutError:
                partial = f"stopped after {a.limit_s} s with {len(started)} of {a.jobs} jobs started"
            elapsed = (now() - t0) / 1000
            cpu1, rss = usage()
            fields = {"jobs": len(started), "jobs_per_s": round(len(started) / elapsed, 2),
                      "worker_cpu_s": cpu1 - cpu0, "peak_rss_mb": rss}
            if partial:
                fields["partial"] = partial
        elif a.workload in ("pickup", "steady"):
            n = a.jobs if a.workload == "pickup" else round(a.rate * a.duration_s)
            interval = a.interval_ms if a.workload == "pickup" else 1000.0 / a.rate
            worker = asyncio.create_task(app.run_worker_async(wait=True, **worker_opts))
            await asyncio.sleep(0.3)
            timed_phase()
            cpu0, _ = usage()
            returned = {}

            async def enqueue(i):
                await noop.defer_async(i=i)
                returned[i] = now()

            t0 = now()
            pending = []
            for i in range(n):
                wait = t0 + i * interval - now()
                if wait > 0.5:  # a producer that falls behind catches up at once
                    await asyncio.sleep(wait / 1000)
                pending.append(asyncio.create_task(enqueue(i)))
            await asyncio.gather(*pending)
            stop_at = min(deadline, now() + a.limit_s * 1000)
            while len(started) < n and now() < stop_at:
                await asyncio.sleep(0.002)
            cpu1, rss = usage()
            lat, last = latencies(returned, started)
            fields = {"jobs": len(lat), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                      "worker_cpu_s": cpu1 - cpu0, "peak_rss_mb": rss}
            if len(started) < n:
                fields["partial"] = (f"stopped {a.limit_s} s after the last enqueue with "
                                     f"{len(started)} of {n} jobs picked up")
            if a.workload == "steady":
                fields["offered_per_s"] = a.rate
                fields["jobs_per_s"] = round(len(lat) / ((last - t0) / 1000), 2)
            report(a, SYSTEM, fields)
            worker.cancel()
            try:
                await worker
            except (asyncio.CancelledError, Exception):
                pass
            return
        else:
            raise ValueError(f"workload {a.workload} is not supported by {SYSTEM}")
        report(a, SYSTEM, fields)


if __name__ == "__main__":
    guard(SYSTEM, lambda a: asyncio.run(main(a)))
