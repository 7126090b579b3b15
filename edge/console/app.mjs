// app.mjs — the console's entry: sign-in, the router (history API under
// /console), the header.  Pages: sessions.mjs, session.mjs, operator.mjs.
import { claims, signIn, signOut, token, api, ApiError } from './api.mjs';
import { el, clear } from './dom.mjs';
import { sessionsPage } from './sessions.mjs';
import { sessionPage } from './session.mjs';
import { operatorPage } from './operator.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
let current = null; // the page's stop()

export function navigate(path) {
  history.pushState(null, '', path);
  route();
}

function isAdmin() {
  const c = claims();
  return !!c && c.scope === 'admin';
}

function header() {
  const c = claims();
  const signedIn = !!token();
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('signout').hidden = !signedIn;
  document.getElementById('nav-operator').hidden = !isAdmin();
  document.getElementById('who').textContent =
    signedIn && c ? `${c.scope || '?'} · ${c.tenant || '?'}${c.sub ? ` · ${c.sub}` : ''}` : '';
}

function signInPage(main) {
  const input = el('textarea', { id: 'token', name: 'token', rows: 4, required: true, autocomplete: 'off',
    spellcheck: 'false', placeholder: 'eyJ…' });
  const msg = el('p', { class: 'error', id: 'signin-error', role: 'alert' });
  const form = el('form', { id: 'signin', class: 'card narrow' },
    el('h1', { text: 'Sign in' }),
    el('p', { class: 'muted', text: 'Paste an API token (nadi.token_mint, or the local stack’s token command). ' +
      'It stays in this tab’s session storage and travels only in the Authorization header.' }),
    el('label', { for: 'token', text: 'Token' }), input, msg,
    el('button', { type: 'submit', text: 'Sign in' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    signIn(input.value);
    try {
      await api('GET', '/v1/sessions?limit=1');
      header();
      navigate('/console/sessions');
    } catch (err) {
      signOut();
      header();
      msg.textContent = err instanceof ApiError ? `Refused: ${err.message} (${err.status})` : `No answer: ${err.message}`;
    }
  });
  main.append(form);
  input.focus();
}

function route() {
  if (current) current();
  current = null;
  const main = clear(document.getElementById('main'));
  header();
  const path = location.pathname.replace(/\/+$/, '');
  if (!token()) {
    document.title = 'Sign in · Nadi console';
    signInPage(main);
    return;
  }
  const m = path.match(/^\/console\/sessions\/([^/]+)$/);
  if (m && UUID.test(m[1])) {
    document.title = 'Session · Nadi console';
    current = sessionPage(main, m[1].toLowerCase());
  } else if (path === '/console/operator') {
    document.title = 'Operator · Nadi console';
    current = operatorPage(main, isAdmin());
  } else {
    document.title = 'Sessions · Nadi console';
    if (path !== '/console/sessions') history.replaceState(null, '', '/console/sessions');
    current = sessionsPage(main);
  }
}

document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[data-link]');
  if (!a || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', route);
document.getElementById('signout').addEventListener('click', () => {
  signOut();
  navigate('/console');
});
route();
