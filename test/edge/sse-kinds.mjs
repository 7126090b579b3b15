// SSE event names, as a browser's EventSource sees them (the `eventsource`
// package follows the WHATWG parser): on a stream opened with
// ?event_names=1 every event is named by its kind, so listeners added with
// addEventListener(kind) receive it and onmessage does not fire; on a
// default stream onmessage receives every event and a listener by kind
// nothing.  Prints "ok <what>" / "not ok <what>" lines.
//
//   node sse-kinds.mjs --url URL --token TOKEN --last N --kinds k1,k2,...
//
// URL is the session's events URL; N its last sequence number; the kinds
// are those in its log.
import { parseArgs } from "node:util";

import { EventSource } from "eventsource";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    last: { type: "string" },
    kinds: { type: "string" },
    timeout: { type: "string", default: "30" },
  },
});
const last = Number(opt.last);
const kinds = opt.kinds.split(",");

function open(url) {
  return new EventSource(url, {
    fetch: (input, init) =>
      fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${opt.token}` } }),
  });
}

// a stream read until event `last`: what each listener got
function collect(url) {
  return new Promise((resolve) => {
    const got = { message: [], byKind: [], maxId: 0 };
    const es = open(url);
    const done = () => {
      if (got.maxId >= last) {
        es.close();
        resolve(got);
      }
    };
    es.onmessage = (m) => {
      got.message.push({ id: Number(m.lastEventId), type: m.type, kind: JSON.parse(m.data).kind });
      got.maxId = Math.max(got.maxId, Number(m.lastEventId));
      done();
    };
    for (const k of kinds) {
      es.addEventListener(k, (m) => {
        got.byKind.push({ id: Number(m.lastEventId), type: m.type, kind: JSON.parse(m.data).kind });
        got.maxId = Math.max(got.maxId, Number(m.lastEventId));
        done();
      });
    }
    setTimeout(() => {
      es.close();
      resolve(got);
    }, Number(opt.timeout) * 1000);
  });
}

const sep = opt.url.includes("?") ? "&" : "?";
const [named, plain] = await Promise.all([collect(`${opt.url}${sep}event_names=1`), collect(opt.url)]);
const ids = (list) => list.map((e) => e.id).join(" ");
const every = Array.from({ length: last }, (_, i) => i + 1).join(" ");

const results = [
  [`named stream: listeners by kind received every event, in order (${named.byKind.length} of ${last})`,
    ids(named.byKind) === every],
  ["named stream: each event came to the listener of its own kind, typed by it",
    named.byKind.every((e) => e.type === e.kind)],
  [`named stream: onmessage did not fire (${named.message.length})`, named.message.length === 0],
  [`default stream: onmessage received every event, in order (${plain.message.length} of ${last})`,
    ids(plain.message) === every],
  ["default stream: events are of type \"message\"", plain.message.every((e) => e.type === "message")],
  [`default stream: listeners by kind received nothing (${plain.byKind.length})`, plain.byKind.length === 0],
];
for (const [what, ok] of results) console.log(`${ok ? "ok" : "not ok"} ${what}`);
process.exit(0);
