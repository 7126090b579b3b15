// Commands: messages, tool calls, approvals, cancels, idempotent retries,
// and what the session's event log says about each.
import assert from "node:assert/strict";
import { Then, When } from "@cucumber/cucumber";

// ---- sending

When("{string} sends the message {string}", async function (tenant, text) {
  await this.enqueue(tenant, "message", { text });
});

When("{string} sends the message {string} as {string}", async function (tenant, text, name) {
  await this.enqueue(tenant, "message", { text }, { name });
  this.expectStatus(202);
});

When("{string} sends the message {string} with the Idempotency-Key {string}", async function (tenant, text, key) {
  await this.enqueue(tenant, "message", { text }, { key });
});

When("{string} sends the message {string} with the Idempotency-Key {string} as {string}", async function (tenant, text, key, name) {
  await this.enqueue(tenant, "message", { text }, { key, name });
});

When("{string} calls the tool {string} with {json}", async function (tenant, tool, args) {
  await this.enqueue(tenant, "tool", { name: tool, args });
});

// ---- what the answer to an enqueue says

Then("the command is accepted as {string}", function (status) {
  this.expectStatus(202);
  const c = this.res.body;
  assert.equal(c.status, status, this.answer());
  assert.ok(Number.isInteger(c.id) && c.id > 0, this.answer());
  assert.equal(this.res.headers.get("location"), `/v1/sessions/${c.session_id}/commands/${c.id}`, this.answer());
});

Then("the answer is the command {string}", function (name) {
  assert.equal(this.res.body.id, this.cmd(name).id, this.answer());
});

Then("the answer is not the command {string}", function (name) {
  assert.notEqual(this.res.body.id, this.cmd(name).id, this.answer());
});

// ---- how a command ends

async function ends(world, c, status) {
  const got = await world.waitCommand(c, [status]);
  assert.equal(got.status, status, `command ${c.id} ended ${got.status}, not ${status}: ${JSON.stringify(got)}`);
  return got;
}

Then("the command completes", async function () {
  this.command.final = await ends(this, this.cmd(), "completed");
});

Then("the command {string} completes", async function (name) {
  this.cmd(name).final = await ends(this, this.cmd(name), "completed");
});

Then("the command ends {string}", async function (status) {
  this.command.final = await ends(this, this.cmd(), status);
});

Then("the command {string} ends {string}", async function (name, status) {
  this.cmd(name).final = await ends(this, this.cmd(name), status);
});

Then("the command {string} is {string}", async function (name, status) {
  const got = await this.getCommand(this.cmd(name));
  assert.equal(got.status, status, JSON.stringify(got));
});

Then("the command {string} starts running", async function (name) {
  const got = await this.waitCommand(this.cmd(name), ["running"]);
  assert.equal(got.status, "running", JSON.stringify(got));
});

Then("the command waits for permission", async function () {
  const got = await this.waitCommand(this.cmd(), ["waiting"]);
  assert.equal(got.status, "waiting", JSON.stringify(got));
});

Then("its result text is {string}", function (text) {
  assert.equal(this.cmd().final.result?.text, text, JSON.stringify(this.cmd().final));
});

Then("its result text starts with {string}", function (text) {
  const got = this.cmd().final.result?.text ?? "";
  assert.ok(got.startsWith(text), `result text ${JSON.stringify(got)} does not start with ${JSON.stringify(text)}`);
});

Then("its error code is {string}", function (code) {
  assert.equal(this.cmd().final.error?.code, code, JSON.stringify(this.cmd().final));
});

// ---- the event log

// path "a.b" inside an event's payload
const at = (obj, path) => path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);

async function oneEvent(world, c, kind) {
  const evs = (await world.commandEvents(c)).filter((e) => e.kind === kind);
  assert.equal(evs.length, 1, `command ${c.id} has ${evs.length} "${kind}" events, not 1: ${JSON.stringify(evs)}`);
  return evs[0];
}

Then("the command has one {string} event", async function (kind) {
  await oneEvent(this, this.cmd(), kind);
});

Then("the command has one {string} event whose {word} is {string}", async function (kind, path, value) {
  const ev = await oneEvent(this, this.cmd(), kind);
  assert.equal(at(ev.payload, path), value, JSON.stringify(ev));
});

Then("the command has one {string} event whose {word} is {json}", async function (kind, path, value) {
  const ev = await oneEvent(this, this.cmd(), kind);
  assert.deepEqual(at(ev.payload, path), value, JSON.stringify(ev));
});

Then("the command has no {string} event", async function (kind) {
  const evs = (await this.commandEvents(this.cmd())).filter((e) => e.kind === kind);
  assert.equal(evs.length, 0, `unexpected: ${JSON.stringify(evs)}`);
});

Then("the command {string} has no {string} event", async function (name, kind) {
  const evs = (await this.commandEvents(this.cmd(name))).filter((e) => e.kind === kind);
  assert.equal(evs.length, 0, `unexpected: ${JSON.stringify(evs)}`);
});

Then("the command {string} has one {string} event", async function (name, kind) {
  await oneEvent(this, this.cmd(name), kind);
});

// one command at a time per session: the first's last event comes before
// the second's start in the log
Then("the command {string} ended before the command {string} started", async function (first, second) {
  const a = this.cmd(first);
  const b = this.cmd(second);
  const log = await this.events(a.tenant, a.session_id);
  const ended = log.filter((e) => e.command_id === a.id && e.kind === "command.completed");
  const started = log.filter((e) => e.command_id === b.id && e.kind === "command.started");
  assert.equal(ended.length, 1, `command ${a.id} completed ${ended.length} times`);
  assert.ok(started.length >= 1, `command ${b.id} never started`);
  assert.ok(ended[0].seq < started[0].seq, `command ${b.id} started (seq ${started[0].seq}) before command ${a.id} ended (seq ${ended[0].seq})`);
});

// the kinds of the command's events, in the order of the log, among those
// the table names (the log has others, e.g. leases, that no table lists)
Then("the command's events include, in this order:", async function (table) {
  const want = table.raw().map((r) => r[0]);
  const got = (await this.commandEvents(this.cmd())).map((e) => e.kind).filter((k) => want.includes(k));
  assert.deepEqual(got, want);
});

Then("the session's event log is gapless", async function () {
  const c = this.cmd();
  const seqs = (await this.events(c.tenant, c.session_id)).map((e) => e.seq);
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1));
});

Then("{string}'s session has {int} command(s)", async function (tenant, n) {
  await this.request("GET", `/v1/sessions/${this.session(tenant).id}/commands?limit=1000`, { tenant });
  this.expectStatus(200);
  assert.equal(this.res.body.commands.length, n, this.answer());
});

// ---- approvals and cancels

async function control(world, tenant, action, name, body) {
  const c = world.cmd(name);
  await world.request("POST", `/v1/sessions/${c.session_id}/commands/${c.id}/${action}`, { tenant, body });
}

When("{string} approves the command", async function (tenant) {
  await control(this, tenant, "approve");
});

When("{string} denies the command with the reason {string}", async function (tenant, reason) {
  await control(this, tenant, "deny", undefined, { reason });
});

When("{string} cancels the command", async function (tenant) {
  await control(this, tenant, "cancel");
});

When("{string} cancels the command {string}", async function (tenant, name) {
  await control(this, tenant, "cancel", name);
});

Then("the decision is {string}", function (decision) {
  this.expectStatus(202);
  assert.equal(this.res.body.type, decision === "approved" ? "approve" : "deny", this.answer());
  assert.equal(this.res.body.status, "completed", this.answer());
  assert.equal(this.res.body.result?.command_id, this.cmd().id, this.answer());
  assert.equal(this.res.body.result?.decision, decision, this.answer());
});

Then("the answer is the command, {string}", function (status) {
  this.expectStatus(200);
  assert.equal(this.res.body.status, status, this.answer());
});

Then("the answer is the command, cancel requested", function () {
  this.expectStatus(200);
  assert.equal(this.res.body.cancel_requested, true, this.answer());
});
