// session.mjs — one session: its event log live (events.mjs), rendered as a
// conversation with the tool calls, their output and the permission
// requests (Approve / Deny), each event with "fork here" (a new session from
// this one as it was there); the commands with status, attempts and errors;
// the dead letters; forms to send a message or a tool call.  Every text of
// an event goes in with textContent (dom.mjs): payloads are hostile.
import { api, ApiError } from './api.mjs';
import { el, clear, ago, badge, json, clip } from './dom.mjs';
import { EventLog } from './events.mjs';

const POLL_MS = 2000;
const OPEN = new Set(['queued', 'running', 'waiting']);
// The log shows the newest LOG_MAX events; older ones leave the page (the
// API keeps them), so a session of any length leaves the tab usable.
export const LOG_MAX = 2000;

// Texts of events are cut (clip): a model's reply or a tool's output may be
// megabytes.
function pre(text, cls) {
  return el('pre', { class: cls, text: clip(text) });
}

// The tool and arguments of each permission request seen in the log, by
// command id: the approvals panel repeats them beside its buttons.
const asks = new Map();

function str(v) {
  return clip(typeof v === 'string' ? v : json(v));
}

// The body of one event, by kind; anything unknown shows its payload.
function eventBody(ev, decide) {
  const p = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
  switch (ev.kind) {
    case 'command.received': {
      const inner = p.payload && typeof p.payload === 'object' ? p.payload : {};
      if (p.type === 'message') return { role: 'user', body: [el('p', { class: 'text', text: str(inner.text ?? '') })] };
      if (p.type === 'tool') {
        return { role: 'user', body: [el('p', {}, 'tool call ', el('code', { text: str(inner.name ?? '?') })),
          pre(json(inner.args ?? {}), 'args')] };
      }
      return { role: 'system', body: [el('p', { text: `${str(p.type)} ${inner.command_id ? `command ${inner.command_id}` : ''}` })] };
    }
    case 'model.reply':
      return { role: 'assistant', body: [el('p', { class: 'text', text: str(p.text ?? p) })] };
    case 'tool.call':
      return { role: 'tool', body: [el('p', {}, 'calls ', el('code', { text: str(p.name ?? '?') })), pre(json(p.args ?? {}), 'args')] };
    case 'tool.result': {
      const b = [el('p', {}, el('code', { text: str(p.name ?? 'tool') }), ' ',
        el('span', { class: p.ok === false ? 'bad' : 'good', text: p.ok === false ? 'failed' : 'ok' }),
        p.exit_status !== undefined && p.exit_status !== null ? el('span', { class: 'exit', text: ` exit status ${p.exit_status}` }) : null,
        p.signal ? ` signal ${str(p.signal)}` : null, p.timed_out ? ' timed out' : null)];
      if (p.stdout !== undefined && p.stdout !== null && p.stdout !== '') b.push(el('div', { class: 'label', text: 'stdout' }), pre(str(p.stdout), 'stdout'));
      if (p.stderr !== undefined && p.stderr !== null && p.stderr !== '') b.push(el('div', { class: 'label', text: 'stderr' }), pre(str(p.stderr), 'stderr'));
      const rest = Object.fromEntries(Object.entries(p).filter(([k]) => !['name', 'ok', 'exit_status', 'signal', 'stdout', 'stderr', 'timed_out'].includes(k)));
      if (Object.keys(rest).length) b.push(pre(json(rest), 'args'));
      return { role: 'tool', body: b };
    }
    case 'tool.error':
      return { role: 'tool', body: [el('p', { class: 'bad', text: `${str(p.code ?? 'error')}: ${str(p.message ?? p.detail ?? '')}` })] };
    case 'permission.requested': {
      const buttons = el('div', { class: 'decide', 'data-command': ev.command_id },
        el('button', { type: 'button', class: 'approve', text: 'Approve', onclick: () => decide(ev.command_id, 'approve') }),
        el('button', { type: 'button', class: 'deny', text: 'Deny', onclick: () => decide(ev.command_id, 'deny') }));
      const tool = p.tool ?? p.name ?? (p.call && p.call.name);
      asks.set(String(ev.command_id), { tool, args: p.args ?? (p.call && p.call.args) ?? p });
      // what is to be approved is shown whole, never cut (nadi writes these
      // events, the payload limit bounds them)
      return { role: 'ask', body: [el('p', {}, 'asks permission to run ', el('code', { text: str(tool ?? '?') })),
        el('pre', { class: 'args', text: json(p.args ?? (p.call && p.call.args) ?? p) }), buttons] };
    }
    case 'permission.resolved':
      return { role: 'system', body: [el('p', { class: p.decision === 'approved' ? 'good' : 'bad',
        text: `${str(p.decision ?? '?')}${p.reason ? `: ${str(p.reason)}` : ''}` })] };
    case 'session.forked': {
      // a fork's first event: where it came from, and the conversation it
      // starts with (the source's at that seq)
      const parent = typeof p.parent_session_id === 'string' ? p.parent_session_id : '';
      const b = [el('p', {}, 'Forked from session ',
        el('a', { class: 'mono parent', href: `/console/sessions/${encodeURIComponent(parent)}`, 'data-link': true, text: parent }),
        ` at #${str(p.seq)}`,
        p.at_seq !== p.seq ? el('span', { class: 'muted', text: ` (asked #${str(p.at_seq)}: inside a command, so just before it)` }) : null,
        p.workspace && typeof p.workspace === 'object' ? el('span', { class: 'muted', text: ` · workspace ${str(p.workspace.snapshot)}` }) : null)];
      const msgs = Array.isArray(p.messages) ? p.messages : [];
      b.push(el('details', { class: 'inherited' }, el('summary', { text: `${msgs.length} messages before the fork` }),
        el('ol', {}, msgs.map((m) => el('li', { class: `role-${str(m?.role ?? '?')}` },
          el('span', { class: 'kind', text: `${str(m?.role ?? '?')}: ` }), str(m?.content ?? ''))))));
      return { role: 'system', body: b };
    }
    case 'command.failed':
    case 'command.dead':
      return { role: 'system', body: [el('p', { class: 'bad', text: str(p.error?.message ?? p.message ?? p.error ?? p) })] };
    default:
      return { role: 'system', body: Object.keys(p).length ? [el('details', {}, el('summary', { text: 'payload' }), pre(json(p), 'args'))] : [] };
  }
}

export function sessionPage(main, id) {
  const base = `/v1/sessions/${id}`;
  let stopped = false;
  let timer = null;
  let log = null;
  let commands = [];
  let shown = 0; // the last seq shown: a number, not a set that grows with the log

  const title = el('h1', {}, 'Session ', el('span', { class: 'mono', text: id }));
  const info = el('div', { class: 'bar', id: 'session-info' });
  const streamState = el('span', { id: 'stream-status', class: 'muted', text: 'connecting…' });
  const logList = el('ol', { id: 'log', class: 'log' });
  const approvals = el('div', { id: 'approvals' });
  const cmdBody = el('tbody', { id: 'commands-body' });
  const dead = el('div', { id: 'dead' });
  const err = el('p', { class: 'error', role: 'alert', id: 'session-error' });

  async function act(path, body) {
    err.textContent = '';
    try {
      await api('POST', path, body);
      refreshSoon();
      return true;
    } catch (x) {
      err.textContent = x.message;
      return false;
    }
  }
  const decide = (cid, what) => act(`${base}/commands/${cid}/${what}`, {});
  // "fork here": a new session from this one at an event, then its page
  async function forkAt(seq) {
    err.textContent = '';
    try {
      const f = await api('POST', `${base}/fork`, { at_seq: seq });
      const { navigate } = await import('./app.mjs');
      navigate(`/console/sessions/${f.id}`);
    } catch (x) {
      err.textContent = x.message;
    }
  }
  const cancel = (cid) => act(`${base}/commands/${cid}/cancel`);

  const msgText = el('textarea', { id: 'msg-text', rows: 2, placeholder: 'Message', 'aria-label': 'Message' });
  const msgForm = el('form', { id: 'send-message', class: 'send' }, msgText, el('button', { type: 'submit', text: 'Send' }));
  msgForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!msgText.value.trim()) return;
    if (await act(`${base}/commands`, { type: 'message', payload: { text: msgText.value } })) msgText.value = '';
  });
  const toolName = el('input', { id: 'tool-name', placeholder: 'tool (e.g. exec)', 'aria-label': 'Tool' });
  const toolArgs = el('textarea', { id: 'tool-args', rows: 2, placeholder: '{"argv": ["echo", "hi"]}', 'aria-label': 'Arguments (JSON)' });
  const toolForm = el('form', { id: 'send-tool', class: 'send' }, toolName, toolArgs, el('button', { type: 'submit', text: 'Call tool' }));
  toolForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    let args;
    try {
      args = toolArgs.value.trim() ? JSON.parse(toolArgs.value) : {};
    } catch (x) {
      err.textContent = `The arguments are not JSON: ${x.message}`;
      return;
    }
    if (await act(`${base}/commands`, { type: 'tool', payload: { name: toolName.value.trim(), args } })) toolArgs.value = '';
  });
  const terminate = el('button', { type: 'button', id: 'terminate', class: 'deny', text: 'Terminate' });
  terminate.addEventListener('click', () => act(`${base}/terminate`, {}));

  let dropped = 0;
  const droppedNote = el('li', { id: 'log-dropped', class: 'muted', hidden: true });
  logList.append(droppedNote);
  function noteDropped(n) {
    if (!n) return;
    dropped += n;
    droppedNote.hidden = false;
    droppedNote.textContent = `${dropped} earlier events are not shown here (only the newest ${LOG_MAX} are).`;
  }

  function appendEvent(ev) {
    if (!(ev.seq > shown)) return; // EventLog already drops them; twice sure
    shown = ev.seq;
    let role;
    let body;
    try {
      ({ role, body } = eventBody(ev, decide));
    } catch (x) {
      // a payload of an unexpected shape: shown raw, never lost
      role = 'system';
      body = [el('p', { class: 'bad', text: `This event could not be shown as ${String(ev.kind)}: ${x.message}` }),
        pre(json(ev.payload), 'args')];
    }
    const item = el('li', { class: `ev role-${role}`, 'data-seq': ev.seq, 'data-kind': ev.kind,
      'data-command': ev.command_id ?? undefined },
      el('div', { class: 'meta' }, el('span', { class: 'seq', text: `#${ev.seq}` }), ' ',
        el('span', { class: 'kind', text: ev.kind }),
        ev.command_id ? el('span', { class: 'muted', text: ` · command ${ev.command_id}` }) : null, ' ',
        ago(ev.created_at), ' ',
        el('button', { type: 'button', class: 'small fork', title: 'A new session from this one as it was here',
          text: 'fork here', onclick: () => forkAt(ev.seq) })),
      body);
    const atBottom = logList.scrollHeight - logList.scrollTop - logList.clientHeight < 40;
    logList.append(item);
    let n = 0;
    for (; logList.childElementCount > LOG_MAX + 1; n++) logList.removeChild(droppedNote.nextElementSibling);
    noteDropped(n);
    if (atBottom) logList.scrollTop = logList.scrollHeight;
    updateDecisions();
    refreshSoon();
  }

  // Approve / Deny only while the command waits.
  function updateDecisions() {
    const waiting = new Set(commands.filter((c) => c.status === 'waiting').map((c) => String(c.id)));
    for (const d of logList.querySelectorAll('.decide')) {
      const on = waiting.has(d.getAttribute('data-command'));
      for (const b of d.querySelectorAll('button')) b.disabled = !on;
      d.classList.toggle('done', !on);
    }
  }

  function renderCommands() {
    clear(cmdBody);
    for (const c of [...commands].reverse()) {
      cmdBody.append(el('tr', { 'data-command': c.id, 'data-status': c.status },
        el('td', { class: 'num', text: c.id }), el('td', { text: c.type }), el('td', {}, badge(c.status)),
        el('td', { class: 'num', text: `${c.attempts}/${c.max_attempts}` }),
        el('td', { class: 'err', text: c.error ? str(c.error.message ?? c.error.code ?? c.error) : '' }),
        el('td', {}, OPEN.has(c.status) && !c.cancel_requested
          ? el('button', { type: 'button', class: 'small', text: 'Cancel', onclick: () => cancel(c.id) })
          : c.cancel_requested && OPEN.has(c.status) ? el('span', { class: 'muted', text: 'cancelling' }) : null)));
    }
    clear(approvals);
    const waiting = commands.filter((c) => c.status === 'waiting');
    if (!waiting.length) approvals.append(el('p', { class: 'muted', text: 'Nothing waits for approval.' }));
    for (const c of waiting) {
      const ask = asks.get(String(c.id));
      approvals.append(el('div', { class: 'approval', 'data-command': c.id },
        el('span', {}, `command ${c.id} `, el('code', { text: str(ask ? ask.tool ?? '?' : c.payload?.name ?? c.payload?.text ?? c.type) })),
        // the arguments, whole: what Approve lets run
        ask ? el('pre', { class: 'args', text: json(ask.args) }) : null,
        el('button', { type: 'button', class: 'approve', text: 'Approve', onclick: () => decide(c.id, 'approve') }),
        el('button', { type: 'button', class: 'deny', text: 'Deny', onclick: () => decide(c.id, 'deny') })));
    }
    clear(dead);
    const letters = commands.filter((c) => c.status === 'dead');
    if (!letters.length) dead.append(el('p', { class: 'muted', text: 'No dead letters.' }));
    for (const c of letters) {
      dead.append(el('div', { class: 'dead-letter', 'data-command': c.id },
        el('div', {}, `command ${c.id} (${c.type}) after ${c.attempts} attempts `, ago(c.finished_at)),
        pre(str(c.error ?? 'no error recorded'), 'stderr')));
    }
    updateDecisions();
  }

  async function refresh() {
    try {
      const all = [];
      let after = null;
      for (let page = 0; page < 20; page++) {
        const qs = new URLSearchParams({ limit: '1000' });
        if (after !== null) qs.set('after', String(after));
        const r = await api('GET', `${base}/commands?${qs}`);
        all.push(...(r.commands || []));
        if (r.next_cursor === null || r.next_cursor === undefined) break;
        after = r.next_cursor;
      }
      commands = all;
      renderCommands();
      const s = await api('GET', base);
      clear(info).append(badge(s.state), el('span', { text: `tenant ${s.tenant_id}` }),
        el('span', {}, 'last activity ', ago(s.updated_at)), streamState,
        s.state === 'terminated' || s.state === 'terminating' ? null : terminate);
    } catch (x) {
      if (!(x instanceof ApiError && x.status === 404)) err.textContent = x.message;
    }
  }
  let soon = null;
  function refreshSoon() {
    if (soon || stopped) return;
    soon = setTimeout(() => { soon = null; refresh(); }, 150);
  }
  async function poll() {
    if (stopped) return;
    await refresh();
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  (async () => {
    let first;
    try {
      first = await api('GET', base);
    } catch (x) {
      if (stopped) return;
      main.append(el('section', { class: 'card', id: 'not-found' },
        el('h1', { text: !(x instanceof ApiError) ? 'Session unavailable'
          : x.status === 404 ? 'Session not found' : x.status === 410 ? 'Session purged' : 'Session unavailable' }),
        el('p', { text: x.message }),
        el('a', { href: '/console/sessions', 'data-link': true, text: 'All sessions' })));
      return;
    }
    if (stopped) return;
    main.append(el('section', { class: 'card' }, title, info, err),
      el('div', { class: 'cols' },
        el('section', { class: 'card conv' }, el('h2', { text: 'Event log' }), logList, msgForm, toolForm),
        el('aside', {},
          el('section', { class: 'card' }, el('h2', { text: 'Waiting for approval' }), approvals),
          el('section', { class: 'card' }, el('h2', { text: 'Commands' }),
            el('table', { class: 'list', id: 'commands' },
              el('thead', {}, el('tr', {}, ['#', 'Type', 'Status', 'Attempts', 'Error', ''].map((h) => el('th', { text: h })))),
              cmdBody)),
          el('section', { class: 'card' }, el('h2', { text: 'Dead letters' }), dead))));
    // a long log: only its newest LOG_MAX events are read, not all of it
    const last = Number(first && first.last_seq);
    const after = Number.isSafeInteger(last) && last > LOG_MAX ? last - LOG_MAX : 0;
    noteDropped(after);
    log = new EventLog(id, {
      after,
      onEvent: appendEvent,
      onState: (s, d) => {
        streamState.textContent = s === 'live' ? '● live' : s === 'reconnecting' ? `reconnecting after #${d.after}…`
          : `stream ended (${d?.status ?? ''})`;
        streamState.className = s === 'live' ? 'good' : 'muted';
      },
    }).start();
    poll();
  })();

  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(soon);
    if (log) log.stop();
  };
}
