// An EventSource client (the `eventsource` package, which follows the
// WHATWG spec: it reconnects on its own and sends Last-Event-ID) that
// prints "<id> <kind>" for every event of a session's stream.
//
//   node sse-client.mjs --url URL --token TOKEN --until-file FILE [--timeout S]
//
// It exits 0 once it has seen the event whose id is written in FILE (the
// test writes it when it knows the last sequence number), 1 on timeout.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { EventSource } from "eventsource";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    "until-file": { type: "string" },
    timeout: { type: "string", default: "60" },
  },
});

let last = 0;
const es = new EventSource(opt.url, {
  fetch: (input, init) =>
    fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${opt.token}` } }),
});
es.onopen = () => console.error(`sse-client: open (last id ${last})`);
es.onerror = (e) => console.error(`sse-client: ${e.message ?? "connection lost"}; reconnecting`);
es.onmessage = (m) => {
  const ev = JSON.parse(m.data);
  last = Number(m.lastEventId);
  console.log(`${m.lastEventId} ${ev.kind}`);
};

const deadline = Date.now() + Number(opt.timeout) * 1000;
const timer = setInterval(() => {
  let until = 0;
  try {
    until = Number(readFileSync(opt["until-file"], "utf8").trim() || 0);
  } catch {}
  if (until > 0 && last >= until) {
    es.close();
    clearInterval(timer);
    process.exit(0);
  }
  if (Date.now() > deadline) {
    console.error(`sse-client: timed out at id ${last} (waiting for ${until})`);
    process.exit(1);
  }
}, 100);
