// The workload of a chaos run, through the public HTTP API of the edges:
// per session a driver that sends messages and tool calls (exec calls in
// sessions that require approval for them, approved or denied), cancels
// some, retries every request that got no answer with the same
// Idempotency-Key and repeats some on purpose; an SSE follower per session
// and an ACP follower (WebSocket, session/load with _meta.nadi.after) for
// every other one, each resuming after every disconnect.  Everything a
// client sent and received goes to the run's logs with its time.
import WebSocket from "ws";

import { jsonl, rng, sleep } from "./lib.mjs";

const FINAL = new Set(["completed", "dead", "cancelled"]);

export class Workload {
  constructor({ dir, seed, edges, token, sessions }) {
    this.edges = edges; // base URLs
    this.token = token;
    this.nsessions = sessions;
    this.seed = seed;
    this.req = jsonl(`${dir}/requests.jsonl`);
    this.sse = jsonl(`${dir}/sse.jsonl`);
    this.acp = jsonl(`${dir}/acp.jsonl`);
    this.sessions = []; // {id, approval, acp}
    this.stopping = false; // no new commands
    this.hardStop = false; // give up on everything
    this.followersDone = false;
    this.finalSeq = new Map(); // session -> last seq, once known
    this.stats = { requests: 0, retries: 0, dupes: 0, sseReconnects: 0, acpReconnects: 0 };
    this.edgeTurn = 0;
  }

  edge() {
    return this.edges[this.edgeTurn++ % this.edges.length];
  }

  // One request, tried until it has an answer that is not a failure of the
  // platform (network error, timeout, 5xx, 429): same body, same key.
  async call(op, sid, method, path, body, key, extra = {}) {
    for (let attempt = 0; ; attempt++) {
      if (this.hardStop) return { status: 0, body: null };
      const edge = this.edge();
      const headers = { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" };
      if (key) headers["Idempotency-Key"] = key;
      let status = 0;
      let json = null;
      let err = null;
      let replayed = false;
      try {
        const r = await fetch(edge + path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(10000),
        });
        status = r.status;
        replayed = r.headers.get("idempotency-replayed") === "true";
        const text = await r.text();
        try {
          json = JSON.parse(text);
        } catch {
          json = null;
        }
      } catch (e) {
        err = e.cause?.code ?? e.name ?? String(e);
      }
      this.stats.requests++;
      this.req.write({
        op, sid, key, edge, attempt, status, err, replayed,
        cid: json?.id ?? null,
        code: status >= 400 ? json?.code ?? null : null,
        cstatus: json?.status ?? null,
        ...extra,
      });
      if (status !== 0 && status < 500 && status !== 429) return { status, body: json, replayed };
      this.stats.retries++;
      await sleep(Math.min(2000, 100 * 2 ** Math.min(attempt, 4)));
    }
  }

  async createSessions() {
    for (let i = 0; i < this.nsessions; i++) {
      const approval = i % 3 === 1; // a third require approval for exec
      const body = { metadata: { chaos: String(i) } };
      if (approval) body.policy = { require_approval: ["exec"] };
      // creating a session takes no key: a lost answer may leave one
      // behind, which only the convergence check sees
      const res = await this.call("create", null, "POST", "/v1/sessions", body, null);
      if (res.status !== 201) throw new Error(`could not create a session: ${res.status}`);
      // a random source per consumer, so that timing does not change what
      // the driver chooses (the followers' disconnects draw from their own)
      const base = this.seed + 7919 * (i + 1);
      this.sessions.push({ id: res.body.id, approval, acp: i % 2 === 0, rng: rng(base), sseRng: rng(base ^ 0x55e), acpRng: rng(base ^ 0xac9) });
    }
  }

  start() {
    this.drivers = [];
    this.sseTasks = [];
    this.acpTasks = [];
    for (const s of this.sessions) {
      this.drivers.push(this.drive(s));
      this.sseTasks.push(this.followSse(s));
      if (s.acp) this.acpTasks.push(this.followAcp(s));
    }
  }

  // -- the drivers ------------------------------------------------------

  commandBody(s, n) {
    const r = s.rng;
    const kind = r.weighted([["message", 4], ["uppercase", 2], ["exec", 3], ["exec-slow", 1]]);
    const exec = (script) => ({ name: "exec", args: { argv: ["sh", "-c", script], timeout: 20 } });
    // in a session that requires approval for exec, the model asks for it
    // (a direct tool command is the client's own decision: never held)
    const tool = (call) =>
      s.approval && call.name === "exec"
        ? { type: "message", payload: { text: `/tool exec ${JSON.stringify(call.args)}` } }
        : { type: "tool", payload: call };
    switch (kind) {
      case "message":
        return { type: "message", payload: { text: `m-${n}` } };
      case "uppercase":
        return tool({ name: "uppercase", args: { text: `u-${n}` } });
      case "exec":
        return tool(exec(`echo e-${n}`));
      default:
        return tool(exec(`sleep 1; echo s-${n}`));
    }
  }

  async drive(s) {
    const r = s.rng;
    let n = 0;
    const short = s.id.slice(-8);
    while (!this.stopping) {
      const burst = [];
      const size = r.int(1, 3);
      for (let i = 0; i < size && !this.stopping; i++) {
        const key = `${short}-${++n}`;
        const body = this.commandBody(s, n);
        const res = await this.call("enqueue", s.id, "POST", `/v1/sessions/${s.id}/commands`, body, key, {
          ctype: body.type, tool: body.payload.name ?? null,
        });
        // a session that is no longer live takes nothing more (the checker
        // reports the answer); its driver stops, as a client would
        if (res.status === 409 && res.body?.code === "session_not_live") return;
        if (res.status !== 202) continue;
        const cmd = { id: res.body.id, key, body };
        burst.push(cmd);
        if (r.chance(0.15)) {
          // the same request again, on purpose: it must name the same command
          this.stats.dupes++;
          await this.call("dup", s.id, "POST", `/v1/sessions/${s.id}/commands`, body, key, { of: cmd.id });
        }
        if (r.chance(0.1)) {
          await this.call("cancel", s.id, "POST", `/v1/sessions/${s.id}/commands/${cmd.id}/cancel`, {}, null, {
            of: cmd.id,
          });
        }
      }
      await this.settle(s, burst);
      await sleep(r.int(0, 400));
    }
  }

  // Wait until every command of the burst is final, answering permission
  // requests on the way (approved or denied by the session's random source).
  async settle(s, cmds) {
    const open = new Map(cmds.map((c) => [c.id, c]));
    while (open.size > 0 && !this.hardStop) {
      for (const c of [...open.values()]) {
        const res = await this.call("get", s.id, "GET", `/v1/sessions/${s.id}/commands/${c.id}`, undefined, null);
        if (res.status !== 200) continue;
        const st = res.body.status;
        if (FINAL.has(st)) open.delete(c.id);
        else if (st === "waiting" && !c.decided) {
          const decision = s.rng.chance(0.6) ? "approve" : "deny";
          const d = await this.call(decision, s.id, "POST", `/v1/sessions/${s.id}/commands/${c.id}/${decision}`,
            { reason: "chaos" }, `${c.key}-${decision}`, { of: c.id });
          if (d.status === 202 || d.status === 409) c.decided = decision;
        }
      }
      if (open.size > 0) await sleep(200);
    }
  }

  // -- the followers ----------------------------------------------------

  done(s, last) {
    return this.followersDone || (this.finalSeq.has(s.id) && last >= this.finalSeq.get(s.id));
  }

  async followSse(s) {
    let last = 0;
    let conn = 0;
    while (!this.done(s, last)) {
      conn++;
      const edge = this.edge();
      const ac = new AbortController();
      // sometimes the client goes away by itself
      const cut = s.sseRng.chance(0.3) ? setTimeout(() => ac.abort(), s.sseRng.int(500, 5000)) : null;
      const stopper = setInterval(() => { if (this.done(s, last)) ac.abort(); }, 200);
      let opened = false;
      try {
        const headers = { Authorization: `Bearer ${this.token}`, Accept: "text/event-stream" };
        if (last > 0) headers["Last-Event-ID"] = String(last);
        const r = await fetch(`${edge}/v1/sessions/${s.id}/events`, { headers, signal: ac.signal });
        this.sse.write({ sid: s.id, conn, open: r.status, after: last, edge });
        if (r.status === 200) {
          opened = true;
          const dec = new TextDecoder();
          let buf = "";
          let id = null;
          let data = null;
          for await (const chunk of r.body) {
            buf += dec.decode(chunk, { stream: true });
            let nl;
            while ((nl = buf.indexOf("\n")) >= 0) {
              const line = buf.slice(0, nl).replace(/\r$/, "");
              buf = buf.slice(nl + 1);
              if (line === "") {
                if (data !== null) {
                  const ev = JSON.parse(data);
                  this.sse.write({ sid: s.id, conn, id: Number(id), seq: ev.seq, kind: ev.kind, cmd: ev.command_id ?? null });
                  last = Number(id);
                }
                id = null;
                data = null;
              } else if (line.startsWith("id:")) id = line.slice(3).trim();
              else if (line.startsWith("data:")) data = (data === null ? "" : data + "\n") + line.slice(5).trimStart();
            }
          }
        }
      } catch {
        // aborted, or the edge went away
      } finally {
        clearTimeout(cut);
        clearInterval(stopper);
      }
      if (!this.done(s, last)) {
        // a stream that was open and ended: the client resumes (failed
        // attempts to connect while an edge is down are not counted)
        if (opened) this.stats.sseReconnects++;
        await sleep(200);
      }
    }
    this.sse.write({ sid: s.id, conn, closed: true, last });
  }

  followAcp(s) {
    return new Promise((resolve) => {
      let last = 0;
      let conn = 0;
      const connect = () => {
        if (this.done(s, last) && this.followersDone) {
          this.acp.write({ sid: s.id, conn, closed: true, last });
          resolve();
          return;
        }
        conn++;
        const myConn = conn;
        let loaded = false;
        const ws = this.acpLoad(this.edge(), s.id, last, {
          onLoad: (error) => {
            loaded = !error;
            this.acp.write({ sid: s.id, conn: myConn, loaded, after: last, error: error?.message ?? null });
          },
          onUpdate: (m) => {
            const seq = m.params?._meta?.nadi?.seq;
            this.acp.write({ sid: s.id, conn: myConn, seq: seq ?? null, update: m.params?.update?.sessionUpdate ?? null });
            if (typeof seq === "number" && seq > last) last = seq;
          },
        });
        const cut = s.acpRng.chance(0.3) ? setTimeout(() => ws.terminate(), s.acpRng.int(1000, 6000)) : null;
        const stopper = setInterval(() => { if (this.followersDone) ws.close(); }, 200);
        const again = () => {
          clearTimeout(cut);
          clearInterval(stopper);
          if (!this.followersDone && loaded) this.stats.acpReconnects++;
          setTimeout(connect, this.followersDone ? 0 : 300);
        };
        ws.on("close", again);
      };
      connect();
    });
  }

  // What a client that never lost its connection gets: a fresh
  // session/load from the start, its updates' seqs until the answer.
  acpReference(s) {
    return new Promise((resolve) => {
      const seqs = [];
      let ok = false;
      const ws = this.acpLoad(this.edges[0], s.id, null, {
        onLoad: (error) => {
          ok = !error;
          ws.close();
        },
        onUpdate: (m) => seqs.push(m.params?._meta?.nadi?.seq ?? null),
      });
      const timer = setTimeout(() => ws.terminate(), 30000);
      ws.on("close", () => {
        clearTimeout(timer);
        resolve(ok ? seqs : null);
      });
    });
  }

  // An ACP connection over WebSocket that initializes and loads session sid
  // (after: resume after that seq; null: the whole log, no _meta).  Calls
  // onUpdate with each session/update and onLoad with the answer's error
  // (null when loaded); errors end in "close", which the caller handles.
  acpLoad(edge, sid, after, { onLoad, onUpdate }) {
    const ws = new WebSocket(edge.replace(/^http/, "ws") + "/acp", { headers: { Authorization: `Bearer ${this.token}` } });
    ws.on("open", () => {
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: 1, clientCapabilities: {} } }));
    });
    ws.on("message", (data) => {
      let m;
      try {
        m = JSON.parse(String(data));
      } catch {
        return;
      }
      if (m.id === 1 && m.result) {
        const params = { sessionId: sid, cwd: "/", mcpServers: [] };
        if (after !== null) params._meta = { nadi: { after } };
        ws.send(JSON.stringify({ jsonrpc: "2.0", id: 2, method: "session/load", params }));
      } else if (m.id === 2) onLoad(m.error ?? null);
      else if (m.method === "session/update") onUpdate(m);
    });
    ws.on("error", () => {});
    return ws;
  }
}
