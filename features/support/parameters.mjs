// Parameter types of the steps: {json} is a JSON object or array written
// inline in a step, {request} what a tenant tries on another's session.
import { defineParameterType } from "@cucumber/cucumber";

defineParameterType({
  name: "json",
  regexp: /\{.*\}|\[.*\]/,
  transformer: (s) => JSON.parse(s),
});

defineParameterType({
  name: "request",
  regexp: /read|send a message to|list the commands of|read the events of|follow the event stream of|cancel the command of|approve the command of|terminate/,
  transformer: (s) => s,
});
