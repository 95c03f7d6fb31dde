// The log viewer of one agent: follows new lines over SSE
// (GET .../logs/follow?lines=200&access_token=...: `line` events {line}, `dropped` {count}
// when the daemon skipped lines for a slow reader, `error` {code, message} or `end` when the
// stream is over), can stop following, and downloads the last 1,000 lines
// (GET .../logs?lines=1000) as a text file made in the browser.

import { api } from './api.js';
import { h, toast } from './dom.js';
import { stream } from './sse.js';

const MAX_LINES = 5000;
const TAIL = 200;

/**
 * A log viewer panel.
 * @param {string} nodeId
 * @param {string} agentId
 * @param {() => void} onClose called when the user closes it
 * @returns {{el: HTMLElement, close: () => void}}
 */
export function logViewer(nodeId, agentId, onClose) {
  const base = `/nodes/${encodeURIComponent(nodeId)}/agents/${encodeURIComponent(agentId)}/logs`;
  const view = h('div', { class: 'log-view', testid: 'log-view', role: 'log', 'aria-label': `Logs of ${agentId}` });
  const follow = h('input', { type: 'checkbox', testid: 'log-follow', checked: true, id: 'log-follow' });
  const download = h('button', { type: 'button', class: 'btn btn-small', testid: 'log-download' }, 'Download');
  const closeButton = h('button', { type: 'button', class: 'btn btn-small' }, 'Close');
  const status = h('span', { class: 'muted' }, '');
  const el = h('section', { class: 'panel log-panel', 'data-agent': agentId },
    h('div', { class: 'toolbar' },
      h('h2', {}, `Logs: ${agentId}`),
      h('span', { class: 'spacer' }),
      status,
      h('label', { for: 'log-follow', class: 'inline' }, follow, ' Follow'),
      download, closeButton),
    view);

  let live = null;

  const atBottom = () => view.scrollHeight - view.scrollTop - view.clientHeight < 24;
  const add = (text, note = false) => {
    const stick = atBottom();
    view.append(h('span', { class: note ? 'log-note' : 'log-line' }, text));
    while (view.childElementCount > MAX_LINES) view.firstElementChild.remove();
    if (stick) view.scrollTop = view.scrollHeight;
  };

  const loadOnce = async () => {
    try {
      const data = await api(base, { query: { lines: TAIL } });
      view.replaceChildren();
      for (const line of data.logs || []) add(line);
      if (!(data.logs || []).length) add('(no log lines)', true);
    } catch (e) {
      add(`cannot read the logs: ${e.message}`, true);
    }
  };

  const stop = () => {
    if (live) live.close();
    live = null;
  };

  const start = () => {
    stop();
    view.replaceChildren();
    let opened = false;
    status.textContent = 'connecting…';
    live = stream(`${base}/follow`, { lines: TAIL }, {
      line: (data) => add(typeof data === 'object' && data !== null ? String(data.line ?? '') : String(data)),
      dropped: (data) => add(`(${data && data.count} lines skipped: the reader was too slow)`, true),
      end: () => {
        add('(the daemon ended the stream)', true);
        stop();
        follow.checked = false;
        status.textContent = 'ended';
      },
      error: (data) => {
        if (data === undefined || data === null) return; // the connection's own error, not the server's
        add(`log stream: ${data.message || data.error || JSON.stringify(data)}`, true);
        stop();
        follow.checked = false;
        status.textContent = 'stopped';
      },
    }, {
      onOpen: () => {
        // A reconnection sends the tail again: start over rather than repeat lines.
        if (opened) view.replaceChildren();
        opened = true;
        status.textContent = 'following';
      },
      onDown: () => {
        status.textContent = 'reconnecting…';
        if (!opened) { opened = true; loadOnce(); }
      },
    });
  };

  follow.addEventListener('change', () => {
    if (follow.checked) start();
    else { stop(); status.textContent = 'paused'; }
  });
  download.addEventListener('click', async () => {
    download.disabled = true;
    try {
      const data = await api(base, { query: { lines: 1000 } });
      const blob = new Blob([(data.logs || []).join('\n') + '\n'], { type: 'text/plain' });
      const link = h('a', { href: URL.createObjectURL(blob), download: `${nodeId}-${agentId}.log` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    } catch (e) {
      toast(`Cannot download the logs: ${e.message}`, 'bad');
    } finally {
      download.disabled = false;
    }
  });
  closeButton.addEventListener('click', () => onClose());

  start();
  return { el, close: stop };
}
