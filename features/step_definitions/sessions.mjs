// Tokens and sessions.
import assert from "node:assert/strict";
import { Given, Then, When } from "@cucumber/cucumber";

Given("a token for tenant {string}", function (tenant) {
  this.tokens[tenant] = this.mint(tenant);
  assert.match(this.tokens[tenant], /^[\w-]+\.[\w-]+\.[\w-]+$/, "token_mint returns a JWT");
});

Given("{string} has a session", async function (tenant) {
  await this.createSession(tenant);
});

Given("{string} has a session whose policy requires approval for {string}", async function (tenant, tool) {
  await this.createSession(tenant, { policy: { require_approval: [tool] } });
  assert.deepEqual(this.sessions[tenant].policy, { require_approval: [tool] });
});

When("{string} creates a session", async function (tenant) {
  await this.request("POST", "/v1/sessions", { tenant, body: {} });
  if (this.res.status === 201) this.sessions[tenant] = this.res.body;
});

When("{string} creates a session with {json}", async function (tenant, body) {
  await this.request("POST", "/v1/sessions", { tenant, body });
  if (this.res.status === 201) this.sessions[tenant] = this.res.body;
});

When("{string} creates a session for tenant {string}", async function (tenant, other) {
  await this.request("POST", "/v1/sessions", { tenant, body: { tenant_id: other } });
});

When("a client without a token creates a session", async function () {
  await this.request("POST", "/v1/sessions", { body: {} });
});

When("a client with the token {string} creates a session", async function (token) {
  await this.request("POST", "/v1/sessions", { body: {}, headers: { Authorization: `Bearer ${token}` } });
});

When("{string} reads its session", async function (tenant) {
  await this.request("GET", `/v1/sessions/${this.session(tenant).id}`, { tenant });
});

Then("the answer is {string}'s new session", function (tenant) {
  const s = this.res.body;
  assert.match(s.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, this.answer());
  assert.equal(s.tenant_id, tenant, this.answer());
  assert.equal(s.id, this.session(tenant).id, this.answer());
});

Then("its Location is the session's address", function () {
  assert.equal(this.res.headers.get("location"), `/v1/sessions/${this.res.body.id}`, this.answer());
});

Then("the session is {string}", function (state) {
  assert.equal(this.res.body.state, state, this.answer());
});

Then("the session's {word} is {json}", function (field, value) {
  assert.deepEqual(this.res.body[field], value, this.answer());
});

Then("the session's log starts with {string}", async function (kind) {
  const s = this.res.body;
  const events = await this.events(s.tenant_id, s.id);
  assert.equal(events[0]?.seq, 1, JSON.stringify(events[0]));
  assert.equal(events[0]?.kind, kind, JSON.stringify(events[0]));
});

Then("{string} finds the session in its list", async function (tenant) {
  const ids = (await this.listSessions(tenant)).map((s) => s.id);
  assert.ok(ids.includes(this.session(tenant).id), `${this.session(tenant).id} not among ${ids.length} sessions`);
});
