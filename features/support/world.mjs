// The World of every scenario: tokens by tenant, each tenant's last
// session, the commands a scenario sent (the last one and the named ones),
// the last HTTP answer, and the event streams it follows.  Requests go to
// nadi-edge (NADI_EDGE_URL) with Node's fetch; tokens are minted with
// nadi.token_mint through `scripts/nadi-local psql` of the checkout in NADI_SRC,
// as `scripts/nadi-local token` does.
import { execFileSync } from "node:child_process";
import assert from "node:assert/strict";
import { After, setDefaultTimeout, setWorldConstructor, World } from "@cucumber/cucumber";

// Waits are bounded; nothing asserts how long anything took.
export const WAIT_MS = Number(process.env.NADI_FEATURES_WAIT_MS || 60000);
setDefaultTimeout(WAIT_MS + 30000);

const BASE = process.env.NADI_EDGE_URL;
const NADI = `${process.env.NADI_SRC || new URL("../..", import.meta.url).pathname}/scripts/nadi-local`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const FINAL = ["completed", "dead", "cancelled"];

class NadiWorld extends World {
  constructor(options) {
    super(options);
    assert.ok(BASE, "NADI_EDGE_URL must name the edge (test/suites/35-features sets it)");
    this.tokens = {};
    this.sessions = {};
    this.commands = {};
    this.command = null;
    this.streams = [];
    this.stream = null;
    this.res = null;
  }

  // mint(tenant): a tenant-scoped token, as `scripts/nadi-local token` mints one
  mint(tenant) {
    const sql = "SELECT nadi.token_mint(:'tenant', :'subject', 'tenant', '1 hour')";
    return execFileSync(NADI, ["psql", "-tA", "-v", `tenant=${tenant}`, "-v", `subject=${tenant}-client`], {
      input: sql,
      encoding: "utf8",
    }).trim();
  }

  token(tenant) {
    assert.ok(this.tokens[tenant], `no token for tenant "${tenant}": add 'Given a token for tenant "${tenant}"'`);
    return this.tokens[tenant];
  }

  session(tenant) {
    assert.ok(this.sessions[tenant], `tenant "${tenant}" has no session in this scenario`);
    return this.sessions[tenant];
  }

  // request(method, path, {tenant, body, headers}): the answer, also kept as
  // this.res = {status, headers, body (parsed JSON or text), text}
  async request(method, path, { tenant, body, headers = {} } = {}) {
    const h = { ...headers };
    if (tenant) h.Authorization = `Bearer ${this.token(tenant)}`;
    if (body !== undefined) h["Content-Type"] = "application/json";
    const res = await fetch(BASE + path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    this.res = { method, path, status: res.status, headers: res.headers, body: parsed, text };
    return this.res;
  }

  // describe the last answer, for failure messages
  answer() {
    return this.res ? `${this.res.method} ${this.res.path} answered ${this.res.status}: ${this.res.text.slice(0, 500)}` : "no request yet";
  }

  expectStatus(status) {
    assert.equal(this.res.status, status, this.answer());
  }

  // create a session for tenant (201 expected), remembered as its session
  async createSession(tenant, body = {}) {
    await this.request("POST", "/v1/sessions", { tenant, body });
    this.expectStatus(201);
    this.sessions[tenant] = this.res.body;
    return this.res.body;
  }

  // enqueue(tenant, type, payload, {name, key}): POST a command to the
  // tenant's session; a 202 becomes the scenario's current command
  async enqueue(tenant, type, payload, { name, key, sessionOf } = {}) {
    const sid = this.session(sessionOf || tenant).id;
    const headers = key ? { "Idempotency-Key": key } : {};
    await this.request("POST", `/v1/sessions/${sid}/commands`, { tenant, body: { type, payload }, headers });
    if (this.res.status === 202) {
      this.command = { ...this.res.body, tenant };
      if (name) this.commands[name] = this.command;
    }
    return this.res;
  }

  cmd(name) {
    const c = name ? this.commands[name] : this.command;
    assert.ok(c, name ? `no command called "${name}" in this scenario` : "no command was sent in this scenario");
    return c;
  }

  async getCommand(c) {
    await this.request("GET", `/v1/sessions/${c.session_id}/commands/${c.id}`, { tenant: c.tenant });
    this.expectStatus(200);
    return this.res.body;
  }

  // waitCommand(c, statuses): polls the command until its status is one of
  // statuses or final; returns it
  async waitCommand(c, statuses) {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const got = await this.getCommand(c);
      if (statuses.includes(got.status) || FINAL.includes(got.status)) return got;
      if (Date.now() > deadline) assert.fail(`command ${c.id} is still ${got.status} after ${WAIT_MS} ms (waiting for ${statuses.join(" or ")})`);
      await sleep(100);
    }
  }

  // every event of a session, through GET .../events pages
  async events(tenant, sid) {
    const all = [];
    let after = 0;
    for (;;) {
      await this.request("GET", `/v1/sessions/${sid}/events?after=${after}&limit=1000`, { tenant });
      this.expectStatus(200);
      all.push(...this.res.body.events);
      if (this.res.body.events.length === 0 || this.res.body.next_after === after) return all;
      after = this.res.body.next_after;
    }
  }

  async commandEvents(c) {
    return (await this.events(c.tenant, c.session_id)).filter((e) => e.command_id === c.id);
  }

  // every session the tenant's token lists, through the cursor
  async listSessions(tenant) {
    const all = [];
    let path = "/v1/sessions?limit=1000";
    for (;;) {
      await this.request("GET", path, { tenant });
      this.expectStatus(200);
      all.push(...this.res.body.sessions);
      if (this.res.body.next_cursor === null) return all;
      path = `/v1/sessions?limit=1000&after=${encodeURIComponent(this.res.body.next_cursor)}`;
    }
  }

  streamUrl(sid) {
    return `${BASE}/v1/sessions/${sid}/events`;
  }
}

setWorldConstructor(NadiWorld);

// a scenario leaves no stream open behind it
After(function () {
  for (const s of this.streams) s.close();
});
