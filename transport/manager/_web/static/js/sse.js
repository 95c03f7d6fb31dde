// Server-sent events. EventSource cannot send an Authorization header, so the token goes
// in `?access_token=` (the Manager accepts it on SSE routes only). A stream that fails is
// reopened after a growing delay (1 s .. 30 s) with the current token; one that the server
// refuses because the session ended stops (the next API call sends the user to login).
//
// `events` is one shared stream of /api/v1/events for every page: pages subscribe to the
// event names they need (`agents`, `node`, `update`, and `reopen` after a break in the
// stream) and unsubscribe in their cleanup.

import { BASE, api, token } from './api.js';

/**
 * Open a stream that reconnects.
 * @param {string} path under /api/v1
 * @param {object} query extra parameters
 * @param {Object<string, (data: any) => void>} handlers event name -> handler of its JSON data
 * @param {{onOpen?: Function, onDown?: Function}} [hooks]
 * @returns {{close: () => void}}
 */
export function stream(path, query, handlers, hooks = {}) {
  let source = null;
  let closed = false;
  let delay = 1000;
  let timer = null;

  const open = () => {
    const t = token();
    if (closed || !t) return;
    const params = new URLSearchParams({ ...query, access_token: t });
    source = new EventSource(`${BASE}${path}?${params}`);
    source.addEventListener('open', () => { delay = 1000; hooks.onOpen?.(); });
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => {
        let data = null;
        try { data = JSON.parse(event.data); } catch { data = event.data; }
        fn(data);
      });
    }
    source.addEventListener('error', () => {
      // EventSource retries by itself on a dropped connection, but gives up (CLOSED) on an
      // HTTP error; reopen then, with a fresh token, after a pause.
      if (closed || source.readyState !== EventSource.CLOSED) return;
      hooks.onDown?.();
      source = null;
      timer = setTimeout(open, delay);
      delay = Math.min(delay * 2, 30000);
    });
  };

  open();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (source) source.close();
      source = null;
    },
  };
}

const EVENT_NAMES = ['agents', 'node', 'update'];

class EventHub {
  constructor() {
    // `reopen`: the stream came back after a break (events may have been missed, e.g. the
    // Manager dropped a lagging subscriber): pages reload their data.
    this.listeners = new Map([...EVENT_NAMES, 'reopen'].map((name) => [name, new Set()]));
    this.connection = null;
  }

  emit(name, data) {
    for (const fn of this.listeners.get(name)) fn(data);
  }

  /** Listen to an event of /api/v1/events (or `reopen`); returns the unsubscribe function. */
  on(name, fn) {
    this.listeners.get(name).add(fn);
    if (!this.connection) {
      const handlers = {};
      for (const event of EVENT_NAMES) handlers[event] = (data) => this.emit(event, data);
      let opened = false;
      const onOpen = () => {
        if (opened) this.emit('reopen');
        opened = true;
      };
      // A refused stream may mean the session ended: an API call finds out (and a 401
      // sends the user to the login page with "session expired").
      const onDown = () => { api('/auth/profile').catch(() => {}); };
      this.connection = stream('/events', {}, handlers, { onOpen, onDown });
    }
    return () => this.listeners.get(name).delete(fn);
  }

  /** Close the stream (logout). */
  stop() {
    if (this.connection) this.connection.close();
    this.connection = null;
    for (const set of this.listeners.values()) set.clear();
  }
}

/** The shared /api/v1/events stream. */
export const events = new EventHub();
