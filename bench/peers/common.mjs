// Shared by the Node peers: the same arguments, timing and result line for every system.
// A peer prints {"phase":"timed"} when timing starts and one JSON result line at the end, then
// waits (at most 10 s) for a line on stdin before closing its connections, so that `bench/run`
// can read the PostgreSQL backends' CPU while they still exist.
import { createInterface } from 'node:readline';

export function parseArgs(argv = process.argv.slice(2)) {
  const a = { workload: 'burn-down', workers: 4, jobs: 20000, rate: 1000, durationS: 10,
    intervalMs: 10, config: 'default', dsn: process.env.DATABASE_URL, timeoutS: 1800, limitS: 120 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in a)) throw new Error(`unknown option ${argv[i]}`);
    a[key] = typeof a[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!/^postgres(ql)?:\/\/[^@]*@?127\.0\.0\.1[:/]/.test(a.dsn ?? '')) {
    throw new Error('--dsn must be a postgres:// URL on 127.0.0.1');
  }
  return a;
}

export const now = () => performance.now();
export const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

export function pct(sorted, p) {
  if (!sorted.length) return null;
  return Math.round(sorted[Math.round((sorted.length - 1) * p)] * 100) / 100;
}

/** CPU seconds and peak RSS of this process. */
export function usage() {
  const u = process.cpuUsage();
  return { cpuS: (u.user + u.system) / 1e6, peakRssMb: process.resourceUsage().maxRSS / 1024 };
}

/**
 * Offers `n` enqueues on a fixed schedule (open loop: a slow enqueue does not delay the next; a
 * producer that falls behind catches up at once) and returns pickup latencies: handler start −
 * enqueue returned, clamped at 0. `enqueue(i)` resolves when the job is committed; `started` maps
 * job index → handler start time. Pickups still missing `limitS` after the last enqueue make the
 * result partial.
 */
export async function offer(a, n, intervalMs, enqueue, started, deadline) {
  const returned = new Array(n);
  const t0 = now();
  const pending = [];
  for (let i = 0; i < n; i++) {
    const wait = t0 + i * intervalMs - now();
    if (wait > 0.5) await sleep(wait);
    pending.push(enqueue(i).then(() => { returned[i] = now(); }));
    if (now() > deadline) throw new Error('timed out enqueueing');
  }
  await Promise.all(pending);
  const stopAt = Math.min(deadline, now() + a.limitS * 1000);
  while (started.size < n && now() < stopAt) await sleep(2);
  const lat = [];
  let last = t0;
  for (const [i, at] of started) {
    lat.push(Math.max(0, at - returned[i]));
    last = Math.max(last, at);
  }
  lat.sort((x, y) => x - y);
  const partial = started.size < n ? `stopped ${a.limitS} s after the last enqueue with ${started.size} of ${n} jobs picked up` : undefined;
  return { lat, elapsedS: (last - t0) / 1000, partial };
}

/**
 * Burn-down: waits until `jobs` handlers have run and `remaining()` (uncompleted jobs in the
 * database) is 0, or until `limitS` seconds have passed (then the row is partial: the rate of
 * what finished). Returns the result fields.
 */
export async function burnDown(a, deadline, started, remaining, t0, u0) {
  const stopAt = Math.min(deadline, t0 + a.limitS * 1000);
  while (started.size < a.jobs && now() < stopAt) await sleep(5);
  while (started.size >= a.jobs && (await remaining()) > 0 && now() < stopAt) await sleep(5);
  const elapsedS = (now() - t0) / 1000; const u1 = usage();
  const fields = { jobs: started.size, jobs_per_s: Math.round(started.size / elapsedS * 100) / 100,
    worker_cpu_s: u1.cpuS - u0.cpuS, peak_rss_mb: u1.peakRssMb };
  if (started.size < a.jobs || now() >= stopAt) {
    fields.partial = `stopped after ${a.limitS} s with ${started.size} of ${a.jobs} jobs started`;
  }
  return fields;
}

export function timedPhase() {
  console.log(JSON.stringify({ phase: 'timed' }));
}

/** Prints the result line and waits for the go-ahead to shut down. */
export async function report(a, system, fields) {
  console.log(JSON.stringify({ system, config: a.config, workload: a.workload, workers: a.workers, ...fields }));
  const rl = createInterface({ input: process.stdin });
  await Promise.race([new Promise((r) => rl.once('line', r)), new Promise((r) => rl.once('close', r)), sleep(10000)]);
  rl.close();
}

/** Runs `main` and turns a failure into an error result line (exit code 1). */
export function guard(system, main) {
  const a = parseArgs();
  const deadline = now() + a.timeoutS * 1000;
  main(a, deadline).then(() => process.exit(0), (e) => {
    console.log(JSON.stringify({ system, config: a.config, workload: a.workload, workers: a.workers, error: String(e?.stack ?? e).slice(0, 2000) }));
    process.exit(1);
  });
}
