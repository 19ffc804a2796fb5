#!/usr/bin/env python3
"""BENCHMARK ONLY: fills a stopped Tasklane SQLite database with a backlog of queued runs by
direct SQL, because queuing a million runs through the API takes hours. Never use it on a
database that matters: it bypasses every rule of the service (no events, no idempotency records).

    bench/seed_backlog.py DATABASE COUNT MODE

The database must have been created by the tasklane binary to be measured (run `serve` once and
stop it). Every seeded task is a global, unowned, ready task with one queued run and no events,
as `POST /api/tasks` + `POST /api/tasks/{id}/start` leave them apart from the events. MODE:

  plain  every run medium priority, no capabilities;
  caps   the older half urgent and requiring `gpu` (a head of the queue an agent offering
         `cpu,fast` may not take), the newer half medium requiring `cpu`, one in three of them
         preferring `fast`.

The observe counters stay exact: the server keeps them by deltas its write path computes, which
direct SQL bypasses, so the script recounts them from the tables in the same transaction.
"""
import sqlite3
import sys
import time

db, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode not in ("plain", "caps"):
    sys.exit("MODE is plain or caps")
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=OFF")
conn.execute("PRAGMA cache_size=-262144")
has_classes = any(r[1] == "claim_audience" for r in conn.execute("PRAGMA table_info(task_runs)"))
base = int(time.time() * 1_000_000) - count - 10_000_000
half = count // 2 if mode == "caps" else 0
# Per seeded row i (0-based): priority, required, preferred.
prio = f"CASE WHEN i < {half} THEN 'urgent' ELSE 'medium' END"
rank = f"CASE WHEN i < {half} THEN 3 ELSE 1 END"
if mode == "caps":
    req = f"""CASE WHEN i < {half} THEN '["gpu"]' ELSE '["cpu"]' END"""
    pref = f"""CASE WHEN i >= {half} AND i % 3 = 0 THEN '["fast"]' ELSE '[]' END"""
    caps = f"""CASE WHEN i < {half} THEN '[["gpu"],[]]'
        WHEN i % 3 = 0 THEN '[["cpu"],["fast"]]' ELSE '[["cpu"],[]]' END"""
else:
    req, pref, caps = "'[]'", "'[]'", "'[[],[]]'"
seq = f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {count})"
started = time.time()
conn.execute("BEGIN")
conn.execute(f"""{seq}
INSERT INTO tasks (id, scope, title, priority, max_attempts, auto_enqueue_on_ready, status,
    approval_policy, approval_state, latest_event_seq, created_by_kind, created_by_ref,
    origin_kind, origin_ref, created_at, updated_at, last_activity_at, required_capabilities,
    preferred_capabilities)
SELECT printf('task-seed%011d', i), 'global', 'seeded ' || i, {prio}, 3, 0, 'ready', 'none',
    'not_required', 0, 'human', 'bench', 'http', 'tasks.create', {base} + i, {base} + i,
    {base} + i, {req}, {pref}
FROM s""")
class_cols = ", claim_audience, claim_caps" if has_classes else ""
class_vals = f", 'g|', {caps}" if has_classes else ""
conn.execute(f"""{seq}
INSERT INTO task_runs (id, task_id, status, attempt, origin_kind, origin_ref, queued_at,
    required_capabilities, preferred_capabilities, priority_rank{class_cols})
SELECT printf('run-seed%011d', i), printf('task-seed%011d', i), 'queued', 1, 'http',
    'tasks.start', {base} + i, {req}, {pref}, {rank}{class_vals}
FROM s""")
# The dashboard and inbox counters, recounted (the buckets of core::observe::counters).
conn.execute("DELETE FROM obs_task_counts")
conn.execute("""INSERT INTO obs_task_counts
SELECT scope, COALESCE(workspace_id, ''), COALESCE(owner_kind, ''), COALESCE(owner_ref, ''),
       COALESCE(network_channel, ''), origin_kind, status, approval_state, dependency_count > 0,
       approval_policy, latest_run_failed, COUNT(*)
FROM tasks GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11""")
conn.execute("DELETE FROM obs_run_counts")
conn.execute("""INSERT INTO obs_run_counts
SELECT t.scope, COALESCE(t.workspace_id, ''), COALESCE(t.owner_kind, ''), COALESCE(t.owner_ref, ''),
       COALESCE(t.network_channel, ''), t.origin_kind, COALESCE(r.network_channel, ''), r.origin_kind,
       r.status, COUNT(*),
       SUM(r.claimed_at IS NOT NULL), COALESCE(SUM(MAX(r.claimed_at - r.queued_at, 0)), 0),
       COALESCE(MAX(MAX(r.claimed_at - r.queued_at, 0)), 0),
       SUM(r.started_at IS NOT NULL), COALESCE(SUM(MAX(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)), 0),
       COALESCE(MAX(MAX(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)), 0)
FROM task_runs r JOIN tasks t ON t.id = r.task_id GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9""")
conn.execute("COMMIT")
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(f"seeded {count} queued runs ({mode}) in {time.time() - started:.0f} s", file=sys.stderr)
