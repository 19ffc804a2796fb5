// DOM building and formatting helpers shared by the views.

/** h('a', {href: '#/'}, 'text', child, …): attributes, `on*` listeners, `class`, `dataset`. */
export function h(tag, attrs = {}, ...children) {
  const svg = ['svg', 'g', 'rect', 'line', 'path', 'text', 'title', 'circle', 'marker', 'defs'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'text') el.textContent = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function label(s) {
  return String(s ?? '').replaceAll('_', ' ');
}

/** A badge for a status, priority or approval state; styled by its value. */
export function badge(kind, value) {
  return h('span', { class: `badge ${kind}-${value}`, dataset: { [kind]: value } }, label(value));
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  const neg = ms < 0;
  let s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400); s %= 86400;
  const hr = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  const out = d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
  return neg ? `-${out}` : out;
}

export function time(ts) {
  if (!ts || ts.startsWith('0001-')) return '—';
  const d = new Date(ts);
  return h('time', { datetime: ts, title: ts }, d.toLocaleString());
}

export function ref(r) {
  return r ? `${label(r.kind)}: ${r.ref}` : '—';
}

/** Shows an error (an ApiError or any Error) in `box`, a role=alert region. */
export function showError(box, err) {
  clear(box, err.code ? h('strong', {}, `${err.code}: `) : null, err.message);
  box.hidden = false;
  box.focus?.();
}

export function hideError(box) {
  box.hidden = true;
  box.replaceChildren();
}

/**
 * Asks for confirmation in a modal dialog. With `reason`, also asks for an optional reason (at
 * most `reasonMax` characters when given). Resolves to `{reason}` when confirmed, `null` when
 * cancelled.
 */
export function confirmAction({ title, message, confirmLabel, reason = false, reasonMax, danger = true }) {
  return new Promise((resolve) => {
    const input = reason ? h('textarea', { id: 'confirm-reason', name: 'reason', rows: 3, maxlength: reasonMax }) : null;
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'confirm-title' }, title),
        h('p', {}, message),
        input ? h('label', { for: 'confirm-reason' }, 'Reason (optional)') : null,
        input,
        h('div', { class: 'buttons' },
          h('button', { value: 'cancel', type: 'submit', class: 'secondary' }, 'Keep it'),
          h('button', { value: 'ok', type: 'submit', class: danger ? 'danger' : 'primary' }, confirmLabel))));
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      const text = input?.value.trim();
      dialog.remove();
      resolve(ok ? { reason: text || undefined } : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    (input ?? dialog.querySelector('button[value=cancel]')).focus();
  });
}

/** Announces a short message to screen readers and shows it briefly. */
export function notify(message) {
  const box = document.getElementById('notice');
  box.textContent = message;
  box.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { box.hidden = true; }, 4000);
}
