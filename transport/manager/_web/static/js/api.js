// The REST API client: the JWT from sessionStorage as a Bearer header, the envelope
// unwrapped ({code, message, data}: success is code 0 only), and an expired or invalid
// session (HTTP 401 with 1002/1007/1008) sends the user back to the login page with
// "session expired".

const TOKEN_KEY = 'hostvisor.token';
const EXPIRED_KEY = 'hostvisor.expired';
export const BASE = 'api/v1';
const SESSION_CODES = new Set([1002, 1007, 1008]);

/** An API error: `code` is the envelope's (0 when the answer was not an envelope). */
export class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export function token() { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(value) { sessionStorage.setItem(TOKEN_KEY, value); }

let profile = null;
const sessionListeners = new Set();

/** Called with no argument when the session ends (logout or expiry). */
export function onSessionEnd(fn) { sessionListeners.add(fn); }

/** Forget the session; `expired` shows "session expired" on the login page. */
export function endSession(expired = false) {
  sessionStorage.removeItem(TOKEN_KEY);
  profile = null;
  if (expired) sessionStorage.setItem(EXPIRED_KEY, '1');
  for (const fn of sessionListeners) fn();
  if (location.hash !== '#/login') location.hash = '#/login';
}

/** Whether the last session ended by expiry (read once). */
export function takeExpired() {
  const was = sessionStorage.getItem(EXPIRED_KEY) === '1';
  sessionStorage.removeItem(EXPIRED_KEY);
  return was;
}

/** A URL under /api/v1 with query parameters (empty ones left out). */
export function url(path, query = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  const qs = params.toString();
  return `${BASE}${path}${qs ? `?${qs}` : ''}`;
}

/**
 * Call the API.
 * @param {string} path under /api/v1, e.g. "/nodes"
 * @param {{method?: string, query?: object, body?: object, signal?: AbortSignal}} [options]
 * @returns {Promise<any>} the envelope's data
 * @throws {ApiError} a non-zero code, a network failure (code 0) or an aborted call (AbortError)
 */
export async function api(path, { method = 'GET', query = {}, body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url(path, query), {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(`cannot reach the Manager (${error.message})`, 0, 0);
  }
  let envelope = null;
  try { envelope = await response.json(); } catch { /* not JSON */ }
  if (!envelope || typeof envelope.code !== 'number') {
    throw new ApiError(`HTTP ${response.status} ${response.statusText}`, 0, response.status);
  }
  if (envelope.code !== 0) {
    if (response.status === 401 && SESSION_CODES.has(envelope.code) && t) endSession(true);
    throw new ApiError(envelope.message || `error ${envelope.code}`, envelope.code, response.status);
  }
  return envelope.data;
}

/** Log in; keeps the token and returns the user. */
export async function login(username, password) {
  const data = await api('/auth/login', { method: 'POST', body: { username, password } });
  setToken(data.token);
  profile = data.user;
  return data.user;
}

/** The signed-in user (cached for the session). */
export async function currentUser() {
  if (!profile) profile = (await api('/auth/profile')).user;
  return profile;
}

const RANK = { viewer: 1, operator: 2, admin: 3 };

/** Whether the signed-in user has at least `role` (viewer < operator < admin). */
export function can(role) {
  return Boolean(profile) && (RANK[profile.role] || 0) >= (RANK[role] || 99);
}
