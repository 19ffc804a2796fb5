// End-to-end tests of the web console in a real browser (Debian's chromium, driven by
// playwright-core) against the real `tasklane` binary. Agents are driven over the HTTP API.
//
//   node e2e.mjs [--screenshots DIR]
//
// TASKLANE_BIN names the binary (default: target/debug/tasklane at the repository root);
// CHROMIUM the browser (default: chromium on PATH). Every wait is on a DOM or API condition
// with a bounded timeout; nothing sleeps.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../../..');
const BIN = process.env.TASKLANE_BIN ?? join(root, 'target/debug/tasklane');
const CHROMIUM = process.env.CHROMIUM ?? execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).trim();
const shotsAt = process.argv.indexOf('--screenshots');
const SHOTS = shotsAt > 0 ? resolve(process.argv[shotsAt + 1] ?? join(root, 'docs/console')) : null;
const TIMEOUT = 15_000;

const cleanups = [];
const results = [];

/** Starts `tasklane serve` on a free port with a temp database; resolves to its base URL. */
async function startServer({ auth = 'open', tokens = [], dir = mkdtempSync(join(tmpdir(), 'tasklane-e2e-')), listen = '127.0.0.1:0' } = {}) {
  const db = join(dir, 'tasklane.db');
  const created = {};
  for (const [name, role] of tokens) {
    created[name] = execFileSync(BIN, ['token', 'create', '--database', db, '--role', role, '--name', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  }
  const child = spawn(BIN, ['serve', '--listen', listen, '--database', db, '--auth', auth, '--test-clock'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  cleanups.push(() => { child.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }); });
  const base = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`server did not start: ${stderr}`)), TIMEOUT);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`server exited ${code}: ${stderr}`)); });
  });
  const exited = new Promise((done) => child.on('exit', done));
  const stop = () => { child.kill('SIGTERM'); return exited; };
  return { base, tokens: created, dir, stop };
}

/** A small HTTP client for the API, as an agent or operator would use it. */
function client(base, { token, session } = {}) {
  return async (method, path, body) => {
    const headers = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (session) headers['x-agh-session-id'] = session;
    const res = await fetch(`${base}/api${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
}

async function ok(call) {
  const res = await call;
  assert.ok(res.status < 300, `API answered ${res.status}: ${JSON.stringify(res.body)}`);
  return res.body;
}

async function scenario(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    results.push([name, false]);
    console.log(`FAIL ${name}\n     ${String(err.stack ?? err).split('\n').join('\n     ')}`);
  }
}

async function newPage(browser, base, options = {}) {
  const context = await browser.newContext({ baseURL: base, viewport: { width: 1280, height: 860 }, ...options });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) problems.push(m.text()); });
  page.problems = problems;
  return page;
}

/** At phone width (390 px) the page does not scroll sideways; restores the desktop size. */
async function fitsPhone(page, what) {
  await page.setViewportSize({ width: 390, height: 844 });
  const fits = await page.evaluate(() => {
    if (document.documentElement.scrollWidth <= window.innerWidth) return true;
    return [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 5).map((e) => `${e.tagName}.${e.className}#${e.id} ${Math.round(e.getBoundingClientRect().right)}`).join(', ');
  });
  await page.setViewportSize({ width: 1280, height: 860 });
  assert.equal(fits, true, `${what}: no horizontal scroll at 390 px`);
}

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  cleanups.unshift(() => browser.close());

  // ---- open mode ----
  const open = await startServer();
  const op = client(open.base);
  const agent = client(open.base, { session: 'e2e-worker' });

  // Seed: tasks in several states, one run held by an agent.
  const created = [];
  for (const [title, priority, extra] of [
    ['Summarise the incident', 'high', {}],
    ['Rotate the signing keys', 'urgent', {}],
    ['Write the release notes', 'medium', { draft: true }],
    ['Archive old logs', 'low', {}],
    ['Backfill metrics', 'high', {}],
  ]) {
    created.push((await ok(op('POST', '/tasks', { scope: 'global', title, priority, ...extra }))).task);
  }
  const [summarise, rotate, , archive, backfill] = created;
  const child = (await ok(op('POST', `/tasks/${summarise.id}/children`, { scope: 'global', title: 'Collect the timeline' }))).task;
  await ok(op('POST', `/tasks/${child.id}/dependencies`, { depends_on_task_id: rotate.id }));
  await ok(op('POST', `/tasks/${archive.id}/start`, {}));
  const archiveClaim = (await ok(agent('POST', '/agent/tasks/claim-next', { lease_seconds: 300 }))).claim;
  await ok(agent('POST', `/agent/tasks/${archiveClaim.run.id}/complete`, { result: { archived: 1200 } }));
  await ok(op('POST', `/tasks/${backfill.id}/start`, {}));
  await ok(client(open.base, { session: 'e2e-holder' })('POST', '/agent/tasks/claim-next', { lease_seconds: 300 }));

  await scenario('dashboard shows the counts the API reports', async () => {
    const page = await newPage(browser, open.base);
    await page.goto('/');
    const { dashboard: d } = (await ok(op('GET', '/observe/tasks/dashboard')));
    const expected = {
      tasks_total: d.totals.tasks_total,
      ready_tasks: d.totals.ready_tasks,
      draft_tasks: d.totals.draft_tasks,
      completed_tasks: d.totals.completed_tasks,
      blocked_tasks: d.cards.blocked.tasks,
      dependency_blocked_tasks: d.cards.blocked.awaiting_dependencies,
      active_runs: d.cards.in_progress.active_runs,
      failed_tasks: d.cards.failed.tasks,
    };
    assert.equal(expected.tasks_total, 6);
    assert.equal(expected.active_runs, 1);
    for (const [key, value] of Object.entries(expected)) {
      await page.locator(`[data-count="${key}"]`).filter({ hasText: new RegExp(`^${value}$`) }).waitFor();
    }
    // The active run with its lease countdown, and the status chart.
    await page.locator('#active-runs tbody tr', { hasText: 'Backfill metrics' }).waitFor();
    assert.match(await page.locator('#active-runs .countdown').first().textContent(), /^\d+m \d+s$/);
    assert.equal(await page.locator('svg.chart rect.bar').count(), d.status_breakdown.length);
    // Live: a new task shows up without a reload (the dashboard polls).
    await ok(op('POST', '/tasks', { scope: 'global', title: 'Late arrival' }));
    await page.locator('[data-count="tasks_total"]').filter({ hasText: /^7$/ }).waitFor();
    if (SHOTS) await page.screenshot({ path: join(SHOTS, 'dashboard.png'), fullPage: true });
    // Phone width, dark scheme: nothing overflows sideways.
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.setViewportSize({ width: 390, height: 844 });
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no horizontal scroll at 390 px');
    if (SHOTS) await page.screenshot({ path: join(SHOTS, 'dashboard-phone-dark.png'), fullPage: true });
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  await scenario('approval loop: create in the console, approve from the approvals lane, watch the run live', async () => {
    const page = await newPage(browser, open.base);
    await page.goto('/#/new');
    // The workspace field shows only for a workspace scope.
    await page.getByLabel('Scope').waitFor();
    assert.equal(await page.getByLabel('Workspace').isVisible(), false);
    await page.getByLabel('Scope').selectOption('workspace');
    await page.getByLabel('Workspace').waitFor();
    await page.getByLabel('Scope').selectOption('global');
    await page.getByLabel('Workspace').waitFor({ state: 'hidden' });
    await page.getByLabel('Title').fill('Deploy release 42');
    await page.getByLabel('Priority').selectOption('high');
    await page.getByLabel('Requires manual approval before it runs').check();
    await page.getByRole('button', { name: 'Create task' }).click();
    await page.waitForURL(/#\/tasks\/task-/);
    const id = decodeURIComponent(page.url().split('#/tasks/')[1]);
    await page.locator('#task-title', { hasText: 'Deploy release 42' }).waitFor();
    const task = (await ok(op('GET', `/tasks/${id}`))).task.task;
    assert.equal(task.approval_policy, 'manual');
    assert.equal(task.approval_state, 'pending');

    await page.getByRole('link', { name: /^Inbox/ }).click();
    await page.waitForURL(/#\/inbox/);
    const item = page.locator(`#inbox-items li[data-task-id="${id}"]`);
    await item.waitFor();
    await page.locator('[data-lane-count="approvals"]', { hasText: /^1$/ }).waitFor();
    if (SHOTS) await page.screenshot({ path: join(SHOTS, 'inbox.png'), fullPage: true });
    await item.getByRole('button', { name: 'Approve' }).click();
    await item.waitFor({ state: 'detached' });
    const approved = (await ok(op('GET', `/tasks/${id}`))).task;
    assert.equal(approved.task.approval_state, 'approved');
    assert.equal(approved.runs.length, 1, 'approval queues a run');

    await page.goto(`/#/tasks/${encodeURIComponent(id)}`);
    await page.locator('#stream-state[data-state="live"]').waitFor();
    await page.locator('#timeline li[data-event-type="task.approved"]').waitFor();
    await page.locator('#runs-table tr[data-run-status="queued"]').waitFor();

    // An agent claims and completes it over the API; the page follows on its own.
    const { claim } = await ok(agent('POST', '/agent/tasks/claim-next', { lease_seconds: 120 }));
    assert.equal(claim.task.id, id);
    await page.locator('#timeline li[data-event-type="task.run_claimed"]').waitFor();
    await ok(agent('POST', `/agent/tasks/${claim.run.id}/heartbeat`, { lease_seconds: 120 }));
    await ok(agent('POST', `/agent/tasks/${claim.run.id}/complete`, { result: { deployed: 'v42' } }));
    await page.locator('#timeline li[data-event-type="task.run_completed"]').waitFor();
    await page.locator('#runs-table tr[data-run-status="completed"]', { hasText: 'v42' }).waitFor();
    await page.locator('.task-head [data-status="completed"]').waitFor();
    if (SHOTS) await page.screenshot({ path: join(SHOTS, 'task.png'), fullPage: true });
    await fitsPhone(page, 'task page');
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  await scenario('task page: tree, dependency graph, server errors shown, destructive actions confirm', async () => {
    const page = await newPage(browser, open.base);
    await page.goto(`/#/tasks/${child.id}`);
    await page.locator('.fields a', { hasText: summarise.id }).waitFor();
    await page.locator('#dep-graph rect.node').nth(1).waitFor();
    assert.equal(await page.locator('#dep-graph rect.node').count(), 2);
    // A refused action shows the server's code and message.
    await page.getByLabel('Depends on task').fill('task-does-not-exist');
    await page.getByRole('button', { name: 'Add', exact: true }).click();
    await page.locator('#action-error', { hasText: 'task_not_found' }).waitFor();
    // Cancel asks first; keeping it changes nothing.
    await page.getByRole('button', { name: 'Cancel tree' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Keep it' }).click();
    assert.equal((await ok(op('GET', `/tasks/${child.id}`))).task.task.status, 'blocked');
    await page.goto(`/#/tasks/${summarise.id}`);
    await page.locator('#task-tree li[data-depth="1"]', { hasText: 'Collect the timeline' }).waitFor();
    await page.locator('#stream-state[data-state="live"]').waitFor();
    await page.getByRole('button', { name: 'Cancel tree' }).click();
    await page.getByLabel('Reason (optional)').fill('superseded');
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel tree' }).click();
    await page.locator('.task-head [data-status="canceled"]').waitFor();
    assert.equal((await ok(op('GET', `/tasks/${child.id}`))).task.task.status, 'canceled');
    assert.deepEqual(page.problems.filter((p) => !/404/.test(p)), []);
    await page.context().close();
  });

  await scenario('a task-list filter round-trips through the URL', async () => {
    const page = await newPage(browser, open.base);
    await page.goto('/#/tasks');
    await page.locator('#tasks-table').waitFor();
    await page.getByLabel('Priority').selectOption('low');
    await page.getByLabel('Status').selectOption('completed');
    await page.getByLabel('Include drafts').check();
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.waitForURL(/status=completed/);
    const hash = new URL(page.url()).hash;
    const query = new URLSearchParams(hash.split('?')[1]);
    assert.deepEqual(Object.fromEntries(query), { status: 'completed', priority: 'low', include_drafts: 'true' });
    const api = (await ok(op('GET', `/tasks?${query}`))).tasks.map((t) => t.id);
    assert.ok(api.length >= 1);
    const shown = async (p) => {
      await p.locator('#result-count', { hasText: `${api.length} task` }).waitFor();
      return p.locator('#tasks-table tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.taskId));
    };
    assert.deepEqual(await shown(page), api);
    // The link alone, in a fresh tab, restores the form and the results.
    const again = await newPage(browser, open.base);
    await again.goto(`/${hash}`);
    assert.deepEqual(await shown(again), api);
    assert.equal(await again.getByLabel('Status').inputValue(), 'completed');
    assert.equal(await again.getByLabel('Priority').inputValue(), 'low');
    assert.equal(await again.getByLabel('Include drafts').isChecked(), true);
    await again.goto('/#/tasks?include_drafts=true');
    await again.locator('#tasks-table tbody tr').first().waitFor();
    if (SHOTS) await again.screenshot({ path: join(SHOTS, 'tasks.png'), fullPage: true });
    await fitsPhone(again, 'task list');
    await again.goto('/#/inbox?lane=approvals');
    await again.locator('#inbox-items').waitFor();
    await fitsPhone(again, 'inbox');
    await again.context().close();
    await page.context().close();
  });

  await scenario('inbox is keyboard navigable (j/k, r, Enter)', async () => {
    for (const title of ['Approve budget', 'Approve vendor']) {
      await ok(op('POST', '/tasks', { scope: 'global', title, approval_policy: 'manual' }));
    }
    const page = await newPage(browser, open.base);
    await page.goto('/#/inbox?lane=approvals');
    await page.locator('#inbox-items li[data-task-id]').nth(1).waitFor();
    await page.locator('#inbox-items li[aria-current=true]').waitFor();
    const selectedId = () => page.locator('#inbox-items li[aria-current=true]').getAttribute('data-task-id');
    const first = await selectedId();
    await page.keyboard.press('j');
    const second = await selectedId();
    assert.notEqual(second, first);
    await page.keyboard.press('k');
    assert.equal(await selectedId(), first);
    await page.keyboard.press('r');
    await page.locator(`#inbox-items li.read[data-task-id="${first}"]`).waitFor();
    await page.keyboard.press('Enter');
    await page.waitForURL(new RegExp(`#/tasks/${first}$`));
    await page.context().close();
  });

  await scenario('open mode: same-origin writes pass the browser guard under localhost too', async () => {
    const port = new URL(open.base).port;
    const page = await newPage(browser, `http://localhost:${port}`);
    await page.goto('/#/new');
    await page.getByLabel('Title').fill('Created via localhost');
    await page.getByRole('button', { name: 'Create task' }).click();
    await page.locator('#task-title', { hasText: 'Created via localhost' }).waitFor();
    // A page on another origin is refused by the same guard.
    const foreign = await fetch(`${open.base}/api/tasks`, {
      method: 'POST', headers: { origin: 'http://evil.example', 'content-type': 'application/json' },
      body: JSON.stringify({ scope: 'global', title: 'forged' }),
    });
    assert.equal(foreign.status, 403);
    assert.equal((await foreign.json()).code, 'cross_site_request');
    await page.context().close();
  });

  await scenario('the timeline resumes after a dropped stream, without gaps or repeats', async () => {
    const first = await startServer();
    const api1 = client(first.base);
    const t = (await ok(api1('POST', '/tasks', { scope: 'global', title: 'Survive a restart' }))).task;
    const page = await newPage(browser, first.base);
    await page.goto(`/#/tasks/${t.id}`);
    await page.locator('#stream-state[data-state="live"]').waitFor();
    await page.locator('#timeline li[data-event-type="task.created"]').waitFor();
    await first.stop(); // ends the stream
    await page.locator('#stream-state[data-state="reconnecting"]').waitFor();
    const again = await startServer({ dir: first.dir, listen: new URL(first.base).host });
    const api2 = client(again.base);
    await ok(api2('POST', `/tasks/${t.id}/start`, {}));
    await page.locator('#stream-state[data-state="live"]').waitFor();
    await page.locator('#timeline li[data-event-type="task.run_enqueued"]').waitFor();
    const seqs = await page.locator('#timeline li').evaluateAll((li) => li.map((x) => Number(x.dataset.sequence)));
    assert.deepEqual([...seqs].sort((a, b) => a - b), [...new Set(seqs)].sort((a, b) => a - b), 'no event twice');
    const timeline = (await ok(api2('GET', `/tasks/${t.id}/timeline`))).timeline.map((e) => e.sequence);
    assert.deepEqual([...seqs].reverse(), timeline);
    await page.context().close();
    await again.stop();
  });

  await scenario('dashboard queue health: depth per priority and per workspace follow enqueues and claims', async () => {
    const page = await newPage(browser, open.base);
    await page.goto('/');
    await page.locator('#queue-priority tr[data-priority="urgent"]').waitFor();
    const before = (await ok(op('GET', '/observe/queue'))).queue;
    const lowBefore = before.by_priority.find((r) => r.priority === 'low').count;
    for (const title of ['Vacuum table a', 'Vacuum table b', 'Vacuum table c']) {
      const t = (await ok(op('POST', '/tasks', { scope: 'workspace', workspace: 'e2e-queue', title, priority: 'low' }))).task;
      await ok(op('POST', `/tasks/${t.id}/start`, {}));
    }
    const lowCount = page.locator('#queue-priority tr[data-priority="low"] td[data-queue-count]');
    const wsCount = page.locator('#queue-workspace tr[data-workspace="e2e-queue"] td[data-queue-count]');
    await page.locator(`#queue-priority tr[data-priority="low"] td[data-queue-count="${lowBefore + 3}"]`).waitFor();
    await page.locator('#queue-workspace tr[data-workspace="e2e-queue"] td[data-queue-count="3"]').waitFor();
    assert.equal(await lowCount.textContent(), String(lowBefore + 3));
    // The table agrees with the API, row for row.
    const now = (await ok(op('GET', '/observe/queue'))).queue;
    for (const row of now.by_priority) {
      await page.locator(`#queue-priority tr[data-priority="${row.priority}"] td[data-queue-count="${row.count}"]`).waitFor();
    }
    // An agent takes one of them; the tables follow without a reload.
    const { claim } = await ok(client(open.base, { session: 'e2e-vacuum' })('POST', '/agent/tasks/claim-next', { workspace_id: 'e2e-queue', lease_seconds: 300 }));
    assert.equal(claim.task.workspace_id, 'e2e-queue');
    await page.locator('#queue-workspace tr[data-workspace="e2e-queue"] td[data-queue-count="2"]').waitFor();
    await page.locator(`#queue-priority tr[data-priority="low"] td[data-queue-count="${lowBefore + 2}"]`).waitFor();
    assert.equal(await wsCount.textContent(), '2');
    if (SHOTS) await page.locator('#queue-health').screenshot({ path: join(SHOTS, 'queue-health.png') });
    await fitsPhone(page, 'dashboard with queue health');
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  await scenario('reject with a reason: the reason is recorded and shown on the timeline', async () => {
    const t = (await ok(op('POST', '/tasks', { scope: 'global', title: 'Drop the staging database', approval_policy: 'manual' }))).task;
    const page = await newPage(browser, open.base);
    await page.goto(`/#/tasks/${t.id}`);
    await page.locator('#stream-state[data-state="live"]').waitFor();
    await page.locator('#timeline li[data-event-type="task.created"]').waitFor();
    // Keeping it changes nothing.
    await page.getByRole('button', { name: 'Reject' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Keep it' }).click();
    assert.equal((await ok(op('GET', `/tasks/${t.id}`))).task.task.approval_state, 'pending');
    const reason = 'Staging is in use by the load test until Friday';
    await page.getByRole('button', { name: 'Reject' }).click();
    const field = page.getByRole('dialog').getByLabel('Reason (optional)');
    assert.equal(await field.getAttribute('maxlength'), '1000');
    await field.fill(reason);
    await page.getByRole('dialog').getByRole('button', { name: 'Reject' }).click();
    await page.locator('#timeline li[data-event-type="task.rejected"] q.reason', { hasText: reason }).waitFor();
    await page.locator('.task-head [data-approval="rejected"]').waitFor();
    const events = (await ok(op('GET', `/tasks/${t.id}/timeline`))).timeline;
    assert.equal(events.find((e) => e.event_type === 'task.rejected').payload.reason, reason);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  await scenario('remove a dependency from the task page, after confirming', async () => {
    const blocker = (await ok(op('POST', '/tasks', { scope: 'global', title: 'Provision the bucket' }))).task;
    const waiting = (await ok(op('POST', '/tasks', { scope: 'global', title: 'Upload the artefacts' }))).task;
    await ok(op('POST', `/tasks/${waiting.id}/dependencies`, { depends_on_task_id: blocker.id }));
    const page = await newPage(browser, open.base);
    await page.goto(`/#/tasks/${waiting.id}`);
    const remove = page.getByRole('button', { name: 'Remove the dependency on Provision the bucket' });
    await remove.click();
    await page.getByRole('dialog').getByRole('button', { name: 'Keep it' }).click();
    assert.equal((await ok(op('GET', `/tasks/${waiting.id}`))).task.dependency_references?.length, 1);
    await remove.click();
    await page.getByRole('dialog').getByRole('button', { name: 'Remove' }).click();
    await page.locator('#deps-h + p', { hasText: 'Depends on nothing.' }).waitFor();
    await page.locator('.task-head [data-status="ready"]').waitFor();
    assert.equal((await ok(op('GET', `/tasks/${waiting.id}`))).task.dependency_references?.length ?? 0, 0);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  // ---- token mode ----
  const tok = await startServer({ auth: 'token', tokens: [['alice', 'operator'], ['watcher', 'viewer']] });
  const operator = client(tok.base, { token: tok.tokens.alice });

  await scenario("token mode: sign-in, and a viewer's approve is refused", async () => {
    const pending = (await ok(operator('POST', '/tasks', { scope: 'global', title: 'Ship to production', approval_policy: 'manual' }))).task;
    const page = await newPage(browser, tok.base);
    await page.goto(`/#/tasks/${pending.id}`);
    await page.locator('form.signin').waitFor();
    await page.getByLabel('API token').fill('tlk_not_a_real_token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#signin-error', { hasText: 'not valid' }).waitFor();
    await page.getByLabel('API token').fill(tok.tokens.watcher);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#who-role', { hasText: 'viewer' }).waitFor();
    await page.locator('#task-title', { hasText: 'Ship to production' }).waitFor();
    assert.ok(!page.url().includes(tok.tokens.watcher), 'the token is never in the URL');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tasklane.token')), tok.tokens.watcher);
    const approve = page.getByRole('button', { name: 'Approve' });
    await approve.waitFor();
    assert.equal(await approve.isDisabled(), true, 'a viewer cannot press approve');
    assert.match(await approve.getAttribute('title'), /viewer/);
    assert.equal(await page.getByRole('link', { name: 'New task' }).isVisible(), false);
    // The server decides: the same request from the page with the viewer's token is refused.
    const refused = await page.evaluate(async (id) => {
      const res = await fetch(`/api/tasks/${id}/approve`, {
        method: 'POST', headers: { authorization: `Bearer ${sessionStorage.getItem('tasklane.token')}`, 'content-type': 'application/json' }, body: '{}',
      });
      return { status: res.status, body: await res.json() };
    }, pending.id);
    assert.equal(refused.status, 403);
    assert.equal(refused.body.code, 'forbidden_role');
    assert.equal((await ok(operator('GET', `/tasks/${pending.id}`))).task.task.approval_state, 'pending');
    // The viewer's inbox offers no approve either.
    await page.goto('/#/inbox?lane=approvals');
    await page.locator(`#inbox-items li[data-task-id="${pending.id}"]`).waitFor();
    assert.equal(await page.locator('#inbox-items button').count(), 0);

    // An operator signs in the same way and approves.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API token').fill(tok.tokens.alice);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#who-role', { hasText: 'operator' }).waitFor();
    await page.goto(`/#/tasks/${pending.id}`);
    await page.getByRole('button', { name: 'Approve' }).click();
    await page.locator('.task-head [data-approval="approved"]').waitFor();
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });
}

let failed = false;
try {
  if (SHOTS) mkdirSync(SHOTS, { recursive: true });
  await main();
} catch (err) {
  failed = true;
  console.log(`FAIL setup: ${err.stack ?? err}`);
} finally {
  for (const c of cleanups.reverse()) { try { await c(); } catch { /* best effort */ } }
}
const passed = results.filter(([, good]) => good).length;
failed ||= passed !== results.length;
console.log(`console e2e scenarios: ${passed} passed, ${results.length - passed} failed`);
process.exit(failed ? 1 : 0);
