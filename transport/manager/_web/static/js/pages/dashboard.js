// #/ : the fleet at a glance from GET /api/v1/dashboard (aggregated by the Manager in the
// database): nodes online/offline, agents by state, the busiest nodes by CPU and memory,
// and the Manager's alerts. Refreshed when a `node` or `agents` event arrives (at most
// every 2 s) and every 30 s for the metrics.

import { api } from '../api.js';
import { ago, badge, emptyState, errorState, h, loading, percent, replace, throttle } from '../dom.js';
import { events } from '../sse.js';

const AGENT_STATES = ['running', 'failed', 'restarting', 'starting', 'stopping', 'stopped', 'gone'];
const STATE_TONE = { running: 'ok', failed: 'bad', gone: 'bad', restarting: 'warn', starting: 'warn', stopping: 'warn' };

function card(label, value, testid, tone = '') {
  return h('div', { class: `card ${tone}` }, h('div', { class: 'label' }, label), h('div', { class: 'value', testid }, value));
}

function topList(rows, testid) {
  if (!rows || !rows.length) return h('div', { testid }, emptyState('No online node has reported yet.'));
  return h('ul', { class: 'bars', testid },
    rows.map((row) => h('li', { 'data-node': row.node_id },
      h('a', { href: `#/nodes/${encodeURIComponent(row.node_id)}` }, row.hostname || row.node_id),
      h('span', { class: 'num' }, percent(row.value)),
      h('div', { class: 'bar' }, h('progress', { max: 100, value: Math.min(100, Math.max(0, row.value || 0)), class: row.value >= 90 ? 'bad' : '' })))));
}

function alertList(alerts) {
  if (!alerts || !alerts.length) return h('div', { testid: 'dash-alerts' }, emptyState('No alerts: all quiet.'));
  return h('ul', { class: 'alerts', testid: 'dash-alerts' },
    alerts.map((a) => h('li', { 'data-kind': a.kind, 'data-severity': a.severity },
      badge(a.severity),
      h('a', { href: `#/nodes/${encodeURIComponent(a.node_id)}` }, a.hostname || a.node_id),
      h('span', {}, a.message),
      a.since ? h('span', { class: 'muted' }, `since ${ago(a.since)}`) : null)));
}

function alertsTitle(data) {
  const shown = (data.alerts || []).length;
  const total = data.alerts_total ?? shown;
  return total > shown ? `Alerts (${shown} of ${total})` : `Alerts (${total})`;
}

function render(view, data) {
  const agents = data.agents || {};
  const states = [...AGENT_STATES, ...Object.keys(agents).filter((s) => !AGENT_STATES.includes(s))];
  replace(view,
    h('h2', {}, 'Nodes'),
    h('div', { class: 'grid grid-cards' },
      card('Total', data.nodes.total, 'dash-nodes-total'),
      card('Online', data.nodes.online, 'dash-nodes-online', 'ok'),
      card('Offline', data.nodes.offline, 'dash-nodes-offline', data.nodes.offline ? 'bad' : '')),
    h('h2', {}, 'Agents'),
    h('div', { class: 'grid grid-cards' },
      states.map((s) => card(s, agents[s] || 0, `dash-agents-${s}`, (agents[s] || 0) ? STATE_TONE[s] || '' : ''))),
    h('div', { class: 'grid grid-3' },
      h('section', { class: 'panel' }, h('h2', {}, alertsTitle(data)), alertList(data.alerts)),
      h('section', { class: 'panel' }, h('h2', {}, 'Top CPU'), topList(data.top_cpu, 'dash-top-cpu')),
      h('section', { class: 'panel' }, h('h2', {}, 'Top memory'), topList(data.top_memory, 'dash-top-memory'))));
}

export function dashboardPage(root) {
  const view = h('div', {}, loading());
  root.append(h('h1', {}, 'Dashboard'), view);
  const controller = new AbortController();
  let shown = false;

  const load = async () => {
    try {
      const data = await api('/dashboard', { signal: controller.signal });
      render(view, data);
      shown = true;
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (!shown) replace(view, errorState(`Cannot load the dashboard: ${e.message}`));
    }
  };
  load();
  const refresh = throttle(load, 2000);
  const offNode = events.on('node', refresh);
  const offAgents = events.on('agents', refresh);
  const offReopen = events.on('reopen', refresh);
  const timer = setInterval(load, 30000);
  return () => {
    controller.abort();
    refresh.cancel();
    clearInterval(timer);
    offNode();
    offAgents();
    offReopen();
  };
}
