// Following a session's events as Server-Sent Events, disconnecting and
// resuming with Last-Event-ID.
import assert from "node:assert/strict";
import { Then, When } from "@cucumber/cucumber";
import { openStream } from "../support/sse.mjs";
import { WAIT_MS } from "../support/world.mjs";

async function follow(world, tenant, headers = {}) {
  const sid = world.session(tenant).id;
  const s = await openStream(world.streamUrl(sid), { Authorization: `Bearer ${world.token(tenant)}`, ...headers });
  s.tenant = tenant;
  s.sid = sid;
  world.streams.push(s);
  world.stream = s;
  assert.equal(s.status, 200, `the stream was refused: ${s.status} ${JSON.stringify(s.problem)}`);
  assert.match(s.headers.get("content-type"), /^text\/event-stream/);
  return s;
}

When("{string} follows its session's event stream", async function (tenant) {
  await follow(this, tenant);
});

Then("the stream delivers the command's {string} event", async function (kind) {
  const c = this.cmd();
  await this.stream.waitFor((e) => e.command_id === c.id && e.kind === kind, WAIT_MS);
});

Then("the stream delivers the {string} event of the command {string}", async function (kind, name) {
  const c = this.cmd(name);
  await this.stream.waitFor((e) => e.command_id === c.id && e.kind === kind, WAIT_MS);
});

When("the client disconnects", function () {
  const s = this.stream;
  s.close();
  assert.ok(s.events.length > 0, "the stream delivered nothing before the disconnect");
  this.lastSeen = s.events[s.events.length - 1].sseId;
});

// resumes with the id of the last event received, as an EventSource does;
// the self-check of test/suites/35-features resumes one event early
When("the client reconnects with the last event id it saw", async function () {
  const s = this.stream;
  await follow(this, s.tenant, { "Last-Event-ID": this.lastSeen });
});

When("the client reconnects with the event id before the last one it saw", async function () {
  const s = this.stream;
  await follow(this, s.tenant, { "Last-Event-ID": String(Number(this.lastSeen) - 1) });
});

When("{string} follows its session's event stream from Last-Event-ID {string}", async function (tenant, id) {
  const sid = this.session(tenant).id;
  this.res = null;
  const s = await openStream(this.streamUrl(sid), { Authorization: `Bearer ${this.token(tenant)}`, "Last-Event-ID": id });
  this.streams.push(s);
  this.res = { method: "GET", path: `/v1/sessions/${sid}/events`, status: s.status, headers: s.headers, body: s.problem, text: JSON.stringify(s.problem) };
});

// every connection's events together: each id once, in order, none missing,
// and exactly the session's log as GET .../events pages it
Then("across its connections the client saw every event of the session once, in order", async function () {
  const seen = this.streams.filter((s) => s.sid === this.stream.sid && s.status === 200).flatMap((s) => s.events);
  const ids = seen.map((e) => Number(e.sseId));
  seen.forEach((e) => assert.equal(Number(e.sseId), e.seq, `the id: field is the event's seq: ${JSON.stringify(e)}`));
  const dup = ids.find((id, i) => ids.indexOf(id) !== i);
  assert.equal(dup, undefined, `event ${dup} was delivered twice; ids: ${ids.join(" ")}`);
  ids.forEach((id, i) => assert.equal(id, i + 1, `a gap or disorder at position ${i + 1}; ids: ${ids.join(" ")}`));
  const log = await this.events(this.stream.tenant, this.stream.sid);
  const upTo = log.filter((e) => e.seq <= ids.length);
  assert.deepEqual(
    seen.map((e) => [e.seq, e.kind, e.command_id]),
    upTo.map((e) => [e.seq, e.kind, e.command_id]),
    "the stream and the log agree",
  );
});

Then("the second connection began right after the last event of the first", function () {
  const [first, second] = this.streams.filter((s) => s.sid === this.stream.sid && s.status === 200).slice(-2);
  assert.ok(second.events.length > 0, "the second connection delivered nothing");
  assert.equal(Number(second.events[0].sseId), Number(first.events[first.events.length - 1].sseId) + 1);
});

Then("the stream asks clients to retry after {int} ms", function (ms) {
  assert.equal(this.stream.parser.retry, ms);
});
