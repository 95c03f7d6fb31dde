// #/nodes?q=&status=&page= : the fleet, paginated by the server (GET /api/v1/nodes with
// q, status, page, page_size), so it stays fast at thousands of nodes. Typing in the
// search box waits 300 ms of quiet and aborts the request it replaces; the filters live in
// the hash so the back button and a reload keep them. `node` events recolour a row's
// status in place.

import { api } from '../api.js';
import { ago, badge, debounce, h, labelChips, messageRow, replace, setBadge, table } from '../dom.js';
import { setQuery } from '../router.js';
import { events } from '../sse.js';

const PAGE_SIZE = 50;

function row(node) {
  const link = `#/nodes/${encodeURIComponent(node.node_id)}`;
  return h('tr', { testid: `node-row-${node.node_id}`, 'data-node': node.node_id },
    h('td', {}, badge(node.status, { 'data-role': 'status' })),
    h('td', {}, h('a', { href: link }, node.hostname || node.node_id)),
    h('td', { class: 'mono' }, node.node_id),
    h('td', { class: 'mono' }, node.ip || '–'),
    h('td', {}, [node.os, node.arch].filter(Boolean).join(' / ') || '–'),
    h('td', {}, labelChips(node.labels)),
    h('td', {}, node.daemon_version || '–'),
    h('td', { title: node.last_seen_at || '' }, ago(node.last_seen_at)));
}

export function nodesPage(root, { query }) {
  const state = { q: query.q || '', status: query.status || '', page: Math.max(1, Number(query.page) || 1) };
  const search = h('input', { type: 'search', testid: 'nodes-search', placeholder: 'Search hostname, id, IP or label (key=value)', value: state.q, size: 40, maxlength: 200, 'aria-label': 'Search nodes' });
  const status = h('select', { testid: 'nodes-status', 'aria-label': 'Status' },
    h('option', { value: '' }, 'All statuses'),
    h('option', { value: 'online' }, 'Online'),
    h('option', { value: 'offline' }, 'Offline'));
  status.value = state.status;
  const info = h('span', { testid: 'nodes-page-info', class: 'muted' }, '');
  const prev = h('button', { type: 'button', class: 'btn', disabled: true }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'btn', disabled: true }, 'Next ›');
  const t = table(['Status', 'Hostname', 'Node ID', 'IP', 'OS / arch', 'Labels', 'Daemon', 'Last seen'], { testid: 'nodes-table' });

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Nodes')),
    h('div', { class: 'toolbar' }, search, status, h('span', { class: 'spacer' })),
    t.wrap,
    h('div', { class: 'pager' }, info, prev, next));

  let controller = null;
  const load = async () => {
    if (controller) controller.abort();
    controller = new AbortController();
    setQuery(state);
    if (!t.body.children.length) t.body.append(messageRow(t.width, 'Loading…', 'loading'));
    try {
      const data = await api('/nodes', {
        query: { q: state.q, status: state.status, page: state.page, page_size: PAGE_SIZE },
        signal: controller.signal,
      });
      const pi = data.page_info || {};
      const pages = pi.total_pages ?? pi.pages ?? 1;
      if (!data.list.length && state.page > 1 && state.page > pages) {
        state.page = Math.max(1, pages);
        load();
        return;
      }
      replace(t.body, data.list.length
        ? data.list.map(row)
        : messageRow(t.width, state.q || state.status ? 'No node matches.' : 'No node has registered yet.'));
      info.textContent = `Page ${pi.page ?? state.page} of ${Math.max(1, pages)} · ${pi.total ?? data.list.length} node${pi.total === 1 ? '' : 's'}`;
      prev.disabled = state.page <= 1;
      next.disabled = state.page >= pages;
    } catch (e) {
      if (e.name === 'AbortError') return;
      replace(t.body, messageRow(t.width, `Cannot load the nodes: ${e.message}`, 'error-state'));
      info.textContent = '';
    }
  };

  const searchLater = debounce(() => { state.q = search.value.trim(); state.page = 1; load(); }, 300);
  search.addEventListener('input', searchLater);
  status.addEventListener('change', () => { state.status = status.value; state.page = 1; load(); });
  prev.addEventListener('click', () => { state.page = Math.max(1, state.page - 1); load(); });
  next.addEventListener('click', () => { state.page += 1; load(); });

  const off = events.on('node', (event) => {
    if (!event || !event.node_id) return;
    const tr = t.body.querySelector(`tr[data-node="${CSS.escape(event.node_id)}"]`);
    if (tr && event.status) setBadge(tr.querySelector('[data-role="status"]'), event.status);
  });

  const offReopen = events.on('reopen', () => load());
  load();
  return () => {
    off();
    offReopen();
    if (controller) controller.abort();
  };
}
