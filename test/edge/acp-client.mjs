// An ACP client built on the official SDK (@agentclientprotocol/sdk) that
// drives nadi-edge over one transport and checks what comes back:
//
//   node acp-client.mjs --transport stdio|http|ws --base http://127.0.0.1:PORT
//                       --token TOKEN [--bridge path/to/nadi-acp]
//
// stdio runs the nadi-acp bridge as the agent process (ndJsonStream);
// http uses the SDK's experimental HTTP client, ws its WebSocket client,
// both straight at the edge's /acp.  Prints one "ok NAME" or
// "not ok NAME: why" line per check; exits 1 if any check failed.
import { spawn } from "node:child_process";
import { Readable, Writable } from "node:stream";
import { parseArgs } from "node:util";

import * as acp from "@agentclientprotocol/sdk";
import { createHttpStream } from "@agentclientprotocol/sdk/experimental/http-client";
import { createWebSocketStream } from "@agentclientprotocol/sdk/experimental/ws-client";
import WebSocket from "ws";

const { values: opt } = parseArgs({
  options: {
    transport: { type: "string" },
    base: { type: "string" },
    token: { type: "string" },
    bridge: { type: "string" },
  },
});

let failures = 0;
function check(name, cond, detail = "") {
  if (cond) console.log(`ok ${opt.transport} ${name}`);
  else {
    failures++;
    console.log(`not ok ${opt.transport} ${name}${detail ? ": " + detail : ""}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(pred, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await sleep(50);
  }
  return pred();
}
function withTimeout(p, ms, what) {
  return Promise.race([p, sleep(ms).then(() => { throw new Error(`${what}: no answer in ${ms} ms`); })]);
}

const children = [];
function openStream() {
  const headers = { Authorization: `Bearer ${opt.token}` };
  if (opt.transport === "http") return createHttpStream(`${opt.base}/acp`, { headers });
  if (opt.transport === "ws")
    return createWebSocketStream(`${opt.base.replace(/^http/, "ws")}/acp`, { WebSocket, headers });
  const child = spawn(opt.bridge, [], {
    env: { ...process.env, NADI_ACP_URL: `${opt.base}/acp`, NADI_TOKEN: opt.token },
    stdio: ["pipe", "pipe", "inherit"],
  });
  children.push(child);
  return acp.ndJsonStream(Writable.toWeb(child.stdin), Readable.toWeb(child.stdout));
}

// Everything the agent sends, per session.
const updates = new Map();
const seqs = new Map(); // session -> _meta.nadi.seq of each update, in order
const permissionRequests = [];
let decisions = [];

function makeApp() {
  return acp
    .client({ name: "nadi-edge-test" })
    .onNotification(acp.methods.client.session.update, ({ params }) => {
      if (!updates.has(params.sessionId)) updates.set(params.sessionId, []);
      updates.get(params.sessionId).push(params.update);
      if (!seqs.has(params.sessionId)) seqs.set(params.sessionId, []);
      seqs.get(params.sessionId).push(params._meta?.nadi?.seq);
    })
    .onRequest(acp.methods.client.session.requestPermission, async ({ params }) => {
      permissionRequests.push(params);
      const d = decisions.shift() ?? "cancelled";
      if (d === "cancelled") return { outcome: { outcome: "cancelled" } };
      return { outcome: { outcome: "selected", optionId: d } };
    });
}

const of = (sid, kind) => (updates.get(sid) ?? []).filter((u) => u.sessionUpdate === kind);
const texts = (sid, kind) => of(sid, kind).map((u) => u.content?.text ?? "");

async function prompt(agent, sessionId, text, ms = 30000) {
  return withTimeout(
    agent.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: "text", text }] }),
    ms, `prompt ${text}`);
}

async function firstConnection() {
  let sessionId;
  await makeApp().connectWith(openStream(), async (agent) => {
    const init = await withTimeout(agent.request(acp.methods.agent.initialize, {
      protocolVersion: 1,
      clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
    }), 10000, "initialize");
    check("initialize", init.protocolVersion === 1 && init.agentCapabilities?.loadSession === true,
      JSON.stringify(init));

    const auth = await agent.request(acp.methods.agent.authenticate, { methodId: "bearer" }).then(
      () => true, (e) => e);
    check("authenticate with the connection's token", auth === true, String(auth));

    const s = await withTimeout(agent.request(acp.methods.agent.session.new, {
      cwd: "/tmp", mcpServers: [], _meta: { nadi: { policy: { require_approval: ["exec"] } } },
    }), 10000, "session/new");
    sessionId = s.sessionId;
    check("session/new returns a session id", /^[0-9a-f-]{36}$/.test(sessionId ?? ""), JSON.stringify(s));

    const r1 = await prompt(agent, sessionId, "hello");
    check("prompt hello ends the turn", r1.stopReason === "end_turn", JSON.stringify(r1));
    check("agent_message_chunk carries the reply", texts(sessionId, "agent_message_chunk").includes("You said: hello"),
      JSON.stringify(texts(sessionId, "agent_message_chunk")));

    // a tool call with no sandbox host: the call and its failure arrive
    const r2 = await prompt(agent, sessionId, '/tool uppercase {"text": "nadi"}');
    const calls = of(sessionId, "tool_call").filter((u) => u.title === "uppercase");
    const failed = of(sessionId, "tool_call_update").filter((u) => calls.some((c) => c.toolCallId === u.toolCallId) && u.status === "failed");
    check("tool call reported", calls.length === 1 && calls[0].status === "pending", JSON.stringify(calls));
    check("tool call failure reported", failed.length >= 1, JSON.stringify(of(sessionId, "tool_call_update")));
    check("failed turn ends with end_turn and says why", r2.stopReason === "end_turn" && r2._meta?.nadi?.status === "dead",
      JSON.stringify(r2));

    // permission: deny
    decisions = ["reject"];
    const r3 = await prompt(agent, sessionId, '/tool exec {"argv": ["ls"]}');
    const asked = permissionRequests.at(-1);
    check("permission requested for exec", asked?.toolCall?.title === "exec" && asked?.sessionId === sessionId &&
      asked?.options?.some((o) => o.kind === "allow_once") && asked?.options?.some((o) => o.kind === "reject_once"),
    JSON.stringify(asked));
    const denied = of(sessionId, "tool_call_update").find((u) => u.toolCallId === asked?.toolCall?.toolCallId && u.status === "failed");
    check("denied tool call marked failed", denied && /Permission denied/.test(JSON.stringify(denied.content)), JSON.stringify(denied));
    check("denied turn ends with the model's answer", r3.stopReason === "end_turn" &&
      texts(sessionId, "agent_message_chunk").includes("exec was not run: permission denied."), JSON.stringify(r3));

    // permission: approve (the call then goes ahead and, with no sandbox host, fails)
    decisions = ["allow"];
    const before = permissionRequests.length;
    const r4 = await prompt(agent, sessionId, '/tool exec {"argv": ["true"]}');
    const asked2 = permissionRequests.at(-1);
    const id2 = asked2?.toolCall?.toolCallId;
    const seq = of(sessionId, "tool_call_update").filter((u) => u.toolCallId === id2).map((u) => u.status);
    check("approved: asked once more", permissionRequests.length === before + 1, String(permissionRequests.length - before));
    // with no sandbox host the cell cannot learn the host's tools: the call
    // fails as sandbox_unavailable before any tool.call (so no in_progress)
    const failedUpdate = of(sessionId, "tool_call_update").find((u) => u.toolCallId === id2 && u.status === "failed");
    check("approved tool call went ahead and failed: no sandbox host",
      seq.includes("failed") && /sandbox/i.test(JSON.stringify(failedUpdate?.content ?? failedUpdate)),
      JSON.stringify(seq) + " " + JSON.stringify(failedUpdate));
    check("approved turn ended", r4.stopReason === "end_turn", JSON.stringify(r4));

    // cancel a slow turn
    const p5 = prompt(agent, sessionId, "/sleep 3000 x");
    await sleep(500);
    await agent.notify(acp.methods.agent.session.cancel, { sessionId });
    const r5 = await p5;
    check("session/cancel ends the turn as cancelled", r5.stopReason === "cancelled", JSON.stringify(r5));

    // an unknown session is refused
    const bad = await agent.request(acp.methods.agent.session.prompt, {
      sessionId: "00000000-0000-0000-0000-000000000000", prompt: [{ type: "text", text: "x" }],
    }).then(() => null, (e) => e);
    check("prompt on an unknown session is an error", bad && bad.code === -32002, String(bad?.message));
  });
  return sessionId;
}

async function loadConnection(sessionId) {
  const before = (updates.get(sessionId) ?? []).length;
  updates.set(sessionId, []);
  seqs.set(sessionId, []);
  await makeApp().connectWith(openStream(), async (agent) => {
    await withTimeout(agent.request(acp.methods.agent.initialize, { protocolVersion: 1, clientCapabilities: {} }),
      10000, "initialize");
    let atAnswer = -1;
    const r = await withTimeout(agent.request(acp.methods.agent.session.load, {
      sessionId, cwd: "/tmp", mcpServers: [],
    }).then((v) => { atAnswer = (updates.get(sessionId) ?? []).length; return v; }), 15000, "session/load");
    check("session/load answers", r !== undefined && r !== null, JSON.stringify(r));
    await waitFor(() => texts(sessionId, "user_message_chunk").length >= 5 &&
      texts(sessionId, "agent_message_chunk").includes("exec was not run: permission denied."), 5000);
    // ACP: the whole history as session/update notifications, then the answer
    const replayed = (updates.get(sessionId) ?? []).length;
    check(`session/load answers after the whole replay (${atAnswer} of ${replayed} updates before the answer)`,
      atAnswer > 0 && atAnswer === replayed, `${atAnswer} before, ${replayed} in all`);
    const users = texts(sessionId, "user_message_chunk");
    check("replay: the user's messages", users[0] === "hello" && users.length === 5, JSON.stringify(users));
    check("replay: the agent's messages", texts(sessionId, "agent_message_chunk").includes("You said: hello"),
      JSON.stringify(texts(sessionId, "agent_message_chunk")));
    check("replay: the tool calls", of(sessionId, "tool_call").length === 3,
      JSON.stringify(of(sessionId, "tool_call").map((u) => u.title)));
    check("replay sends what the first connection saw, and the user turns",
      (updates.get(sessionId) ?? []).length >= before, `${(updates.get(sessionId) ?? []).length} < ${before}`);

    // every update names the event it comes from, in log order
    const all = seqs.get(sessionId) ?? [];
    check("every session/update carries _meta.nadi.seq, never going back",
      all.length === replayed && all.every((q, i) => Number.isInteger(q) && q > 0 && (i === 0 || q >= all[i - 1])),
      JSON.stringify(all));
    await resumeConnection(sessionId, all);

    // the loaded session takes new prompts
    const again = await prompt(agent, sessionId, "again");
    check("prompt after session/load", again.stopReason === "end_turn" &&
      texts(sessionId, "agent_message_chunk").includes("You said: again"), JSON.stringify(again));
  });
}

// A client that resumes: session/load with _meta.nadi.after = N gets the
// updates of the events after N only, the same as a full load sends.
async function resumeConnection(sessionId, full) {
  const mid = full[Math.floor(full.length / 2)];
  const saved = updates.get(sessionId);
  const savedSeqs = seqs.get(sessionId);
  updates.set(sessionId, []);
  seqs.set(sessionId, []);
  await makeApp().connectWith(openStream(), async (agent) => {
    await withTimeout(agent.request(acp.methods.agent.initialize, { protocolVersion: 1, clientCapabilities: {} }),
      10000, "initialize");
    for (const after of [-1, "7", 1.5]) {
      const e = await agent.request(acp.methods.agent.session.load, {
        sessionId, cwd: "/tmp", mcpServers: [], _meta: { nadi: { after } },
      }).then(() => null, (err) => err);
      check(`session/load refuses _meta.nadi.after ${JSON.stringify(after)}`, e && e.code === -32602, String(e?.message));
    }
    const e2 = await agent.request(acp.methods.agent.session.load, {
      sessionId, cwd: "/tmp", mcpServers: [], _meta: { nadi: 5 },
    }).then(() => null, (err) => err);
    check("session/load refuses a _meta.nadi that is not an object", e2 && e2.code === -32602, String(e2?.message));
    // an after beyond the log (a cursor no client could have seen): the load
    // is answered and replays nothing
    await withTimeout(agent.request(acp.methods.agent.session.load, {
      sessionId, cwd: "/tmp", mcpServers: [], _meta: { nadi: { after: Number.MAX_SAFE_INTEGER } },
    }), 15000, "session/load after the end");
    check("session/load after a seq beyond the log is answered and replays nothing",
      (seqs.get(sessionId) ?? []).length === 0, JSON.stringify(seqs.get(sessionId)));
    seqs.set(sessionId, []);
    updates.set(sessionId, []);
    await withTimeout(agent.request(acp.methods.agent.session.load, {
      sessionId, cwd: "/tmp", mcpServers: [], _meta: { nadi: { after: mid } },
    }), 15000, "session/load after");
    const got = seqs.get(sessionId) ?? [];
    const want = full.filter((q) => q > mid);
    check(`session/load after seq ${mid}: the updates of the events after it, once (${got.length} of ${full.length})`,
      JSON.stringify(got) === JSON.stringify(want), `${JSON.stringify(got)} != ${JSON.stringify(want)}`);
  });
  updates.set(sessionId, saved);
  seqs.set(sessionId, savedSeqs);
}

// session/fork (unstable): a new session from the source at its latest
// completed point, or at _meta.nadi.at_seq; the answer says in _meta.nadi
// which seq was used.  The fork takes prompts of its own.
const FORK = "session/fork"; // unstable: the SDK's method table may not name it
async function forkConnection(sessionId) {
  let forked = null;
  await makeApp().connectWith(openStream(), async (agent) => {
    const init = await withTimeout(agent.request(acp.methods.agent.initialize, { protocolVersion: 1, clientCapabilities: {} }),
      10000, "initialize");
    check("initialize advertises sessionCapabilities.fork",
      JSON.stringify(init.agentCapabilities?.sessionCapabilities?.fork) === "{}", JSON.stringify(init.agentCapabilities));
    const f = await withTimeout(agent.request(FORK, {
      sessionId, cwd: "/tmp", mcpServers: [],
    }), 15000, "session/fork");
    const n = f?._meta?.nadi;
    check("session/fork: a new session, forked from the source at its latest point",
      /^[0-9a-f-]{36}$/.test(f?.sessionId ?? "") && f.sessionId !== sessionId &&
      n?.parent_session_id === sessionId && Number.isInteger(n?.seq) && n.seq > 1 && n.seq <= n.at_seq,
    JSON.stringify(f));
    const f1 = await withTimeout(agent.request(FORK, {
      sessionId, cwd: "/tmp", _meta: { nadi: { at_seq: 1 } },
    }), 15000, "session/fork at_seq 1");
    check("session/fork at _meta.nadi.at_seq 1", f1?._meta?.nadi?.seq === 1 && f1?._meta?.nadi?.at_seq === 1,
      JSON.stringify(f1));
    const r = await prompt(agent, f.sessionId, "on the branch");
    check("the fork takes prompts of its own", r.stopReason === "end_turn" &&
      texts(f.sessionId, "agent_message_chunk").includes("You said: on the branch"), JSON.stringify(r));
    check("the source sees nothing of the fork's prompts",
      !texts(sessionId, "agent_message_chunk").includes("You said: on the branch"));
    for (const at of [0, -3, "7", 1.5, { x: 1 }]) {
      const e = await agent.request(FORK, {
        sessionId, cwd: "/tmp", _meta: { nadi: { at_seq: at } },
      }).then(() => null, (err) => err);
      check(`session/fork refuses _meta.nadi.at_seq ${JSON.stringify(at)}`, e && e.code === -32602, String(e?.message));
    }
    const big = await agent.request(FORK, {
      sessionId, cwd: "/tmp", _meta: { nadi: { at_seq: 1000000 } },
    }).then(() => null, (err) => err);
    check("session/fork refuses an at_seq beyond the log", big && big.code === -32602 &&
      big.data?.code === "invalid_parameter", JSON.stringify(big));
    const unknown = await agent.request(FORK, {
      sessionId: "00000000-0000-0000-0000-000000000000", cwd: "/tmp",
    }).then(() => null, (err) => err);
    check("session/fork of an unknown session is an error", unknown && unknown.code === -32002, String(unknown?.message));
    forked = f.sessionId;
  });
  if (!forked) return;
  // session/load of the fork replays the conversation it started with, then its own
  updates.set(forked, []);
  await makeApp().connectWith(openStream(), async (agent) => {
    await withTimeout(agent.request(acp.methods.agent.initialize, { protocolVersion: 1, clientCapabilities: {} }),
      10000, "initialize");
    await withTimeout(agent.request(acp.methods.agent.session.load, { sessionId: forked, cwd: "/tmp", mcpServers: [] }),
      15000, "session/load of the fork");
    const users = texts(forked, "user_message_chunk");
    check("session/load of a fork: the source's messages, then the fork's own",
      users[0] === "hello" && users.at(-1) === "on the branch" &&
      texts(forked, "agent_message_chunk").includes("You said: hello"), JSON.stringify(users));
  });
}

try {
  const sid = await firstConnection();
  if (sid) await loadConnection(sid);
  if (sid) await forkConnection(sid);
} catch (e) {
  check("no exception", false, e?.stack ?? String(e));
}
for (const c of children) c.kill();
process.exit(failures ? 1 : 0);
