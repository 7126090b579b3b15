// SSE fan-out benchmark for nadi-edge (run by bench/edge).
//
//   node edge-sse.mjs --base URL --token T --streams N --sessions S
//                     [--rounds R] [--interval MS] [--hold-only]
//
// Creates S sessions, opens N streams spread over them (from their current
// end), then R times posts one message to every session.  For every event
// of the command every stream receives (command.received, command.started,
// model.reply, command.completed), latency is the time from the event's
// created_at (its transaction's start, stamped by PostgreSQL on the same
// machine) to its arrival: commit -> NOTIFY -> the edge's feed read -> the
// stream -> the client.
// Prints one JSON line:
//   {"streams": opened, "samples": n, "p50": ms, "p99": ms, "max": ms}
// --hold-only opens the streams, holds them 3 s and reports how many held.
// With 400 streams or more, four worker processes open them.
import http from "node:http";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";

const { values: opt } = parseArgs({
  options: {
    base: { type: "string" },
    token: { type: "string" },
    streams: { type: "string", default: "100" },
    sessions: { type: "string", default: "10" },
    rounds: { type: "string", default: "20" },
    interval: { type: "string", default: "100" },
    "hold-only": { type: "boolean" },
  },
});
const url = new URL(opt.base);
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const auth = { Authorization: `Bearer ${opt.token}` };

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path, agent,
      headers: { ...auth, "Content-Type": "application/json" } }, (res) => {
      let data = "";
      res.on("data", (d) => (data += d));
      res.on("end", () => resolve({ status: res.statusCode, body: data }));
    });
    req.on("error", reject);
    if (body) req.write(body);
    req.end();
  });
}

const latencies = [];
let opened = 0;
let failed = 0;
const streams = [];

function openStream(sid, after) {
  return new Promise((resolve) => {
    const req = http.get({ host: url.hostname, port: url.port, path: `/v1/sessions/${sid}/events?after=${after}`,
      headers: { ...auth, Accept: "text/event-stream" } }, (res) => {
      if (res.statusCode !== 200) {
        failed++;
        res.resume();
        return resolve(null);
      }
      opened++;
      let buf = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const line = ev.split("\n").find((l) => l.startsWith("data: "));
          const m = line && line.match(/"created_at" : "([^"]+?)(\.\d+)?(\+00:00)"/);
          // the command's own events: short transactions, so created_at is
          // close to commit (session.* come from longer placement work)
          if (!m || !/"kind" : "(command|model)\./.test(line)) continue;
          const at = Date.parse(m[1] + m[3]) + (m[2] ? Number(m[2]) * 1000 : 0);
          latencies.push(performance.timeOrigin + performance.now() - at);
        }
      });
      resolve(req);
    });
    req.on("error", () => {
      failed++;
      resolve(null);
    });
    streams.push(req);
  });
}

// Streams are opened by worker processes (a quarter each from 400 streams
// up), so the client's own parsing does not dominate what is measured.
if (process.env.EDGE_SSE_WORKER) {
  const { sessions: list, count } = JSON.parse(process.env.EDGE_SSE_WORKER);
  for (let i = 0; i < count; i += 200) {
    const opens = [];
    for (let j = i; j < Math.min(count, i + 200); j++) {
      const s = list[j % list.length];
      opens.push(openStream(s.id, s.after));
    }
    await Promise.all(opens);
  }
  process.send({ opened, failed });
  process.on("message", async (m) => {
    if (m === "report")
      process.send({ latencies }, () => process.exit(0));
  });
} else {
  const { fork } = await import("node:child_process");
  const nsessions = Number(opt.sessions);
  const sessions = [];
  for (let i = 0; i < nsessions; i++) {
    const r = await request("POST", "/v1/sessions", "{}");
    const s = JSON.parse(r.body);
    sessions.push({ id: s.id, after: s.last_seq });
  }
  const n = Number(opt.streams);
  const nworkers = n >= 400 ? 4 : 1;
  const workers = [];
  let total = { opened: 0, failed: 0 };
  await Promise.all(Array.from({ length: nworkers }, (_, w) => new Promise((resolve) => {
    // worker w takes every nworkers-th stream, so sessions stay spread evenly
    const mine = sessions.filter((_, i) => i % nworkers === w % nworkers || nsessions < nworkers);
    const count = Math.floor(n / nworkers) + (w < n % nworkers ? 1 : 0);
    const child = fork(process.argv[1], process.argv.slice(2), {
      env: { ...process.env, EDGE_SSE_WORKER: JSON.stringify({ sessions: mine, count }) },
    });
    workers.push(child);
    child.once("message", (m) => {
      total.opened += m.opened;
      total.failed += m.failed;
      resolve();
    });
  })));
  if (opt["hold-only"]) {
    await sleep(3000);
    console.log(JSON.stringify({ streams: total.opened, failed: total.failed }));
    workers.forEach((w) => w.kill());
    process.exit(0);
  }
  await sleep(500);
  for (let r = 0; r < Number(opt.rounds); r++) {
    await Promise.all(sessions.map((s) => request("POST", `/v1/sessions/${s.id}/commands`,
      JSON.stringify({ type: "message", payload: { text: "ping" } }))));
    await sleep(Number(opt.interval));
  }
  // each message makes 4 events: received, started, model.reply, completed
  await sleep(3000);
  const all = [];
  await Promise.all(workers.map((w) => new Promise((resolve) => {
    w.once("message", (m) => {
      all.push(...m.latencies);
      resolve();
    });
    w.send("report");
  })));
  all.sort((a, b) => a - b);
  const pct = (p) => all.length ? all[Math.min(all.length - 1, Math.floor(p / 100 * all.length))] : NaN;
  console.log(JSON.stringify({ streams: total.opened, failed: total.failed, samples: all.length,
    expected: Number(opt.rounds) * total.opened * 4,
    p50: +pct(50).toFixed(2), p99: +pct(99).toFixed(2), max: +(all.at(-1) ?? NaN).toFixed(2) }));
  process.exit(0);
}
