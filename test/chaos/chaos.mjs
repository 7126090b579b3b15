#!/usr/bin/env node
// A chaos run: a local stack (test/chaos/stack.sh), the workload
// (workload.mjs) through its public HTTP API, random faults chosen from a
// seed, then healing, convergence, the facts of the database, a teardown
// that must leave nothing behind, and the checker (check.mjs) over it all.
//
//   node test/chaos/chaos.mjs [--seed N] [--duration 60s|30m] [--sessions N]
//        [--faults kind,kind,...] [--max-faults N] [--out DIR] [--keep]
//        [--order random|cycle] [--cell-workers N] [--expect-anomaly KIND[,KIND...]]
//
// --order cycle goes through every fault kind in a shuffled order (the
// seed's) before it repeats one: a short run still injects every kind.
// --cell-workers 0 leaves nadi-celld the only cell host (the embedded cells
// would otherwise take the sessions it loses, and keep them).
//
// Must run as root (sandboxd, network namespaces) from a tree that is built
// and installed (`make && make install`).  Prints the seed first: the same
// seed chooses the same faults and the same workload again.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { check, printReport } from "./check.mjs";
import { rng, sleep, sqlJson, stack } from "./lib.mjs";
import { Workload } from "./workload.mjs";

const { values: opt } = parseArgs({
  options: {
    seed: { type: "string" },
    duration: { type: "string", default: "60s" },
    sessions: { type: "string", default: "8" },
    faults: { type: "string", default: "all" },
    "max-faults": { type: "string", default: "1000" },
    out: { type: "string" },
    keep: { type: "boolean", default: false },
    "expect-anomaly": { type: "string" },
    order: { type: "string", default: "random" },
    "cell-workers": { type: "string", default: "2" },
  },
});

if (!["random", "cycle"].includes(opt.order)) throw new Error("--order wants random or cycle");
const seed = opt.seed !== undefined ? Number(opt.seed) : Math.floor(Math.random() * 2 ** 31);
if (!Number.isInteger(seed) || seed < 0) throw new Error("--seed wants a non-negative integer");
const durMatch = /^(\d+)(s|m|h)?$/.exec(opt.duration);
if (!durMatch) throw new Error("--duration wants N, Ns, Nm or Nh");
const durationMs = Number(durMatch[1]) * { s: 1000, m: 60000, h: 3600000 }[durMatch[2] ?? "s"];
console.log(`chaos: seed ${seed}, duration ${opt.duration}, ${opt.sessions} sessions`);

// -- the faults -------------------------------------------------------------
// Each fault kind:
//   targets  what it may hit; a target is a lock: one fault per target at a
//            time ("pg" is everything inside PostgreSQL, so a kill of a
//            worker, a restart, a paused cell and the server's clock never
//            overlap), and a fault whose targets are all busy waits
//   inject   stack.sh arguments that cause it (the last line it prints, a
//            pid for a paused process, goes to heal)
//   heal     stack.sh arguments that undo it after `ms` (none: the target is
//            only held for `ms`, e.g. while the postmaster restarts)
// A new kind: an entry here, its subcommand in stack.sh, a row in the table
// of docs/RELIABILITY.md; a new daemon also goes into DAEMONS.
const one = (t) => () => [t];
const FAULTS = {
  "kill-edge": { targets: () => ["edge-1", "edge-2"], inject: (t) => ["kill", t], heal: (t) => ["start", t], ms: [300, 3000] },
  "kill-cell": { targets: one("pg"), inject: () => ["kill", "cell"], ms: [3000, 3000] },
  "kill-broker": { targets: one("pg"), inject: () => ["kill", "broker"], ms: [3000, 3000] },
  "kill-notifier": { targets: one("pg"), inject: () => ["kill", "notifier"], ms: [3000, 3000] },
  "kill-celld": { targets: one("celld"), inject: () => ["kill", "celld"], heal: () => ["start", "celld"], ms: [300, 3000] },
  "kill-sandboxd": { targets: one("sandboxd"), inject: () => ["kill", "sandboxd"], heal: () => ["start", "sandboxd"], ms: [300, 3000] },
  "kill-credproxy": { targets: one("credproxy"), inject: () => ["kill", "credproxy"], heal: () => ["start", "credproxy"], ms: [300, 3000] },
  "kill-gitd": { targets: one("gitd"), inject: () => ["kill", "gitd"], heal: () => ["start", "gitd"], ms: [300, 3000] },
  "pg-restart": { targets: one("pg"), inject: () => ["pg-crash"], heal: () => ["pg-start"], ms: [500, 4000] },
  "partition-celld": { targets: one("celld"), inject: () => ["link", "down"], heal: () => ["link", "up"], ms: [2000, 9000] },
  // longer than the lease (4 s): the process comes back to sessions it lost
  "pause-celld": { targets: one("celld"), inject: () => ["stop", "celld"], heal: (t, pid) => ["cont", "celld", pid], ms: [5000, 8000] },
  "pause-cell": { targets: one("pg"), inject: () => ["stop", "cell"], heal: (t, pid) => ["cont", "cell", pid], ms: [5000, 8000] },
  "clock-celld": {
    targets: one("celld"),
    inject: (t, r) => ["clock", "celld", String(r.pick([-1, 1]) * r.int(1000, 8000))],
    heal: () => ["clock", "celld", "0"],
    ms: [4000, 12000],
  },
  "clock-cells": {
    targets: one("pg"),
    inject: (t, r) => ["clock", "cells", String(r.pick([-1, 1]) * r.int(1000, 8000))],
    heal: () => ["clock", "cells", "0"],
    ms: [4000, 12000],
  },
  "store-full": { targets: one("sandboxd"), inject: () => ["fill-store"], heal: () => ["free-store"], ms: [2000, 8000] },
};
// the daemons started again when the faults are over (the workers come back with PostgreSQL)
const DAEMONS = ["edge-1", "edge-2", "sandboxd", "credproxy", "gitd", "celld"];
const kinds = opt.faults === "all" ? Object.keys(FAULTS) : opt.faults === "none" ? [] : opt.faults.split(",");
for (const k of kinds) if (!FAULTS[k]) throw new Error(`unknown fault ${k}; known: ${Object.keys(FAULTS).join(" ")}`);

// -- the run directory and ports --------------------------------------------
// a directory of our own: removed after a clean run unless --keep; an --out
// directory must not exist yet (it is never removed)
if (opt.out && existsSync(opt.out)) throw new Error(`--out ${opt.out} exists already; name a new directory`);
const ownDir = !opt.out;
const dir = opt.out ?? mkdtempSync("/var/tmp/nadi-chaos.");
mkdirSync(dir, { recursive: true });
execFileSync("chmod", ["755", dir]);

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
const ports = [];
while (ports.length < 5) {
  const p = await freePort();
  if (!ports.includes(p)) ports.push(p);
}
const env = { CHAOS_DIR: dir, CHAOS_PORTS: ports.join(" "), CHAOS_CELL_WORKERS: opt["cell-workers"] };
writeFileSync(join(dir, "meta.json"), JSON.stringify({ seed, duration: opt.duration, sessions: Number(opt.sessions), faults: kinds, ports }));

async function st(args, quiet = false) {
  const r = await stack(env, args);
  if (r.code !== 0 && !quiet) console.log(`chaos: stack.sh ${args.join(" ")}: exit ${r.code}: ${r.err.trim().split("\n").slice(-3).join(" / ")}`);
  return r;
}

let tornDown = false;
async function teardown() {
  if (tornDown) return;
  tornDown = true;
  await st(["teardown"], true);
}
// whatever ends the run, the stack goes
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"])
  process.on(sig, async () => {
    await teardown();
    process.exit(128 + { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[sig]);
  });
process.on("uncaughtException", async (e) => {
  console.log(`chaos: ${e.stack ?? e}`);
  await teardown();
  process.exit(2);
});

// -- run --------------------------------------------------------------------
const t0 = Date.now();
const faultLog = [];
let exitCode = 1;
try {
  console.log("chaos: starting the stack");
  const up = await st(["setup"]);
  if (up.code !== 0) {
    console.log(up.out.slice(-2000), up.err.slice(-4000));
    throw new Error("the stack did not start");
  }
  console.log(`chaos: stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  // valid for the whole run and its convergence
  const ttl = `${Math.ceil(durationMs / 1000) + 3600} seconds`;
  const token = await sqlJson(env, `SELECT to_json(nadi.token_mint('chaos', 'chaos-client', 'tenant', '${ttl}'))`);
  const wl = new Workload({
    dir, seed, token, sessions: Number(opt.sessions),
    edges: [`http://127.0.0.1:${ports[0]}`, `http://127.0.0.1:${ports[1]}`],
  });
  await wl.createSessions();
  wl.start();

  // faults, until the duration is over
  const fr = rng(seed);
  const active = new Map(); // target -> {kind, until, heal}
  const healOne = async (target) => {
    const a = active.get(target);
    if (!a) return;
    active.delete(target);
    if (a.heal) await st(a.heal);
    faultLog.push({ t: Date.now() - t0, kind: a.kind, target, healed: true });
  };
  const end = Date.now() + durationMs;
  let injected = 0;
  let cycle = [];
  const seenKinds = new Set();
  let nextAt = Date.now() + 3000;
  while (Date.now() < end) {
    for (const [target, a] of [...active]) if (Date.now() >= a.until) await healOne(target);
    if (kinds.length && injected < Number(opt["max-faults"]) && Date.now() >= nextAt) {
      // random: any kind (a busy target is a skip, and says so); cycle: the
      // next kind of a shuffled cycle whose target is free (none: wait)
      const free = (k) => FAULTS[k].targets().filter((t) => !active.has(t));
      let kind = fr.pick(kinds);
      if (opt.order === "cycle") {
        if (!cycle.length) cycle = shuffle([...kinds], fr);
        const i = cycle.findIndex((k) => free(k).length > 0);
        if (i < 0) {
          await sleep(200);
          continue;
        }
        kind = cycle.splice(i, 1)[0];
      }
      const f = FAULTS[kind];
      const ms = fr.int(f.ms[0], f.ms[1]);
      const targets = free(kind);
      if (!targets.length) {
        faultLog.push({ t: Date.now() - t0, kind, skipped: "its target is down already" });
      } else {
        const target = fr.pick(targets);
        const args = f.inject(target, fr);
        const r = await st(args, true);
        const pid = r.out.trim().split("\n").pop();
        if (r.code === 0) {
          injected++;
          seenKinds.add(kind);
          active.set(target, { kind, until: Date.now() + ms, heal: f.heal ? f.heal(target, pid) : null });
          faultLog.push({ t: Date.now() - t0, kind, target, args, ms });
          console.log(`chaos: +${((Date.now() - t0) / 1000).toFixed(1)}s ${kind} ${target} (${ms} ms)`);
        } else {
          faultLog.push({ t: Date.now() - t0, kind, target, args, skipped: r.err.trim().slice(-200) });
        }
      }
      // a cycle of every kind fits in a short run
      nextAt = Date.now() + (opt.order === "cycle" ? fr.int(1000, 2500) : fr.int(1500, 4000));
    }
    await sleep(100);
  }
  for (const target of [...active.keys()]) await healOne(target);
  // every process up again (a kill the postmaster restarted needs nothing)
  for (const d of DAEMONS) await st(["start", d], true);
  console.log(`chaos: faults over after ${((Date.now() - t0) / 1000).toFixed(1)} s (${injected} injected); converging`);
  const missing = kinds.filter((k) => !seenKinds.has(k));
  if (missing.length) console.log(`chaos: fault kinds not injected: ${missing.join(" ")}`);

  // the drivers stop sending and wait for their commands
  wl.stopping = true;
  const convergeBy = Date.now() + 120000;
  const pending = async () =>
    sqlJson(env, `SELECT json_build_object(
        'open', (SELECT count(*) FROM nadi.command_inbox WHERE status IN ('queued', 'running', 'waiting')),
        'transit', (SELECT count(*) FROM nadi.sessions WHERE state IN ('placed', 'terminating')))`).catch(() => null);
  let p = null;
  while (Date.now() < convergeBy) {
    p = await pending();
    // waiting commands are the drivers' to answer: they still run
    if (p && p.open === 0 && p.transit === 0) break;
    await sleep(500);
  }
  const converged = p && p.open === 0 && p.transit === 0;
  console.log(`chaos: ${converged ? "converged" : "did NOT converge"} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await Promise.race([Promise.all(wl.drivers), sleep(30000)]);
  // the followers catch up with the last event of their session
  const seqs = (await sqlJson(env, "SELECT json_object_agg(session_id, last_seq) FROM nadi.sessions")) ?? {};
  for (const [sid, seq] of Object.entries(seqs)) wl.finalSeq.set(sid, seq);
  const followedTo = seqs;
  await Promise.race([Promise.all(wl.sseTasks), sleep(60000)]);
  // ACP followers had as long; they stop now
  await sleep(1000);
  wl.followersDone = true;
  wl.hardStop = true;
  await Promise.race([Promise.all([...wl.drivers, ...wl.sseTasks, ...wl.acpTasks]), sleep(15000)]);
  const acpRef = {};
  for (const s of wl.sessions) if (s.acp) acpRef[s.id] = await wl.acpReference(s);
  await Promise.all([wl.req.close(), wl.sse.close(), wl.acp.close()]);

  // the facts of the database and the host, before teardown
  const facts = await sqlJson(env, readFileSync(new URL("./facts.sql", import.meta.url), "utf8"));
  const sbx = (await st(["pid", "sandboxd"], true)).out.trim();
  const containers = (await st(["containers"], true)).out.trim().split("\n").filter(Boolean)
    .map((l) => { const [pid, ppid, machine] = l.split(" "); return { pid: Number(pid), ppid: Number(ppid), machine }; });
  Object.assign(facts, {
    converged, followedTo, acpRef, sandboxdPid: Number(sbx) || null, containers,
    sessionsCreated: wl.sessions.map((s) => ({ id: s.id, approval: s.approval, acp: s.acp })),
    stats: wl.stats, faults: faultLog, seed,
  });
  await teardown();
  facts.leftovers = leftovers(dir);
  writeFileSync(join(dir, "facts.json"), JSON.stringify(facts));

  const report = check(dir);
  printReport(report);
  if (opt["expect-anomaly"]) {
    const want = opt["expect-anomaly"].split(",");
    const n = report.anomalies.filter((a) => want.includes(a.kind)).length;
    console.log(`chaos: expected anomaly ${opt["expect-anomaly"]}: ${n ? `found ${n}` : "NOT found"}`);
    exitCode = n ? 0 : 1;
  } else exitCode = report.anomalies.length ? 1 : 0;
} catch (e) {
  console.log(`chaos: ${e.stack ?? e}`);
  exitCode = 2;
} finally {
  await teardown();
  const remove = exitCode === 0 && !opt.keep && ownDir;
  console.log(`chaos: seed ${seed}; run directory ${dir}${remove ? " (removed)" : ""}`);
  if (remove) execFileSync("rm", ["-rf", dir]);
}
process.exit(exitCode);

function shuffle(xs, r) {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = r.int(0, i);
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

// What a run must not leave behind: processes, mounts, loop devices,
// network namespaces of its own.
function leftovers(d) {
  const out = [];
  // this process and those that started it (their command lines name d)
  const mine = new Set();
  for (let pid = process.pid; pid > 1; ) {
    mine.add(pid);
    const m = /PPid:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    pid = m ? Number(m[1]) : 0;
  }
  for (const pid of readdirSync("/proc").filter((x) => /^\d+$/.test(x))) {
    let cmd = "";
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
    } catch {
      continue;
    }
    if (cmd.includes(d) && !mine.has(Number(pid))) out.push({ what: "process", pid: Number(pid), cmd: cmd.slice(0, 200) });
  }
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n"))
    if (line.includes(d)) out.push({ what: "mount", line: line.slice(0, 200) });
  try {
    for (const l of execFileSync("losetup", ["-l", "-n", "-O", "NAME,BACK-FILE"], { encoding: "utf8" }).split("\n"))
      if (l.includes(d)) out.push({ what: "loop", line: l.trim() });
  } catch {}
  const net = existsSync(join(d, "net.env")) ? readFileSync(join(d, "net.env"), "utf8") : "";
  const tag = /FLEET_TAG="?([0-9a-f]+)/.exec(net)?.[1];
  if (tag) {
    const ns = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
    if (ns.includes(tag)) out.push({ what: "netns", line: ns.trim() });
  }
  return out;
}
