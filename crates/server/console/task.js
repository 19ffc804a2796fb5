// The task page: fields, actions, children tree, dependency graph, runs and the live timeline.

import { api, enc, follow } from './api.js';
import { h, clear, badge, time, ref, showError, hideError, notify, confirmAction } from './dom.js';

const OPEN_RUN = ['queued', 'claimed', 'starting', 'running'];
/** The server's limit on a rejection's reason, in characters. */
const REASON_MAX = 1000;

export async function taskPage(main, { id, ctx, signal }) {
  const may = ctx.me.may;
  const problem = h('p', { class: 'error', role: 'alert', tabindex: '-1', id: 'action-error', hidden: true });
  const head = h('div', { class: 'task-head' });
  const actions = h('div', { class: 'actions', role: 'toolbar', 'aria-label': 'Task actions' });
  const fields = h('section', { 'aria-labelledby': 'fields-h' });
  const tree = h('section', { 'aria-labelledby': 'tree-h' });
  const deps = h('section', { 'aria-labelledby': 'deps-h' });
  const runs = h('section', { 'aria-labelledby': 'runs-h' });
  const streamState = h('span', { class: 'stream-state', id: 'stream-state' }, 'connecting…');
  const timeline = h('ol', { class: 'timeline', id: 'timeline', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  clear(main, head, problem, actions,
    h('div', { class: 'task-grid' },
      h('div', {}, fields, runs),
      h('div', {}, tree, deps)),
    h('section', { 'aria-labelledby': 'timeline-h' },
      h('h2', { id: 'timeline-h' }, 'Timeline ', streamState),
      timeline));

  let detail = null;

  const act = async (what, fn) => {
    hideError(problem);
    try {
      await fn();
      notify(what);
      await load();
    } catch (err) {
      showError(problem, err);
    }
  };

  const button = (text, allowed, onclick, cls = 'secondary') =>
    h('button', { type: 'button', class: cls, disabled: !allowed, title: allowed ? null : `Your role (${ctx.me.role}) may not do this`, onclick, dataset: { action: text.toLowerCase().replaceAll(' ', '-') } }, text);

  const renderActions = (t, d) => {
    const openRun = (d.runs ?? []).find((r) => OPEN_RUN.includes(r.status));
    const terminal = ['completed', 'failed', 'canceled'].includes(t.status);
    const list = [];
    if (t.status === 'draft') list.push(button('Publish', may.publish_task, () => act('Published', () => api('POST', `/tasks/${enc(t.id)}/publish`, {})), 'primary'));
    if (t.approval_policy === 'manual' && t.approval_state === 'pending') {
      list.push(button('Approve', may.approve_task, () => act('Approved', () => api('POST', `/tasks/${enc(t.id)}/approve`, {})), 'primary'));
      list.push(button('Reject', may.reject_task, async () => {
        const ok = await confirmAction({ title: 'Reject this task?', message: `“${t.title}” will not run unless its approval policy changes. The reason is kept on its timeline.`, confirmLabel: 'Reject', reason: true, reasonMax: REASON_MAX });
        if (ok) act('Rejected', () => api('POST', `/tasks/${enc(t.id)}/reject`, ok.reason ? { reason: ok.reason } : {}));
      }, 'danger'));
    }
    if (t.status === 'ready' && !openRun) list.push(button('Start', may.start_task, () => act('Started: a run is queued', () => api('POST', `/tasks/${enc(t.id)}/start`, {})), 'primary'));
    if (t.status === 'failed' && !openRun) list.push(button('Retry', may.enqueue_run, () => act('Retry queued', () => api('POST', `/tasks/${enc(t.id)}/runs`, {}))));
    if (!terminal) {
      list.push(button('Cancel tree', may.cancel_task, async () => {
        const ok = await confirmAction({ title: 'Cancel this task and its subtree?', message: `“${t.title}”, its descendants and their open runs will be canceled. This cannot be undone.`, confirmLabel: 'Cancel tree', reason: true });
        if (ok) act('Canceled', () => api('POST', `/tasks/${enc(t.id)}/cancel`, ok.reason ? { reason: ok.reason } : {}));
      }, 'danger'));
    }
    if (may.update_task) list.push(button('Edit', true, () => editForm(t)));
    if (may.create_child) list.push(h('a', { class: 'button secondary', href: `#/tasks/${enc(t.id)}/new-child` }, 'Add child'));
    clear(actions, list);
  };

  const editForm = (t) => {
    const form = h('form', { class: 'task-form edit', id: 'edit-form', onsubmit: (e) => {
      e.preventDefault();
      const f = new FormData(form);
      const body = {};
      if (f.get('title').trim() !== t.title) body.title = f.get('title').trim();
      if (f.get('description') !== (t.description ?? '')) body.description = f.get('description');
      if (f.get('priority') !== t.priority) body.priority = f.get('priority');
      if (Number(f.get('max_attempts')) !== t.max_attempts) body.max_attempts = Number(f.get('max_attempts'));
      act('Saved', () => api('PATCH', `/tasks/${enc(t.id)}`, body));
    } },
    h('h2', {}, 'Edit task'),
    h('label', { for: 'e-title' }, 'Title'), h('input', { id: 'e-title', name: 'title', value: t.title, required: true }),
    h('label', { for: 'e-description' }, 'Description'), h('textarea', { id: 'e-description', name: 'description', rows: 3, text: t.description ?? '' }),
    h('label', { for: 'e-priority' }, 'Priority'),
    h('select', { id: 'e-priority', name: 'priority' }, ['low', 'medium', 'high', 'urgent'].map((p) => h('option', { value: p, selected: p === t.priority }, p))),
    h('label', { for: 'e-max_attempts' }, 'Max attempts'), h('input', { id: 'e-max_attempts', name: 'max_attempts', type: 'number', min: 1, value: t.max_attempts }),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Save'),
      h('button', { type: 'button', class: 'secondary', onclick: () => form.remove() }, 'Close')));
    actions.after(form);
    form.querySelector('#e-title').focus();
  };

  const renderFields = (t, s) => {
    const row = (k, v) => [h('dt', {}, k), h('dd', {}, v ?? '—')];
    clear(fields, h('h2', { id: 'fields-h' }, 'Details'), h('dl', { class: 'fields' },
      row('Id', h('code', {}, t.id)),
      row('Scope', t.scope === 'workspace' ? `workspace ${t.workspace_id}` : 'global'),
      row('Priority', badge('priority', t.priority)),
      row('Approval', t.approval_policy === 'manual' ? badge('approval', t.approval_state) : 'not required'),
      row('Attempts', `at most ${t.max_attempts}`),
      row('Owner', t.owner ? ref(t.owner) : null),
      row('Created by', ref(t.created_by)),
      row('Created', time(t.created_at)),
      row('Updated', time(t.updated_at)),
      t.parent_task_id ? row('Parent', h('a', { href: `#/tasks/${enc(t.parent_task_id)}` }, t.parent_task_id)) : null,
      t.description ? row('Description', h('p', { class: 'pre' }, t.description)) : null,
      s.network_channel ? row('Channel', s.network_channel) : null,
      t.required_capabilities?.length ? row('Needs', t.required_capabilities.join(', ')) : null));
  };

  const renderRuns = (t, list) => {
    clear(runs, h('h2', { id: 'runs-h' }, `Runs (${list.length})`),
      list.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'runs-table' },
        h('thead', {}, h('tr', {}, ['Attempt', 'Status', 'Session', 'Queued', 'Finished', 'Outcome', ''].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, list.map((r) => h('tr', { dataset: { runId: r.id, runStatus: r.status } },
          h('td', {}, `#${r.attempt}`),
          h('td', {}, badge('run', r.status)),
          h('td', {}, r.session_id ?? (r.claimed_by ? ref(r.claimed_by) : '—')),
          h('td', {}, time(r.queued_at)),
          h('td', {}, time(r.ended_at)),
          h('td', {}, r.result !== undefined ? h('pre', { class: 'json' }, JSON.stringify(r.result, null, 1))
            : r.error ? h('span', { class: 'run-error' }, r.error) : '—'),
          h('td', {}, OPEN_RUN.includes(r.status) ? button('Cancel run', may.cancel_run, async () => {
            const ok = await confirmAction({ title: `Cancel run #${r.attempt}?`, message: 'The agent holding it is fenced out; the task can be retried.', confirmLabel: 'Cancel run', reason: true });
            if (ok) act('Run canceled', () => api('POST', `/task-runs/${enc(r.id)}/cancel`, ok.reason ? { reason: ok.reason } : {}));
          }, 'danger') : null)))))) : h('p', {}, 'No runs yet.'));
  };

  const renderTree = (tr) => {
    const items = [tr.root, ...(tr.descendants ?? [])];
    clear(tree, h('h2', { id: 'tree-h' }, 'Tree'),
      items.length > 1 || tr.root.depth > 0 ? h('ul', { class: 'tree', id: 'task-tree' }, items.map((n) => h('li', { class: `depth-${Math.min(n.depth, 8)}`, dataset: { depth: n.depth } },
        n.task.id === id ? h('strong', { 'aria-current': 'true' }, n.task.title) : h('a', { href: `#/tasks/${enc(n.task.id)}` }, n.task.title),
        ' ', badge('status', n.task.status)))) : h('p', {}, 'No children.'),
      tr.descendants_truncated ? h('p', {}, 'Only the first 1000 descendants are shown.') : null);
  };

  const renderDeps = (t, d) => {
    const refs = d.dependency_references ?? [];
    const addInput = h('input', { id: 'dep-id', name: 'depends_on_task_id', required: true, placeholder: 'task-…' });
    const addForm = may.add_dependency ? h('form', { class: 'inline', onsubmit: (e) => {
      e.preventDefault();
      act('Dependency added', () => api('POST', `/tasks/${enc(t.id)}/dependencies`, { depends_on_task_id: addInput.value.trim() }));
    } }, h('label', { for: 'dep-id' }, 'Depends on task'), addInput, h('button', { type: 'submit', class: 'secondary' }, 'Add')) : null;
    clear(deps, h('h2', { id: 'deps-h' }, 'Dependencies'),
      refs.length ? depGraph(t, refs) : h('p', {}, 'Depends on nothing.'),
      refs.length ? h('ul', { class: 'deps' }, refs.map((r) => {
        const name = r.depends_on?.title ?? r.depends_on_task_id;
        return h('li', { dataset: { dependsOn: r.depends_on_task_id } },
          h('a', { href: `#/tasks/${enc(r.depends_on_task_id)}` }, name), ' ', r.depends_on ? badge('status', r.depends_on.status) : null,
          may.remove_dependency ? h('button', { type: 'button', class: 'secondary', 'aria-label': `Remove the dependency on ${name}`, onclick: async () => {
            const ok = await confirmAction({ title: 'Remove this dependency?', message: `“${t.title}” will no longer wait for “${name}”.`, confirmLabel: 'Remove' });
            if (ok) act('Dependency removed', () => api('DELETE', `/tasks/${enc(t.id)}/dependencies/${enc(r.depends_on_task_id)}`));
          } }, 'Remove') : null);
      })) : null,
      addForm);
  };

  const load = async () => {
    const [{ task: d }, { tree: tr }] = await Promise.all([
      api('GET', `/tasks/${enc(id)}`),
      api('GET', `/tasks/${enc(id)}/tree`),
    ]);
    if (signal.aborted) return;
    detail = d;
    const t = d.task;
    const s = d.summary ?? {};
    document.title = `${t.title} · Tasklane`;
    clear(head, h('h1', { id: 'task-title' }, t.title),
      h('p', { class: 'meta' }, badge('status', t.status), ' ', badge('priority', t.priority),
        t.approval_policy === 'manual' ? [' ', badge('approval', t.approval_state)] : null));
    renderActions(t, d);
    renderFields(t, s);
    renderRuns(t, d.runs ?? []);
    renderTree(tr);
    renderDeps(t, d);
  };

  await load();

  // The stream replays the task's and its subtree's events from the start, then follows live.
  let reload = null;
  follow(id, {
    signal,
    onState: (state, err) => {
      streamState.textContent = state === 'live' ? 'live' : state === 'reconnecting' ? 'reconnecting…' : 'closed';
      streamState.dataset.state = state;
      if (err) showError(problem, err);
    },
    onFrame: ({ data }) => {
      const e = data.timeline;
      if (!e) return;
      const other = e.task && e.task.id !== id;
      timeline.prepend(h('li', { dataset: { sequence: e.sequence, eventType: e.event_type } },
        h('span', { class: 'seq' }, `#${e.sequence}`), ' ',
        h('strong', {}, e.event_type.replace(/^task\./, '').replaceAll('_', ' ')),
        other ? [' on ', h('a', { href: `#/tasks/${enc(e.task.id)}` }, e.task.title)] : null,
        ' by ', ref(e.actor), ' · ', time(e.timestamp),
        typeof e.payload?.reason === 'string' ? h('q', { class: 'reason' }, e.payload.reason) : null,
        e.payload && Object.keys(e.payload).length ? h('details', {}, h('summary', {}, 'payload'), h('pre', { class: 'json' }, JSON.stringify(e.payload, null, 1))) : null));
      // New events change the fields and runs: refresh them, at most every 300 ms.
      if (detail && e.sequence > (detail.task.latest_event_seq ?? 0) && !reload) {
        reload = setTimeout(() => { reload = null; load().catch((err) => showError(problem, err)); }, 300);
      }
    },
  });
  signal.addEventListener('abort', () => clearTimeout(reload));
}

/** The task and what it depends on, as a small SVG graph: blockers on the left, arrows to it. */
function depGraph(t, refs) {
  const rowH = 34;
  const height = Math.max(rowH, refs.length * rowH) + 8;
  const midY = height / 2;
  const trim = (s) => (s.length > 22 ? `${s.slice(0, 21)}…` : s);
  const svg = h('svg', { viewBox: `0 0 420 ${height}`, class: 'graph', role: 'img', 'aria-labelledby': 'graph-title', id: 'dep-graph' },
    h('title', { id: 'graph-title' }, `${t.title} depends on ${refs.map((r) => r.depends_on?.title ?? r.depends_on_task_id).join(', ')}`),
    h('defs', {}, h('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse' },
      h('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))));
  refs.forEach((r, i) => {
    const y = 4 + i * rowH;
    const status = r.depends_on?.status ?? 'unknown';
    svg.append(
      h('rect', { x: 2, y, width: 170, height: 26, rx: 5, class: `node status-${status}` }),
      h('text', { x: 10, y: y + 17, class: 'node-label' }, trim(r.depends_on?.title ?? r.depends_on_task_id)),
      h('line', { x1: 172, y1: y + 13, x2: 246, y2: midY, class: 'edge', 'marker-end': 'url(#arrow)' }));
  });
  svg.append(
    h('rect', { x: 248, y: midY - 13, width: 170, height: 26, rx: 5, class: `node self status-${t.status}` }),
    h('text', { x: 256, y: midY + 4, class: 'node-label' }, trim(t.title)));
  return svg;
}
