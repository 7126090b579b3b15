// One tenant's token against another tenant's session: every request is
// answered as if the session did not exist.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Then, When } from "@cucumber/cucumber";
import { openStream } from "../support/sse.mjs";

// the request {request} names, on session sid, as tenant
async function attempt(world, tenant, what, sid) {
  const p = `/v1/sessions/${sid}`;
  switch (what) {
    case "read":
      return world.request("GET", p, { tenant });
    case "send a message to":
      return world.request("POST", `${p}/commands`, { tenant, body: { type: "message", payload: { text: "not yours" } } });
    case "list the commands of":
      return world.request("GET", `${p}/commands`, { tenant });
    case "read the events of":
      return world.request("GET", `${p}/events`, { tenant });
    case "cancel the command of":
      return world.request("POST", `${p}/commands/${world.cmd().id}/cancel`, { tenant });
    case "approve the command of":
      return world.request("POST", `${p}/commands/${world.cmd().id}/approve`, { tenant });
    case "terminate":
      return world.request("POST", `${p}/terminate`, { tenant, body: {} });
    case "follow the event stream of": {
      const s = await openStream(world.streamUrl(sid), { Authorization: `Bearer ${world.token(tenant)}` });
      world.streams.push(s);
      world.res = { method: "GET", path: `${p}/events`, status: s.status, headers: s.headers, body: s.problem, text: JSON.stringify(s.problem) };
      return world.res;
    }
  }
  throw new Error(`unknown request ${what}`);
}

When("{string} tries to {request} the session of {string}", async function (tenant, what, owner) {
  await attempt(this, tenant, what, this.session(owner).id);
});

// the same request on an id no session has, for comparison
Then("{string} gets the same answer to {request} a session that does not exist", async function (tenant, what) {
  const theirs = this.res;
  const detail = (r) => ({ status: r.status, code: r.body?.code, type: r.body?.type, title: r.body?.title });
  await attempt(this, tenant, what, randomUUID());
  assert.deepEqual(detail(theirs), detail(this.res));
});

Then("{string}'s list holds none of {string}'s sessions", async function (tenant, owner) {
  const theirs = new Set((await this.listSessions(tenant)).map((s) => s.id));
  assert.equal(theirs.has(this.session(owner).id), false, `${owner}'s session ${this.session(owner).id} is in ${tenant}'s list`);
  const list = await this.listSessions(tenant);
  assert.ok(list.every((s) => s.tenant_id === tenant), `${tenant}'s list holds another tenant's session`);
});
