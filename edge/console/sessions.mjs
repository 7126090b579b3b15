// sessions.mjs — the sessions list: state, tenant, last activity, open
// commands; filtered by state on the server and by a search here; polled
// every 2 seconds while the page is open.
import { api } from './api.mjs';
import { el, clear, ago, badge } from './dom.mjs';
import { claims } from './api.mjs';

const STATES = ['', 'pending', 'placed', 'active', 'suspended', 'terminating', 'terminated', 'failed'];
const POLL_MS = 2000;

export function sessionsPage(main) {
  let timer = null;
  let stopped = false;
  const state = el('select', { id: 'filter-state', 'aria-label': 'State' },
    STATES.map((s) => el('option', { value: s, text: s || 'any state' })));
  const search = el('input', { id: 'search', type: 'search', placeholder: 'Search id, tenant, labels…',
    'aria-label': 'Search' });
  const status = el('span', { class: 'muted', id: 'list-status' });
  const tbody = el('tbody', { id: 'sessions-body' });
  const err = el('p', { class: 'error', role: 'alert' });
  let rows = [];

  const admin = claims()?.scope === 'admin';
  const tenant = el('input', { id: 'new-tenant', placeholder: 'tenant', 'aria-label': 'Tenant',
    value: admin ? '' : claims()?.tenant || '', hidden: !admin });
  const approval = el('input', { id: 'new-approval', type: 'checkbox', checked: true });
  const createErr = el('span', { class: 'error', role: 'alert' });
  const create = el('form', { id: 'create-session', class: 'inline' },
    tenant, el('label', {}, approval, ' exec needs approval'),
    el('button', { type: 'submit', text: 'New session' }), createErr);
  create.addEventListener('submit', async (e) => {
    e.preventDefault();
    createErr.textContent = '';
    const body = {};
    if (admin) body.tenant_id = tenant.value.trim();
    if (approval.checked) body.policy = { require_approval: ['exec'] };
    try {
      const s = await api('POST', '/v1/sessions', body);
      const { navigate } = await import('./app.mjs');
      navigate(`/console/sessions/${s.id}`);
    } catch (x) {
      createErr.textContent = x.message;
    }
  });

  main.append(el('section', { class: 'card' },
    el('div', { class: 'bar' }, el('h1', { text: 'Sessions' }), create),
    el('div', { class: 'bar' }, state, search, status,
      el('span', { class: 'muted', text: `refreshes every ${POLL_MS / 1000} s` })),
    err,
    el('table', { class: 'list', id: 'sessions' },
      el('thead', {}, el('tr', {}, ['Session', 'State', 'Tenant', 'Last activity', 'Open commands', 'Events']
        .map((h) => el('th', { text: h })))),
      tbody)));

  function render() {
    const q = search.value.trim().toLowerCase();
    const shown = rows.filter((s) => !q || [s.id, s.tenant_id, s.state, JSON.stringify(s.labels || {}),
      JSON.stringify(s.metadata || {})].some((f) => String(f).toLowerCase().includes(q)));
    clear(tbody);
    for (const s of shown) {
      tbody.append(el('tr', { 'data-session': s.id },
        el('td', {}, el('a', { href: `/console/sessions/${s.id}`, 'data-link': true, class: 'mono', text: s.id })),
        el('td', {}, badge(s.state)),
        el('td', { text: s.tenant_id }),
        el('td', {}, ago(s.updated_at || s.created_at)),
        el('td', { class: 'num', text: s.open_commands ?? '—' }),
        el('td', { class: 'num', text: s.last_seq })));
    }
    if (!shown.length) tbody.append(el('tr', {}, el('td', { colspan: 6, class: 'muted', id: 'no-sessions',
      text: rows.length ? 'No session matches.' : 'No sessions.' })));
    status.textContent = `${shown.length} of ${rows.length}`;
  }

  async function poll() {
    if (stopped) return;
    try {
      const qs = new URLSearchParams({ limit: '500' });
      if (state.value) qs.set('state', state.value);
      const r = await api('GET', `/v1/sessions?${qs}`);
      // newest activity first
      rows = (r.sessions || []).sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
      err.textContent = '';
      render();
    } catch (x) {
      err.textContent = `Could not list the sessions: ${x.message}`;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  state.addEventListener('change', () => { clearTimeout(timer); poll(); });
  search.addEventListener('input', render);
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
