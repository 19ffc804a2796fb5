# Start a tasklane server, create tasks one at a time, then parse the WAL: frames per commit and
# which b-tree (table/index) each frame's page belongs to.
import json, os, shutil, sqlite3, struct, subprocess, sys, tempfile, urllib.request, collections
binary = sys.argv[1]; n = int(sys.argv[2]); body = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {"scope":"global","title":"t"}
d = tempfile.mkdtemp(prefix="walx-")
db = os.path.join(d, "t.db")
p = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--database", "sqlite://" + db], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
base = p.stdout.readline().strip().split()[-1]
def post(path, b):
    r = urllib.request.Request(base + path, data=json.dumps(b).encode(), headers={"content-type": "application/json"}, method="POST")
    return json.loads(urllib.request.urlopen(r).read())
for i in range(300):  # warm-up: grow the b-trees past their first pages
    post("/api/tasks", body)
# checkpoint everything so the measured commits start a fresh WAL generation
c = sqlite3.connect(db); c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall(); c.close()
post("/api/tasks", body)  # first write after truncation starts the WAL
c = sqlite3.connect(db); c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall(); c.close()
size0 = os.path.getsize(db + "-wal")
for i in range(n):
    post("/api/tasks", body)
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
print(f"page_size {psize}; wal bytes {len(wal)} for {n} creates = {len(wal)/n:.0f} B/create; commits {len(commits)}; frames/commit avg {sum(map(len,commits))/max(1,len(commits)):.1f}")
per = collections.Counter()
for cm in commits:
    for pg in cm: per[owner.get(pg, f"page{pg}(free/new)")] += 1
for name, k in per.most_common(): print(f"  {k/len(commits):5.2f}  {name}")
p.terminate(); p.wait(); shutil.rmtree(d)
