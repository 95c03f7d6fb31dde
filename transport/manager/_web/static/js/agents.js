// A node's agents table: state, pid, uptime, restarts, health and last error from
// GET /nodes/:id/agents/details (the daemon asked live; the stored agents when it is
// unreachable), start / stop / restart buttons for operators and admins only (the server
// refuses viewers anyway), a resource chart per agent and the log viewer.
//
// Live: an `agents` event for this node updates each row's state and pid in place at once
// (no reload), then the details are fetched again (throttled) for uptime, restarts and health.

import { api, can } from './api.js';
import { timeChart } from './charts.js';
import { badge, duration, errorState, h, messageRow, replace, setBadge, table, throttle, toast } from './dom.js';
import { logViewer } from './logs.js';
import { events } from './sse.js';

const AGENT_WINDOW_S = 3600;
const OPERATIONS = [['start', 'Start', 'agent-start-'], ['stop', 'Stop', 'agent-stop-'], ['restart', 'Restart', 'agent-restart-']];

function healthBadge(health) {
  return badge(health || 'unknown');
}

class AgentRow {
  constructor(nodeId, agent, table) {
    this.nodeId = nodeId;
    this.id = agent.agent_id;
    this.table = table;
    const id = this.id;
    this.status = badge(agent.status, { testid: `agent-status-${id}` });
    this.pid = h('td', { class: 'num mono', testid: `agent-pid-${id}` });
    this.uptime = h('td', { class: 'num' });
    this.restarts = h('td', { class: 'num' });
    this.health = h('td');
    this.error = h('td', { class: 'muted' });
    this.version = h('td');
    const buttons = [];
    if (can('operator')) {
      for (const [op, label, testid] of OPERATIONS) {
        const b = h('button', { type: 'button', class: `btn btn-small${op === 'stop' ? ' btn-danger' : ''}`, testid: `${testid}${id}` }, label);
        b.addEventListener('click', () => this.operate(op, buttons));
        buttons.push(b);
      }
    }
    const logs = h('button', { type: 'button', class: 'btn btn-small', testid: `agent-logs-${id}` }, 'Logs');
    logs.addEventListener('click', () => table.openLogs(id));
    const chart = h('button', { type: 'button', class: 'btn btn-small', testid: `agent-chart-${id}`, 'aria-expanded': 'false' }, 'Chart');
    chart.addEventListener('click', () => this.toggleChart(chart));
    this.tr = h('tr', { testid: `agent-row-${id}`, 'data-agent': id },
      h('td', { class: 'nowrap' }, h('strong', {}, id)),
      h('td', {}, agent.type || '–'),
      this.version,
      h('td', {}, this.status),
      this.pid, this.uptime, this.restarts, this.health, this.error,
      h('td', { class: 'actions' }, buttons, logs, chart));
    this.chartRow = null;
    this.startedAt = null;
    this.update(agent);
  }

  /** Refresh the cells from an agent (details or a stored Agent). */
  update(agent) {
    if (agent.status !== undefined) setBadge(this.status, agent.status);
    if (agent.pid !== undefined) this.pid.textContent = agent.pid ? String(agent.pid) : '–';
    if (agent.version !== undefined) this.version.textContent = agent.version || '–';
    if ('uptime_s' in agent) this.startedAt = agent.uptime_s === null ? null : Date.now() / 1000 - agent.uptime_s;
    if (agent.pid !== undefined && !agent.pid) this.startedAt = null;
    this.tick();
    if ('restart_count' in agent) this.restarts.textContent = agent.restart_count ?? '–';
    if ('health' in agent || !this.health.childElementCount) {
      replace(this.health, healthBadge(agent.health));
      if (agent.health_summary) this.health.title = agent.health_summary;
    }
    if ('last_error' in agent) {
      this.error.textContent = agent.last_error || '';
      this.error.title = agent.last_error || '';
    }
  }

  /** Show the uptime as of now (it counts on between refreshes). */
  tick() {
    this.uptime.textContent = this.startedAt ? duration(Date.now() / 1000 - this.startedAt) : '–';
  }

  async operate(op, buttons) {
    for (const b of buttons) b.disabled = true;
    try {
      const data = await api(`/nodes/${encodeURIComponent(this.nodeId)}/agents/${encodeURIComponent(this.id)}/operate`, { method: 'POST', body: { operation: op } });
      toast(data && data.message ? data.message : `${op} ${this.id}: done`, 'ok');
      this.table.refreshSoon();
    } catch (e) {
      toast(`${op} ${this.id} failed: ${e.message}`, 'bad');
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  toggleChart(button) {
    if (this.chartRow) {
      this.closeChart();
      button.setAttribute('aria-expanded', 'false');
      return;
    }
    button.setAttribute('aria-expanded', 'true');
    const cpuBox = h('div', { class: 'chart' });
    const memBox = h('div', { class: 'chart' });
    this.chartRow = h('tr', { class: 'detail-row', 'data-chart-of': this.id },
      h('td', { colspan: this.table.width },
        h('div', { class: 'grid grid-2', testid: `agent-chart-panel-${this.id}` },
          h('div', {}, h('div', { class: 'chart-title' }, `${this.id}: CPU (%), last hour`), cpuBox),
          h('div', {}, h('div', { class: 'chart-title' }, `${this.id}: memory RSS, last hour`), memBox))));
    this.tr.after(this.chartRow);
    const cpu = timeChart(cpuBox, { series: [{ label: 'CPU' }], unit: 'percent', height: 160 });
    const mem = timeChart(memBox, { series: [{ label: 'RSS' }], unit: 'bytes', height: 160 });
    const load = async () => {
      try {
        const data = await api(`/nodes/${encodeURIComponent(this.nodeId)}/agents/${encodeURIComponent(this.id)}/metrics`, { query: { duration: AGENT_WINDOW_S } });
        const points = [...(data.data_points || [])].sort((a, b) => a.timestamp - b.timestamp);
        const xs = points.map((p) => p.timestamp);
        const now = Date.now() / 1000;
        cpu.window(now - AGENT_WINDOW_S, now);
        mem.window(now - AGENT_WINDOW_S, now);
        cpu.set(xs, points.map((p) => p.cpu ?? null));
        mem.set(xs, points.map((p) => p.memory_rss ?? null));
      } catch (e) {
        cpu.message(`Cannot load: ${e.message}`, true);
        mem.message(`Cannot load: ${e.message}`, true);
      }
    };
    load();
    const timer = setInterval(load, 30000);
    this.chartCleanup = () => { clearInterval(timer); cpu.destroy(); mem.destroy(); };
  }

  closeChart() {
    if (!this.chartRow) return;
    this.chartCleanup();
    this.chartRow.remove();
    this.chartRow = null;
  }

  remove() {
    this.closeChart();
    this.tr.remove();
  }
}

/**
 * The agents section of a node page.
 * @param {string} nodeId
 * @returns {{el: HTMLElement, destroy: () => void}}
 */
export function agentsSection(nodeId) {
  const t = table(['Agent', 'Type', 'Version', 'Status', ['PID', 'num'], ['Uptime', 'num'], ['Restarts', 'num'], 'Health', 'Last error', 'Actions'], { testid: 'agents-table' });
  const note = h('span', { class: 'muted' });
  const logBox = h('div');
  const el = h('section', { class: 'panel' },
    h('div', { class: 'toolbar' }, h('h2', {}, 'Agents'), h('span', { class: 'spacer' }), note),
    t.wrap, logBox);
  const rows = new Map();
  let viewer = null;
  let destroyed = false;
  t.body.append(messageRow(t.width, 'Loading…', 'loading'));

  const api_ = {
    width: t.width,
    openLogs(agentId) {
      if (viewer) viewer.close();
      viewer = logViewer(nodeId, agentId, () => { viewer.close(); viewer = null; logBox.replaceChildren(); });
      replace(logBox, viewer.el);
      viewer.el.scrollIntoView({ block: 'nearest' });
    },
    refreshSoon: () => refresh(),
  };

  const show = (agents) => {
    const seen = new Set();
    for (const agent of agents) {
      seen.add(agent.agent_id);
      const existing = rows.get(agent.agent_id);
      if (existing) existing.update(agent);
      else rows.set(agent.agent_id, new AgentRow(nodeId, agent, api_));
    }
    for (const [id, row] of rows) if (!seen.has(id)) { row.remove(); rows.delete(id); }
    if (!rows.size) {
      replace(t.body, messageRow(t.width, 'This node runs no agent.'));
      return;
    }
    for (const child of [...t.body.children]) if (!child.dataset.agent && !child.dataset.chartOf) child.remove();
    // Keep the rows sorted by id, each chart panel under its row.
    for (const id of [...rows.keys()].sort()) {
      const row = rows.get(id);
      t.body.append(row.tr);
      if (row.chartRow) t.body.append(row.chartRow);
    }
  };

  const load = async () => {
    const path = `/nodes/${encodeURIComponent(nodeId)}/agents`;
    try {
      let data;
      try {
        data = await api(`${path}/details`);
      } catch (e) {
        if (e.status !== 404 || e.code === 2001) throw e;
        data = { live: false, agents: (await api(path)).agents }; // an older Manager
      }
      if (destroyed) return;
      note.textContent = data.live ? 'live from the daemon' : `last reported state (daemon: ${data.error || 'unreachable'})`;
      show(data.agents || []);
    } catch (e) {
      if (destroyed) return;
      if (!rows.size) replace(t.body, h('tr', {}, h('td', { colspan: t.width }, errorState(`Cannot load the agents: ${e.message}`))));
      else note.textContent = `refresh failed: ${e.message}`;
    }
  };
  const refresh = throttle(load, 1500);

  const off = events.on('agents', (event) => {
    if (!event || event.node_id !== nodeId) return;
    // Update what is shown at once; the details that follow add, remove and complete rows.
    for (const agent of event.agents || []) {
      rows.get(agent.agent_id)?.update({ status: agent.status, pid: agent.pid });
    }
    refresh();
  });

  const offReopen = events.on('reopen', refresh);
  const ticker = setInterval(() => { for (const row of rows.values()) row.tick(); }, 1000);
  load();
  return {
    el,
    destroy() {
      destroyed = true;
      clearInterval(ticker);
      off();
      offReopen();
      refresh.cancel();
      if (viewer) viewer.close();
      for (const row of rows.values()) row.closeChart();
    },
  };
}
