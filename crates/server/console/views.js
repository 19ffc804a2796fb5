// The dashboard, the inbox, the task list and the new-task form.

import { api, enc } from './api.js';
import { h, clear, badge, duration, time, label, showError, hideError, notify } from './dom.js';

const STATUSES = ['draft', 'pending', 'blocked', 'ready', 'in_progress', 'completed', 'failed', 'canceled'];
const PRIORITIES = ['low', 'medium', 'high', 'urgent'];
const APPROVAL_STATES = ['not_required', 'pending', 'approved', 'rejected'];
const OWNER_KINDS = ['human', 'agent_session', 'automation', 'extension', 'network_peer', 'pool'];
const POLL_MS = 3000;

/** Repeats `fn` every `ms` until `signal` aborts, waiting for each call to finish. */
function poll(fn, ms, signal) {
  let timer;
  const tick = async () => {
    await fn();
    if (!signal.aborted) timer = setTimeout(tick, ms);
  };
  signal.addEventListener('abort', () => clearTimeout(timer));
  return tick();
}

function stat(name, value, hint) {
  return h('div', { class: 'stat' },
    h('dt', {}, name),
    h('dd', { dataset: { count: hint } }, String(value ?? 0)));
}

function card(title, health, ...stats) {
  return h('section', { class: `card health-${health ?? 'ok'}`, 'aria-label': title },
    h('h3', {}, title, health ? h('span', { class: 'sr-only' }, ` (${health})`) : null),
    h('dl', {}, ...stats));
}

/** Status breakdown as a horizontal bar chart in inline SVG. */
function breakdownChart(rows) {
  const max = Math.max(1, ...rows.map((r) => r.count));
  const rowH = 26;
  const height = Math.max(rowH, rows.length * rowH);
  const svg = h('svg', { viewBox: `0 0 400 ${height}`, class: 'chart', role: 'img', 'aria-labelledby': 'breakdown-title' },
    h('title', { id: 'breakdown-title' }, `Tasks by status: ${rows.map((r) => `${label(r.status)} ${r.count}`).join(', ') || 'none'}`));
  rows.forEach((r, i) => {
    const y = i * rowH;
    const w = Math.max(2, Math.round((r.count / max) * 220));
    svg.append(
      h('text', { x: 0, y: y + 17, class: 'chart-label' }, label(r.status)),
      h('rect', { x: 100, y: y + 4, width: w, height: 18, rx: 3, class: `bar status-${r.status}` }),
      h('text', { x: 106 + w, y: y + 17, class: 'chart-value' }, `${r.count} (${r.share_percent}%)`));
  });
  return svg;
}

export async function dashboard(main, { signal }) {
  const body = h('div', { id: 'dashboard' });
  const problem = h('p', { class: 'error', role: 'alert', hidden: true });
  clear(main, h('h1', {}, 'Dashboard'), problem, body);
  let countdowns = [];
  let offset = 0; // server clock minus browser clock, from the snapshot's observed_at
  const tickTimer = setInterval(() => {
    for (const [el, until] of countdowns) el.textContent = duration(Date.parse(until) - (Date.now() + offset));
  }, 1000);
  signal.addEventListener('abort', () => clearInterval(tickTimer));

  const render = (d, queue) => {
    offset = Date.parse(d.freshness.observed_at) - Date.now();
    const t = d.totals;
    const c = d.cards;
    const q = d.queue;
    countdowns = [];
    const runs = d.active_runs.items ?? [];
    clear(body,
      h('p', { class: `freshness fresh-${d.freshness.status}`, id: 'freshness' },
        `Data ${label(d.freshness.status)}; last activity `, time(d.freshness.latest_activity_at),
        ` (${duration(d.freshness.age_ms)} ago). Updated every ${POLL_MS / 1000} s.`),
      h('h2', { class: 'sr-only' }, 'Summary'),
      h('div', { class: 'cards' },
        card('Tasks', null,
          stat('Total', t.tasks_total, 'tasks_total'),
          stat('Ready', t.ready_tasks, 'ready_tasks'),
          stat('Drafts', t.draft_tasks, 'draft_tasks'),
          stat('Completed', t.completed_tasks, 'completed_tasks')),
        card('In progress', c.in_progress.health_status,
          stat('Tasks', c.in_progress.tasks, 'in_progress_tasks'),
          stat('Active runs', c.in_progress.active_runs, 'active_runs'),
          stat('Queued runs', c.in_progress.queued_runs, 'queued_runs')),
        card('Blocked', c.blocked.health_status,
          stat('Tasks', c.blocked.tasks, 'blocked_tasks'),
          stat('Awaiting approval', c.blocked.awaiting_approval, 'awaiting_approval_tasks'),
          stat('Awaiting dependencies', c.blocked.awaiting_dependencies, 'dependency_blocked_tasks')),
        card('Failed', c.failed.health_status,
          stat('Tasks', c.failed.tasks, 'failed_tasks'),
          stat('Failed runs', c.failed.failed_runs, 'failed_runs'),
          stat('Forced stops', c.failed.forced_stops, 'forced_stops')),
        card('Queue', q.backlog_status,
          stat('Queued', q.total, 'queue_total'),
          stat('Oldest', q.total ? duration(q.oldest_queue_age_ms) : '—', 'oldest_queue_age'),
          stat('Claim latency (avg)', duration(c.latency.claim_latency_ms.average_ms), 'claim_latency')),
        card('Health', d.health.status,
          stat('Status', label(d.health.status), 'health'),
          stat('Stuck runs', d.health.stuck_runs, 'stuck_runs'),
          stat('Orphaned runs', d.health.active_orphan_runs, 'orphan_runs'))),
      h('div', { class: 'split' },
        h('section', { 'aria-labelledby': 'breakdown-h' },
          h('h2', { id: 'breakdown-h' }, 'Tasks by status'),
          d.status_breakdown.length ? breakdownChart(d.status_breakdown) : h('p', {}, 'No tasks yet.')),
        h('section', { 'aria-labelledby': 'runs-h' },
          h('h2', { id: 'runs-h' }, `Active runs (${d.active_runs.total})`),
          runs.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'active-runs' },
            h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Task'), h('th', { scope: 'col' }, 'Run'),
              h('th', { scope: 'col' }, 'Session'), h('th', { scope: 'col' }, 'Lease left'))),
            h('tbody', {}, runs.map((r) => {
              const left = h('span', { class: 'countdown' }, '—');
              const lease = r.lease_until ?? null;
              if (lease) { countdowns.push([left, lease]); left.textContent = duration(Date.parse(lease) - (Date.now() + offset)); }
              return h('tr', {},
                h('td', {}, h('a', { href: `#/tasks/${enc(r.task_id)}` }, r.task_title)),
                h('td', {}, badge('run', r.run_status), ` #${r.attempt}`, r.stuck ? h('span', { class: 'badge warn' }, 'stuck') : null),
                h('td', {}, r.session_id ?? '—'),
                h('td', {}, left));
            })))) : h('p', {}, 'No active runs.'))),
      queueHealth(queue, q.backlog_threshold_ms));
  };

  await poll(async () => {
    try {
      const [{ dashboard: d }, { queue }] = await Promise.all([
        api('GET', '/observe/tasks/dashboard'),
        api('GET', '/observe/queue'),
      ]);
      if (signal.aborted) return;
      hideError(problem);
      // The dashboard's run items carry no lease deadline: read each active run's.
      const items = d.active_runs.items ?? [];
      if (items.length) await leases(items);
      if (!signal.aborted) render(d, queue);
    } catch (err) {
      if (!signal.aborted) showError(problem, err);
    }
  }, POLL_MS, signal);
}

/**
 * Queue health: queued runs and the oldest one's wait, per priority and per workspace (the
 * busiest by name, the rest as "other"). A wait past the backlog threshold is flagged.
 */
function queueHealth(queue, backlogMs) {
  const age = (row) => {
    if (!row.count) return '—';
    const late = row.oldest_queue_age_ms >= backlogMs;
    return h('span', { class: late ? 'late' : null, title: row.oldest_queued_at },
      duration(row.oldest_queue_age_ms), late ? h('span', { class: 'badge warn' }, 'backlog') : null);
  };
  const table = (id, caption, head, rows) => h('div', { class: 'table-wrap' }, h('table', { id, class: 'queue' },
    h('caption', { class: 'sr-only' }, caption),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, head), h('th', { scope: 'col', class: 'num' }, 'Queued'), h('th', { scope: 'col' }, 'Oldest waiting'))),
    h('tbody', {}, rows)));
  const name = (row) => (row.kind === 'global' ? h('em', {}, 'global tasks')
    : row.kind === 'other' ? h('em', {}, `other workspaces (beyond the busiest ${queue.top_workspaces})`)
      : h('a', { href: `#/tasks?scope=workspace&workspace=${enc(row.workspace_id)}` }, row.workspace_id));
  const workspaces = queue.by_workspace ?? [];
  return h('section', { 'aria-labelledby': 'queue-h', id: 'queue-health' },
    h('h2', { id: 'queue-h' }, 'Queue health'),
    h('div', { class: 'split' },
      table('queue-priority', 'Queued runs by priority', 'Priority', queue.by_priority.map((row) =>
        h('tr', { dataset: { priority: row.priority } },
          h('th', { scope: 'row' }, badge('priority', row.priority)),
          h('td', { class: 'num', dataset: { queueCount: row.count } }, String(row.count)),
          h('td', {}, age(row))))),
      workspaces.length ? table('queue-workspace', 'Queued runs by workspace', 'Workspace', workspaces.map((row) =>
        h('tr', { dataset: { kind: row.kind, workspace: row.workspace_id ?? '' } },
          h('th', { scope: 'row' }, name(row)),
          h('td', { class: 'num', dataset: { queueCount: row.count } }, String(row.count)),
          h('td', {}, age(row))))) : h('p', { id: 'queue-workspace-empty' }, 'Nothing queued in any workspace.')));
}

/** Adds each active run's `lease_until` (the dashboard item does not carry it). */
async function leases(items) {
  await Promise.all(items.map(async (item) => {
    try {
      const { run } = await api('GET', `/task-runs/${enc(item.run_id)}`);
      item.lease_until = run.run.lease_until;
    } catch { /* the run may have finished meanwhile */ }
  }));
}

const LANES = [
  ['my_work', 'My work'],
  ['approvals', 'Approvals'],
  ['failed_runs', 'Failed runs'],
  ['blocked', 'Blocked'],
  ['archived', 'Archived'],
];

export async function inbox(main, { params, ctx, signal }) {
  const lane = LANES.some(([l]) => l === params.get('lane')) ? params.get('lane') : 'approvals';
  const problem = h('p', { class: 'error', role: 'alert', tabindex: '-1', hidden: true });
  const tabs = h('nav', { class: 'lanes', 'aria-label': 'Lanes' });
  // A plain list (its items hold links and buttons, which a listbox may not): the keys move a
  // highlight marked with aria-current, and Tab still reaches every control.
  const list = h('ul', { class: 'inbox-list', id: 'inbox-items', 'aria-label': label(lane), tabindex: '0' });
  clear(main, h('h1', {}, 'Inbox'),
    h('p', { class: 'hint' }, 'Keys: ', h('kbd', {}, 'j'), '/', h('kbd', {}, 'k'), ' move, ', h('kbd', {}, 'Enter'), ' open, ',
      h('kbd', {}, 'r'), ' mark read, ', h('kbd', {}, 'd'), ' dismiss, ', h('kbd', {}, 'a'), ' archive.'),
    problem, tabs, list);
  let items = [];
  let selected = 0;

  let selectedId = null; // kept across reloads: triage can reorder a lane
  const select = (i) => {
    selected = Math.max(0, Math.min(items.length - 1, i));
    selectedId = items[selected]?.task.id ?? null;
    list.querySelectorAll('li[data-task-id]').forEach((li, j) => {
      if (j === selected) li.setAttribute('aria-current', 'true');
      else li.removeAttribute('aria-current');
    });
    list.children[selected]?.scrollIntoView({ block: 'nearest' });
  };

  const triage = async (item, action) => {
    try {
      await api('POST', `/tasks/${enc(item.task.id)}/triage/${action}`);
      notify(`${item.task.title}: ${action === 'read' ? 'marked read' : `${action}ed`}`);
      await load();
      ctx.refreshUnread();
    } catch (err) { showError(problem, err); }
  };

  const approve = async (item) => {
    try {
      await api('POST', `/tasks/${enc(item.task.id)}/approve`, {});
      notify(`${item.task.title}: approved`);
      await load();
    } catch (err) { showError(problem, err); }
  };

  const load = async () => {
    const { inbox: box } = await api('GET', '/observe/tasks/inbox?limit=100');
    if (signal.aborted) return;
    clear(tabs, h('ul', {}, LANES.map(([id, name]) => {
      const g = box.groups.find((x) => x.lane === id) ?? { count: 0, unread_count: 0 };
      return h('li', {}, h('a', { href: `#/inbox?lane=${id}`, 'aria-current': id === lane ? 'page' : null, dataset: { lane: id } },
        name, ' ', h('span', { class: 'count', dataset: { laneCount: id } }, String(g.count)),
        g.unread_count ? h('span', { class: 'unread', 'aria-label': `${g.unread_count} unread` }, String(g.unread_count)) : null));
    })));
    const group = box.groups.find((g) => g.lane === lane);
    items = group?.items ?? [];
    list.setAttribute('aria-label', `${LANES.find(([l]) => l === lane)[1]} (${items.length})`);
    if (!items.length) {
      clear(list, h('li', { class: 'empty' }, 'Nothing here.'));
      return;
    }
    const mayApprove = ctx.me.may.approve_task;
    clear(list, items.map((item, i) => h('li', {
      id: `inbox-${item.task.id}`, class: item.triage?.read ? 'read' : 'unread',
      dataset: { taskId: item.task.id }, onclick: () => select(i),
    },
    h('div', { class: 'item-main' },
      h('a', { href: `#/tasks/${enc(item.task.id)}` }, item.task.title, item.triage?.read ? null : h('span', { class: 'sr-only' }, ' (unread)')),
      h('span', { class: 'meta' }, badge('status', item.task.status), ' ', badge('priority', item.task.priority),
        item.blocking_reason ? ` ${label(item.blocking_reason)}` : '', ' · ', time(item.latest_activity_at))),
    h('div', { class: 'item-actions' },
      lane === 'approvals' && mayApprove ? h('button', { type: 'button', class: 'primary', onclick: () => approve(item) }, 'Approve') : null,
      ctx.me.may.triage ? [
        h('button', { type: 'button', class: 'secondary', onclick: () => triage(item, 'read') }, 'Read'),
        h('button', { type: 'button', class: 'secondary', onclick: () => triage(item, 'dismiss') }, 'Dismiss'),
        lane !== 'archived' ? h('button', { type: 'button', class: 'secondary', onclick: () => triage(item, 'archive') }, 'Archive') : null,
      ] : null))));
    const kept = items.findIndex((it) => it.task.id === selectedId);
    select(kept >= 0 ? kept : selected);
  };

  const onKey = (e) => {
    if (e.target.matches('input, textarea, select') || e.ctrlKey || e.metaKey || e.altKey || !items.length) return;
    const item = items[selected];
    const keys = {
      j: () => select(selected + 1),
      ArrowDown: () => select(selected + 1),
      k: () => select(selected - 1),
      ArrowUp: () => select(selected - 1),
      Enter: () => { location.hash = `#/tasks/${enc(item.task.id)}`; },
      r: () => ctx.me.may.triage && triage(item, 'read'),
      d: () => ctx.me.may.triage && triage(item, 'dismiss'),
      a: () => ctx.me.may.triage && lane !== 'archived' && triage(item, 'archive'),
    };
    if (keys[e.key] && !(e.key === 'Enter' && e.target.matches('button, a'))) { e.preventDefault(); keys[e.key](); }
  };
  document.addEventListener('keydown', onKey);
  signal.addEventListener('abort', () => document.removeEventListener('keydown', onKey));
  await load();
  list.focus();
}

/** Every `GET /api/tasks` filter, as a form whose values live in the URL (#/tasks?…). */
const FILTERS = [
  ['query', 'Search', 'text'],
  ['status', 'Status', STATUSES],
  ['priority', 'Priority', PRIORITIES],
  ['scope', 'Scope', ['global', 'workspace']],
  ['workspace', 'Workspace', 'text'],
  ['approval_state', 'Approval', APPROVAL_STATES],
  ['owner_kind', 'Owner kind', OWNER_KINDS],
  ['owner_ref', 'Owner', 'text'],
  ['parent_task_id', 'Parent task', 'text'],
  ['network_channel', 'Channel', 'text'],
  ['limit', 'Page size', 'number'],
];

export async function taskList(main, { params, signal }) {
  const controls = FILTERS.map(([name, text, kind]) => {
    const id = `f-${name}`;
    const value = params.get(name) ?? '';
    const input = Array.isArray(kind)
      ? h('select', { id, name }, h('option', { value: '' }, 'any'), kind.map((v) => h('option', { value: v, selected: v === value }, label(v))))
      : h('input', { id, name, type: kind === 'number' ? 'number' : 'search', min: kind === 'number' ? 1 : null, max: kind === 'number' ? 1000 : null, value });
    return h('div', { class: 'field' }, h('label', { for: id }, text), input);
  });
  const drafts = h('input', { id: 'f-include_drafts', name: 'include_drafts', type: 'checkbox', value: 'true', checked: params.get('include_drafts') === 'true' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter tasks', onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) q.set(k, String(v).trim());
    location.hash = `#/tasks${q.size ? `?${q}` : ''}`;
  } },
  controls,
  h('div', { class: 'field check' }, drafts, h('label', { for: 'f-include_drafts' }, 'Include drafts')),
  h('div', { class: 'buttons' },
    h('button', { type: 'submit', class: 'primary' }, 'Apply filters'),
    h('a', { href: '#/tasks', class: 'button secondary' }, 'Clear')));
  const results = h('div', { id: 'task-results', 'aria-live': 'polite' });
  clear(main, h('h1', {}, 'Tasks'), form, results);

  const query = new URLSearchParams(params);
  const page = await api('GET', `/tasks${query.size ? `?${query}` : ''}`);
  if (signal.aborted) return;
  const tasks = page.tasks ?? [];
  let next = null;
  if (page.next_cursor) {
    const q = new URLSearchParams(params);
    q.set('cursor', page.next_cursor);
    next = h('a', { href: `#/tasks?${q}`, class: 'button secondary', id: 'next-page' }, 'Next page');
  }
  clear(results,
    h('p', { id: 'result-count' }, `${tasks.length} task${tasks.length === 1 ? '' : 's'}${page.next_cursor ? ' on this page' : ''}.`),
    tasks.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'tasks-table' },
      h('caption', { class: 'sr-only' }, 'Tasks, latest activity first'),
      h('thead', {}, h('tr', {}, ['Title', 'Status', 'Priority', 'Scope', 'Approval', 'Last activity'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, tasks.map((t) => h('tr', { dataset: { taskId: t.id } },
        h('td', {}, h('a', { href: `#/tasks/${enc(t.id)}` }, t.title)),
        h('td', {}, badge('status', t.status)),
        h('td', {}, badge('priority', t.priority)),
        h('td', {}, t.scope === 'workspace' ? `workspace ${t.workspace_id}` : 'global'),
        h('td', {}, t.approval_policy === 'manual' ? badge('approval', t.approval_state) : '—'),
        h('td', {}, time(t.last_activity_at))))))) : null,
    h('p', { class: 'buttons' }, params.get('cursor') ? h('a', { href: '#/tasks', class: 'button secondary' }, 'First page') : null, next));
}

/** The form behind #/new and #/tasks/<id>/new-child. */
export async function newTask(main, { id: parentId, ctx }) {
  const parent = parentId ? (await api('GET', `/tasks/${enc(parentId)}`)).task.task : null;
  const problem = h('p', { class: 'error', role: 'alert', tabindex: '-1', hidden: true });
  const field = (name, text, input, help) => h('div', { class: 'field' }, h('label', { for: `n-${name}` }, text), input,
    help ? h('small', { id: `n-${name}-help` }, help) : null);
  const workspace = h('input', { id: 'n-workspace', name: 'workspace', type: 'text', pattern: '[A-Za-z0-9._:/-]{1,128}' });
  const scope = h('select', { id: 'n-scope', name: 'scope' }, h('option', { value: 'global' }, 'global'), h('option', { value: 'workspace' }, 'workspace'));
  const workspaceField = field('workspace', 'Workspace', workspace);
  const syncScope = () => { workspaceField.hidden = scope.value !== 'workspace'; workspace.required = scope.value === 'workspace'; };
  scope.addEventListener('change', syncScope);
  const check = (name, text) => h('div', { class: 'field check' }, h('input', { id: `n-${name}`, name, type: 'checkbox' }), h('label', { for: `n-${name}` }, text));
  const form = h('form', { class: 'task-form', id: 'new-task-form', onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { title: f.get('title').trim(), priority: f.get('priority') };
    const description = f.get('description').trim();
    if (description) body.description = description;
    if (parent) {
      body.scope = parent.scope;
      if (parent.workspace_id) body.workspace = parent.workspace_id;
    } else {
      body.scope = f.get('scope');
      if (body.scope === 'workspace') body.workspace = f.get('workspace').trim();
    }
    if (f.get('draft')) body.draft = true;
    if (f.get('manual')) body.approval_policy = 'manual';
    if (f.get('auto_enqueue_on_ready')) body.auto_enqueue_on_ready = true;
    const attempts = f.get('max_attempts');
    if (attempts) body.max_attempts = Number(attempts);
    try {
      const { task } = await api('POST', parent ? `/tasks/${enc(parent.id)}/children` : '/tasks', body);
      notify(`Created “${task.title}”`);
      location.hash = `#/tasks/${enc(task.id)}`;
    } catch (err) { showError(problem, err); }
  } },
  field('title', 'Title', h('input', { id: 'n-title', name: 'title', type: 'text', required: true, maxlength: 500 })),
  field('description', 'Description', h('textarea', { id: 'n-description', name: 'description', rows: 4 })),
  field('priority', 'Priority', h('select', { id: 'n-priority', name: 'priority' }, PRIORITIES.map((p) => h('option', { value: p, selected: p === 'medium' }, p)))),
  parent ? null : field('scope', 'Scope', scope),
  parent ? null : workspaceField,
  field('max_attempts', 'Max attempts', h('input', { id: 'n-max_attempts', name: 'max_attempts', type: 'number', min: 1, max: 100, placeholder: '3' })),
  check('draft', 'Create as a draft (publish later)'),
  ctx.me.may.set_approval_policy ? check('manual', 'Requires manual approval before it runs') : null,
  check('auto_enqueue_on_ready', 'Queue a run as soon as its dependencies complete'),
  h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, parent ? 'Create child task' : 'Create task')));
  syncScope();
  clear(main, h('h1', {}, parent ? 'New child task' : 'New task'),
    parent ? h('p', {}, 'Beneath ', h('a', { href: `#/tasks/${enc(parent.id)}` }, parent.title), ' (same scope).') : null,
    problem, form);
  form.querySelector('#n-title').focus();
}

