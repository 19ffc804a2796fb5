// The console's shell: who the caller is, sign-in in token mode, and hash routing
// (#/, #/inbox, #/tasks?filters, #/tasks/<id>, #/new, #/tasks/<id>/new-child).

import { api, ApiError, session } from './api.js';
import { h, clear, showError } from './dom.js';
import { dashboard, inbox, taskList, newTask } from './views.js';
import { taskPage } from './task.js';

const main = document.getElementById('main');
const ctx = { me: null };
let cleanup = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { path, params: new URLSearchParams(query) };
}

const routes = [
  [/^\/$/, 'dashboard', () => dashboard],
  [/^\/inbox$/, 'inbox', () => inbox],
  [/^\/tasks$/, 'tasks', () => taskList],
  [/^\/new$/, 'new', () => newTask],
  [/^\/tasks\/([^/]+)\/new-child$/, 'new', () => newTask],
  [/^\/tasks\/([^/]+)$/, 'tasks', () => taskPage],
];

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  if (!ctx.me) { await identify(); if (!ctx.me) return; }
  const { path, params } = parseHash();
  const found = routes.find(([re]) => re.test(path));
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (found && a.dataset.nav === found[1]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    clear(main, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/' }, 'Go to the dashboard.')));
    return;
  }
  const id = path.match(found[0])[1];
  const view = found[2]();
  const controller = new AbortController();
  cleanup = () => controller.abort();
  main.replaceChildren();
  try {
    await view(main, { id: id && decodeURIComponent(id), params, ctx, signal: controller.signal });
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err instanceof ApiError && err.status === 401) { signedOut(err); return; }
    const box = h('p', { class: 'error', role: 'alert', tabindex: '-1' });
    main.append(box);
    showError(box, err);
  }
}

/** Asks the server who we are; in token mode without a usable token, shows the sign-in form. */
async function identify() {
  try {
    const { whoami } = await api('GET', '/whoami');
    ctx.me = whoami;
    renderWho();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { signedOut(err); return; }
    clear(main, h('h1', {}, 'Tasklane'), h('p', { class: 'error', role: 'alert' }, err.message));
  }
}

function renderWho() {
  const who = document.getElementById('who');
  const me = ctx.me;
  if (!me) { who.replaceChildren(); return; }
  if (me.auth === 'open') {
    clear(who, h('span', { class: 'mode' }, 'open mode'));
  } else {
    clear(who,
      h('span', {}, 'Signed in as ', h('strong', { id: 'who-name' }, me.actor.ref), ' ',
        h('span', { class: 'badge role', id: 'who-role' }, me.role)),
      h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
  }
  document.getElementById('nav-new').parentElement.hidden = !me.may.create_task;
}

function signOut() {
  session.clear();
  ctx.me = null;
  renderWho();
  signedOut(null);
}

/** Token mode: the token is kept in sessionStorage only and sent as a bearer header. */
function signedOut(err) {
  ctx.me = null;
  renderWho();
  if (cleanup) { cleanup(); cleanup = null; }
  const problem = h('p', { class: 'error', role: 'alert', id: 'signin-error', tabindex: '-1' });
  problem.hidden = true;
  if (err && session.token) {
    problem.textContent = err.code === 'invalid_token' ? 'That token is not valid (unknown or revoked).' : err.message;
    problem.hidden = false;
    session.clear();
  }
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const form = h('form', { class: 'signin', onsubmit: async (e) => {
    e.preventDefault();
    session.set(input.value.trim());
    await identify();
    if (ctx.me) route();
    else if (!problem.hidden) problem.focus();
  } },
  h('h1', {}, 'Sign in'),
  h('p', {}, 'This server requires an API token. It is kept in this browser tab only (session storage) and sent with each request.'),
  problem,
  h('label', { for: 'token' }, 'API token'),
  input,
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  clear(main, form);
  input.focus();
}

/** Unread total in the navigation, refreshed with every route change. */
async function refreshUnread() {
  if (!ctx.me) return;
  try {
    const { inbox: box } = await api('GET', '/observe/tasks/inbox?limit=1');
    const el = document.getElementById('inbox-unread');
    el.textContent = box.unread_total;
    el.hidden = !box.unread_total;
    el.setAttribute('aria-label', `${box.unread_total} unread`);
  } catch { /* the page itself reports errors */ }
}
ctx.refreshUnread = refreshUnread;

window.addEventListener('hashchange', () => { route().then(refreshUnread); main.focus({ preventScroll: true }); });
route().then(refreshUnread);
