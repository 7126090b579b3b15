// operator.mjs — the operator's view of GET /v1/operator (admin tokens):
// hosts with load, leases and heartbeats; queue depth and the oldest queued
// command; takeovers and crashes; dead letters; call latency and errors;
// tokens used.  Every key may be missing: what is there is shown.
import { api, ApiError } from './api.mjs';
import { el, clear, ago, badge, clip } from './dom.mjs';

const POLL_MS = 5000;

function arr(v) {
  return Array.isArray(v) ? v : [];
}

function cell(v) {
  if (v === undefined || v === null) return el('td', { class: 'muted', text: '—' });
  if (typeof v === 'number') return el('td', { class: 'num', text: Number.isInteger(v) ? v : v.toFixed(3) });
  return el('td', { text: clip(typeof v === 'string' ? v : JSON.stringify(v), 2000) });
}

function table(id, cols, rows, render) {
  return el('table', { class: 'list', id },
    el('thead', {}, el('tr', {}, cols.map((c) => el('th', { text: c })))),
    el('tbody', {}, rows.length ? rows.map(render)
      : el('tr', {}, el('td', { colspan: cols.length, class: 'muted', text: 'None.' }))));
}

function stat(label, value, id) {
  return el('div', { class: 'stat', id },
    el('div', { class: 'stat-value', text: value === undefined || value === null ? '—' : value }),
    el('div', { class: 'stat-label', text: label }));
}

function render(box, d) {
  const q = d.queue && typeof d.queue === 'object' ? d.queue : {};
  const t = d.takeovers && typeof d.takeovers === 'object' ? d.takeovers : {};
  clear(box).append(
    el('p', { class: 'muted', text: `as of ${d.at ?? '?'} · refreshes every ${POLL_MS / 1000} s` }),
    el('section', { class: 'card' }, el('h2', { text: 'Queue' }),
      el('div', { class: 'stats', id: 'op-queue' },
        stat('queued', q.queued), stat('running', q.running), stat('waiting', q.waiting), stat('dead', q.dead),
        stat('oldest queued (s)', q.oldest_queued_age_seconds === undefined || q.oldest_queued_age_seconds === null
          ? null : Math.round(q.oldest_queued_age_seconds)),
        stat('takeovers', t.takeovers_total), stat('sessions with crashes', t.sessions_with_crashes),
        stat('crashes', t.crash_count_total))),
    el('section', { class: 'card' }, el('h2', { text: 'Hosts' }),
      table('op-hosts', ['Kind', 'Host', 'State', 'Address', 'Capacity', 'Load', 'Leases', 'Heartbeat'], arr(d.hosts),
        (h) => el('tr', { 'data-host': h.host_id }, cell(h.kind), el('td', { class: 'mono', text: h.host_id ?? '' }),
          el('td', {}, badge(h.state ?? '?')), cell(h.address), cell(h.capacity), cell(h.load), cell(h.leases),
          el('td', {}, ago(h.heartbeat_at), h.heartbeat_age_seconds !== undefined && h.heartbeat_age_seconds !== null
            ? el('span', { class: 'muted', text: ` (${Math.round(h.heartbeat_age_seconds)} s)` }) : null)))),
    el('section', { class: 'card' }, el('h2', { text: 'Sessions by tenant and state' }),
      table('op-sessions', ['Tenant', 'State', 'Sessions', 'Last activity'], arr(d.sessions),
        (s) => el('tr', {}, cell(s.tenant_id), el('td', {}, badge(s.state ?? '?')), cell(s.sessions),
          el('td', {}, ago(s.last_activity))))),
    el('section', { class: 'card' }, el('h2', { text: 'Dead letters' }),
      table('op-dead', ['Session', 'Tenant', 'Command', 'Type', 'Attempts', 'Last error', 'Finished'], arr(d.dead_letters),
        (x) => el('tr', {}, el('td', {}, el('a', { href: `/console/sessions/${encodeURIComponent(x.session_id ?? '')}`,
          'data-link': true, class: 'mono', text: x.session_id ?? '' })), cell(x.tenant_id), cell(x.command_id),
        cell(x.type), cell(x.attempts), cell(x.last_error), el('td', {}, ago(x.finished_at))))),
    el('section', { class: 'card' }, el('h2', { text: 'Crashes' }),
      table('op-crashes', ['Session', 'Tenant', 'Crashes', 'Epoch'], arr(d.crashes),
        (x) => el('tr', {}, el('td', { class: 'mono', text: x.session_id ?? '' }), cell(x.tenant_id), cell(x.crash_count), cell(x.epoch)))),
    el('section', { class: 'card' }, el('h2', { text: 'Tool and model calls' }),
      table('op-calls', ['Tenant', 'Kind', 'Name', 'Calls', 'Errors', 'Mean latency (s)'], arr(d.calls),
        (x) => el('tr', {}, cell(x.tenant_id), cell(x.kind), cell(x.name), cell(x.calls), cell(x.errors), cell(x.latency_avg_seconds)))),
    el('section', { class: 'card' }, el('h2', { text: 'Tokens' }),
      table('op-tokens', ['Tenant', 'Input tokens', 'Output tokens'], arr(d.tokens),
        (x) => el('tr', {}, cell(x.tenant_id), cell(x.input_tokens), cell(x.output_tokens)))));
}

export function operatorPage(main, admin) {
  let stopped = false;
  let timer = null;
  const box = el('div', { id: 'operator' });
  main.append(el('section', { class: 'card' }, el('h1', { text: 'Operator' }),
    admin ? null : el('p', { class: 'muted', text: 'This token is not an administrator’s: the edge will most likely refuse.' })), box);

  async function poll() {
    if (stopped) return;
    try {
      const d = await api('GET', '/v1/operator');
      render(box, d && typeof d === 'object' ? d : {});
    } catch (x) {
      const why = x instanceof ApiError && x.status === 404 ? 'This edge has no operator view (GET /v1/operator answered 404).'
        : x instanceof ApiError && x.status === 403 ? 'Refused: the operator view is for administrator tokens (403).'
          : x instanceof ApiError && x.status === 401 ? 'Refused: the token is not valid (401).'
            : `The operator view is unavailable: ${x.message}`;
      clear(box).append(el('p', { class: 'error', id: 'operator-refused', role: 'alert', text: why }));
      if (x instanceof ApiError && x.status >= 400 && x.status < 500) return; // asking again will not help
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
