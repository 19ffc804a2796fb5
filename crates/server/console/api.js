// The JSON API client: same origin, bearer token from sessionStorage (token mode), errors carry
// the server's code and message. `follow` reads a task's SSE stream with fetch(), because
// EventSource cannot send the Authorization header, and resumes with Last-Event-ID.

const TOKEN_KEY = 'tasklane.token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
};

function headers(extra = {}) {
  const h = { accept: 'application/json', ...extra };
  const token = session.token;
  if (token) h.authorization = `Bearer ${token}`;
  return h;
}

async function errorOf(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON: keep the status */ }
  return new ApiError(res.status, body?.code ?? `http_${res.status}`, body?.error ?? `HTTP ${res.status}`);
}

/** One API call; resolves to the parsed body (null when empty), rejects with an ApiError. */
export async function api(method, path, body) {
  const init = { method, headers: headers(), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(`/api${path}`, init);
  } catch {
    throw new ApiError(0, 'unreachable', 'The server cannot be reached.');
  }
  if (!res.ok) throw await errorOf(res);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const enc = encodeURIComponent;

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/**
 * Follows `GET /api/tasks/{id}/stream` until `signal` aborts. Every frame goes to
 * `onFrame({id, event, data})`; `onState` hears 'live', 'reconnecting' and, on a refusal that a
 * retry cannot fix (401, 403, 404), 'closed' with the error. A dropped connection is resumed from
 * the last frame seen with Last-Event-ID, after the server's `retry:` delay.
 */
export async function follow(taskId, { onFrame, onState, signal }) {
  let lastId = null;
  let retry = 3000;
  while (!signal.aborted) {
    try {
      const extra = { accept: 'text/event-stream' };
      if (lastId !== null) extra['last-event-id'] = lastId;
      const res = await fetch(`/api/tasks/${enc(taskId)}/stream`, { headers: headers(extra), signal, cache: 'no-store' });
      if (!res.ok) {
        const err = await errorOf(res);
        if ([401, 403, 404, 422].includes(res.status)) { onState('closed', err); return; }
        throw err;
      }
      onState('live');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      let frame = { id: null, event: 'message', data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line === '') {
            if (frame.data.length) {
              if (frame.id !== null) lastId = frame.id;
              onFrame({ id: frame.id, event: frame.event, data: JSON.parse(frame.data.join('\n')) });
            }
            frame = { id: null, event: 'message', data: [] };
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'data') frame.data.push(val);
          else if (field === 'id') frame.id = val;
          else if (field === 'event') frame.event = val;
          else if (field === 'retry' && /^\d+$/.test(val)) retry = Number(val);
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    if (signal.aborted) return;
    onState('reconnecting');
    await sleep(retry, signal);
  }
}
