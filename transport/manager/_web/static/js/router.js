// Hash routes: "#/nodes/abc?q=x" -> the route whose pattern matches "/nodes/:node_id",
// with params {node_id: "abc"} and query {q: "x"}. A page is
// `render(root, {params, query}) -> cleanup function | undefined`; the previous page's
// cleanup runs (closing its event streams and timers) before the next page renders.

/** Split the current hash into a path and its query. */
export function currentLocation() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, qs = ''] = raw.split('?');
  return { path: path || '/', query: Object.fromEntries(new URLSearchParams(qs)) };
}

/** Rewrite the hash's query without re-rendering (history.replaceState fires no event). */
export function setQuery(query) {
  const { path } = currentLocation();
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '' && !(k === 'page' && Number(v) === 1)) params.set(k, String(v));
  }
  const qs = params.toString();
  history.replaceState(null, '', `#${path}${qs ? `?${qs}` : ''}`);
}

function compile(pattern) {
  const names = [];
  const source = pattern.replace(/:([a-z_]+)/g, (_, name) => { names.push(name); return '([^/]+)'; });
  return { regex: new RegExp(`^${source}$`), names };
}

export class Router {
  /**
   * @param {Array<{pattern: string, page: Function, name: string}>} routes
   * @param {(route: object|null, location: object) => Promise<boolean>|boolean} before
   *   called first; false stops the navigation (e.g. not logged in)
   */
  constructor(routes, before) {
    this.routes = routes.map((r) => ({ ...r, ...compile(r.pattern) }));
    this.before = before;
    this.cleanup = null;
    this.serial = 0;
    window.addEventListener('hashchange', () => this.go());
  }

  match(path) {
    for (const route of this.routes) {
      const m = route.regex.exec(path);
      if (m) {
        const params = {};
        route.names.forEach((name, i) => { params[name] = decodeURIComponent(m[i + 1]); });
        return { route, params };
      }
    }
    return null;
  }

  /** Render the page of the current hash. */
  async go() {
    const serial = ++this.serial;
    const loc = currentLocation();
    const found = this.match(loc.path);
    if (this.cleanup) { try { this.cleanup(); } catch (e) { console.error(e); } }
    this.cleanup = null;
    if (!(await this.before(found ? found.route : null, loc))) return;
    if (serial !== this.serial) return; // another navigation started meanwhile
    const root = document.getElementById('page');
    root.replaceChildren();
    if (!found) {
      root.append(Object.assign(document.createElement('p'), { textContent: 'No such page.' }));
      return;
    }
    const cleanup = found.route.page(root, { params: found.params, query: loc.query });
    this.cleanup = typeof cleanup === 'function' ? cleanup : null;
  }
}
