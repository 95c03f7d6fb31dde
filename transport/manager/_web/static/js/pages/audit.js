// #/audit (admins): the audit log, newest first, paginated by the server
// (GET /admin/audit?page&page_size&actor&action).

import { api } from '../api.js';
import { badge, debounce, h, messageRow, replace, table, when } from '../dom.js';

function detail(entry) {
  const parts = Object.entries(entry.detail || {}).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`);
  return parts.join(' ');
}

export function auditPage(root) {
  const actor = h('input', { type: 'search', placeholder: 'Actor', 'aria-label': 'Actor', testid: 'audit-actor' });
  const action = h('input', { type: 'search', placeholder: 'Action (e.g. agent.operate)', 'aria-label': 'Action', testid: 'audit-action' });
  const t = table(['When', 'Actor', 'Action', 'Target', 'Outcome', 'Source IP', 'Detail'], { testid: 'audit-table' });
  const info = h('span', { class: 'muted' });
  const prev = h('button', { type: 'button', class: 'btn', disabled: true }, '‹ Newer');
  const next = h('button', { type: 'button', class: 'btn', disabled: true }, 'Older ›');
  root.append(h('h1', {}, 'Audit log'), h('div', { class: 'toolbar' }, actor, action), t.wrap, h('div', { class: 'pager' }, info, prev, next));
  t.body.append(messageRow(t.width, 'Loading…', 'loading'));
  let page = 1;
  let controller = null;
  const load = async () => {
    if (controller) controller.abort();
    controller = new AbortController();
    try {
      const data = await api('/admin/audit', {
        query: { page, page_size: 50, actor: actor.value.trim(), action: action.value.trim() }, signal: controller.signal,
      });
      replace(t.body, data.list.length ? data.list.map((e) => h('tr', { 'data-id': e.id },
        h('td', { title: e.created_at, class: 'nowrap' }, when(e.created_at)),
        h('td', {}, e.actor || '–'),
        h('td', { class: 'mono' }, e.action),
        h('td', { class: 'mono' }, e.target || ''),
        h('td', {}, badge(e.outcome)),
        h('td', { class: 'mono' }, e.source_ip || ''),
        h('td', { class: 'mono muted' }, detail(e)))) : messageRow(t.width, 'No entries.'));
      const pages = data.page_info.total_pages ?? data.page_info.pages ?? 1;
      info.textContent = `Page ${page} of ${Math.max(1, pages)} · ${data.page_info.total} entries`;
      prev.disabled = page <= 1;
      next.disabled = page >= pages;
    } catch (e) {
      if (e.name !== 'AbortError') replace(t.body, messageRow(t.width, `Cannot load the audit log: ${e.message}`, 'error-state'));
    }
  };
  const filter = debounce(() => { page = 1; load(); }, 300);
  actor.addEventListener('input', filter);
  action.addEventListener('input', filter);
  prev.addEventListener('click', () => { page -= 1; load(); });
  next.addEventListener('click', () => { page += 1; load(); });
  load();
  return () => { if (controller) controller.abort(); };
}
