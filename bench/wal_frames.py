# Start a tasklane server, create tasks one at a time, then parse the WAL: frames per commit and
# which b-tree (table/index) each frame's page belongs to. With MODE=cycle the measured writes
# are one agent's claim-next -> complete cycles instead (two commits each), over runs queued first.
import json, os, shutil, sqlite3, struct, subprocess, sys, tempfile, urllib.request, collections
binary = sys.argv[1]; n = int(sys.argv[2]); body = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {"scope":"global","title":"t"}
d = tempfile.mkdtemp(prefix="walx-")
db = os.path.join(d, "t.db")
p = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--database", "sqlite://" + db], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
base = p.stdout.readline().strip().split()[-1]
def post(path, b, headers={}):
    r = urllib.request.Request(base + path, data=json.dumps(b).encode(), headers={"content-type": "application/json", **headers}, method="POST")
    raw = urllib.request.urlopen(r).read()
    return json.loads(raw) if raw else None
cycles = os.environ.get("MODE") == "cycle"
unit = "cycle" if cycles else "create"
agent = {"X-AGH-Session-ID": "wal-agent"}
def write():
    if not cycles:
        post("/api/tasks", body)
        return
    run = post("/api/agent/tasks/claim-next", {"lease_seconds": 60}, agent)["claim"]["run"]["id"]
    post(f"/api/agent/tasks/{run}/complete", {"result": {"ok": True}}, agent)
if cycles:  # queue a run for every cycle: warm-up, the first, and the n measured
    for i in range(300 + 1 + n):
        t = post("/api/tasks", body)
        post(f"/api/tasks/{t['task']['id']}/start", {})
for i in range(300):  # warm-up: grow the b-trees past their first pages
    write()
# checkpoint everything so the measured commits start a fresh WAL generation
c = sqlite3.connect(db); c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall(); c.close()
write()  # first write after truncation starts the WAL
c = sqlite3.connect(db); c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall(); c.close()
size0 = os.path.getsize(db + "-wal")
for i in range(n):
    write()
wal = open(db + "-wal", "rb").read()
psize = struct.unpack(">I", wal[8:12])[0]
salt = wal[16:24]
frames = []; off = 32
while off + 24 + psize <= len(wal):
    pg, commit = struct.unpack(">II", wal[off:off+8])
    if wal[off+8:off+16] != salt: break
    frames.append((pg, commit)); off += 24 + psize
commits = []; cur = []
for pg, commit in frames:
    cur.append(pg)
    if commit: commits.append(cur); cur = []
# page -> btree name, from a copy including the WAL
snap = os.path.join(d, "snap.db"); shutil.copy(db, snap); shutil.copy(db + "-wal", snap + "-wal")
s = sqlite3.connect(snap)
owner = dict((pg, name) for name, pg in s.execute("SELECT name, pageno FROM dbstat"))
print(f"page_size {psize}; wal bytes {len(wal)} for {n} {unit}s = {len(wal)/n:.0f} B/{unit}; commits {len(commits)}; frames/commit avg {sum(map(len,commits))/max(1,len(commits)):.1f}")
per = collections.Counter()
for cm in commits:
    for pg in cm: per[owner.get(pg, f"page{pg}(free/new)")] += 1
for name, k in per.most_common(): print(f"  {k/len(commits):5.2f}  {name}")
p.terminate(); p.wait(); shutil.rmtree(d)
