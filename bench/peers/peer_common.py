"""Shared by the Python peers: the same arguments, timing and result line as common.mjs.

A peer prints {"phase":"timed"} when timing starts and one JSON result line at the end, then waits
(at most 10 s) for a line on stdin before closing its connections, so that `bench/run` can read
the PostgreSQL backends' CPU while they still exist.
"""

import argparse
import json
import re
import resource
import select
import sys
import time
import traceback


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--workload", default="burn-down")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--jobs", type=int, default=20000)
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--duration-s", type=float, default=10)
    p.add_argument("--interval-ms", type=float, default=10)
    p.add_argument("--config", default="default")
    p.add_argument("--dsn", default="")
    p.add_argument("--db-path", default="")
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("--limit-s", type=float, default=120)
    a = p.parse_args()
    if a.dsn and not re.match(r"^postgres(ql)?://[^@]*@?127\.0\.0\.1[:/]", a.dsn):
        sys.exit("--dsn must be a postgres:// URL on 127.0.0.1")
    return a


def now():
    return time.perf_counter() * 1000.0


def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024.0


def pct(sorted_ms, p):
    if not sorted_ms:
        return None
    return round(sorted_ms[round((len(sorted_ms) - 1) * p)], 2)


def timed_phase():
    print(json.dumps({"phase": "timed"}), flush=True)


def latencies(returned, started):
    """Handler start - enqueue returned, clamped at 0, sorted; and the last start."""
    lat = sorted(max(0.0, at - returned[i]) for i, at in started.items())
    return lat, max(started.values(), default=0.0)


def report(a, system, fields):
    print(json.dumps({"system": system, "config": a.config, "workload": a.workload,
                      "workers": a.workers, **fields}), flush=True)
    select.select([sys.stdin], [], [], 10)


def guard(system, main):
    a = parse_args()
    try:
        main(a)
    except BaseException:  # report every failure as a row, then exit 1
        print(json.dumps({"system": system, "config": a.config, "workload": a.workload,
                          "workers": a.workers, "error": traceback.format_exc()[-2000:]}), flush=True)
        sys.exit(1)
