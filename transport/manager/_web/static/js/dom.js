// DOM helpers, formatting and toasts shared by the pages. No innerHTML with data: every
// value reaches the page as a text node, so nothing a node reports can inject markup.

/**
 * Create an element.
 * @param {string} tag element name
 * @param {object} [attrs] attributes; `testid` sets data-testid, `on<Event>` adds a listener,
 *   `class` sets className, false/null/undefined values are skipped
 * @param {...(Node|string|number|null|undefined|Array)} children text or nodes
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'testid') el.dataset.testid = value;
    else if (key === 'class') el.className = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Find an element by its data-testid inside `root`. */
export function byTestId(root, id) {
  return root.querySelector(`[data-testid="${CSS.escape(id)}"]`);
}

const STATUS_CLASS = {
  online: 'ok', running: 'ok', healthy: 'ok', succeeded: 'ok', success: 'ok', accepted: 'info',
  installed: 'ok', done: 'ok', ok: 'ok', active: 'ok', enabled: 'ok',
  offline: 'bad', deleted: 'bad', failed: 'bad', unhealthy: 'bad', refused: 'bad', error: 'bad',
  unreachable: 'bad', critical: 'bad', disabled: 'bad', gone: 'bad', failure: 'bad',
  restarting: 'warn', starting: 'warn', stopping: 'warn', pending: 'warn', running_update: 'warn',
  warning: 'warn', degraded: 'warn',
  stopped: 'idle', unknown: 'idle',
};

/** A coloured badge for a status word. */
export function badge(text, attrs = {}) {
  const word = String(text ?? 'unknown');
  return h('span', { ...attrs, class: `badge ${tone(word)}` }, word);
}

/** A status word's colour: its own, or that of its first part ("error:5004" -> error). */
function tone(word) {
  const key = word.toLowerCase();
  return STATUS_CLASS[key] || STATUS_CLASS[key.split(/[:\s]/)[0]] || 'idle';
}

/** Set a badge element's text and colour in place. */
export function setBadge(el, text) {
  const word = String(text ?? 'unknown');
  el.className = `badge ${tone(word)}`;
  el.textContent = word;
}

/** A table inside a scrolling wrapper: `columns` are header labels (or [label, class]). */
export function table(columns, attrs = {}) {
  const head = h('tr', {}, columns.map((c) => (Array.isArray(c) ? h('th', { class: c[1] }, c[0]) : h('th', {}, c))));
  const body = h('tbody');
  const el = h('table', attrs, h('thead', {}, head), body);
  return { wrap: h('div', { class: 'table-wrap' }, el), table: el, body, width: columns.length };
}

/** A full-width row with a message (empty, loading or error states). */
export function messageRow(width, text, kind = 'empty') {
  return h('tr', {}, h('td', { colspan: width, class: kind }, text));
}

export function emptyState(text) { return h('div', { class: 'empty' }, text); }
export function errorState(text) { return h('div', { class: 'error-state', role: 'alert' }, text); }
export function loading() { return h('div', { class: 'loading' }, 'Loading…'); }

// --- formatting -----------------------------------------------------------------------

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 -> "1.5 KiB". */
export function bytes(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '–';
  let v = Math.abs(Number(value));
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i += 1; }
  const sign = Number(value) < 0 ? '-' : '';
  return `${sign}${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${UNITS[i]}`;
}

/** Bytes per second, human-readable. */
export function rate(value) {
  return value === null || value === undefined ? '–' : `${bytes(value)}/s`;
}

/** 12.345 -> "12.3%". */
export function percent(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '–';
  return `${Number(value).toFixed(1)}%`;
}

/** Seconds -> "3d 4h", "5m 2s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return '–';
  let s = Math.max(0, Math.floor(Number(seconds)));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

/** An ISO time (or unix seconds) -> local date and time. */
export function when(value) {
  if (value === null || value === undefined || value === '') return '–';
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString();
}

/** An ISO time -> "5m ago". */
export function ago(value) {
  if (!value) return '–';
  const t = typeof value === 'number' ? value * 1000 : Date.parse(value);
  if (Number.isNaN(t)) return String(value);
  const s = (Date.now() - t) / 1000;
  return s < 0 ? 'just now' : `${duration(s)} ago`;
}

/** Labels object -> chips. */
export function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return h('span', { class: 'muted' }, '–');
  return entries.map(([k, v]) => h('span', { class: 'label-chip' }, v === '' ? k : `${k}=${v}`));
}

// --- toasts -----------------------------------------------------------------------------

/** Show a short message (operation results, errors); `kind` is ok, bad or info. */
export function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  const el = h('div', { class: `toast ${kind}`, testid: 'toast', role: kind === 'bad' ? 'alert' : 'status' }, text);
  box.append(el);
  setTimeout(() => el.remove(), kind === 'bad' ? 8000 : 4000);
}

/** Call `fn` once `ms` after the last call. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Call `fn` at most once per `ms`: the first call schedules it `ms` later, the rest join. */
export function throttle(fn, ms) {
  let timer = null;
  const wrapped = () => {
    if (timer !== null) return;
    timer = setTimeout(() => { timer = null; fn(); }, ms);
  };
  wrapped.cancel = () => { clearTimeout(timer); timer = null; };
  return wrapped;
}
