// #/users (admins): the users with their role and status; create a user, change a role,
// disable or enable (POST /admin/users, /admin/users/:id/{role,disable,enable}). The
// server refuses an admin lowering their own role.

import { api, currentUser } from '../api.js';
import { badge, h, messageRow, replace, table, toast, when } from '../dom.js';

const ROLES = ['viewer', 'operator', 'admin'];

function createForm(onCreated) {
  const username = h('input', { id: 'new-username', required: true, autocomplete: 'off' });
  const password = h('input', { id: 'new-password', type: 'password', required: true, autocomplete: 'new-password' });
  const role = h('select', { id: 'new-role' }, ROLES.map((r) => h('option', { value: r }, r)));
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create user');
  const form = h('form', { class: 'panel', testid: 'user-form' },
    h('h2', {}, 'New user'),
    h('div', { class: 'form-grid' },
      h('div', {}, h('label', { for: 'new-username' }, 'Username'), username),
      h('div', {}, h('label', { for: 'new-password' }, 'Password'), password),
      h('div', {}, h('label', { for: 'new-role' }, 'Role'), role)),
    h('div', { class: 'toolbar' }, submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const data = await api('/admin/users', { method: 'POST', body: { username: username.value.trim(), password: password.value, role: role.value } });
      toast(`User ${data.user.username} created`, 'ok');
      form.reset();
      onCreated();
    } catch (e) {
      toast(`Cannot create the user: ${e.message}`, 'bad');
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function usersPage(root) {
  const t = table(['User', 'Role', 'Status', 'Last login', 'From', 'Actions'], { testid: 'users-table' });
  const info = h('span', { class: 'muted' });
  const prev = h('button', { type: 'button', class: 'btn', disabled: true }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'btn', disabled: true }, 'Next ›');
  let page = 1;
  let me = null;

  const act = async (user, path, body, done) => {
    try {
      await api(`/admin/users/${user.id}/${path}`, { method: 'POST', body });
      toast(done, 'ok');
    } catch (e) {
      toast(`${user.username}: ${e.message}`, 'bad');
    }
    load();
  };

  const row = (user) => {
    const role = h('select', { 'aria-label': `Role of ${user.username}`, disabled: me && me.id === user.id }, ROLES.map((r) => h('option', { value: r }, r)));
    role.value = user.role;
    role.addEventListener('change', () => act(user, 'role', { role: role.value }, `${user.username} is now ${role.value}`));
    const disabled = user.status === 'disabled';
    const toggle = h('button', { type: 'button', class: `btn btn-small${disabled ? '' : ' btn-danger'}`, disabled: me && me.id === user.id }, disabled ? 'Enable' : 'Disable');
    toggle.addEventListener('click', () => act(user, disabled ? 'enable' : 'disable', undefined, `${user.username} ${disabled ? 'enabled' : 'disabled'}`));
    return h('tr', { testid: `user-row-${user.username}` },
      h('td', {}, h('strong', {}, user.username), user.email ? h('div', { class: 'muted' }, user.email) : null),
      h('td', {}, role),
      h('td', {}, badge(user.status)),
      h('td', {}, when(user.last_login_at)),
      h('td', { class: 'mono' }, user.last_login_ip || '–'),
      h('td', { class: 'actions' }, toggle));
  };

  const load = async () => {
    try {
      me = me || await currentUser();
      const data = await api('/admin/users', { query: { page, page_size: 50 } });
      replace(t.body, data.list.length ? data.list.map(row) : messageRow(t.width, 'No users.'));
      const pages = data.page_info.total_pages ?? data.page_info.pages ?? 1;
      info.textContent = `Page ${page} of ${Math.max(1, pages)} · ${data.page_info.total} users`;
      prev.disabled = page <= 1;
      next.disabled = page >= pages;
    } catch (e) {
      replace(t.body, messageRow(t.width, `Cannot load the users: ${e.message}`, 'error-state'));
    }
  };
  prev.addEventListener('click', () => { page -= 1; load(); });
  next.addEventListener('click', () => { page += 1; load(); });
  root.append(h('h1', {}, 'Users'), createForm(load), t.wrap, h('div', { class: 'pager' }, info, prev, next));
  t.body.append(messageRow(t.width, 'Loading…', 'loading'));
  load();
}
