#!/usr/bin/env node
// The checker of a chaos run: reads what the clients logged
// (requests.jsonl, sse.jsonl, acp.jsonl) and what the run read from the
// database and the host at its end (facts.json), and lists every anomaly.
// It knows nothing of how the run went; it is given only the history.
//
//   node test/chaos/check.mjs RUN_DIR      prints the table; exit 1 on any anomaly
//
// Anomaly kinds (docs/RELIABILITY.md explains each):
//   lost, not_final, twice, outcome, idempotency, unexpected_answer, order, overlap,
//   seq_gap, stale_epoch, replay, checkpoint, sse_duplicate, sse_order,
//   sse_gap, sse_content, acp_duplicate, acp_order, acp_missing, approval,
//   stuck, dead_lease, orphan_container, leftover
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

const TERMINAL = new Set(["command.completed", "command.dead", "command.cancelled"]);
const FINAL = new Set(["completed", "dead", "cancelled"]);
const CONTROL = new Set(["cancel", "approve", "deny"]);

function readJsonl(path) {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

const groupBy = (xs, key) => {
  const m = new Map();
  for (const x of xs) {
    const k = key(x);
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(x);
  }
  return m;
};

export function check(dir) {
  const facts = JSON.parse(readFileSync(join(dir, "facts.json"), "utf8"));
  const reqs = readJsonl(join(dir, "requests.jsonl"));
  const sse = readJsonl(join(dir, "sse.jsonl"));
  const acp = readJsonl(join(dir, "acp.jsonl"));
  const anomalies = [];
  const bad = (kind, sid, detail) => anomalies.push({ kind, sid: sid ?? null, detail });

  const cmds = new Map(facts.commands.map((c) => [c.command_id, c]));
  const eventsBySession = groupBy(facts.events, (e) => e.session_id);
  const eventsByCmd = groupBy(facts.events.filter((e) => e.command_id != null), (e) => e.command_id);
  const sessions = new Map(facts.sessions.map((s) => [s.session_id, s]));

  // -- commands: acknowledged means final, once; one key, one command ----
  const acked = new Map(); // "sid key" -> command id
  for (const r of reqs) {
    if ((r.op === "enqueue" || r.op === "dup") && r.status === 202) {
      const k = `${r.sid} ${r.key}`;
      if (acked.has(k) && acked.get(k) !== r.cid)
        bad("idempotency", r.sid, `key ${r.key} answered command ${acked.get(k)} and then ${r.cid}`);
      if (!acked.has(k)) acked.set(k, r.cid);
    }
    // answers no client should get from a working platform
    if (r.status >= 400 && r.status < 500 && r.status !== 429) {
      const fine = (r.op === "cancel" || r.op === "approve" || r.op === "deny") && r.status === 409;
      if (!fine) bad("unexpected_answer", r.sid, `${r.op} ${r.key ?? ""} got ${r.status} ${r.code ?? ""}`);
    }
  }
  for (const [k, cid] of acked) {
    const [sid, key] = k.split(" ");
    const c = cmds.get(cid);
    if (!c || c.session_id !== sid) bad("lost", sid, `command ${cid} (key ${key}) was acknowledged but is not in the inbox`);
    else if (!FINAL.has(c.status)) bad("not_final", sid, `command ${cid} is still ${c.status}`);
    else if (c.idempotency_key !== key) bad("idempotency", sid, `command ${cid} carries key ${c.idempotency_key}, not ${key}`);
  }
  const byKey = groupBy(facts.commands.filter((c) => c.idempotency_key), (c) => `${c.session_id} ${c.idempotency_key}`);
  for (const [k, cs] of byKey) if (cs.length > 1) bad("idempotency", k.split(" ")[0], `key ${k.split(" ")[1]} made ${cs.length} commands`);
  for (const c of facts.commands) {
    const ends = (eventsByCmd.get(c.command_id) ?? []).filter((e) => TERMINAL.has(e.kind));
    if (ends.length > 1) bad("twice", c.session_id, `command ${c.command_id} ended ${ends.length} times: ${ends.map((e) => `${e.kind}@${e.seq}`).join(", ")}`);
    if (FINAL.has(c.status) && ends.length === 0 && !CONTROL.has(c.type))
      bad("not_final", c.session_id, `command ${c.command_id} is ${c.status} with no event that says so`);
  }

  // what the clients asked for: cancels (answered or not) and decisions
  const cancelAsked = new Set(reqs.filter((r) => r.op === "cancel").map((r) => r.of));
  const denied = new Set(reqs.filter((r) => r.op === "deny" && r.status === 202).map((r) => r.of));
  const approved = new Set(reqs.filter((r) => r.op === "approve" && r.status === 202).map((r) => r.of));
  const STATUS_OF = { "command.completed": "completed", "command.dead": "dead", "command.cancelled": "cancelled" };
  for (const c of facts.commands) {
    if (CONTROL.has(c.type)) continue;
    const evs = eventsByCmd.get(c.command_id) ?? [];
    const end = evs.findIndex((e) => TERMINAL.has(e.kind));
    if (end < 0) continue;
    if (STATUS_OF[evs[end].kind] !== c.status)
      bad("outcome", c.session_id, `command ${c.command_id} is ${c.status} but its log ends with ${evs[end].kind}`);
    const after = evs.slice(end + 1).find((e) => !TERMINAL.has(e.kind));
    if (after) bad("outcome", c.session_id, `command ${c.command_id} has ${after.kind} at seq ${after.seq} after it ended`);
    if (c.status === "cancelled" && !cancelAsked.has(c.command_id) && !denied.has(c.command_id))
      bad("outcome", c.session_id, `command ${c.command_id} was cancelled though no client asked for it`);
    if (!evs.some((e) => e.kind === "command.started") && c.status !== "cancelled")
      bad("outcome", c.session_id, `command ${c.command_id} is ${c.status} but never started`);
  }

  // -- per session: the log ------------------------------------------------
  const leaseBySession = new Map(facts.leases.map((l) => [l.session_id, l]));
  for (const [sid, evs] of eventsBySession) {
    const s = sessions.get(sid);
    // gapless, strictly increasing, ending at last_seq
    for (let i = 0; i < evs.length; i++)
      if (evs[i].seq !== i + 1) { bad("seq_gap", sid, `event ${i + 1} is seq ${evs[i].seq}`); break; }
    if (s && evs.length && s.last_seq !== evs[evs.length - 1].seq) bad("seq_gap", sid, `last_seq ${s.last_seq}, last event ${evs[evs.length - 1].seq}`);
    // no write of a stale epoch: epochs never go back along the log, and a
    // cell's writes carry the epoch of the lease taken last before them
    // — and no cell writes while no lease is held (after it was released,
    // expired or revoked, before the next one is taken)
    let epoch = 0;
    let leaseEpoch = 0;
    let held = false;
    let staleSeen = false;
    for (const e of evs) {
      if (e.kind === "session.lease" && e.payload?.epoch != null) {
        leaseEpoch = Math.max(leaseEpoch, Number(e.payload.epoch));
        held = e.payload.event === "acquired" || e.payload.event === "taken_over" || e.payload.event === "renewed";
      }
      if (e.epoch == null) continue;
      if (!held && !staleSeen && e.kind !== "session.lease") {
        bad("stale_epoch", sid, `seq ${e.seq} (${e.kind}) was written at epoch ${e.epoch} while no lease was held`);
        staleSeen = true;
      }
      if (e.epoch < epoch) { bad("stale_epoch", sid, `seq ${e.seq} (${e.kind}) has epoch ${e.epoch} after epoch ${epoch}`); break; }
      if (e.epoch < leaseEpoch && e.kind !== "session.lease") { bad("stale_epoch", sid, `seq ${e.seq} (${e.kind}) has epoch ${e.epoch}; the lease was at ${leaseEpoch}`); break; }
      epoch = e.epoch;
    }
    // in order, one at a time: a command starts only when the one before
    // it let go (finished, requeued, failed for a retry); one that waits for
    // a decision still holds the session: nothing overtakes it
    let open = null;
    let lastFirstStart = 0;
    const started = new Set();
    for (const e of evs) {
      const c = e.command_id != null ? cmds.get(e.command_id) : null;
      if (e.kind === "command.started") {
        if (open !== null && open !== e.command_id) bad("overlap", sid, `command ${e.command_id} started at seq ${e.seq} while ${open} runs`);
        if (!started.has(e.command_id)) {
          if (c && !CONTROL.has(c.type) && e.command_id < lastFirstStart)
            bad("order", sid, `command ${e.command_id} started after ${lastFirstStart} (seq ${e.seq})`);
          lastFirstStart = Math.max(lastFirstStart, e.command_id);
          started.add(e.command_id);
        }
        open = e.command_id;
      } else if (open === e.command_id && (TERMINAL.has(e.kind) || e.kind === "command.requeued" ||
        (e.kind === "command.failed" && e.payload?.will_retry))) open = null;
    }
    // approvals: no tool the model called that needed one ran without it;
    // a denied one never ran (a client's own tool command is never held)
    if (s && Array.isArray(s.policy?.require_approval)) {
      const need = new Set(s.policy.require_approval);
      const decision = new Map();
      for (const e of evs) {
        const c = e.command_id != null ? cmds.get(e.command_id) : null;
        if (!c || c.type !== "message") continue;
        if (e.kind === "permission.resolved") {
          const d = e.payload?.decision;
          decision.set(c.command_id, d);
          // the log says what the client said
          if ((d === "approved" && denied.has(c.command_id) && !approved.has(c.command_id)) ||
            (d === "denied" && approved.has(c.command_id) && !denied.has(c.command_id)))
            bad("approval", sid, `command ${c.command_id} was ${d} at seq ${e.seq}, not what the client decided`);
        }
        if ((e.kind === "tool.call" || e.kind === "tool.result") && need.has(e.name)) {
          const d = decision.get(c.command_id);
          if (d !== "approved") bad("approval", sid, `command ${c.command_id} (${c.tool}) ran at seq ${e.seq} ${d ? `after it was ${d}` : "without approval"}`);
        }
      }
    }
    // the replay agrees with the tables
    const rep = facts.replays.find((r) => r.session_id === sid)?.replay;
    if (rep) {
      if (s && rep.last_seq !== s.last_seq) bad("replay", sid, `replay last_seq ${rep.last_seq}, table ${s.last_seq}`);
      const l = leaseBySession.get(sid);
      if (l && rep.epoch !== l.epoch) bad("replay", sid, `replay epoch ${rep.epoch}, lease ${l.epoch}`);
      const mine = facts.commands.filter((c) => c.session_id === sid);
      const want = mine.map((c) => `${c.command_id}:${c.type}:${c.status}`).join(" ");
      const got = (rep.commands ?? []).map((c) => `${c.command_id}:${c.type}:${c.status}`).join(" ");
      if (want !== got) bad("replay", sid, `replayed commands differ from the inbox: ${firstDiff(got, want)}`);
    }
  }
  for (const k of facts.checkpoints)
    if (!k.equal) bad("checkpoint", k.session_id, `the checkpoint at seq ${k.seq} differs from the replay of the log before it`);
  // a session a command was acknowledged for still exists
  for (const r of reqs) if (r.op === "enqueue" && r.status === 202 && !sessions.has(r.sid)) bad("lost", r.sid, "the session is gone");

  // -- SSE: every event of the session once, in order, across reconnects ---
  const evIndex = new Map(facts.events.map((e) => [`${e.session_id} ${e.seq}`, e]));
  const sseBySession = groupBy(sse.filter((x) => x.seq != null), (x) => x.sid);
  for (const [sid, got] of sseBySession) {
    // each property on its own, so that one fault is named for what it is
    const seen = new Set();
    const dup = got.find((x) => (seen.has(x.seq) ? true : (seen.add(x.seq), false)));
    if (dup) bad("sse_duplicate", sid, `seq ${dup.seq} again (connection ${dup.conn})`);
    const back = got.findIndex((x, i) => i > 0 && x.seq < got[i - 1].seq);
    if (back > 0) bad("sse_order", sid, `seq ${got[back].seq} after ${got[back - 1].seq}`);
    const sorted = [...seen].sort((a, b) => a - b);
    const hole = sorted.findIndex((q, i) => q !== i + 1);
    if (hole >= 0) bad("sse_gap", sid, `seq ${hole + 1} never came (the client saw ${sorted[hole]} next)`);
    const wrongId = got.find((x) => x.id !== x.seq);
    if (wrongId) bad("sse_order", sid, `id ${wrongId.id} for seq ${wrongId.seq}`);
    const wrong = got.find((x) => {
      const e = evIndex.get(`${sid} ${x.seq}`);
      return !e || e.kind !== x.kind || (e.command_id ?? null) !== x.cmd;
    });
    if (wrong) {
      const e = evIndex.get(`${sid} ${wrong.seq}`);
      bad("sse_content", sid, `seq ${wrong.seq} was ${wrong.kind}/${wrong.cmd}, the log has ${e ? `${e.kind}/${e.command_id}` : "nothing"}`);
    }
    const prev = sorted.length ? sorted[sorted.length - 1] : 0;
    // it was told to follow up to the last seq when the run ended
    const upto = facts.followedTo?.[sid] ?? sessions.get(sid)?.last_seq ?? 0;
    if (prev < upto) bad("sse_gap", sid, `the client stopped at seq ${prev} of ${upto}`);
  }
  for (const s of facts.sessionsCreated ?? [])
    if (!sseBySession.has(s.id) && (sessions.get(s.id)?.last_seq ?? 0) > 0) bad("sse_gap", s.id, "the client saw no event");

  // -- ACP: every update once, in order; the same seqs as a full load -----
  const acpBySession = groupBy(acp.filter((x) => "seq" in x && "update" in x), (x) => x.sid);
  for (const s of facts.sessionsCreated ?? []) {
    if (!s.acp) continue;
    const got = acpBySession.get(s.id) ?? [];
    const kindOf = (seq) => evIndex.get(`${s.id} ${seq}`)?.kind;
    // within a connection seqs never go back; a connection that resumed
    // (session/load with _meta.nadi.after) sends nothing the ones before it sent
    let prev = 0;
    let conn = null;
    let before = 0; // the highest seq of the connections before this one
    for (const x of got) {
      if (typeof x.seq !== "number") { bad("acp_order", s.id, `an update without _meta.nadi.seq (${x.update})`); break; }
      if (x.conn !== conn) { before = Math.max(before, prev); conn = x.conn; prev = 0; }
      if (x.seq < prev) { bad("acp_order", s.id, `seq ${x.seq} after ${prev} (connection ${x.conn})`); break; }
      if (x.seq <= before) { bad("acp_duplicate", s.id, `seq ${x.seq} again on connection ${x.conn} (seen up to ${before})`); break; }
      prev = x.seq;
    }
    const ref = facts.acpRef?.[s.id];
    if (!ref) { bad("acp_missing", s.id, "the reference load failed"); continue; }
    // command.received turns into an update only when replayed: not compared
    const norm = (xs) => [...new Set(xs.filter((q) => kindOf(q) !== "command.received"))].sort((a, b) => a - b);
    const want = norm(ref);
    const have = new Set(norm(got.map((x) => x.seq)));
    const missing = want.filter((q) => !have.has(q));
    const extra = [...have].filter((q) => !want.includes(q));
    if (missing.length) bad("acp_missing", s.id, `updates of seq ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""} never came`);
    if (extra.length) bad("acp_duplicate", s.id, `updates of seq ${extra.slice(0, 5).join(", ")} that a full load does not send`);
  }

  // -- convergence -----------------------------------------------------------
  if (!facts.converged) bad("stuck", null, "open commands or sessions in transit remained after the faults stopped");
  for (const s of facts.sessions)
    if (s.state === "placed" || s.state === "terminating" || s.state === "failed")
      bad("stuck", s.session_id, `session ${s.state}${s.state === "failed" ? " (no client terminated it)" : ""}`);
  const hosts = new Map(facts.hosts.map((h) => [h.host_id, h]));
  for (const l of facts.leases) {
    const h = l.cell_host_id ? hosts.get(l.cell_host_id) : null;
    if (l.cell_host_id && l.unexpired && (!h || h.state === "dead" || !h.heartbeating))
      bad("dead_lease", l.session_id, `lease held by ${l.cell_host_id}, which is ${h ? (h.state === "dead" ? "dead" : "not heartbeating") : "unknown"}`);
  }
  for (const c of facts.containers ?? [])
    if (c.ppid !== facts.sandboxdPid) bad("orphan_container", null, `container ${c.machine} (pid ${c.pid}) is not sandboxd's (${facts.sandboxdPid}) but ${c.ppid}'s`);
  for (const l of facts.leftovers ?? []) bad("leftover", null, `${l.what}: ${l.cmd ?? l.line ?? l.pid}`);

  // -- the table ---------------------------------------------------------------
  const faults = {};
  for (const f of facts.faults ?? []) if (!f.healed && !f.skipped) faults[f.kind] = (faults[f.kind] ?? 0) + 1;
  const skipped = {};
  for (const f of facts.faults ?? []) if (f.skipped) skipped[f.kind] = (skipped[f.kind] ?? 0) + 1;
  const statusCount = {};
  for (const cid of acked.values()) {
    const st = cmds.get(cid)?.status ?? "missing";
    statusCount[st] = (statusCount[st] ?? 0) + 1;
  }
  const byKind = {};
  for (const a of anomalies) byKind[a.kind] = (byKind[a.kind] ?? 0) + 1;
  return {
    seed: facts.seed,
    faults, skipped,
    commands: { acknowledged: acked.size, ...statusCount },
    events: facts.events.length,
    sessions: facts.sessions.length,
    stats: facts.stats ?? {},
    takeovers: facts.events.filter((e) => e.kind === "session.lease" && ["acquired", "taken_over"].includes(e.payload?.event) && Number(e.payload?.epoch) > 1).length,
    anomalies, byKind,
  };
}

function firstDiff(a, b) {
  const x = a.split(" ");
  const y = b.split(" ");
  for (let i = 0; i < Math.max(x.length, y.length); i++) if (x[i] !== y[i]) return `replay ${x[i] ?? "(none)"}, inbox ${y[i] ?? "(none)"}`;
  return "";
}

export function printReport(r) {
  const row = (k, v) => console.log(`  ${k.padEnd(40)} ${String(v).padStart(8)}`);
  console.log(`\nchaos run, seed ${r.seed}`);
  console.log("  faults injected");
  const fk = Object.keys(r.faults).sort();
  if (!fk.length) row("  (none)", 0);
  for (const k of fk) row(`  ${k}`, r.faults[k]);
  for (const k of Object.keys(r.skipped).sort()) row(`  ${k} (could not inject)`, r.skipped[k]);
  console.log("  workload");
  row("  sessions", r.sessions);
  row("  commands acknowledged", r.commands.acknowledged);
  for (const k of ["completed", "dead", "cancelled"]) row(`    ${k}`, r.commands[k] ?? 0);
  for (const k of Object.keys(r.commands).filter((k) => !["acknowledged", "completed", "dead", "cancelled"].includes(k))) row(`    ${k}`, r.commands[k]);
  row("  events", r.events);
  row("  leases taken again (epoch > 1)", r.takeovers);
  row("  requests", r.stats.requests ?? 0);
  row("  requests retried", r.stats.retries ?? 0);
  row("  repeated on purpose", r.stats.dupes ?? 0);
  row("  SSE reconnects", r.stats.sseReconnects ?? 0);
  row("  ACP reconnects", r.stats.acpReconnects ?? 0);
  console.log("  anomalies");
  const ak = Object.keys(r.byKind).sort();
  if (!ak.length) row("  (none)", 0);
  for (const k of ak) row(`  ${k}`, r.byKind[k]);
  if (r.anomalies.length) {
    const a = r.anomalies[0];
    console.log(`\nFIRST ANOMALY (seed ${r.seed}): ${a.kind}${a.sid ? ` in session ${a.sid}` : ""}: ${a.detail}`);
    for (const b of r.anomalies.slice(1, 20)) console.log(`  also ${b.kind}${b.sid ? ` ${b.sid}` : ""}: ${b.detail}`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = check(process.argv[2] ?? ".");
  printReport(r);
  process.exit(r.anomalies.length ? 1 : 0);
}
