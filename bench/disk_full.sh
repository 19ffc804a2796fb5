#!/bin/bash
# Usage (as root, in a private mount namespace):
#   unshare -m --propagation private bench/disk_full.sh target/release/tasklane
# Serves from a 24 MB tmpfs holding a 4 MB filler file, creates until the first 503, then deletes
# the filler and creates again.
BIN=$1
M=$(mktemp -d /tmp/walx-mnt-XXXX)
mount -t tmpfs -o size=24m tmpfs $M
dd if=/dev/zero of=$M/filler bs=1M count=4 status=none
$BIN serve --listen 127.0.0.1:0 --database sqlite://$M/t.db > $M.out 2>$M.err &
PID=$!
sleep 1
URL=$(head -1 $M.out | awk '{print $NF}')
python3 - "$URL" "$M" <<'PY'
import json, sys, os, urllib.request, urllib.error
url, m = sys.argv[1], sys.argv[2]
def create(i):
    r = urllib.request.Request(url + "/api/tasks", data=json.dumps({"scope":"global","title":"t%d"%i, "description": "x"*2000}).encode(), headers={"content-type":"application/json"}, method="POST")
    try: return urllib.request.urlopen(r).status
    except urllib.error.HTTPError as e: return e.code
def sizes():
    return {f: os.path.getsize(os.path.join(m, f)) for f in os.listdir(m)}
ok = 0
for i in range(20000):
    s = create(i)
    if s != 201: break
    ok += 1
print("creates before the first failure:", ok, "status", s, sizes())
fails = sum(create(i) != 201 for i in range(20))
print("20 more while full: failures", fails, sizes())
os.remove(os.path.join(m, "filler"))
res = [create(i) for i in range(50)]
print("after freeing 4 MB: statuses", res[:10], "... successes", sum(r == 201 for r in res), "of 50", sizes())
PY
kill $PID; wait $PID 2>/dev/null
umount $M; rmdir $M; rm -f $M.out $M.err
