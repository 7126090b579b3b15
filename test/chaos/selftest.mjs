#!/usr/bin/env node
// The checker can fail: a clean history passes, and each history broken on
// purpose (a lost command, a duplicate completion, a stale epoch, a gap, a
// duplicate or missing event at a client, a tool that ran without or
// against a decision, ...) is caught as the anomaly it is.  No stack needed.
//
//   node test/chaos/selftest.mjs        TAP-like lines; exit 1 on any failure
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { check } from "./check.mjs";

const S = "00000000-0000-7000-8000-000000000001";

// A session that required approval for exec: a message, an exec the model
// called approved, another denied; a takeover in the middle (epoch 1 -> 2).
function clean() {
  const ev = (seq, kind, command_id = null, epoch = null, payload = null) =>
    ({ session_id: S, seq, kind, command_id, epoch, payload, name: kind.startsWith("tool.") ? "exec" : null });
  const events = [
    ev(1, "session.created"),
    ev(2, "session.lease", null, 1, { event: "acquired", epoch: 1, cell_host_id: "a" }),
    ev(3, "command.received", 10),
    ev(4, "command.started", 10, 1),
    ev(5, "model.reply", 10, 1),
    ev(6, "command.completed", 10, 1),
    ev(7, "command.received", 11),
    ev(8, "command.started", 11, 1),
    ev(9, "permission.requested", 11, 1),
    ev(10, "command.received", 12),
    ev(11, "permission.resolved", 11, null, { decision: "approved" }),
    ev(12, "session.lease", null, 2, { event: "taken_over", epoch: 2, cell_host_id: "b" }),
    ev(13, "command.started", 11, 2),
    ev(14, "tool.call", 11, 2),
    ev(15, "tool.result", 11, 2),
    ev(16, "command.completed", 11, 2),
    ev(17, "command.received", 13),
    ev(18, "command.started", 13, 2),
    ev(19, "permission.requested", 13, 2),
    ev(20, "command.received", 14),
    ev(21, "permission.resolved", 13, null, { decision: "denied" }),
    ev(22, "command.dead", 13, 2),
  ];
  const cmd = (command_id, type, status, key, tool = null) => ({ session_id: S, command_id, type, status, idempotency_key: key, attempts: 1, tool, of: null });
  const commands = [
    cmd(10, "message", "completed", "k1"),
    cmd(11, "message", "completed", "k2"),
    cmd(12, "approve", "completed", "k2-approve"),
    cmd(13, "message", "dead", "k3"),
    cmd(14, "deny", "completed", "k3-deny"),
  ];
  const facts = {
    seed: 1,
    converged: true,
    sessions: [{ session_id: S, tenant_id: "t", state: "active", last_seq: 22, policy: { require_approval: ["exec"] }, cell_host_id: "b", crash_count: 0 }],
    commands, events,
    leases: [{ session_id: S, cell_host_id: "b", epoch: 2, unexpired: true }],
    hosts: [{ host_id: "a", state: "dead", heartbeating: false }, { host_id: "b", state: "live", heartbeating: true }],
    replays: [{ session_id: S, replay: { last_seq: 22, epoch: 2, commands: commands.map(({ command_id, type, status }) => ({ command_id, type, status })) } }],
    checkpoints: [{ session_id: S, seq: 12, equal: true }],
    acpRef: { [S]: [5, 9, 13, 14, 15, 19, 21] },
    sandboxdPid: 100,
    containers: [{ pid: 200, ppid: 100, machine: "sbx-1" }],
    sessionsCreated: [{ id: S, approval: true, acp: true }],
    stats: {}, faults: [], leftovers: [],
  };
  const reqs = [
    { op: "enqueue", sid: S, key: "k1", status: 202, cid: 10 },
    { op: "enqueue", sid: S, key: "k2", status: 0, err: "ECONNRESET", cid: null },
    { op: "enqueue", sid: S, key: "k2", status: 202, cid: 11, replayed: true },
    { op: "approve", sid: S, key: "k2-approve", status: 202, cid: 12, of: 11 },
    { op: "enqueue", sid: S, key: "k3", status: 202, cid: 13 },
    { op: "dup", sid: S, key: "k3", status: 202, cid: 13, replayed: true },
    { op: "deny", sid: S, key: "k3-deny", status: 202, cid: 14, of: 13 },
  ];
  const byKind = new Map(events.map((e) => [e.seq, e]));
  const sse = [];
  for (let seq = 1; seq <= 22; seq++) {
    const e = byKind.get(seq);
    sse.push({ sid: S, conn: seq <= 9 ? 1 : 2, id: seq, seq, kind: e.kind, cmd: e.command_id });
  }
  const acp = [5, 9, 13, 14, 15, 19, 21].map((seq) => ({ sid: S, conn: seq <= 9 ? 1 : 2, seq, update: "x" }));
  return { facts, reqs, sse, acp };
}

// name, expected anomaly kind, how the history is broken
const breaks = [
  ["an acknowledged command is missing", "lost", (h) => { h.facts.commands = h.facts.commands.filter((c) => c.command_id !== 10); h.facts.replays[0].replay.commands.shift(); }],
  ["an acknowledged command never finished", "not_final", (h) => { h.facts.commands[0].status = "queued"; h.facts.replays[0].replay.commands[0].status = "queued"; }],
  ["a command completed twice", "twice", (h) => { h.facts.events.push({ ...h.facts.events[5], seq: 23 }); }],
  ["a command both completed and dead", "twice", (h) => { h.facts.events.push({ ...h.facts.events[5], seq: 23, kind: "command.dead" }); }],
  ["a retried key answered another command", "idempotency", (h) => { h.reqs.push({ op: "dup", sid: S, key: "k1", status: 202, cid: 99 }); }],
  ["one key made two commands", "idempotency", (h) => { h.facts.commands.push({ ...h.facts.commands[0], command_id: 15 }); }],
  ["a refused request", "unexpected_answer", (h) => { h.reqs.push({ op: "enqueue", sid: S, key: "k9", status: 404, code: "session_not_found" }); }],
  ["commands out of order", "order", (h) => { h.facts.events[3].command_id = 11; h.facts.events[7].command_id = 10; }],
  ["two commands at once", "overlap", (h) => { h.facts.events[5].kind = "cell.note"; }],
  ["a command ran while another waited for a decision", "overlap", (h) => { h.facts.events[9] = { ...h.facts.events[9], kind: "command.started", command_id: 10 }; }],
  ["a write while no lease was held", "stale_epoch", (h) => {
    // the lease is released at seq 11, and a cell writes before the next one is taken
    h.facts.events.splice(11, 0, { session_id: S, seq: 0, kind: "cell.note", command_id: null, epoch: 1, payload: null, name: null });
    h.facts.events[10] = { ...h.facts.events[10], kind: "session.lease", command_id: null, epoch: null, payload: { event: "released", epoch: 1 } };
  }],
  ["the log approved what the client denied", "approval", (h) => { h.reqs.push({ op: "deny", sid: S, key: "k2-deny", status: 202, cid: 15, of: 11 }); h.reqs = h.reqs.filter((r) => r.op !== "approve"); }],
  ["a status that is not the log's", "outcome", (h) => { h.facts.commands[0].status = "cancelled"; h.facts.replays[0].replay.commands[0].status = "cancelled"; }],
  ["an event after a command ended", "outcome", (h) => { h.facts.events[6] = { ...h.facts.events[6], kind: "model.reply", command_id: 10, epoch: 1 }; }],
  ["a cancel no client asked for", "outcome", (h) => { h.facts.events[21].kind = "command.cancelled"; h.facts.commands[3].status = "cancelled"; h.facts.replays[0].replay.commands[3].status = "cancelled"; h.reqs = h.reqs.filter((r) => r.op !== "deny"); }],
  ["a session that failed", "stuck", (h) => { h.facts.sessions[0].state = "failed"; }],
  ["a gap in the log", "seq_gap", (h) => { h.facts.events.splice(4, 1); }],
  ["a write of a stale epoch", "stale_epoch", (h) => { h.facts.events[14].epoch = 1; }],
  ["the replay disagrees with the inbox", "replay", (h) => { h.facts.replays[0].replay.commands[1].status = "running"; }],
  ["the replay's epoch is not the lease's", "replay", (h) => { h.facts.leases[0].epoch = 3; }],
  ["a checkpoint differs from the replay", "checkpoint", (h) => { h.facts.checkpoints[0].equal = false; }],
  ["an SSE client got an event twice", "sse_duplicate", (h) => { h.sse.splice(10, 0, { ...h.sse[9], conn: 2 }); }],
  ["an SSE client missed an event", "sse_gap", (h) => { h.sse.splice(12, 1); }],
  ["an SSE client stopped early", "sse_gap", (h) => { h.sse.pop(); }],
  ["an SSE client got events out of order", "sse_order", (h) => { [h.sse[3], h.sse[4]] = [h.sse[4], h.sse[3]]; }],
  ["an SSE client got the wrong event", "sse_content", (h) => { h.sse[4].kind = "tool.result"; }],
  ["an ACP client got an update twice across a reconnect", "acp_duplicate", (h) => { h.acp.splice(2, 0, { ...h.acp[1], conn: 2 }); }],
  ["an ACP client missed an update", "acp_missing", (h) => { h.acp.splice(3, 1); }],
  ["an ACP update without a seq", "acp_order", (h) => { h.acp[2].seq = null; }],
  ["an approval-gated tool ran without approval", "approval", (h) => { h.facts.events[10].payload.decision = "denied"; }],
  ["a denied tool ran", "approval", (h) => { h.facts.events.splice(21, 0, { ...h.facts.events[13], seq: 22, command_id: 13 }); h.facts.events[22].seq = 23; h.facts.sessions[0].last_seq = 23; h.facts.replays[0].replay.last_seq = 23; h.sse.push({ sid: S, conn: 2, id: 23, seq: 23, kind: "command.dead", cmd: 13 }); h.sse[21] = { ...h.sse[21], kind: "tool.call", cmd: 13 }; }],
  ["the run did not converge", "stuck", (h) => { h.facts.converged = false; }],
  ["a session stuck in transit", "stuck", (h) => { h.facts.sessions[0].state = "placed"; }],
  ["a lease held by a dead host", "dead_lease", (h) => { h.facts.leases[0].cell_host_id = "a"; }],
  ["a container without its sandboxd", "orphan_container", (h) => { h.facts.containers[0].ppid = 1; }],
  ["a process left behind", "leftover", (h) => { h.facts.leftovers.push({ what: "process", pid: 1, cmd: "x" }); }],
];

let pass = 0;
let fail = 0;
function run(name, h, want) {
  const dir = mkdtempSync("/tmp/nadi-chaos-selftest.");
  try {
    writeFileSync(join(dir, "facts.json"), JSON.stringify(h.facts));
    writeFileSync(join(dir, "requests.jsonl"), h.reqs.map((r) => JSON.stringify(r)).join("\n") + "\n");
    writeFileSync(join(dir, "sse.jsonl"), h.sse.map((r) => JSON.stringify(r)).join("\n") + "\n");
    writeFileSync(join(dir, "acp.jsonl"), h.acp.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const r = check(dir);
    const kinds = [...new Set(r.anomalies.map((a) => a.kind))];
    const ok = want === null ? kinds.length === 0 : kinds.includes(want);
    if (ok) pass++;
    else fail++;
    console.log(`${ok ? "ok" : "not ok"} - ${name}: ${want ?? "no anomaly"}${ok ? "" : ` (got: ${kinds.join(", ") || "none"}; ${r.anomalies.map((a) => a.detail).join(" | ")})`}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

run("a clean history", clean(), null);
for (const [name, want, breakIt] of breaks) {
  const h = clean();
  breakIt(h);
  run(name, h, want);
}
console.log(`${pass} passed, ${fail} failed`);
process.exit(fail ? 1 : 0);
