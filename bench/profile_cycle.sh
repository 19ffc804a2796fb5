#!/usr/bin/env bash
# Server instructions per agent job, counted by callgrind: deterministic, so two builds compare
# exactly even on a noisy machine (wall-clock figures on this VM drift by tens of percent).
#
#   bench/profile_cycle.sh [BINARY] [CYCLES]
#
# Starts BINARY (default target/release/tasklane) under callgrind on a fresh SQLite file, queues
# CYCLES runs (default 300) with instrumentation off, then counts the server's instructions over
# CYCLES claim-next -> complete cycles of one agent. Prints instructions per cycle and leaves the
# profile (callgrind_annotate it) in the printed directory.
#
# With BACKLOG=N the agent works through a backlog of N queued runs instead, seeded by direct SQL
# (bench/seed_backlog.py, benchmark only) into a database the binary created, after WARMUP
# (default 20) unmeasured cycles. MODE=caps seeds runs with required and preferred capabilities
# and the agent offers `cpu,fast` (see seed_backlog.py); MODE=plain (default) seeds plain runs.
#
#   BACKLOG=1000000 MODE=caps bench/profile_cycle.sh target/release/tasklane 100
#
# With BATCH=K (K divides CYCLES) one worker hosting K sessions claims K runs with one
# claim-batch and reports them with one complete-batch, CYCLES/K times.
#
# With AGENTS=N (N divides CYCLES) N agents work at once, each CYCLES/N claim-next -> complete
# cycles, so that the writer commits several commands per transaction as under load. The count
# then depends a little on how the commands happen to group.
#
# With DATABASE=postgres://... the server runs on that (fresh) PostgreSQL database instead, and
# the count is of Tasklane's side only; set TASKLANE_DATABASE_WRITER_SPIN_US=0 as well, or the
# count includes the writer's spinning while it waits for answers. Not with BACKLOG.
set -euo pipefail
bin=${1:-target/release/tasklane}
cycles=${2:-300}
backlog=${BACKLOG:-0}
mode=${MODE:-plain}
warmup=${WARMUP:-20}
batch=${BATCH:-0}
agents=${AGENTS:-1}
offer='[]'
[ "$mode" = caps ] && offer='["cpu","fast"]'
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
bin=$(realpath "$bin")
here=$(dirname "$(realpath "$0")")
dir=$(mktemp -d /tmp/tasklane-profile.XXXXXX)
database=${DATABASE:-$dir/tasklane.db}
if [ "$backlog" -gt 0 ] && [ -n "${DATABASE:-}" ]; then
  echo "BACKLOG seeds a SQLite file: it does not combine with DATABASE" >&2
  exit 2
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "$backlog" -gt 0 ]; then
  # Let the binary create its schema, then seed the backlog while it is stopped.
  "$bin" serve --listen "127.0.0.1:$port" --database "$dir/tasklane.db" >"$dir/create.log" 2>&1 &
  created=$!
  for _ in $(seq 1 100); do grep -q listening "$dir/create.log" && break; sleep 0.1; done
  kill "$created"; wait "$created" || true
  python3 "$here/seed_backlog.py" "$dir/tasklane.db" "$backlog" "$mode"
fi
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
  "$bin" serve --listen "127.0.0.1:$port" --database "$database" >"$dir/server.log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null || true' EXIT
for _ in $(seq 1 900); do grep -q listening "$dir/server.log" && break; sleep 0.2; done
drive() {
python3 - "http://127.0.0.1:$port" "$2" "$1" "$offer" "$batch" "$agents" <<'PY'
import json, sys, threading, urllib.request
base, n, mode, offer = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
batch, agents = int(sys.argv[5]), int(sys.argv[6])
def post(path, body, headers={}):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read()
        return json.loads(raw) if raw else None
if mode == "queue":
    for i in range(n):
        t = post("/api/tasks", {"scope": "global", "title": f"job {i}"})
        post(f"/api/tasks/{t['task']['id']}/start", {})
elif batch > 0:
    sessions = [f"profile-agent-{i}" for i in range(batch)]
    for _ in range(n // batch):
        body = {"lease_seconds": 60, "required_capabilities": offer, "sessions": sessions}
        claims = post("/api/agent/tasks/claim-batch", body)["claims"]
        items = [{"run_id": c["run"]["id"], "session_id": c["session_id"], "outcome": "completed",
                  "result": {"ok": True}} for c in claims]
        results = post("/api/agent/tasks/complete-batch", {"items": items})["results"]
        assert len(claims) == batch and all(r["ok"] for r in results), results
else:
    def work(session, cycles):
        agent = {"X-AGH-Session-ID": session}
        for _ in range(cycles):
            body = {"lease_seconds": 60, "required_capabilities": offer}
            run = post("/api/agent/tasks/claim-next", body, agent)["claim"]["run"]["id"]
            post(f"/api/agent/tasks/{run}/complete", {"result": {"ok": True}}, agent)
    if agents == 1:
        work("profile-agent", n)
    else:
        threads = [threading.Thread(target=work, args=(f"profile-agent-{i}", n // agents))
                   for i in range(agents)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
PY
}
if [ "$backlog" -gt 0 ]; then
  drive cycle "$warmup"
else
  drive queue "$cycles"
fi
callgrind_control -i on $vg >/dev/null
drive cycle "$cycles"
callgrind_control -d $vg >/dev/null
total=$(callgrind_annotate "$dir/callgrind.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "server instructions per claim-next -> complete cycle: $((total / cycles)) ($total over $cycles cycles; backlog $backlog $mode; batch $batch; agents $agents)"
echo "profile: $dir/callgrind.out.1"
