// bench/peers/run.mjs — the Node side of bench/compare: drives nadi,
// graphile-worker and pg-boss through the same three workloads and prints
// one JSON line per run.  bench/compare runs it; bench/README.md explains
// what is measured.
//
//   node run.mjs setup   --dsn-gw URL --dsn-boss URL [--dsn-pgq URL]
//   node run.mjs SYSTEM WORKLOAD [--dsn URL] [--jobs N] [--sessions N (nadi: A 32, B 8)]
//                [--count N] [--interval MS] [--bound S] [--sleep MS]
//   node run.mjs report RESULTS.jsonl
//
// SYSTEM is nadi, graphile, pgboss or pgq; WORKLOAD is A (throughput: N no-op
// jobs enqueued in one transaction, then drained), B (latency: jobs
// enqueued one at a time, every --interval ms, into an idle system) or C
// (recovery: a worker killed with SIGKILL while it runs a job).
//
// Peers' workers run in child processes of this one (forked, reporting over
// the IPC channel), so enqueuing and working are separate processes, as in
// production.  Times are wall-clock milliseconds (performance.timeOrigin +
// performance.now(), or the server's clock for nadi, same machine).
import { fork } from 'node:child_process';
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
// Workers of the peers, in child processes
// ---------------------------------------------------------------------------

const quietLogger = async () => {
  const { Logger } = await import('graphile-worker');
  return new Logger(() => () => {});
};

async function graphileWorker(dsn, workload, sleepMs) {
  const { run } = await import('graphile-worker');
  let handled = 0;
  const runner = await run({
    logger: await quietLogger(),
    noHandleSignals: true,
    taskList: {
      [QUEUE]: async (payload) => {
        if (workload !== 'A') process.send({ t: 'start', i: payload.i, at: now(), pid: process.pid });
        if (sleepMs > 0) await sleep(sleepMs);
        handled++;
        if (workload !== 'A') process.send({ t: 'done', i: payload.i, at: now(), pid: process.pid });
      },
    },
    preset: { worker: { connectionString: dsn, ...GRAPHILE_PRESET } },
  });
  return { handled: () => handled, stop: () => runner.stop() };
}

async function pgbossWorker(dsn, workload, sleepMs) {
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
  const workers = recovery ? 1 : PGBOSS_WORK.workers;
  for (let w = 0; w < workers; w++) {
    await boss.work(
      QUEUE,
      { pollingIntervalSeconds: PGBOSS_WORK.pollingIntervalSeconds, batchSize: recovery ? 1 : PGBOSS_WORK.batchSize },
      async (jobs) => {
        const at = now();
        if (workload !== 'A') for (const j of jobs) process.send({ t: 'start', i: j.data.i, at, pid: process.pid });
        if (sleepMs > 0) await sleep(sleepMs);
        handled += jobs.length;
        if (workload !== 'A') for (const j of jobs) process.send({ t: 'done', i: j.data.i, at: now(), pid: process.pid });
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

async function workerMain(system, dsn, workload, sleepMs) {
  process.on('disconnect', () => process.exit(1)); // the parent is gone: so are we
  const make = { graphile: graphileWorker, pgboss: pgbossWorker, pgq: pgqWorker }[system];
  const w = await make(dsn, workload, sleepMs);
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
function startWorker(system, dsn, workload, sleepMs = 0) {
  const child = fork(SELF, ['worker', system, workload, '--dsn', dsn, '--sleep', String(sleepMs)], {
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
      addMany: (n) => utils.addJobs(Array.from({ length: n }, (_, i) => ({ identifier: QUEUE, payload: { i } }))),
      addOne: (i) => utils.addJob(QUEUE, { i }),
      left: async (c) => Number((await c.query('SELECT count(*) FROM graphile_worker._private_jobs')).rows[0].count),
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
    addMany: (n) => boss.insert(Array.from({ length: n }, (_, i) => ({ name: QUEUE, data: { i } }))),
    addOne: (i) => boss.send(QUEUE, { i }),
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

// ---------------------------------------------------------------------------
// nadi: the server's own workers; only SQL from here
// ---------------------------------------------------------------------------

async function nadiSessions(c, n) {
  const ids = [];
  for (let k = 0; k < n; k++) ids.push((await c.query("SELECT session_id FROM nadi.session_create('bench')")).rows[0].session_id);
  const deadline = now() + 60000;
  for (;;) {
    const r = await c.query(
      "SELECT count(*) FROM nadi.sessions s JOIN nadi.session_leases l USING (session_id) " +
        "WHERE s.session_id = ANY($1::uuid[]) AND s.state = 'active' AND l.cell_host_id = 'bench-cell'",
      [ids],
    );
    if (Number(r.rows[0].count) === n) return ids;
    if (now() > deadline) fail('nadi sessions did not become active on bench-cell');
    await sleep(20);
  }
}

const OPEN = "status IN ('queued', 'running', 'waiting')";

// Done with these sessions: terminate them, as an application would, so the
// next run starts from a cell with no sessions (the cell's rounds cost more
// the more sessions it holds, idle or not).
async function nadiEnd(c, ids) {
  await c.query('SELECT count(nadi.session_terminate(s)) FROM unnest($1::uuid[]) s', [ids]);
  const deadline = now() + 30000;
  while (Number((await c.query("SELECT count(*) FROM nadi.sessions WHERE session_id = ANY($1::uuid[]) AND state <> 'terminated'", [ids])).rows[0].count) > 0) {
    if (now() > deadline) fail('nadi: sessions did not terminate');
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
  const pid = Number((await c.query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'nadi cell' ORDER BY pid LIMIT 1")).rows[0].pid);
  const tKill = now();
  process.kill(pid, 'SIGKILL'); // the postmaster then ends every backend and recovers
  await c.end().catch(() => {});
  const res = { bound_s: boundS, job_ms: sleepMs, lease_ttl: null };
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
  const r = await c.query(
    "SELECT count(*) FILTER (WHERE kind = 'command.started') AS starts, count(*) FILTER (WHERE kind = 'command.completed') AS completions, " +
      "(SELECT attempts FROM nadi.command_inbox WHERE session_id = $1 AND command_id = $2) AS attempts, " +
      "(SELECT extract(epoch FROM created_at) * 1000 FROM nadi.events WHERE session_id = $1 AND command_id = $2 " +
      "  AND kind = 'command.started' ORDER BY seq OFFSET 1 LIMIT 1) AS again, " +
      "current_setting('nadi.lease_ttl') AS ttl FROM nadi.events WHERE session_id = $1 AND command_id = $2",
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
  await nadiEnd(c, [sid]);
  await c.end();
  return res;
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
  if (what === 'worker') return workerMain(a, opts.dsn, b, Number(opts.sleep || 0));
  if (what === 'setup') return setup(opts);
  const system = what;
  const workload = a;
  const jobs = Number(opts.jobs || 100000);
  const count = Number(opts.count || 1000);
  const interval = Number(opts.interval || 10);
  const bound = Number(opts.bound || 30);
  const sleepMs = Number(opts.sleep || 3000);
  let res;
  if (system === 'nadi') {
    if (workload === 'A') res = await nadiA(opts.dsn, jobs, Number(opts.sessions || 32));
    else if (workload === 'B') res = await nadiB(opts.dsn, count, interval, Number(opts.sessions || 8));
    else if (workload === 'C') res = await nadiC(opts.dsn, bound, sleepMs);
  } else if (system === 'graphile' || system === 'pgboss' || system === 'pgq') {
    if (workload === 'A') res = await peerA(system, opts.dsn, jobs);
    else if (workload === 'B') res = await peerB(system, opts.dsn, count, interval);
    else if (workload === 'C') res = await peerC(system, opts.dsn, bound, sleepMs);
  }
  if (!res) fail(`unknown system or workload: ${system} ${workload}`);
  console.log(JSON.stringify({ system, workload, ...res }));
  process.exit(0);
}

main().catch((e) => fail(e.stack || String(e)));
