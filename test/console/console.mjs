// console.mjs — the web console (/console of nadi-edge) in headless
// Chromium, driven by playwright-core, against a live stack.
//
//   CONSOLE_URL   the edge, e.g. http://127.0.0.1:PORT
//   TOKEN_A       a tenant token; TOKEN_B another tenant's; TOKEN_ADMIN an admin's
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   SHOTS         a directory: screenshots of each page go there
//
// Prints "ok - ..." and "not ok - ..." lines; exits 1 on any "not ok".
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const BASE = process.env.CONSOLE_URL;
const { TOKEN_A, TOKEN_B, TOKEN_ADMIN, SHOTS } = process.env;
const T = 45000; // longest wait for one thing to appear
let failed = 0;

function ok(what) {
  console.log(`ok - ${what}`);
}
function notOk(what, why) {
  failed++;
  console.log(`not ok - ${what}${why ? `: ${why}` : ''}`);
}
async function check(what, fn) {
  try {
    const r = await fn();
    if (r === false) notOk(what);
    else ok(what);
  } catch (e) {
    notOk(what, String(e && e.message ? e.message : e).split('\n')[0]);
  }
}
async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `console-${name}.png`) });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});

// A fresh tab (its own sessionStorage) that records CSP violations and the
// URLs it requests.
async function newTab() {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await ctx.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await ctx.newPage();
  page.urls = [];
  page.streams = []; // the Last-Event-ID of each event stream it opened
  page.on('request', (r) => {
    page.urls.push(r.url());
    if (/\/events$/.test(r.url())) page.streams.push(r.headers()['last-event-id'] ?? null);
  });
  return page;
}

async function signIn(page, token) {
  await page.goto(`${BASE}/console`);
  await page.waitForSelector('#signin', { timeout: T });
  await page.fill('#token', token);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#sessions', { timeout: T });
}

// Waits for an element whose text contains text (a locator's first match).
async function waitText(page, selector, text) {
  await page.locator(selector, { hasText: text }).first().waitFor({ timeout: T });
}

async function send(page, text) {
  await page.fill('#msg-text', text);
  await page.click('#send-message button[type=submit]');
}

// The command id of the newest permission request that still waits.
async function waitingRequest(page) {
  const d = page.locator('li[data-kind="permission.requested"] .decide:not(.done)').last();
  await d.waitFor({ timeout: T });
  return d.getAttribute('data-command');
}

try {
  const a = await newTab();
  let sid = null;

  // --- sign-in page, headers -----------------------------------------------
  const resp = await a.goto(`${BASE}/console`);
  const h = resp.headers();
  await check('GET /console answers 200 with text/html', () => resp.status() === 200 && /^text\/html/.test(h['content-type']));
  await check('its Content-Security-Policy forbids inline scripts and framing', () => {
    const csp = h['content-security-policy'] || '';
    return /default-src 'none'/.test(csp) && /script-src 'self'(;|$)/.test(csp) && /style-src 'self'(;|$)/.test(csp) &&
      /frame-ancestors 'none'/.test(csp) && !/unsafe-inline|unsafe-eval/.test(csp);
  });
  await check('nosniff, no-referrer and X-Frame-Options: DENY', () =>
    h['x-content-type-options'] === 'nosniff' && h['referrer-policy'] === 'no-referrer' && h['x-frame-options'] === 'DENY');
  await a.waitForSelector('#signin', { timeout: T });
  await check('the page has no inline script and no inline style', () =>
    a.evaluate(() => document.querySelectorAll('script:not([src])').length === 0 && document.querySelectorAll('[style]').length === 0));
  await shot(a, 'signin');

  await check('a bad token is refused on the sign-in page', async () => {
    await a.fill('#token', 'not.a-token.at-all');
    await a.click('#signin button[type=submit]');
    await a.locator('#signin-error').filter({ hasText: /Refused/ }).waitFor({ timeout: T });
    return (await a.evaluate(() => sessionStorage.length)) === 0;
  });

  await check('signs in with a tenant token and lists the sessions', async () => {
    await a.fill('#token', TOKEN_A);
    await a.click('#signin button[type=submit]');
    await a.waitForSelector('#sessions', { timeout: T });
    return new URL(a.url()).pathname === '/console/sessions';
  });

  // --- a session ------------------------------------------------------------
  await check('creates a session and opens its page', async () => {
    await a.click('#create-session button[type=submit]');
    await a.waitForURL(/\/console\/sessions\/[0-9a-f-]{36}$/, { timeout: T });
    sid = a.url().split('/').pop();
    await a.locator('#stream-status', { hasText: 'live' }).waitFor({ timeout: T });
  });

  await check('a message is sent and the reply streams in', async () => {
    await send(a, 'hello console');
    await waitText(a, 'li[data-kind="model.reply"]', 'You said: hello console');
    await waitText(a, 'li.role-user[data-kind="command.received"]', 'hello console');
  });

  await check('an exec waits for approval, Approve runs it and its output shows', async () => {
    await send(a, '/tool exec {"argv": ["echo", "console-approved"]}');
    const cid = await waitingRequest(a);
    await a.locator(`#commands-body tr[data-command="${cid}"][data-status="waiting"]`).waitFor({ timeout: T });
    await shot(a, 'session');
    await a.click(`li[data-kind="permission.requested"] .decide[data-command="${cid}"] button.approve`);
    await waitText(a, `li[data-kind="permission.resolved"][data-command="${cid}"]`, 'approved');
    const res = a.locator(`li[data-kind="tool.result"][data-command="${cid}"]`);
    await res.locator('pre.stdout', { hasText: 'console-approved' }).waitFor({ timeout: T });
    if (!/exit status 0/.test(await res.textContent())) throw new Error('no exit status 0');
    await a.locator(`#commands-body tr[data-command="${cid}"][data-status="completed"]`).waitFor({ timeout: T });
  });

  await check('Deny refuses another exec: it never runs', async () => {
    await send(a, '/tool exec {"argv": ["echo", "console-denied"]}');
    const cid = await waitingRequest(a);
    await a.click(`#approvals .approval[data-command="${cid}"] button.deny`);
    await waitText(a, `li[data-kind="permission.resolved"][data-command="${cid}"]`, 'denied');
    await a.locator(`#commands-body tr[data-command="${cid}"]:not([data-status="waiting"]):not([data-status="queued"]):not([data-status="running"])`).waitFor({ timeout: T });
    const ran = await a.locator(`li[data-kind="tool.call"][data-command="${cid}"], li[data-kind="tool.result"][data-command="${cid}"]`).count();
    if (ran !== 0) throw new Error(`${ran} tool.call/tool.result events for the denied command`);
  });

  await check('a permission request shows its arguments whole, however long, in the log and beside Approve: nothing hidden from who approves', async () => {
    await send(a, `/tool exec {"argv": ["echo", "${'p'.repeat(20000)}", "the-end-of-the-request"]}`);
    const cid = await waitingRequest(a);
    const t = await a.locator(`li[data-kind="permission.requested"][data-command="${cid}"] pre`).textContent();
    // the approvals panel repeats them beside its buttons, whole too
    const side = a.locator(`#approvals .approval[data-command="${cid}"] pre.args`);
    await side.waitFor({ timeout: T });
    const t2 = await side.textContent();
    await a.click(`#approvals .approval[data-command="${cid}"] button.deny`);
    await waitText(a, `li[data-kind="permission.resolved"][data-command="${cid}"]`, 'denied');
    if (!t.includes('the-end-of-the-request')) throw new Error(`${t.length} characters shown, not the end`);
    if (!t2.includes('the-end-of-the-request')) throw new Error(`the approvals panel shows ${t2.length} characters, not the end`);
  });

  await check('a hostile message renders as text: no element, no script run', async () => {
    const evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>';
    await send(a, evil);
    await waitText(a, 'li[data-kind="model.reply"]', 'You said: <img src=x onerror');
    return a.evaluate(() => document.querySelectorAll('#log img, #log script, #log b').length === 0 && window.__pwned === undefined &&
      [...document.querySelectorAll('#log li[data-kind="command.received"]')].some((li) => li.textContent.includes('<script>window.__pwned=2</script>')));
  });

  await check('reloaded mid-stream, every event shows once, none missing', async () => {
    await send(a, '/sleep 2500 after the reload');
    const received = a.locator('li[data-kind="command.received"]', { hasText: '/sleep 2500 after the reload' });
    await received.waitFor({ timeout: T });
    const cid = await received.getAttribute('data-command');
    await a.locator(`li[data-kind="command.started"][data-command="${cid}"]`).waitFor({ timeout: T });
    await a.reload();
    await a.locator(`li[data-kind="command.completed"][data-command="${cid}"]`).waitFor({ timeout: T });
    await waitText(a, `li[data-kind="model.reply"][data-command="${cid}"]`, 'after the reload');
    // the page against the session's last_seq (once both have settled)
    let r = null;
    for (let i = 0; i < 100; i++) {
      r = await a.evaluate(async (id) => {
        const s = await (await fetch(`/v1/sessions/${id}`, { headers: { Authorization: `Bearer ${sessionStorage.getItem('nadi.console.token')}` } })).json();
        const seqs = [...document.querySelectorAll('#log li[data-seq]')].map((li) => Number(li.getAttribute('data-seq')));
        return { last: s.last_seq, seqs };
      }, sid);
      if (r.seqs.length >= r.last) break;
      await a.waitForTimeout(200);
    }
    const dup = r.seqs.length !== new Set(r.seqs).size;
    const gap = r.seqs.some((s, i) => s !== i + 1);
    if (dup || gap || r.seqs.length !== r.last) throw new Error(`seqs ${r.seqs.join(',')} against last_seq ${r.last}`);
  });

  await check('the stream cut off, it reconnects and resumes with no gap and no duplicate', async () => {
    const before = await a.evaluate(() => Math.max(...[...document.querySelectorAll('#log li[data-seq]')].map((li) => Number(li.getAttribute('data-seq')))));
    const opened = a.streams.length;
    await a.context().setOffline(true);
    try {
      await a.locator('#stream-status', { hasText: 'reconnecting' }).waitFor({ timeout: T });
    } finally {
      await a.context().setOffline(false);
    }
    await a.locator('#stream-status', { hasText: 'live' }).waitFor({ timeout: T });
    await send(a, 'after the cut');
    await waitText(a, 'li[data-kind="model.reply"]', 'You said: after the cut');
    const seqs = await a.evaluate(() => [...document.querySelectorAll('#log li[data-seq]')].map((li) => Number(li.getAttribute('data-seq'))));
    if (seqs.some((s, i) => s !== i + 1)) throw new Error(`seqs ${seqs.join(',')}`);
    const resumed = a.streams.slice(opened).filter((id) => id !== null);
    if (!resumed.length || resumed[resumed.length - 1] !== String(before)) {
      throw new Error(`the stream resumed with Last-Event-ID ${resumed.join(',') || 'none'}, not ${before}`);
    }
  });

  await check('the commands list shows status and attempts', () =>
    a.evaluate(() => [...document.querySelectorAll('#commands-body tr')].length >= 5 &&
      [...document.querySelectorAll('#commands-body tr')].every((tr) => /\d+\/\d+/.test(tr.children[3].textContent))));

  await check('a cancelled long command shows cancelled', async () => {
    await send(a, '/sleep 20000 cancel me');
    // its own row (the newest open row may still be the previous command's)
    const received = a.locator('li[data-kind="command.received"]', { hasText: '/sleep 20000 cancel me' });
    await received.waitFor({ timeout: T });
    const cid = await received.getAttribute('data-command');
    const row = a.locator(`#commands-body tr[data-command="${cid}"]:is([data-status="running"], [data-status="queued"])`);
    await row.waitFor({ timeout: T });
    await row.locator('button', { hasText: 'Cancel' }).click();
    await a.locator(`#commands-body tr[data-command="${cid}"][data-status="cancelled"]`).waitFor({ timeout: T });
  });

  await check('a tool call from the form that times out shows as a dead letter with its error', async () => {
    await a.fill('#tool-name', 'exec');
    await a.fill('#tool-args', '{"argv": ["sleep", "100000"], "timeout": 2}');
    await a.click('#send-tool button[type=submit]');
    const received = a.locator('li[data-kind="command.received"]', { hasText: '100000' });
    await received.waitFor({ timeout: T });
    const cid = await received.getAttribute('data-command');
    // with "exec needs approval" the call may wait for one first
    await a.locator(`#approvals .approval[data-command="${cid}"], #dead .dead-letter[data-command="${cid}"]`).first().waitFor({ timeout: T });
    if (await a.locator(`#approvals .approval[data-command="${cid}"]`).count()) await a.click(`#approvals .approval[data-command="${cid}"] button.approve`);
    await waitText(a, `#dead .dead-letter[data-command="${cid}"]`, 'timed_out');
  });

  await check('the session shows in the list with its tenant and open commands', async () => {
    await a.click('nav a[href="/console/sessions"]');
    const row = a.locator(`#sessions-body tr[data-session="${sid}"]`);
    await row.waitFor({ timeout: T });
    const cells = await row.locator('td').allTextContents();
    return cells[2] === 'demo' && /^\d+$/.test(cells[4]);
  });
  await check('search filters the list', async () => {
    await a.fill('#search', 'no-such-session-anywhere');
    await a.locator('#no-sessions', { hasText: 'No session matches.' }).waitFor({ timeout: T });
    await a.fill('#search', sid.slice(0, 13));
    await a.locator(`#sessions-body tr[data-session="${sid}"]`).waitFor({ timeout: T });
  });
  await a.fill('#search', '');
  await shot(a, 'sessions');
  await check('the tenant token sees no Operator link', () => a.locator('#nav-operator').isHidden());
  await check('no request URL carried the token', () => !a.urls.some((u) => u.includes(TOKEN_A)));
  await check('no CSP violation on the tenant\'s pages', async () => {
    const v = await a.evaluate(() => window.__csp);
    if (v.length) throw new Error(v.join('; '));
  });

  // --- "fork here" ------------------------------------------------------------
  let helloCmd = null;
  const isOther = (u) => /^\/console\/sessions\/[0-9a-f-]{36}$/.test(u.pathname) && !u.pathname.endsWith(sid);
  await check('"fork here" on an event opens a new session that starts there, with the conversation up to it', async () => {
    await a.goto(`${BASE}/console/sessions/${sid}`);
    const received = a.locator('li[data-kind="command.received"]', { hasText: 'hello console' }).first();
    await received.waitFor({ timeout: T });
    helloCmd = await received.getAttribute('data-command');
    const done = a.locator(`li[data-kind="command.completed"][data-command="${helloCmd}"]`);
    await done.waitFor({ timeout: T });
    const seq = await done.getAttribute('data-seq');
    await done.locator('button.fork').click();
    await a.waitForURL(isOther, { timeout: T });
    const forked = a.locator('li[data-kind="session.forked"]');
    await forked.waitFor({ timeout: T });
    const t = await forked.textContent();
    if (!t.includes(sid) || !t.includes(`at #${seq}`) || t.includes('asked #')) throw new Error(t);
    const msgs = await forked.locator('details.inherited li').allTextContents();
    if (!msgs.some((m) => m.includes('hello console')) || !msgs.some((m) => m.includes('You said: hello console'))) {
      throw new Error(JSON.stringify(msgs));
    }
    // the fork goes on by itself
    await a.locator('#stream-status', { hasText: 'live' }).waitFor({ timeout: T });
    await send(a, 'on the fork');
    await waitText(a, 'li[data-kind="model.reply"]', 'You said: on the fork');
  });
  await check('"fork here" inside a command forks from just before that command, and says so', async () => {
    await a.click('li[data-kind="session.forked"] a.parent');
    await a.waitForURL((u) => u.pathname.endsWith(sid), { timeout: T });
    const reply = a.locator(`li[data-kind="model.reply"][data-command="${helloCmd}"]`);
    await reply.waitFor({ timeout: T });
    const started = Number(await a.locator(`li[data-kind="command.started"][data-command="${helloCmd}"]`).first().getAttribute('data-seq'));
    const asked = await reply.getAttribute('data-seq');
    await reply.locator('button.fork').click();
    await a.waitForURL(isOther, { timeout: T });
    const forked = a.locator('li[data-kind="session.forked"]');
    await forked.waitFor({ timeout: T });
    const t = await forked.textContent();
    if (!t.includes(`at #${started - 1}`) || !t.includes(`asked #${asked}`)) throw new Error(t);
    await shot(a, 'fork');
  });
  await check('no CSP violation on the forks\' pages', async () => {
    const v = await a.evaluate(() => window.__csp);
    if (v.length) throw new Error(v.join('; '));
  });

  // --- a hostile model's events (written by the suite: HOSTILE_SID, HOSTILE_SEQS) ---
  const { HOSTILE_SID, HOSTILE_SEQS } = process.env;
  if (!HOSTILE_SID || !/^\d+(,\d+){3}$/.test(HOSTILE_SEQS || '')) {
    notOk('a hostile model\'s events', `the suite wrote none (${HOSTILE_SID}, ${HOSTILE_SEQS})`);
  } else {
    const [big, oddExit, oddCommand, markup] = HOSTILE_SEQS.split(',').map(Number);
    const hx = await newTab();
    await signIn(hx, TOKEN_A);
    await hx.goto(`${BASE}/console/sessions/${HOSTILE_SID}`);
    const shown = hx.locator(`#log li[data-seq="${markup}"]`);
    await check('a flood of 2100 events and 1 MB of output all arrive, the last one shown', () => shown.waitFor({ timeout: T }));
    const r = await hx.evaluate(() => ({
      seqs: [...document.querySelectorAll('#log li[data-seq]')].map((li) => Number(li.getAttribute('data-seq'))),
      dropped: document.querySelector('#log-dropped')?.hidden === false ? document.querySelector('#log-dropped').textContent : '',
    }));
    await check('the log keeps the newest 2000 events, in order, and says how many it left out', () => {
      const contiguous = r.seqs.every((s, i) => s === markup - r.seqs.length + 1 + i);
      if (r.seqs.length > 2000 || !contiguous || !/^\d+ earlier events are not shown/.test(r.dropped)) {
        throw new Error(`${r.seqs.length} events shown (${r.seqs[0]}..${r.seqs[r.seqs.length - 1]}), note "${r.dropped}"`);
      }
    });
    await check('1 MB of tool output is cut, and say so', async () => {
      const t = await hx.locator(`#log li[data-seq="${big}"] pre.stdout`).textContent({ timeout: T });
      if (t.length > 20000 || !/more characters not shown/.test(t)) throw new Error(`${t.length} characters shown`);
    });
    await check('payload fields of unexpected types still show their event (raw if need be)', async () => {
      for (const seq of [oddExit, oddCommand]) {
        if (!(await hx.locator(`#log li[data-seq="${seq}"]`).count())) throw new Error(`event #${seq} is not shown`);
      }
    });
    await check('and the stream was never cut for them (one connection)', () => {
      if (hx.streams.length !== 1) throw new Error(`${hx.streams.length} connections: ${hx.streams.join(',')}`);
    });
    await check('the page read only the newest 2000 events, not the whole log', () => {
      if (hx.streams[0] !== String(r.seqs[0] - 1) || r.seqs[0] <= 1) throw new Error(`Last-Event-ID ${hx.streams[0]}, first event shown #${r.seqs[0]}`);
    });
    await check('markup and a __proto__ key in a payload are text only', () => hx.evaluate(() =>
      document.querySelectorAll('#log img').length === 0 && window.__pwned === undefined && ({}).polluted === undefined));
    await check('no CSP violation on the hostile session\'s page', async () => {
      const v = await hx.evaluate(() => window.__csp);
      if (v.length) throw new Error(v.join('; '));
    });
  }

  // --- another tenant ---------------------------------------------------------
  const b = await newTab();
  await check('another tenant\'s token lists nothing of the first', async () => {
    await signIn(b, TOKEN_B);
    await b.locator('#no-sessions', { hasText: 'No sessions.' }).waitFor({ timeout: T });
    return (await b.locator(`tr[data-session="${sid}"]`).count()) === 0;
  });
  await check('and the first tenant\'s session, by its URL, is not found', async () => {
    await b.goto(`${BASE}/console/sessions/${sid}`);
    await b.locator('#not-found', { hasText: 'Session not found' }).waitFor({ timeout: T });
    return (await b.locator('#log').count()) === 0;
  });
  await check('sign out forgets the token', async () => {
    await b.click('#signout');
    await b.waitForSelector('#signin', { timeout: T });
    return (await b.evaluate(() => sessionStorage.length)) === 0;
  });

  // --- operator ----------------------------------------------------------------
  const adm = await newTab();
  await signIn(adm, TOKEN_ADMIN);
  await check('an admin token sees the Operator link', () => adm.locator('#nav-operator').isVisible());
  await adm.click('#nav-operator');
  await adm.waitForSelector('#operator-refused, #op-hosts', { timeout: T });
  await check('the operator page renders hosts and the queue', async () => {
    await adm.locator('#op-hosts tbody tr[data-host]').first().waitFor({ timeout: T });
    const kinds = await adm.locator('#op-hosts tbody tr[data-host] td:first-child').allTextContents();
    return kinds.some((k) => k === 'cell' || k === 'sandbox') && (await adm.locator('#op-queue .stat').count()) >= 4;
  });
  await shot(adm, 'operator');
  await check('a tenant token is refused the operator page', async () => {
    await a.goto(`${BASE}/console/operator`);
    // refused (403, as GET /v1/operator answers a tenant token), and nothing shown
    await a.locator('#operator-refused', { hasText: /403/ }).waitFor({ timeout: T });
    return (await a.locator('#op-hosts, #op-queue').count()) === 0;
  });
  await check('the operator page renders any answer of its shape as text, missing keys too', async () => {
    const hostile = { hosts: [{ kind: 'cell', host_id: '<b>evil</b>', state: '<i>x</i>' }], queue: { queued: 3 } };
    await adm.route('**/v1/operator', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(hostile) }));
    await adm.reload();
    await adm.locator('#op-hosts tr[data-host="<b>evil</b>"]').waitFor({ timeout: T });
    return adm.evaluate(() => document.querySelectorAll('#operator b, #operator i').length === 0 &&
      document.querySelector('#op-queue').textContent.includes('3'));
  });
  await check('no CSP violation on the admin\'s pages', async () => {
    const v = await adm.evaluate(() => window.__csp);
    if (v.length) throw new Error(v.join('; '));
  });
} catch (e) {
  notOk('the browser run', String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
