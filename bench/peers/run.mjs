// bench/peers/run.mjs — the Node side of bench/compare: drives nadi,
// graphile-worker and pg-boss through the same three workloads and prints
// one JSON line per run.  bench/compare runs it; bench/README.md explains
// what is measured.
//
//   node run.mjs setup   --dsn-gw URL --dsn-boss URL [--dsn-pgq URL]
//   node run.mjs SYSTEM WORKLOAD [--dsn URL] [--jobs N] [--sessions N (nadi: A 32, B 8)]
//                [--count N] [--interval MS] [--bound S] [--sleep MS]
//   node run.mjs SYSTEM D --dsn URL --fixture URL [--slow N] [--fast-sessions N]
//                [--fast-interval MS] [--cap S] [--concurrency "C1 C2 …"]
//   node run.mjs direct D --fixture URL [--slow N] [--fast-interval MS] [--cap S]  (D's baseline)
//   nadi's runs also take [--cells embedded|celld] [--cell-hosts "HOST …"] (the cell
//                hosts its sessions go to) [--celld-pids "HOST=PID …"] (C with celld)
//   node run.mjs nadi D-tools --dsn URL [--sessions N] [--exec-ms MS] [--fast-sessions N]
//                [--fast-interval MS] [--cap S] --sandboxd URL [--sandboxd-pid PID] [--cgroup DIR]
//
// SYSTEM is nadi, graphile, pgboss or pgq; WORKLOAD is A (throughput: N no-op
// jobs enqueued in one transaction, then drained), B (latency: jobs
// enqueued one at a time, every --interval ms, into an idle system), C
// (recovery: a worker killed with SIGKILL while it runs a job), D
// (agent-like: --slow jobs, each waiting on a slow model provider,
// bench/slow-model.mjs at --fixture, while fast jobs trickle in; not PgQ)
// or D-tools (nadi only: each of --sessions sessions runs a --exec-ms exec
// in a sandbox of its own, while fast commands trickle in).
//
// Peers' workers run in child processes of this one (forked, reporting over
// the IPC channel), so enqueuing and working are separate processes, as in
// production.  Times are wall-clock milliseconds (performance.timeOrigin +
// performance.now(), or the server's clock for nadi, same machine).
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const SELF = fileURLToPath(import.meta.url);
const now = () => performance.timeOrigin + performance.now();

// The peers' settings: each at its best documented configuration for
// throughput and latency.  bench/compare prints them in the report.
export const GRAPHILE_PRESET = {
  // worker.graphile.org/docs/performance: the configuration of its own
  // published figures (batching: local queue, batched completion)
  concurrentJobs: 24,
  maxPoolSize: 25,
  localQueue: { size: 500 },
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
  pollInterval: 2000, // default; new jobs arrive by LISTEN/NOTIFY
};
export const PGBOSS_WORK = {
  // pg-boss polls: 0.5 s is the shortest interval it accepts; a worker
  // fetches up to batchSize jobs per poll and waits out the rest of the
  // interval before it fetches again, so a worker's ceiling is
  // batchSize / 0.5 s.  Several workers (work() calls) poll independently.
  pollingIntervalSeconds: 0.5,
  batchSize: 500,
  workers: 4,
};
export const PGBOSS_RECOVERY = {
  // a job runs again only after it expires (no heartbeat): expireInSeconds
  // must cover the longest job; maintenance (which expires jobs) as often
  // as pg-boss allows
  expireInSeconds: 10,
  maintenanceIntervalSeconds: 1,
  retryLimit: 1,
  retryDelay: 0,
};
export const PGQ = {
  // PgQ works in batches between ticks.  pgqd runs pgq.ticker() every
  // ticker_period; the queue ticks as soon as it has events (ticker_max_lag
  // 0 instead of 3 s); the consumer asks for the next batch every
  // loop_delay when there is none (its scripts default to 1 s).
  ticker_period_s: 0.1,
  ticker_max_lag: '0',
  loop_delay_ms: 100,
  consumer: 'bench',
};
const QUEUE = 'noop';

function parseArgs(argv) {
  const opts = { positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
      opts[key] = argv[++i];
    } else opts.positional.push(a);
  }
  return opts;
}

function fail(msg) {
  process.stderr.write(`run.mjs: ${msg}\n`);
  process.exit(1);
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil(p * sorted.length));
  return sorted[rank - 1];
}

function latencySummary(lat) {
  const s = lat.slice().sort((a, b) => a - b);
  return { samples: s.length, p50_ms: percentile(s, 0.5), p99_ms: percentile(s, 0.99), max_ms: s[s.length - 1] ?? null };
}

async function connect(dsn) {
  const c = new pg.Client({ connectionString: dsn });
  c.on('error', () => {});
  await c.connect();
  return c;
}

async function connectRetry(dsn, timeoutMs) {
  const deadline = now() + timeoutMs;
  for (;;) {
    try {
      return await connect(dsn);
    } catch (e) {
      if (now() > deadline) throw e;
      await sleep(20);
    }
  }
}

// ---------------------------------------------------------------------------
// nadi's cells: the embedded workers (host bench-cell) or nadi-celld
// processes (hosts bench-celld-N, pids for C's kill); set by main().
const CELLS = { kind: 'embedded', hosts: ['bench-cell'], pids: {} };

// ---------------------------------------------------------------------------
// Workload D: the slow model provider (bench/slow-model.mjs)
// ---------------------------------------------------------------------------

// The marker that makes the provider answer at once (its --fast-marker).
const FAST_MARKER = '[fast]';
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: Infinity });

// One HTTP request with a JSON body; resolves to the parsed JSON answer
// (or to the text, with raw).
function httpJson(url, method, body, raw = false) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const text = body === undefined ? '' : JSON.stringify(body);
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname, method, agent: keepAlive,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`${method} ${url}: HTTP ${res.statusCode}`));
          try {
            const text = Buffer.concat(chunks).toString('utf8');
            resolve(raw ? text : JSON.parse(text));
          } catch (e) {
            reject(e);
          }
        });
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

// A peer's job of workload D: the same chat-completions call a nadi cell
// makes for a message command (POST {fixture}/v1/chat/completions).
async function modelCall(fixture, fast) {
  const r = await httpJson(`${fixture}/v1/chat/completions`, 'POST', {
    model: 'default',
    messages: [{ role: 'user', content: fast ? `${FAST_MARKER} ping` : 'slow step' }],
  });
  if (!r.choices?.[0]?.message) throw new Error('the provider answered without a message');
}

// ---------------------------------------------------------------------------
// Workers of the peers, in child processes
// ---------------------------------------------------------------------------

const quietLogger = async () => {
  const { Logger } = await import('graphile-worker');
  return new Logger(() => () => {});
};

async function graphileWorker(dsn, workload, sleepMs, cfg) {
  const { run } = await import('graphile-worker');
  let handled = 0;
  const runner = await run({
    logger: await quietLogger(),
    noHandleSignals: true,
    taskList: {
      [QUEUE]: async (payload) => {
        if (workload !== 'A') process.send({ t: 'start', i: payload.i, at: now(), pid: process.pid });
        if (sleepMs > 0) await sleep(sleepMs);
        if (workload === 'D') await modelCall(cfg.fixture, payload.fast);
        handled++;
        if (workload !== 'A') process.send({ t: 'done', i: payload.i, at: now(), pid: process.pid });
      },
    },
    preset: { worker: { connectionString: dsn, ...GRAPHILE_PRESET, ...(cfg.graphile || {}) } },
  });
  return { handled: () => handled, stop: () => runner.stop() };
}

async function pgbossWorker(dsn, workload, sleepMs, cfg) {
  const { default: PgBoss } = await import('pg-boss');
  const recovery = workload === 'C';
  const boss = new PgBoss({
    connectionString: dsn,
    schedule: false,
    supervise: recovery,
    migrate: false,
    ...(recovery ? { maintenanceIntervalSeconds: PGBOSS_RECOVERY.maintenanceIntervalSeconds } : {}),
  });
  boss.on('error', (e) => process.stderr.write(`pg-boss: ${e.message}\n`));
  await boss.start();
  let handled = 0;
  const work = { ...PGBOSS_WORK, ...(cfg.pgboss || {}) };
  const workers = recovery ? 1 : work.workers;
  for (let w = 0; w < workers; w++) {
    await boss.work(
      QUEUE,
      { pollingIntervalSeconds: work.pollingIntervalSeconds, batchSize: recovery ? 1 : work.batchSize },
      async (jobs) => {
        const at = now();
        if (workload !== 'A') for (const j of jobs) process.send({ t: 'start', i: j.data.i, at, pid: process.pid });
        if (sleepMs > 0) await sleep(sleepMs);
        if (workload === 'D')
          // the batch's jobs wait on the provider together; each reports its own end
          await Promise.all(
            jobs.map(async (j) => {
              await modelCall(cfg.fixture, j.data.fast);
              process.send({ t: 'done', i: j.data.i, at: now(), pid: process.pid });
            }),
          );
        handled += jobs.length;
        if (workload !== 'A' && workload !== 'D') for (const j of jobs) process.send({ t: 'done', i: j.data.i, at: now(), pid: process.pid });
      },
    );
  }
  return { handled: () => handled, stop: () => boss.stop({ graceful: false, wait: true, close: true }) };
}

// A PgQ consumer: next_batch, get_batch_events, (the jobs), finish_batch.
async function pgqWorker(dsn, workload, sleepMs) {
  const c = await connect(dsn);
  let handled = 0;
  let stopping = false;
  const loop = (async () => {
    while (!stopping) {
      const b = (await c.query('SELECT pgq.next_batch($1, $2) AS b', [QUEUE, PGQ.consumer])).rows[0].b;
      if (b === null) {
        await sleep(PGQ.loop_delay_ms);
        continue;
      }
      const ev = await c.query('SELECT ev_data FROM pgq.get_batch_events($1)', [b]);
      const at = now();
      if (workload !== 'A') for (const e of ev.rows) process.send({ t: 'start', i: Number(e.ev_data), at, pid: process.pid });
      if (sleepMs > 0) await sleep(sleepMs);
      await c.query('SELECT pgq.finish_batch($1)', [b]);
      handled += ev.rows.length;
      if (workload !== 'A') for (const e of ev.rows) process.send({ t: 'done', i: Number(e.ev_data), at: now(), pid: process.pid });
    }
  })();
  loop.catch((e) => {
    if (!stopping) fail(`pgq consumer: ${e.message}`);
  });
  return {
    handled: () => handled,
    stop: async () => {
      stopping = true;
      await loop.catch(() => {});
      await c.end();
    },
  };
}

async function workerMain(system, dsn, workload, sleepMs, cfg) {
  process.on('disconnect', () => process.exit(1)); // the parent is gone: so are we
  const make = { graphile: graphileWorker, pgboss: pgbossWorker, pgq: pgqWorker }[system];
  const w = await make(dsn, workload, sleepMs, cfg);
  const tick = setInterval(() => process.send({ t: 'count', n: w.handled() }), 100);
  process.on('message', async (m) => {
    if (m.t === 'stop') {
      clearInterval(tick);
      await w.stop().catch(() => {});
      process.send({ t: 'count', n: w.handled() });
      process.exit(0);
    }
  });
  process.send({ t: 'ready', pid: process.pid });
}

// A forked worker with its messages collected.
function startWorker(system, dsn, workload, sleepMs = 0, cfg = {}) {
  const child = fork(SELF, ['worker', system, workload, '--dsn', dsn, '--sleep', String(sleepMs), '--cfg', JSON.stringify(cfg)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const w = { child, pid: child.pid, count: 0, starts: [], dones: [], exited: false, waiters: [] };
  child.on('message', (m) => {
    if (m.t === 'count') w.count = m.n;
    else if (m.t === 'start') w.starts.push(m);
    else if (m.t === 'done') w.dones.push(m);
    else if (m.t === 'ready') w.ready = true;
    for (const f of w.waiters.splice(0)) f();
  });
  child.on('exit', () => {
    w.exited = true;
    for (const f of w.waiters.splice(0)) f();
  });
  w.until = async (pred, timeoutMs) => {
    const deadline = now() + timeoutMs;
    while (!pred()) {
      if (w.exited && !pred()) return false;
      const left = deadline - now();
      if (left <= 0) return false;
      await new Promise((res) => {
        const t = setTimeout(res, Math.min(left, 50));
        w.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
    return true;
  };
  w.stop = async () => {
    if (w.exited) return;
    child.send({ t: 'stop' });
    if (!(await w.until(() => w.exited, 10000))) child.kill('SIGKILL');
  };
  return w;
}

async function untilAny(workers, pred, timeoutMs) {
  const deadline = now() + timeoutMs;
  while (!pred()) {
    if (now() > deadline) return false;
    await Promise.race(workers.map((w) => w.until(() => true, 20).then(() => sleep(5))));
  }
  return true;
}

// ---------------------------------------------------------------------------
// Peers: graphile-worker and pg-boss
// ---------------------------------------------------------------------------

async function peerEnqueuer(system, dsn) {
  if (system === 'graphile') {
    const { makeWorkerUtils } = await import('graphile-worker');
    const utils = await makeWorkerUtils({ connectionString: dsn, logger: await quietLogger() });
    return {
      addMany: (n, extra = {}) => utils.addJobs(Array.from({ length: n }, (_, i) => ({ identifier: QUEUE, payload: { i, ...extra } }))),
      addOne: (i, extra = {}) => utils.addJob(QUEUE, { i, ...extra }),
      left: async (c) => Number((await c.query('SELECT count(*) FROM graphile_worker._private_jobs')).rows[0].count),
      clear: (c) => c.query('DELETE FROM graphile_worker._private_jobs'),
      release: () => utils.release(),
    };
  }
  if (system === 'pgq') {
    const c = await connect(dsn);
    return {
      addMany: (n) => c.query('SELECT count(pgq.insert_event($1, $1, g::text)) FROM generate_series(0, $2 - 1) g', [QUEUE, n]),
      addOne: (i) => c.query('SELECT pgq.insert_event($1, $1, $2::text)', [QUEUE, String(i)]),
      left: async () => 0, // the consumer counts a batch once finish_batch has committed
      release: () => c.end(),
    };
  }
  const { default: PgBoss } = await import('pg-boss');
  const boss = new PgBoss({ connectionString: dsn, schedule: false, supervise: false, migrate: false, max: 2 });
  boss.on('error', () => {});
  await boss.start();
  return {
    addMany: (n, extra = {}) => boss.insert(Array.from({ length: n }, (_, i) => ({ name: QUEUE, data: { i, ...extra } }))),
    addOne: (i, extra = {}) => boss.send(QUEUE, { i, ...extra }),
    clear: (c) => c.query('DELETE FROM pgboss.job WHERE name = $1', [QUEUE]),
    left: async (c) =>
      Number((await c.query("SELECT count(*) FROM pgboss.job WHERE name = $1 AND state < 'completed'", [QUEUE])).rows[0].count),
    release: () => boss.stop({ graceful: false, wait: true, close: true }),
  };
}

async function peerA(system, dsn, jobs) {
  const q = await peerEnqueuer(system, dsn);
  const c = await connect(dsn);
  const w = startWorker(system, dsn, 'A');
  if (!(await w.until(() => w.ready, 30000))) fail(`${system} worker did not start`);
  const t0 = now();
  await q.addMany(jobs);
  const tCommit = now();
  // the worker reports what it has handled; then the database must agree
  if (!(await w.until(() => w.count >= jobs, 600000))) fail(`${system}: only ${w.count} of ${jobs} jobs ran`);
  let left;
  const deadline = now() + 60000;
  while ((left = await q.left(c)) > 0 && now() < deadline) await sleep(10);
  const tDone = now();
  await w.stop();
  await q.release();
  await c.end();
  return {
    jobs,
    enqueue_s: (tCommit - t0) / 1000,
    enqueue_per_s: jobs / ((tCommit - t0) / 1000),
    drain_s: (tDone - tCommit) / 1000,
    jobs_per_s: jobs / ((tDone - tCommit) / 1000),
    left,
  };
}

async function peerB(system, dsn, count, intervalMs) {
  const q = await peerEnqueuer(system, dsn);
  const w = startWorker(system, dsn, 'B');
  if (!(await w.until(() => w.ready, 30000))) fail(`${system} worker did not start`);
  await sleep(1000); // idle: the worker has done its first poll
  const ret = new Array(count);
  const t0 = now();
  for (let i = 0; i < count; i++) {
    const due = t0 + i * intervalMs;
    if (due > now()) await sleep(due - now());
    await q.addOne(i);
    ret[i] = now();
  }
  if (!(await w.until(() => w.starts.length >= count, 60000))) fail(`${system}: ${w.starts.length} of ${count} jobs started`);
  await w.stop();
  await q.release();
  return { count, interval_ms: intervalMs, ...latencySummary(w.starts.map((s) => s.at - ret[s.i])) };
}

async function peerC(system, dsn, boundS, sleepMs) {
  const q = await peerEnqueuer(system, dsn);
  const c = await connect(dsn);
  // PgQ: a batch belongs to the consumer (by name), and two processes
  // consuming as one name would both get it; so the second process is
  // started only after the kill, as a supervisor would restart it.
  const ws = [startWorker(system, dsn, 'C', sleepMs)];
  if (system !== 'pgq') ws.push(startWorker(system, dsn, 'C', sleepMs));
  for (const w of ws) if (!(await w.until(() => w.ready, 30000))) fail(`${system} worker did not start`);
  await sleep(1000);
  const i = Math.floor(Math.random() * 1e9);
  await q.addOne(i);
  const started = () => ws.find((w) => w.starts.some((s) => s.i === i));
  if (!(await untilAny(ws, () => started(), 10000))) fail(`${system}: the job did not start`);
  const victim = started();
  await sleep(Math.min(500, sleepMs / 4)); // well inside the job
  const tKill = now();
  victim.child.kill('SIGKILL');
  if (system === 'pgq') ws.push(startWorker(system, dsn, 'C', sleepMs));
  const other = ws.find((w) => w !== victim);
  const again = await other.until(() => other.starts.some((s) => s.i === i), boundS * 1000);
  const res = { bound_s: boundS, job_ms: sleepMs };
  if (again) {
    res.recovered_s = (other.starts.find((s) => s.i === i).at - tKill) / 1000;
    await other.until(() => other.dones.some((s) => s.i === i), sleepMs + 10000);
  } else res.recovered_s = null;
  await sleep(500);
  res.starts = ws.reduce((n, w) => n + w.starts.filter((s) => s.i === i).length, 0);
  res.completions = ws.reduce((n, w) => n + w.dones.filter((s) => s.i === i).length, 0);
  if (system === 'graphile') {
    const r = await c.query('SELECT locked_at IS NOT NULL AS locked FROM graphile_worker._private_jobs WHERE (payload->>\'i\')::bigint = $1', [i]);
    res.still_locked = r.rows.length === 1 && r.rows[0].locked;
  } else if (system === 'pgboss') {
    const r = await c.query("SELECT state, retry_count FROM pgboss.job WHERE name = $1 AND (data->>'i')::bigint = $2", [QUEUE, i]);
    res.state = r.rows[0]?.state;
  } else {
    const r = await c.query('SELECT pending_events, current_batch FROM pgq.get_consumer_info($1, $2)', [QUEUE, PGQ.consumer]);
    res.batch_open = r.rows[0]?.current_batch !== null;
  }
  for (const w of ws) await w.stop();
  await q.release();
  await c.end();
  return res;
}

// Workload D's figures, the same for every system.  slowDone: when each slow
// job completed (ms); fast: {ret, start, done} per fast job (start and done
// null if they had not happened by the time of measurement).  A fast job
// that had not started counts as infinitely late: the percentile is then
// null, shown as "more than the window".
function dFigures({ slow, tCommit, tEnd, slowDone, fast }) {
  const inWindow = slowDone.filter((t) => t <= tEnd).sort((a, b) => a - b);
  const all = inWindow.length === slow;
  const windowMs = (all ? inWindow[inWindow.length - 1] : tEnd) - tCommit;
  const pct = (values, p) => {
    const v = percentile(values.slice().sort((a, b) => a - b), p);
    return v === null || v === Infinity ? null : v;
  };
  const startLat = fast.map((f) => (f.start === null ? Infinity : f.start - f.ret));
  const doneLat = fast.map((f) => (f.done === null ? Infinity : f.done - f.ret));
  return {
    slow,
    slow_completed: inWindow.length,
    slow_open: slow - inWindow.length,
    window_s: windowMs / 1000,
    completed_per_s: inWindow.length / (windowMs / 1000),
    fast_count: fast.length,
    fast_not_started: fast.filter((f) => f.start === null).length,
    fast_p50_ms: pct(startLat, 0.5),
    fast_p99_ms: pct(startLat, 0.99),
    fast_max_ms: pct(startLat, 1),
    fast_done_p50_ms: pct(doneLat, 0.5),
    fast_done_p99_ms: pct(doneLat, 0.99),
  };
}

// The fast trickle: one job every intervalMs from tCommit until the slow
// ones are all done (slowLeft() is 0) or the cap; returns when it stopped.
async function trickle(tCommit, capS, intervalMs, slowLeft, enqueueOne) {
  const deadline = tCommit + capS * 1000;
  for (let k = 0; ; ) {
    if (now() >= deadline || (await slowLeft()) === 0) return now();
    const due = tCommit + k * intervalMs;
    if (due > now()) {
      await sleep(Math.min(due - now(), deadline - now(), 20));
      continue;
    }
    await enqueueOne(k++);
  }
}

// How long the fast jobs get to start after the window closed.
const D_GRACE_MS = 2000;

// The baseline of D: the provider called directly from this process, every
// slow call at once, the fast calls on the same schedule; no queue at all.
// A fast call "starts" when it is sent; its done time is the answer's.
async function directD(o) {
  await httpJson(`${o.fixture}/stats/reset`, 'POST', {});
  const slowDone = [];
  const fast = [];
  const tCommit = now();
  const slowCalls = Array.from({ length: o.slow }, () => modelCall(o.fixture, false).then(() => slowDone.push(now())));
  const tEnd = await trickle(tCommit, o.cap, o.fastInterval, () => o.slow - slowDone.length, async () => {
    const f = { ret: now(), start: now(), done: null };
    fast.push(f);
    modelCall(o.fixture, true).then(() => (f.done = now()));
  });
  await Promise.race([Promise.all(slowCalls), sleep(D_GRACE_MS)]);
  await sleep(100);
  const fixture = await httpJson(`${o.fixture}/stats`, 'GET');
  return { ...dFigures({ slow: o.slow, tCommit, tEnd, slowDone, fast }), provider_max_in_flight: fixture.max_in_flight };
}

// A peer's settings for D, from "--concurrency": graphile-worker
// concurrentJobs ("24 250 1100"), pg-boss work() loops x batchSize
// ("4x500 16x100").
function peerDConfigs(system, spec) {
  return spec
    .trim()
    .split(/\s+/)
    .map((t) => {
      if (system === 'graphile') return { label: `concurrentJobs ${t}`, cfg: { graphile: { concurrentJobs: Number(t) } } };
      const [w, b] = t.split('x').map(Number);
      return { label: `${w} work() × batchSize ${b}`, cfg: { pgboss: { workers: w, batchSize: b } } };
    });
}

async function peerDOnce(system, dsn, o, conf) {
  const q = await peerEnqueuer(system, dsn);
  const c = await connect(dsn);
  await q.clear(c);
  const w = startWorker(system, dsn, 'D', 0, { fixture: o.fixture, ...conf.cfg });
  if (!(await w.until(() => w.ready, 30000))) fail(`${system} worker did not start`);
  await sleep(1000);
  await httpJson(`${o.fixture}/stats/reset`, 'POST', {});
  const slowDone = [];
  let seen = 0;
  const slowLeft = () => {
    for (; seen < w.dones.length; seen++) if (w.dones[seen].i < o.slow) slowDone.push(w.dones[seen].at);
    return o.slow - slowDone.length;
  };
  const ret = [];
  await q.addMany(o.slow, { fast: false });
  const tCommit = now();
  const tEnd = await trickle(tCommit, o.cap, o.fastInterval, slowLeft, async (k) => {
    await q.addOne(o.slow + k, { fast: true });
    ret.push(now());
  });
  const fastOf = (list) => new Map(list.filter((m) => m.i >= o.slow).map((m) => [m.i - o.slow, m.at]));
  await w.until(() => fastOf(w.starts).size >= ret.length && fastOf(w.dones).size >= ret.length, D_GRACE_MS);
  slowLeft();
  const starts = fastOf(w.starts), dones = fastOf(w.dones);
  const fixture = await httpJson(`${o.fixture}/stats`, 'GET');
  await w.stop();
  await q.clear(c); // what the cap left
  await q.release();
  await c.end();
  return {
    config: conf.label,
    ...dFigures({
      slow: o.slow,
      tCommit,
      tEnd,
      slowDone,
      fast: ret.map((r, k) => ({ ret: r, start: starts.get(k) ?? null, done: dones.get(k) ?? null })),
    }),
    provider_max_in_flight: fixture.max_in_flight,
  };
}

// Every setting of --concurrency in turn; the best (most slow jobs completed
// per second, then the lowest fast p99) is the result, the others are listed.
async function peerD(system, dsn, o) {
  const tried = [];
  for (const conf of peerDConfigs(system, o.concurrency)) {
    const r = await peerDOnce(system, dsn, o, conf);
    process.stderr.write(`run.mjs: ${system} D, ${conf.label}: ${fmtD(r)}\n`);
    tried.push(r);
  }
  const p99 = (r) => (r.fast_p99_ms === null ? Infinity : r.fast_p99_ms);
  const best = tried.slice().sort((a, b) => b.completed_per_s - a.completed_per_s || p99(a) - p99(b))[0];
  return { ...best, tried: tried.map((r) => ({ config: r.config, completed_per_s: r.completed_per_s, fast_p99_ms: r.fast_p99_ms })) };
}

function fmtD(r) {
  return `${r.slow_completed}/${r.slow} slow in ${r.window_s.toFixed(2)} s (${r.completed_per_s.toFixed(1)}/s), fast p50 ${r.fast_p50_ms} ms p99 ${r.fast_p99_ms} ms (${r.fast_not_started} of ${r.fast_count} not started), provider in flight at most ${r.provider_max_in_flight}`;
}

// ---------------------------------------------------------------------------
// nadi: the server's own workers; only SQL from here
// ---------------------------------------------------------------------------

async function nadiSessions(c, n, tenant = 'bench') {
  const ids = [];
  for (let k = 0; k < n; k++) ids.push((await c.query("SELECT session_id FROM nadi.session_create($1)", [tenant])).rows[0].session_id);
  const deadline = now() + 60000 + 100 * n;
  for (;;) {
    const r = await c.query(
      "SELECT count(*) FROM nadi.sessions s JOIN nadi.session_leases l USING (session_id) " +
        "WHERE s.session_id = ANY($1::uuid[]) AND s.state = 'active' AND l.cell_host_id = ANY($2::text[])",
      [ids, CELLS.hosts],
    );
    if (Number(r.rows[0].count) === n) return ids;
    if (now() > deadline) fail(`nadi sessions did not become active on ${CELLS.hosts.join(', ')}`);
    await sleep(20);
  }
}

const OPEN = "status IN ('queued', 'running', 'waiting')";

// Done with these sessions: terminate them, as an application would, so the
// next run starts from a cell with no sessions (the cell's rounds cost more
// the more sessions it holds, idle or not).
async function nadiEnd(c, ids, timeoutMs = 30000) {
  await c.query('SELECT count(nadi.session_terminate(s)) FROM unnest($1::uuid[]) s', [ids]);
  const deadline = now() + timeoutMs;
  while (Number((await c.query("SELECT count(*) FROM nadi.sessions WHERE session_id = ANY($1::uuid[]) AND state <> 'terminated'", [ids])).rows[0].count) > 0) {
    if (now() > deadline) fail('nadi: sessions did not terminate');
    await sleep(50);
  }
  // a command in flight ends on its own (a cancel is seen before the next slow call)
  while (Number((await c.query("SELECT count(*) FROM nadi.command_inbox WHERE session_id = ANY($1::uuid[]) AND status = 'running'", [ids])).rows[0].count) > 0) {
    if (now() > deadline) fail('nadi: commands of terminated sessions still run');
    await sleep(50);
  }
}

const NADI_BATCH = 1000;

async function nadiA(dsn, jobs, sessions) {
  const c = await connect(dsn);
  const ids = await nadiSessions(c, sessions);
  const per = Math.ceil(jobs / sessions);
  const t0 = now();
  // one transaction, interleaved across sessions, in batches of nadi.command_enqueue_many's
  // most (1,000), as the peers add theirs with one addJobs / insert call
  await c.query('BEGIN');
  for (let off = 0; off < jobs; off += NADI_BATCH) {
    await c.query(
      'SELECT count(*) FROM nadi.command_enqueue_many((' +
        "SELECT jsonb_agg(jsonb_build_object('session_id', s, 'type', 'message', 'payload', '{\"text\": \"x\"}'::jsonb) " +
        'ORDER BY g, s) FROM (SELECT s, g FROM unnest($1::uuid[]) s, generate_series(1, $2) g ' +
        'ORDER BY g, s OFFSET $3 LIMIT $4) q))',
      [ids, per, off, Math.min(NADI_BATCH, jobs - off)],
    );
  }
  await c.query('COMMIT');
  const tCommit = now();
  const deadline = now() + 600000;
  for (;;) {
    const r = await c.query(`SELECT EXISTS (SELECT 1 FROM nadi.command_inbox WHERE session_id = ANY($1::uuid[]) AND ${OPEN})`, [ids]);
    if (!r.rows[0].exists) break;
    if (now() > deadline) fail('nadi: the commands did not drain');
    await sleep(50);
  }
  const tDone = now();
  const r = await c.query(
    "SELECT count(*) AS completed, count(DISTINCT created_at) AS commits, " +
      'extract(epoch FROM max(created_at)) * 1000 AS last_ms FROM nadi.events ' +
      "WHERE session_id = ANY($1::uuid[]) AND kind = 'command.completed'",
    [ids],
  );
  await nadiEnd(c, ids);
  await c.end();
  const completed = Number(r.rows[0].completed);
  if (completed !== jobs) fail(`nadi: ${completed} of ${jobs} commands completed`);
  return {
    jobs,
    sessions,
    enqueue_s: (tCommit - t0) / 1000,
    enqueue_per_s: jobs / ((tCommit - t0) / 1000),
    drain_s: (tDone - tCommit) / 1000,
    jobs_per_s: jobs / ((tDone - tCommit) / 1000),
    commands_per_commit: completed / Number(r.rows[0].commits),
  };
}

async function nadiB(dsn, count, intervalMs, sessions) {
  const c = await connect(dsn);
  const ids = await nadiSessions(c, sessions);
  await sleep(1000);
  const ret = new Map();
  const t0 = now();
  for (let i = 0; i < count; i++) {
    const due = t0 + i * intervalMs;
    if (due > now()) await sleep(due - now());
    const r = await c.query("SELECT command_id FROM nadi.command_enqueue($1, 'message', '{\"text\": \"x\"}')", [ids[i % sessions]]);
    ret.set(String(r.rows[0].command_id), now());
  }
  const deadline = now() + 60000;
  while ((await c.query(`SELECT EXISTS (SELECT 1 FROM nadi.command_inbox WHERE session_id = ANY($1::uuid[]) AND ${OPEN})`, [ids])).rows[0].exists) {
    if (now() > deadline) fail('nadi: the commands did not complete');
    await sleep(20);
  }
  // the start: the command.started event, written by the cell's claim
  // (its created_at is that transaction's start, on the server's clock)
  // (the completing transaction's start is an upper bound: by then the
  // claim has committed and the model step has run)
  const r = await c.query(
    "SELECT command_id::text AS id, extract(epoch FROM min(created_at) FILTER (WHERE kind = 'command.started')) * 1000 AS at, " +
      "extract(epoch FROM min(created_at) FILTER (WHERE kind = 'command.completed')) * 1000 AS done " +
      "FROM nadi.events WHERE session_id = ANY($1::uuid[]) AND kind IN ('command.started', 'command.completed') GROUP BY command_id",
    [ids],
  );
  await nadiEnd(c, ids);
  await c.end();
  const upper = latencySummary(r.rows.map((row) => Number(row.done) - ret.get(row.id)));
  return {
    count,
    interval_ms: intervalMs,
    sessions,
    ...latencySummary(r.rows.map((row) => Number(row.at) - ret.get(row.id))),
    completing_p50_ms: upper.p50_ms,
    completing_p99_ms: upper.p99_ms,
  };
}

// Workload C for nadi: a kill -9 of the cell holding the session, 0.5 s
// into a /sleep command.  Embedded: a `nadi cell` backend, so the
// postmaster restarts every backend.  celld: the nadi-celld process whose
// host holds the session; PostgreSQL should not notice.  Either way a
// connection opened before the kill is tried after it, and the postmaster's
// start time and the checkpointer's pid are compared (a crash restart keeps
// the postmaster, and so its start time, but starts a new checkpointer).
async function nadiC(dsn, boundS, sleepMs) {
  let c = await connect(dsn);
  const [sid] = await nadiSessions(c, 1);
  const cmd = (await c.query("SELECT command_id FROM nadi.command_enqueue($1, 'message', $2)", [sid, JSON.stringify({ text: `/sleep ${sleepMs} x` })]))
    .rows[0].command_id;
  const deadline = now() + 10000;
  while ((await c.query("SELECT status FROM nadi.command_inbox WHERE session_id = $1 AND command_id = $2", [sid, cmd])).rows[0].status !== 'running') {
    if (now() > deadline) fail('nadi: the command did not start');
    await sleep(10);
  }
  await sleep(Math.min(500, sleepMs / 4));
  const witness = await connect(dsn);
  const PM = "SELECT pg_postmaster_start_time()::text AS t, (SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer') AS ckpt";
  const pmBefore = (await witness.query(PM)).rows[0];
  let pid, victim;
  if (CELLS.kind === 'celld') {
    victim = (await c.query('SELECT cell_host_id FROM nadi.sessions WHERE session_id = $1', [sid])).rows[0].cell_host_id;
    pid = CELLS.pids[victim];
    if (!pid) fail(`nadi: the session is on ${victim}, not one of the nadi-celld processes (${Object.keys(CELLS.pids).join(', ')})`);
  } else {
    victim = 'bench-cell';
    pid = Number((await c.query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'nadi cell' ORDER BY pid LIMIT 1")).rows[0].pid);
  }
  const tKill = now();
  process.kill(pid, 'SIGKILL'); // embedded: the postmaster then ends every backend and recovers
  await c.end().catch(() => {});
  const res = { bound_s: boundS, job_ms: sleepMs, lease_ttl: null, cells: CELLS.kind, killed_host: victim };
  const until = now() + boundS * 1000;
  let again = null;
  c = null;
  while (now() < until) {
    try {
      if (!c) c = await connect(dsn);
      const r = await c.query(
        "SELECT extract(epoch FROM created_at) * 1000 AS at FROM nadi.events WHERE session_id = $1 AND command_id = $2 " +
          "AND kind = 'command.started' ORDER BY seq OFFSET 1 LIMIT 1",
        [sid, cmd],
      );
      if (r.rows.length) {
        again = Number(r.rows[0].at);
        break;
      }
    } catch {
      if (c) c.end().catch(() => {});
      c = null;
    }
    await sleep(20);
  }
  if (!c) c = await connectRetry(dsn, 30000);
  const done = now() + sleepMs + 15000;
  while ((await c.query("SELECT status FROM nadi.command_inbox WHERE session_id = $1 AND command_id = $2", [sid, cmd])).rows[0].status !== 'completed' && now() < done)
    await sleep(50);
  // the connection opened before the kill: still usable?
  try {
    await witness.query('SELECT 1');
    res.conn_kept = true;
  } catch {
    res.conn_kept = false;
  }
  witness.end().catch(() => {});
  const pmAfter = (await c.query(PM)).rows[0];
  res.postmaster_restarted = pmAfter.t !== pmBefore.t;
  res.backends_restarted = pmAfter.ckpt !== pmBefore.ckpt;
  res.pg_restarted = res.postmaster_restarted || res.backends_restarted;
  const r = await c.query(
    "SELECT count(*) FILTER (WHERE kind = 'command.started') AS starts, count(*) FILTER (WHERE kind = 'command.completed') AS completions, " +
      "(SELECT attempts FROM nadi.command_inbox WHERE session_id = $1 AND command_id = $2) AS attempts, " +
      "(SELECT extract(epoch FROM created_at) * 1000 FROM nadi.events WHERE session_id = $1 AND command_id = $2 " +
      "  AND kind = 'command.started' ORDER BY seq OFFSET 1 LIMIT 1) AS again, " +
      "(SELECT payload->>'cell_host_id' FROM nadi.events WHERE session_id = $1 AND kind = 'session.lease' ORDER BY seq DESC LIMIT 1) AS again_host, " +
      "current_setting('nadi.lease_ttl') AS ttl, (SELECT setting::bigint FROM pg_settings WHERE name = 'nadi.lease_ttl') AS ttl_ms " +
      "FROM nadi.events WHERE session_id = $1 AND command_id = $2",
    [sid, cmd],
  );
  // the bound limits only how long we watched; the log has the time either way
  again = r.rows[0].again === null ? again : Number(r.rows[0].again);
  res.recovered_s = again !== null && (again - tKill) / 1000 <= boundS ? (again - tKill) / 1000 : null;
  res.recovered_late_s = again !== null ? (again - tKill) / 1000 : null;
  res.starts = Number(r.rows[0].starts);
  res.completions = Number(r.rows[0].completions);
  res.attempts = Number(r.rows[0].attempts);
  res.lease_ttl = r.rows[0].ttl;
  res.lease_ttl_s = Number(r.rows[0].ttl_ms) / 1000;
  res.again_host = r.rows[0].again_host;
  // what the session went through after the kill (seconds after it)
  const trail = await c.query(
    "SELECT kind, CASE WHEN kind = 'session.state' THEN payload->>'cause' ELSE coalesce(payload->>'cell_host_id', '') END AS host, " +
      'extract(epoch FROM created_at) * 1000 AS at FROM nadi.events WHERE session_id = $1 AND created_at >= to_timestamp($2 / 1000.0) ORDER BY seq',
    [sid, tKill],
  );
  res.trail = trail.rows.map((e) => `${((Number(e.at) - tKill) / 1000).toFixed(2)} ${e.kind}${e.host ? ` (${e.host})` : ''}`).join('; ');
  await nadiEnd(c, [sid]);
  await c.end();
  return res;
}

// Workloads D and D-tools for nadi: `slow` sessions get one command each
// (enqueued in one statement) while fast message commands trickle into
// `fastSessions` other sessions.  Starts and completions are the events'
// created_at (server clock, as in B).  The window ends when every slow
// command has completed or at the cap; what is still open then is reported,
// and the sessions are terminated (which cancels their open commands: a cell
// checks for a cancel before each slow call), so the run ends in bounded time.
async function nadiSlowFast(c, o, slowCmd, fastText, onWindowEnd) {
  // the fast commands are another tenant's (other users of the platform):
  // the slow tenant's commands are held to its share of each cell
  // (nadi.cell_max_in_flight_per_tenant), the others are not held up by them
  const slowIds = await nadiSessions(c, o.slow, 'bench');
  const fastIds = await nadiSessions(c, o.fastSessions, 'bench-fast');
  const ids = slowIds.concat(fastIds);
  await sleep(1000);
  const poll = await connect(o.dsn);
  const ret = new Map();
  let left = o.slow, polledAt = 0;
  const slowLeft = async () => {
    if (now() - polledAt >= 100) {
      polledAt = now();
      left = Number((await poll.query("SELECT count(*) FROM nadi.command_inbox WHERE session_id = ANY($1::uuid[]) AND status <> 'completed'", [slowIds])).rows[0].count);
    }
    return left;
  };
  await c.query('SELECT count(nadi.command_enqueue(s, $2, $3)) FROM unnest($1::uuid[]) s', [slowIds, slowCmd.type, JSON.stringify(slowCmd.payload)]);
  const tCommit = now();
  const tEnd = await trickle(tCommit, o.cap, o.fastInterval, slowLeft, async (k) => {
    const r = await c.query("SELECT command_id FROM nadi.command_enqueue($1, 'message', $2)", [fastIds[k % fastIds.length], JSON.stringify({ text: fastText })]);
    ret.set(`${fastIds[k % fastIds.length]}/${r.rows[0].command_id}`, now());
  });
  await sleep(D_GRACE_MS);
  const extra = onWindowEnd ? await onWindowEnd() : {};
  const ev = await c.query(
    "SELECT session_id::text || '/' || command_id AS id, session_id = ANY($2::uuid[]) AS slow, " +
      "extract(epoch FROM min(created_at) FILTER (WHERE kind = 'command.started')) * 1000 AS started, " +
      "extract(epoch FROM min(created_at) FILTER (WHERE kind = 'command.completed')) * 1000 AS completed, " +
      "count(*) FILTER (WHERE kind IN ('command.failed', 'command.dead', 'tool.error')) AS failed " +
      "FROM nadi.events WHERE session_id = ANY($1::uuid[]) AND command_id IS NOT NULL GROUP BY session_id, command_id",
    [ids, slowIds],
  );
  const byId = new Map(ev.rows.map((r) => [r.id, r]));
  const slowRows = ev.rows.filter((r) => r.slow);
  const figures = dFigures({
    slow: o.slow,
    tCommit,
    tEnd,
    slowDone: slowRows.filter((r) => r.completed !== null).map((r) => Number(r.completed)),
    fast: [...ret].map(([id, at]) => {
      const r = byId.get(id);
      return { ret: at, start: r?.started != null ? Number(r.started) : null, done: r?.completed != null ? Number(r.completed) : null };
    }),
  });
  figures.slow_failed = slowRows.reduce((n, r) => n + Number(r.failed), 0);
  await poll.end();
  return { ids, figures, extra };
}

async function nadiD(dsn, o) {
  const c = await connect(dsn);
  const url = `${o.fixture}/v1`;
  // one model for the cluster: the provider answers "[fast]" messages at once
  await c.query("ALTER SYSTEM SET nadi.model = 'openai'");
  await c.query(`ALTER SYSTEM SET nadi.model_url = '${url.replace(/'/g, "''")}'`);
  await c.query('ALTER SYSTEM SET nadi.proxy_tokens = off'); // no signing key, no credentials proxy
  await c.query('SELECT pg_reload_conf()');
  await sleep(1000);
  await httpJson(`${o.fixture}/stats/reset`, 'POST', {});
  let ids = [];
  try {
    const run = await nadiSlowFast(c, { ...o, dsn }, { type: 'message', payload: { text: 'slow step' } }, `${FAST_MARKER} ping`, async () => {
      const f = await httpJson(`${o.fixture}/stats`, 'GET');
      return { provider_max_in_flight: f.max_in_flight, provider_slow_answered: f.slow };
    });
    ids = run.ids;
    return {
      ...run.figures,
      ...run.extra,
      cells: CELLS.kind,
      cell_hosts: CELLS.hosts.length,
      cell_workers: Number((await c.query("SELECT current_setting('nadi.cell_workers')")).rows[0].current_setting),
    };
  } finally {
    // what is left answers at once and is cancelled; then the cluster's model is the builtin one again
    await httpJson(`${o.fixture}/control`, 'POST', { delay_ms: 0 });
    const t = now();
    if (ids.length) await nadiEnd(c, ids, 300000);
    process.stderr.write(`run.mjs: nadi D: the sessions ended ${((now() - t) / 1000).toFixed(1)} s after the window\n`);
    await httpJson(`${o.fixture}/control`, 'POST', { delay_ms: o.delay });
    for (const g of ['nadi.model', 'nadi.model_url', 'nadi.proxy_tokens']) await c.query(`ALTER SYSTEM RESET ${g}`);
    await c.query('SELECT pg_reload_conf()');
    await c.end();
  }
}

// Memory: the peak of sandboxd's resident set (VmHWM) and of the sandboxes'
// cgroup (memory.current or memory.usage_in_bytes, sampled every 100 ms).
function memorySampler(pid, cgroup) {
  const read = (f) => {
    try {
      return readFileSync(f, 'utf8');
    } catch {
      return null;
    }
  };
  const kb = (name) => {
    const m = pid && new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(read(`/proc/${pid}/status`) || '');
    return m ? Number(m[1]) * 1024 : null;
  };
  const cg = () => {
    if (!cgroup) return null;
    const v = read(`${cgroup}/memory.current`) ?? read(`${cgroup}/memory.usage_in_bytes`);
    return v === null ? null : Number(v);
  };
  const m = { rss_before: kb('VmRSS'), cgroup_before: cg(), rss_peak: null, cgroup_peak: null };
  const sample = () => {
    const r = kb('VmRSS'), g = cg();
    if (r !== null) m.rss_peak = Math.max(m.rss_peak ?? 0, r);
    if (g !== null) m.cgroup_peak = Math.max(m.cgroup_peak ?? 0, g);
  };
  sample();
  const t = setInterval(sample, 100);
  return () => {
    clearInterval(t);
    sample();
    return m;
  };
}

// sandboxd's /metrics: sandboxes, containers not stopped, exec calls done.
async function sandboxdMetrics(url) {
  const text = await httpJson(`${url}/metrics`, 'GET', undefined, true);
  const m = { sandboxes: 0, containers_up: 0, exec_calls: 0 };
  for (const line of text.split('\n')) {
    let x;
    if ((x = /^nadi_sandboxd_sandboxes (\S+)/.exec(line))) m.sandboxes = Number(x[1]);
    else if ((x = /^nadi_sandboxd_containers\{state="([a-z]+)"\} (\S+)/.exec(line))) m.containers_up += x[1] === 'stopped' ? 0 : Number(x[2]);
    else if ((x = /^nadi_sandboxd_tool_calls_total\{tool="exec",outcome="[a-z_]+"\} (\S+)/.exec(line))) m.exec_calls += Number(x[1]);
  }
  return m;
}

async function nadiDTools(dsn, o) {
  const c = await connect(dsn);
  const stop = memorySampler(o.sandboxdPid, o.cgroup);
  const before = await sandboxdMetrics(o.sandboxd);
  let upPeak = 0;
  const upTimer = setInterval(() => sandboxdMetrics(o.sandboxd).then((m) => (upPeak = Math.max(upPeak, m.containers_up)), () => {}), 250);
  let ids = [];
  try {
    const secs = (o.execMs / 1000).toString();
    const run = await nadiSlowFast(c, { ...o, dsn }, { type: 'tool', payload: { name: 'exec', args: { argv: ['sleep', secs] } } }, 'ping', async () => {
      clearInterval(upTimer);
      const after = await sandboxdMetrics(o.sandboxd);
      return { ...stop(), sandboxes: after.sandboxes, containers_up_peak: Math.max(upPeak, after.containers_up), exec_calls: after.exec_calls - before.exec_calls };
    });
    ids = run.ids;
    const mb = (x) => (x === null ? null : x / 1048576);
    const m = run.extra;
    return {
      ...run.figures,
      exec_ms: o.execMs,
      sandboxd_rss_mb: mb(m.rss_before),
      sandboxd_rss_peak_mb: mb(m.rss_peak),
      cgroup_mb: mb(m.cgroup_before),
      cgroup_peak_mb: mb(m.cgroup_peak),
      sandboxd_exec_calls: m.exec_calls,
      sandboxd_sandboxes: m.sandboxes,
      sandboxd_containers_up_peak: m.containers_up_peak,
      cell_workers: Number((await c.query("SELECT current_setting('nadi.cell_workers')")).rows[0].current_setting),
    };
  } finally {
    clearInterval(upTimer);
    const t = now();
    if (ids.length) await nadiEnd(c, ids, 300000);
    process.stderr.write(`run.mjs: nadi D-tools: the sessions ended ${((now() - t) / 1000).toFixed(1)} s after the window\n`);
    await c.end();
  }
}

// ---------------------------------------------------------------------------
// setup and report
// ---------------------------------------------------------------------------

async function setup(opts) {
  const { runMigrations } = await import('graphile-worker');
  await runMigrations({ connectionString: opts.dsnGw, logger: await quietLogger() });
  const { default: PgBoss } = await import('pg-boss');
  const boss = new PgBoss({ connectionString: opts.dsnBoss, schedule: false, supervise: false, migrate: true });
  boss.on('error', () => {});
  await boss.start();
  await boss.createQueue(QUEUE, {
    retryLimit: PGBOSS_RECOVERY.retryLimit,
    retryDelay: PGBOSS_RECOVERY.retryDelay,
    expireInSeconds: PGBOSS_RECOVERY.expireInSeconds,
  });
  await boss.stop({ graceful: false, wait: true, close: true });
  let pgqVersion = null;
  if (opts.dsnPgq) {
    const c = await connect(opts.dsnPgq);
    await c.query('CREATE EXTENSION IF NOT EXISTS pgq');
    await c.query('SELECT pgq.create_queue($1)', [QUEUE]);
    await c.query("SELECT pgq.set_queue_config($1, 'ticker_max_lag', $2)", [QUEUE, PGQ.ticker_max_lag]);
    await c.query('SELECT pgq.register_consumer($1, $2)', [QUEUE, PGQ.consumer]);
    pgqVersion = (await c.query("SELECT extversion FROM pg_extension WHERE extname = 'pgq'")).rows[0].extversion;
    await c.end();
  }
  const { createRequire } = await import('node:module');
  const require = createRequire(import.meta.url);
  const versions = {
    node: process.versions.node,
    'graphile-worker': require('graphile-worker/package.json').version,
    'pg-boss': require('pg-boss/package.json').version,
    pg: require('pg/package.json').version,
    pgq: pgqVersion,
  };
  console.log(JSON.stringify({ versions, graphile: GRAPHILE_PRESET, pgboss: PGBOSS_WORK, pgboss_recovery: PGBOSS_RECOVERY, pgq: PGQ }));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const [what, a, b] = opts.positional;
  if (what === 'worker') return workerMain(a, opts.dsn, b, Number(opts.sleep || 0), JSON.parse(opts.cfg || '{}'));
  if (what === 'setup') return setup(opts);
  const system = what;
  const workload = a;
  if (opts.cells) CELLS.kind = opts.cells;
  if (CELLS.kind !== 'embedded' && CELLS.kind !== 'celld') fail(`--cells: embedded or celld, not ${CELLS.kind}`);
  if (opts.cellHosts) CELLS.hosts = opts.cellHosts.trim().split(/\s+/);
  for (const t of (opts.celldPids || '').trim().split(/\s+/).filter(Boolean)) {
    const [h, p] = t.split('=');
    CELLS.pids[h] = Number(p);
  }
  const jobs = Number(opts.jobs || 100000);
  const count = Number(opts.count || 1000);
  const interval = Number(opts.interval || 10);
  const bound = Number(opts.bound || 30);
  const sleepMs = Number(opts.sleep || 3000);
  const d = {
    fixture: opts.fixture,
    slow: Number(opts.slow || 1000),
    fastSessions: Number(opts.fastSessions || 50),
    fastInterval: Number(opts.fastInterval || 20),
    cap: Number(opts.cap || 60),
    delay: Number(opts.delay || 1500),
    concurrency: opts.concurrency || (system === 'graphile' ? '24 250 1100' : '4x500 16x100 64x20'),
  };
  let res;
  if (workload === 'D' && !d.fixture) fail('workload D needs --fixture URL (bench/slow-model.mjs)');
  if (workload === 'D-tools' && system !== 'nadi') fail('workload D-tools is for nadi only');
  if (workload === 'D' && system === 'direct') res = await directD(d);
  else if (workload === 'D' && system === 'nadi') res = await nadiD(opts.dsn, d);
  else if (workload === 'D' && (system === 'graphile' || system === 'pgboss')) res = await peerD(system, opts.dsn, d);
  else if (workload === 'D-tools')
    res = await nadiDTools(opts.dsn, {
      ...d,
      slow: Number(opts.sessions || 200),
      execMs: Number(opts.execMs || 500),
      sandboxdPid: opts.sandboxdPid ? Number(opts.sandboxdPid) : null,
      cgroup: opts.cgroup || null,
      sandboxd: opts.sandboxd,
    });
  else if (system === 'nadi') {
    if (workload === 'A') res = await nadiA(opts.dsn, jobs, Number(opts.sessions || 32));
    else if (workload === 'B') res = await nadiB(opts.dsn, count, interval, Number(opts.sessions || 8));
    else if (workload === 'C') res = await nadiC(opts.dsn, bound, sleepMs);
  } else if (system === 'graphile' || system === 'pgboss' || system === 'pgq') {
    if (workload === 'A') res = await peerA(system, opts.dsn, jobs);
    else if (workload === 'B') res = await peerB(system, opts.dsn, count, interval);
    else if (workload === 'C') res = await peerC(system, opts.dsn, bound, sleepMs);
  }
  if (!res) fail(`unknown system or workload: ${system} ${workload}`);
  // nadi with nadi-celld is a system of its own in the report
  const name = system === 'nadi' && CELLS.kind === 'celld' ? 'nadi-celld' : system;
  if (system === 'nadi') res = { ...res, cells: CELLS.kind, cell_hosts: CELLS.hosts.length };
  console.log(JSON.stringify({ system: name, workload, ...res }));
  process.exit(0);
}

main().catch((e) => fail(e.stack || String(e)));
