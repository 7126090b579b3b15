// Steps about the last HTTP answer: its status, problem details, headers.
import assert from "node:assert/strict";
import { Then } from "@cucumber/cucumber";

Then("the answer is {int}", function (status) {
  this.expectStatus(status);
});

// RFC 9457 problem details, as docs/HTTP_API.md says: the content type,
// the stable code, and the status repeated in the body
Then("the answer is a {int} problem {string}", function (status, code) {
  this.expectStatus(status);
  assert.match(this.res.headers.get("content-type") || "", /^application\/problem\+json/, this.answer());
  assert.equal(this.res.body.code, code, this.answer());
  assert.equal(this.res.body.status, status, this.answer());
  assert.equal(this.res.body.type, `urn:nadi:problem:${code}`, this.answer());
});

Then("the answer carries {string}: {string}", function (name, value) {
  assert.equal(this.res.headers.get(name), value, `header ${name}; ${this.answer()}`);
});

Then("the answer does not carry {string}", function (name) {
  assert.equal(this.res.headers.get(name), null, `header ${name}; ${this.answer()}`);
});

Then("the answer's {string} starts with {string}", function (name, value) {
  assert.ok((this.res.headers.get(name) || "").startsWith(value), `header ${name}; ${this.answer()}`);
});
