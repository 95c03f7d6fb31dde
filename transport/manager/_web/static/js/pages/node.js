// #/nodes/:node_id : a node's facts (and its latest usage), CPU / memory / disk / network
// charts over 15 min .. 30 days from GET /metrics/nodes/:id/:type/history (the Manager
// downsamples: raw up to 1 h, then 5 min, 30 min and 2 h buckets), and its agents
// (./agents.js). `node` events update the status badge in place.

import { api, can } from '../api.js';
import { timeChart } from '../charts.js';
import { ago, badge, bytes, errorState, h, labelChips, loading, percent, replace, setBadge, toast, when } from '../dom.js';
import { agentsSection } from '../agents.js';
import { events } from '../sse.js';

const RANGES = { '15m': 900, '1h': 3600, '6h': 21600, '24h': 86400, '7d': 604800, '30d': 2592000 };
const CHARTS = [
  { type: 'cpu', title: 'CPU usage', unit: 'percent', series: [{ label: 'CPU', key: 'usage_percent' }] },
  { type: 'memory', title: 'Memory usage', unit: 'percent', series: [{ label: 'Memory', key: 'usage_percent' }] },
  { type: 'disk', title: 'Disk usage', unit: 'percent', series: [{ label: 'Disk', key: 'usage_percent' }] },
  { type: 'network', title: 'Network', unit: 'rate', series: [{ label: 'Received', key: 'rx_bytes', rate: true }, { label: 'Sent', key: 'tx_bytes', rate: true }] },
];

function iso(seconds) {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** A history row's value: a per-interval byte count becomes bytes per second. */
function valueOf(row, series) {
  const v = row.values ? row.values[series.key] : undefined;
  if (v === undefined || v === null) return null;
  if (!series.rate) return v;
  const interval = row.values.interval_seconds;
  return interval > 0 ? v / interval : null;
}

function facts(node, latest) {
  const fact = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
  const usage = (m, withBytes) => {
    if (!m || !m.values) return '–';
    const v = m.values;
    return withBytes && v.total_bytes ? `${percent(v.usage_percent)} (${bytes(v.used_bytes)} of ${bytes(v.total_bytes)})` : percent(v.usage_percent);
  };
  const cpu = latest && latest.cpu && latest.cpu.values;
  return h('dl', { class: 'facts', testid: 'node-facts' },
    fact('Hostname', node.hostname || '–'),
    fact('Node ID', h('span', { class: 'mono' }, node.node_id)),
    fact('Status', badge(node.status, { 'data-role': 'node-status' })),
    fact('IP', h('span', { class: 'mono' }, node.ip || '–')),
    fact('OS', node.os || '–'),
    fact('Architecture', node.arch || '–'),
    fact('Daemon version', node.daemon_version || '–'),
    fact('Agent version', node.agent_version || '–'),
    fact('Last heartbeat', h('span', { title: when(node.last_seen_at) }, `${ago(node.last_seen_at)}`)),
    fact('Registered', when(node.register_at)),
    fact('Labels', labelChips(node.labels)),
    fact('CPU now', cpu ? `${percent(cpu.usage_percent)}${cpu.cores ? ` of ${cpu.cores} cores` : ''}` : '–'),
    fact('Memory now', usage(latest && latest.memory, true)),
    fact('Disk now', usage(latest && latest.disk, true)));
}

export function nodePage(root, { params }) {
  const nodeId = params.node_id;
  const enc = encodeURIComponent(nodeId);
  const title = h('h1', {}, nodeId);
  const factsBox = h('section', { class: 'panel' }, loading());
  const head = h('div', { class: 'page-head' }, h('a', { href: '#/nodes' }, '← Nodes'), title);
  root.append(head, factsBox);
  const cleanups = [];
  const controller = new AbortController();

  (async () => {
    try {
      const [node, latest] = await Promise.all([
        api(`/nodes/${enc}`, { signal: controller.signal }).then((d) => d.node),
        api(`/metrics/nodes/${enc}/latest`, { signal: controller.signal }).catch(() => null),
      ]);
      title.textContent = node.hostname || node.node_id;
      replace(factsBox, h('h2', {}, 'Facts'), facts(node, latest));
      if (can('admin')) head.append(deleteButton(node));
    } catch (e) {
      if (e.name === 'AbortError') return;
      replace(factsBox, errorState(e.code === 2001 ? `No node ${nodeId}.` : `Cannot load the node: ${e.message}`));
    }
  })();

  // Charts with their range buttons.
  let range = sessionStorage.getItem('hostvisor.range') || '1h';
  if (!(range in RANGES)) range = '1h';
  const buttons = Object.keys(RANGES).map((r) => {
    const b = h('button', { type: 'button', class: `btn btn-small${r === range ? ' active' : ''}`, testid: `chart-range-${r}`, 'aria-pressed': String(r === range) }, r);
    b.addEventListener('click', () => {
      range = r;
      sessionStorage.setItem('hostvisor.range', r);
      for (const other of buttons) {
        other.classList.toggle('active', other === b);
        other.setAttribute('aria-pressed', String(other === b));
      }
      loadCharts();
    });
    return b;
  });
  const charts = CHARTS.map((spec) => {
    const box = h('div', { class: 'chart', testid: `node-chart-${spec.type}` });
    const unitText = spec.unit === 'percent' ? '%' : 'bytes/s';
    const panel = h('div', { class: 'panel' }, h('div', { class: 'chart-title' }, `${spec.title} (${unitText})`), box);
    return { spec, panel, chart: timeChart(box, { series: spec.series, unit: spec.unit }) };
  });
  root.append(
    h('section', {},
      h('div', { class: 'toolbar' }, h('h2', {}, 'Metrics'), h('span', { class: 'spacer' }), h('div', { class: 'btn-group', role: 'group', 'aria-label': 'Time range' }, buttons)),
      h('div', { class: 'grid grid-2' }, charts.map((c) => c.panel))));
  cleanups.push(() => charts.forEach((c) => c.chart.destroy()));

  let serial = 0;
  const loadCharts = async () => {
    const mine = ++serial;
    const end = Math.floor(Date.now() / 1000);
    const start = end - RANGES[range];
    await Promise.all(charts.map(async ({ spec, chart }) => {
      try {
        const rows = await api(`/metrics/nodes/${enc}/${spec.type}/history`, {
          query: { start_time: iso(start), end_time: iso(end) }, signal: controller.signal,
        });
        if (mine !== serial) return;
        const list = Array.isArray(rows) ? rows : rows.list || [];
        const xs = list.map((row) => Date.parse(row.timestamp) / 1000);
        chart.window(start, end);
        chart.set(xs, ...spec.series.map((s) => list.map((row) => valueOf(row, s))));
      } catch (e) {
        if (e.name !== 'AbortError' && mine === serial) chart.message(`Cannot load: ${e.message}`, true);
      }
    }));
  };
  loadCharts();
  const timer = setInterval(() => { if (RANGES[range] <= 21600) loadCharts(); }, 30000);
  cleanups.push(() => clearInterval(timer));

  const agents = agentsSection(nodeId);
  root.append(agents.el);
  cleanups.push(() => agents.destroy());

  cleanups.push(events.on('node', (event) => {
    if (!event || event.node_id !== nodeId) return;
    const el = factsBox.querySelector('[data-role="node-status"]');
    if (el && event.status) setBadge(el, event.status);
  }));

  return () => {
    controller.abort();
    for (const fn of cleanups) fn();
  };
}

function deleteButton(node) {
  const b = h('button', { type: 'button', class: 'btn btn-danger btn-small', testid: 'node-delete' }, 'Delete node');
  b.addEventListener('click', async () => {
    if (!window.confirm(`Delete node ${node.hostname || node.node_id} and its history?`)) return;
    try {
      await api(`/admin/nodes/${node.id}`, { method: 'DELETE' });
      toast(`Node ${node.node_id} deleted`, 'ok');
      location.hash = '#/nodes';
    } catch (e) {
      toast(`Cannot delete: ${e.message}`, 'bad');
    }
  });
  return b;
}
