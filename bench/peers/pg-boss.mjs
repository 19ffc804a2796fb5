// pg-boss peer. Configs: "default" (as shipped: batchSize 1, polling every 2 s, no NOTIFY) and
// "batched" (its documented throughput settings: batchSize=10 with burstWhenBatchFull, plus
// useListenNotify and a notify queue so idle workers wake on enqueue).
// `localConcurrency` = workers.
import { PgBoss } from 'pg-boss';
import pg from 'pg';
import { guard, now, sleep, pct, usage, offer, burnDown, timedPhase, report } from './common.mjs';

const SYSTEM = 'pg-boss';
const QUEUE = 'bench';

guard(SYSTEM, async (a, deadline) => {
  const batched = a.config === 'batched';
  const boss = new PgBoss({ connectionString: a.dsn, max: a.workers + 4, useListenNotify: batched });
  boss.on('error', (e) => console.error('pg-boss error:', e.message));
  await boss.start();
  await boss.createQueue(QUEUE, batched ? { notify: true } : {});
  const check = new pg.Client({ connectionString: a.dsn });
  await check.connect();
  const remaining = async () => Number((await check.query(
    `select count(*) from pgboss.job where name = $1 and state in ('created','retry','active')`, [QUEUE])).rows[0].count);
  const started = new Map();
  const workOptions = batched
    ? { localConcurrency: a.workers, batchSize: 10, burstWhenBatchFull: true }
    : { localConcurrency: a.workers };
  const startWorkers = () => boss.work(QUEUE, workOptions, async (jobs) => {
    const at = now();
    for (const j of jobs) started.set(j.data.i, at);
  });

  let result;
  if (a.workload === 'burn-down' || a.workload === 'deep') {
    for (let i = 0; i < a.jobs; i += 1000) {
      const n = Math.min(1000, a.jobs - i);
      await boss.insert(QUEUE, Array.from({ length: n }, (_, j) => ({ data: { i: i + j } })));
    }
    timedPhase();
    const u0 = usage(); const t0 = now();
    await startWorkers();
    result = await burnDown(a, deadline, started, remaining, t0, u0);
  } else if (a.workload === 'pickup' || a.workload === 'steady') {
    const n = a.workload === 'pickup' ? a.jobs : Math.round(a.rate * a.durationS);
    const interval = a.workload === 'pickup' ? a.intervalMs : 1000 / a.rate;
    await startWorkers();
    await sleep(300);
    timedPhase();
    const u0 = usage();
    const { lat, elapsedS, partial } = await offer(a, n, interval, (i) => boss.send(QUEUE, { i }), started, deadline);
    const u1 = usage();
    result = { jobs: lat.length, p50_ms: pct(lat, 0.5), p99_ms: pct(lat, 0.99),
      worker_cpu_s: u1.cpuS - u0.cpuS, peak_rss_mb: u1.peakRssMb };
    if (partial) result.partial = partial;
    if (a.workload === 'steady') { result.offered_per_s = a.rate; result.jobs_per_s = Math.round(lat.length / elapsedS * 100) / 100; }
  } else {
    throw new Error(`workload ${a.workload} is not supported by ${SYSTEM}`);
  }
  await report(a, SYSTEM, result);
  await check.end();
  await boss.stop({ graceful: false, timeout: 2000 });
});
