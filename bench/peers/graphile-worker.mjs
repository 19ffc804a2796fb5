// graphile-worker peer. Configs: "default" (as shipped: no local queue, no batched completion)
// and "batched" (its documented throughput settings: localQueue.size=100, completeJobBatchDelay=0,
// failJobBatchDelay=0). One runner with `concurrency` = workers.
import { run, makeWorkerUtils, Logger } from 'graphile-worker';
import { guard, now, sleep, pct, usage, offer, burnDown, timedPhase, report } from './common.mjs';

const SYSTEM = 'graphile-worker';
const quiet = new Logger(() => () => {});

guard(SYSTEM, async (a, deadline) => {
  // The producer gets as many connections as the workers (at least 10), like the other peers.
  const utils = await makeWorkerUtils({ connectionString: a.dsn, logger: quiet, maxPoolSize: Math.max(10, a.workers + 2) });
  await utils.migrate();
  const started = new Map();
  const taskList = { noop: async (payload) => { started.set(payload.i, now()); } };
  const worker = a.config === 'batched'
    ? { localQueue: { size: 100 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 }
    : {};
  const startRunner = () => run({
    connectionString: a.dsn, concurrency: a.workers, maxPoolSize: Math.max(10, a.workers + 2),
    noHandleSignals: true, logger: quiet, taskList, preset: { worker },
  });
  const remaining = () => utils.withPgClient(async (c) =>
    Number((await c.query('select count(*) from graphile_worker.jobs')).rows[0].count));

  let result;
  if (a.workload === 'burn-down' || a.workload === 'deep') {
    for (let i = 0; i < a.jobs; i += 1000) {
      const n = Math.min(1000, a.jobs - i);
      await utils.addJobs(Array.from({ length: n }, (_, j) => ({ identifier: 'noop', payload: { i: i + j } })));
    }
    timedPhase();
    const u0 = usage(); const t0 = now();
    const runner = await startRunner();
    result = await burnDown(a, deadline, started, remaining, t0, u0);
    await report(a, SYSTEM, result);
    await runner.stop();
  } else if (a.workload === 'pickup' || a.workload === 'steady') {
    const n = a.workload === 'pickup' ? a.jobs : Math.round(a.rate * a.durationS);
    const interval = a.workload === 'pickup' ? a.intervalMs : 1000 / a.rate;
    const runner = await startRunner();
    await sleep(300);
    timedPhase();
    const u0 = usage();
    const { lat, elapsedS, partial } = await offer(a, n, interval, (i) => utils.addJob('noop', { i }), started, deadline);
    const u1 = usage();
    result = { jobs: lat.length, p50_ms: pct(lat, 0.5), p99_ms: pct(lat, 0.99),
      worker_cpu_s: u1.cpuS - u0.cpuS, peak_rss_mb: u1.peakRssMb };
    if (partial) result.partial = partial;
    if (a.workload === 'steady') { result.offered_per_s = a.rate; result.jobs_per_s = Math.round(lat.length / elapsedS * 100) / 100; }
    await report(a, SYSTEM, result);
    await runner.stop();
  } else {
    throw new Error(`workload ${a.workload} is not supported by ${SYSTEM}`);
  }
  await utils.release();
});
