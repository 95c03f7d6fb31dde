// The console's entry point: the routes, the login gate, the sidebar (admin links shown by
// role) and logout. Every page lives in ./pages/, one module each.

import { can, currentUser, endSession, onSessionEnd, token } from './api.js';
import { Router } from './router.js';
import { events } from './sse.js';
import { loginPage } from './pages/login.js';
import { dashboardPage } from './pages/dashboard.js';
import { nodesPage } from './pages/nodes.js';
import { nodePage } from './pages/node.js';
import { updatesPage, updatePage } from './pages/updates.js';
import { auditPage } from './pages/audit.js';
import { usersPage } from './pages/users.js';

const ROUTES = [
  { pattern: '/login', page: loginPage, name: 'login', public: true },
  { pattern: '/', page: dashboardPage, name: 'dashboard' },
  { pattern: '/nodes', page: nodesPage, name: 'nodes' },
  { pattern: '/nodes/:node_id', page: nodePage, name: 'nodes' },
  { pattern: '/updates', page: updatesPage, name: 'updates' },
  { pattern: '/updates/:id', page: updatePage, name: 'updates' },
  { pattern: '/audit', page: auditPage, name: 'audit', role: 'admin' },
  { pattern: '/users', page: usersPage, name: 'users', role: 'admin' },
];

const shell = document.getElementById('shell');
const loginView = document.getElementById('login-view');

function showShell(user) {
  loginView.hidden = true;
  loginView.replaceChildren();
  shell.hidden = false;
  document.getElementById('whoami').textContent = `${user.username} (${user.role})`;
  for (const link of shell.querySelectorAll('[data-role]')) link.hidden = !can(link.dataset.role);
}

function markActive(name) {
  for (const link of shell.querySelectorAll('[data-nav]')) {
    link.classList.toggle('active', link.dataset.nav === name);
  }
}

async function before(route, loc) {
  if (route && route.public) {
    shell.hidden = true;
    loginView.hidden = false;
    if (token() && loc.path === '/login') {
      // Already signed in: straight to the dashboard.
      try { await currentUser(); location.hash = '#/'; return false; } catch { /* stay */ }
    }
    route.page(loginView, { params: {}, query: loc.query });
    return false;
  }
  if (!token()) {
    location.hash = '#/login';
    return false;
  }
  let user;
  try {
    user = await currentUser();
  } catch {
    if (!token()) return false; // the session ended: api.js went to #/login
    user = null;
  }
  if (!user) {
    endSession(false);
    return false;
  }
  showShell(user);
  markActive(route ? route.name : '');
  if (route && route.role && !can(route.role)) {
    document.getElementById('page').replaceChildren(
      Object.assign(document.createElement('p'), { className: 'error-state', textContent: 'This page is for admins.' }),
    );
    return false;
  }
  return true;
}

onSessionEnd(() => events.stop());
document.getElementById('logout').addEventListener('click', () => endSession(false));

const router = new Router(ROUTES, before);
router.go();
