// #/login: username and password -> a JWT kept in sessionStorage, then the dashboard (or
// the page the user was sent from). Shows "session expired" after an expired session.

import { login, takeExpired } from '../api.js';
import { h } from '../dom.js';

export function loginPage(root) {
  const expired = takeExpired();
  const error = h('div', { class: 'notice bad', testid: 'login-error', role: 'alert', hidden: true });
  const username = h('input', { id: 'login-username', testid: 'login-username', name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const password = h('input', { id: 'login-password', testid: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'login-submit' }, 'Log in');

  const form = h('form', { class: 'login-box', novalidate: true },
    h('h1', {}, 'hostvisor'),
    expired ? h('div', { class: 'notice warn', testid: 'session-expired' }, 'Your session expired: please log in again.') : null,
    error,
    h('label', { for: 'login-username' }, 'Username'), username,
    h('label', { for: 'login-password' }, 'Password'), password,
    submit);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    if (!username.value || !password.value) {
      error.textContent = 'Enter a username and a password.';
      error.hidden = false;
      return;
    }
    submit.disabled = true;
    try {
      await login(username.value.trim(), password.value);
      location.hash = '#/';
    } catch (e) {
      error.textContent = e.message || 'Login failed.';
      error.hidden = false;
      password.value = '';
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  root.replaceChildren(form);
  username.focus();
}
