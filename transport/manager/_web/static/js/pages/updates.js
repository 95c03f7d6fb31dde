// #/updates : push a signed update to chosen nodes (operators and admins) and the jobs,
// newest first. #/updates/:id : one job with each node's state. GET /updates/:id asks the
// daemons whose result is unfinished, so the detail page asks again every 10 s while a
// target is unfinished, and at once on an `update` event for the job.

import { api, can } from '../api.js';
import { ago, badge, debounce, errorState, h, loading, messageRow, replace, table, throttle, toast } from '../dom.js';
import { events } from '../sse.js';

const UNFINISHED = new Set(['pending', 'accepted', 'running']);

function counts(job) {
  const by = {};
  for (const t of job.targets || []) by[t.state] = (by[t.state] || 0) + 1;
  return Object.entries(by).sort().map(([state, n]) => h('span', {}, badge(`${state}`), ` ${n} `));
}

function nodePicker() {
  const search = h('input', { type: 'search', placeholder: 'Find nodes…', testid: 'update-nodes-search', 'aria-label': 'Find nodes' });
  const select = h('select', { multiple: true, size: 10, testid: 'update-nodes', id: 'update-nodes', name: 'node_ids', class: 'multi-select' });
  const info = h('div', { class: 'muted' });
  const fill = async () => {
    const chosen = [...select.selectedOptions].map((o) => o.value);
    try {
      const data = await api('/nodes', { query: { q: search.value.trim(), page_size: 100 } });
      const options = new Map(chosen.map((id) => [id, [...select.options].find((o) => o.value === id)]));
      for (const node of data.list) {
        if (!options.has(node.node_id)) {
          options.set(node.node_id, h('option', { value: node.node_id }, `${node.hostname || node.node_id} (${node.node_id}) · ${node.status}`));
        }
      }
      select.replaceChildren(...options.values());
      for (const o of select.options) o.selected = chosen.includes(o.value);
      const total = data.page_info ? data.page_info.total : data.list.length;
      info.textContent = `${select.selectedOptions.length} selected · showing ${data.list.length} of ${total} matching (Ctrl/⌘-click to pick several)`;
    } catch (e) {
      info.textContent = `Cannot list the nodes: ${e.message}`;
    }
  };
  search.addEventListener('input', debounce(fill, 300));
  select.addEventListener('change', () => {
    info.textContent = info.textContent.replace(/^\d+ selected/, `${select.selectedOptions.length} selected`);
  });
  fill();
  return { el: h('div', {}, h('label', { for: 'update-nodes' }, 'Nodes'), search, select, info), select };
}

function pushForm(onPushed) {
  const field = (name, label, attrs = {}) => {
    const input = h(attrs.textarea ? 'textarea' : 'input', { id: `update-${name}`, name, ...attrs, textarea: null });
    return { input, el: h('div', {}, h('label', { for: `update-${name}` }, label), input) };
  };
  const component = field('component', 'Component', { required: true, placeholder: 'daemon', value: 'daemon' });
  const version = field('version', 'Version', { required: true, placeholder: '1.2.3' });
  const url = field('download_url', 'Download URL', { required: true, placeholder: 'where the daemons download the artifact' });
  const hash = field('hash', 'SHA-256', { placeholder: 'hex digest' });
  const signature = field('signature', 'Signature', { textarea: true, rows: 3, placeholder: 'base64' });
  const picker = nodePicker();
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'update-submit' }, 'Push update');
  const form = h('form', { class: 'panel', testid: 'update-form' },
    h('h2', {}, 'Push an update'),
    h('div', { class: 'form-grid' }, component.el, version.el, url.el, hash.el),
    signature.el, picker.el, h('div', { class: 'toolbar' }, submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const nodeIds = [...picker.select.selectedOptions].map((o) => o.value);
    if (!nodeIds.length) { toast('Choose at least one node.', 'bad'); return; }
    submit.disabled = true;
    try {
      const data = await api('/updates', {
        method: 'POST',
        body: {
          node_ids: nodeIds, component: component.input.value.trim(), version: version.input.value.trim(),
          download_url: url.input.value.trim(), hash: hash.input.value.trim(), signature: signature.input.value.trim(),
        },
      });
      toast(`Update ${data.update.id} pushed to ${nodeIds.length} node(s)`, 'ok');
      onPushed(data.update);
    } catch (e) {
      toast(`Push failed: ${e.message}`, 'bad');
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function updatesPage(root) {
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Updates')));
  if (can('operator')) root.append(pushForm((job) => { location.hash = `#/updates/${job.id}`; }));
  const t = table(['Job', 'Pushed', 'By', 'Component', 'Version', 'Targets'], { testid: 'updates-table' });
  const info = h('span', { class: 'muted' });
  const prev = h('button', { type: 'button', class: 'btn', disabled: true }, '‹ Newer');
  const next = h('button', { type: 'button', class: 'btn', disabled: true }, 'Older ›');
  root.append(h('h2', {}, 'Pushed updates'), t.wrap, h('div', { class: 'pager' }, info, prev, next));
  t.body.append(messageRow(t.width, 'Loading…', 'loading'));
  let page = 1;
  const load = async () => {
    try {
      const data = await api('/updates', { query: { page, page_size: 20 } });
      replace(t.body, data.list.length ? data.list.map((job) => h('tr', { testid: `update-row-${job.id}` },
        h('td', {}, h('a', { href: `#/updates/${job.id}` }, `#${job.id}`)),
        h('td', { title: job.created_at }, ago(job.created_at)),
        h('td', {}, job.actor),
        h('td', {}, job.component),
        h('td', {}, job.version),
        h('td', {}, counts(job)))) : messageRow(t.width, 'No update has been pushed yet.'));
      const pages = data.page_info.total_pages ?? data.page_info.pages ?? 1;
      info.textContent = `Page ${page} of ${Math.max(1, pages)}`;
      prev.disabled = page <= 1;
      next.disabled = page >= pages;
    } catch (e) {
      replace(t.body, messageRow(t.width, `Cannot load the updates: ${e.message}`, 'error-state'));
    }
  };
  prev.addEventListener('click', () => { page -= 1; load(); });
  next.addEventListener('click', () => { page += 1; load(); });
  load();
  const refresh = throttle(load, 2000);
  const off = events.on('update', refresh);
  // The daemons' results arrive when a job is read: the list is read again every 15 s.
  const timer = setInterval(load, 15000);
  return () => { off(); refresh.cancel(); clearInterval(timer); };
}

export function updatePage(root, { params }) {
  const id = params.id;
  const summary = h('section', { class: 'panel' }, loading());
  const t = table(['Node', 'State', 'Daemon update id', 'Message', 'Updated'], { testid: 'update-targets' });
  root.append(
    h('div', { class: 'page-head' }, h('a', { href: '#/updates' }, '← Updates'), h('h1', {}, `Update #${id}`)),
    summary, h('h2', {}, 'Nodes'), t.wrap);
  let timer = null;
  let closed = false;
  const load = async () => {
    clearTimeout(timer);
    try {
      const job = (await api(`/updates/${encodeURIComponent(id)}`)).update;
      if (closed) return;
      replace(summary, h('dl', { class: 'facts' },
        h('dt', {}, 'Component'), h('dd', {}, job.component),
        h('dt', {}, 'Version'), h('dd', {}, job.version),
        h('dt', {}, 'Pushed'), h('dd', {}, `${ago(job.created_at)} by ${job.actor}`),
        h('dt', {}, 'States'), h('dd', {}, counts(job)),
        h('dt', {}, 'Download URL'), h('dd', { class: 'mono' }, job.download_url),
        h('dt', {}, 'SHA-256'), h('dd', { class: 'mono' }, job.hash || '–')));
      replace(t.body, job.targets.map((target) => h('tr', { testid: `update-target-${job.id}-${target.node_id}` },
        h('td', {}, h('a', { href: `#/nodes/${encodeURIComponent(target.node_id)}` }, target.node_id)),
        h('td', {}, badge(target.state)),
        h('td', { class: 'mono' }, target.update_id || '–'),
        h('td', {}, target.message || ''),
        h('td', { title: target.updated_at || '' }, ago(target.updated_at)))));
      if (job.targets.some((target) => UNFINISHED.has(target.state))) timer = setTimeout(load, 10000);
    } catch (e) {
      if (!closed) replace(summary, errorState(`Cannot load update ${id}: ${e.message}`));
    }
  };
  load();
  const off = events.on('update', (event) => { if (event && String(event.id) === String(id)) load(); });
  return () => { closed = true; clearTimeout(timer); off(); };
}
