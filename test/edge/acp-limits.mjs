// Attacks the edge's per-connection ACP session limit over one WebSocket,
// speaking raw JSON-RPC (a hostile client need not use the SDK):
//
//   node acp-limits.mjs --base http://127.0.0.1:PORT --token TOKEN
//                       --limit N --failed K --sessions ID,ID,...
//
// K session/load calls with random ids must fail as "not found" and leave
// nothing on the connection (the edge's nadi_edge_acp_sessions gauge stays
// 0); then N real sessions load; the next load and a session/new must be
// refused with a JSON-RPC error naming the limit; a session already loaded
// loads again.  Prints one "ok NAME" or "not ok NAME: why" line per check.
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import WebSocket from "ws";

const { values: opt } = parseArgs({
  options: {
    base: { type: "string" },
    token: { type: "string" },
    limit: { type: "string" },
    failed: { type: "string" },
    sessions: { type: "string" },
  },
});
const limit = Number(opt.limit);
const sessions = opt.sessions.split(",");

let failures = 0;
function check(name, cond, detail = "") {
  if (cond) console.log(`ok ${name}`);
  else {
    failures++;
    console.log(`not ok ${name}${detail ? ": " + detail : ""}`);
  }
}

async function gauge(name) {
  const text = await (await fetch(`${opt.base}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.split(" ")[1]) : NaN;
}

const ws = new WebSocket(`${opt.base.replace(/^http/, "ws")}/acp`, {
  headers: { Authorization: `Bearer ${opt.token}` },
});
const waiting = new Map();
let nextId = 1;
ws.on("message", (data) => {
  const msg = JSON.parse(data.toString());
  if (msg.id !== undefined && !msg.method && waiting.has(msg.id)) {
    waiting.get(msg.id)(msg);
    waiting.delete(msg.id);
  }
});
function call(method, params, ms = 10000) {
  const id = nextId++;
  ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
  return new Promise((resolve, reject) => {
    waiting.set(id, resolve);
    setTimeout(() => reject(new Error(`${method}: no answer in ${ms} ms`)), ms).unref();
  });
}

try {
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  await call("initialize", { protocolVersion: 1, clientCapabilities: {} });

  const failed = Number(opt.failed);
  let notFound = 0;
  for (let i = 0; i < failed; i++) {
    const r = await call("session/load", { sessionId: randomUUID(), cwd: "/tmp", mcpServers: [] });
    if (r.error?.code === -32002) notFound++;
  }
  check(`${failed} loads of random session ids fail as not found`, notFound === failed, `${notFound} of ${failed}`);
  const held = await gauge("nadi_edge_acp_sessions");
  check("failed loads leave no session on the connection", held === 0, `nadi_edge_acp_sessions ${held}`);

  let loaded = 0;
  for (const sid of sessions.slice(0, limit)) {
    const r = await call("session/load", { sessionId: sid, cwd: "/tmp", mcpServers: [] });
    if (r.result !== undefined) loaded++;
    else console.error(JSON.stringify(r));
  }
  check(`${limit} sessions load on one connection (after the failed loads)`, loaded === limit, `${loaded} of ${limit}`);

  const over = await call("session/load", { sessionId: sessions[limit], cwd: "/tmp", mcpServers: [] });
  check("one session over --max-acp-sessions is refused with a clear error",
    over.error?.code === -32029 && over.error?.data?.code === "acp_session_limit" &&
    over.error?.data?.limit === limit && /Too many sessions/.test(over.error?.message ?? ""),
    JSON.stringify(over));
  const made = await call("session/new", { cwd: "/tmp", mcpServers: [] });
  check("session/new over the limit is refused the same way (and creates nothing)",
    made.error?.data?.code === "acp_session_limit", JSON.stringify(made));
  const again = await call("session/load", { sessionId: sessions[0], cwd: "/tmp", mcpServers: [] });
  check("a session already loaded loads again at the limit", again.result !== undefined, JSON.stringify(again));
  const now = await gauge("nadi_edge_acp_sessions");
  check(`the connection holds ${limit} sessions`, now === limit, `nadi_edge_acp_sessions ${now}`);
} catch (e) {
  check("no exception", false, e?.stack ?? String(e));
}
ws.close();
process.exit(failures ? 1 : 0);
