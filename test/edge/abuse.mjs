// Misbehaving clients for the edge's limits.
//
//   node abuse.mjs flood --port P --count N
//     opens N connections at once and holds them; prints how many the edge
//     closed on its own within two seconds, then how many of the rest can
//     still get GET /healthz answered.
//   node abuse.mjs slowloris --port P [--body]
//     sends a request one byte a second (headers, or with --body a body)
//     and prints how many seconds the edge kept the connection.
//   node abuse.mjs stall --port P --path PATH --token T --until-file F
//     opens an event stream and reads nothing until F is not empty, then
//     reads what is there; prints "ended LASTID" if the edge had ended the
//     stream, "open LASTID" if not.
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { parseArgs } from "node:util";

const { positionals, values: opt } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: "string" }, count: { type: "string", default: "100" }, body: { type: "boolean" },
    path: { type: "string" }, token: { type: "string" }, "until-file": { type: "string" },
  },
});
const port = Number(opt.port);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect() {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.closedByPeer = false;
    s.on("end", () => (s.closedByPeer = true));
    s.on("close", () => (s.closedByPeer = true));
    s.on("error", () => (s.closedByPeer = true));
    s.on("connect", () => resolve(s));
    s.on("error", () => resolve(s));
  });
}

function get(s) {
  return new Promise((resolve) => {
    let data = "";
    s.on("data", (d) => {
      data += d;
      if (data.includes("\r\n\r\n")) resolve(data.split("\r\n")[0]);
    });
    s.on("close", () => resolve(data.split("\r\n")[0] || "closed"));
    s.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  });
}

if (positionals[0] === "flood") {
  const socks = await Promise.all(Array.from({ length: Number(opt.count) }, connect));
  await sleep(2000);
  const closed = socks.filter((s) => s.closedByPeer).length;
  const open = socks.filter((s) => !s.closedByPeer);
  const answers = await Promise.all(open.map(get));
  const ok = answers.filter((a) => a.startsWith("HTTP/1.1 200")).length;
  console.log(`closed ${closed} open ${open.length} served ${ok}`);
  socks.forEach((s) => s.destroy());
  process.exit(0);
} else if (positionals[0] === "slowloris") {
  const start = Date.now();
  const s = await connect();
  const text = opt.body
    ? "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n" + "{".padEnd(199, " ")
    : "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + "a".repeat(200);
  let i = opt.body ? text.indexOf("\r\n\r\n") + 4 : 0;
  if (i > 0) s.write(text.slice(0, i));
  let reply = "";
  s.on("data", (d) => (reply += d));
  while (!s.closedByPeer && i < text.length && Date.now() - start < 60000) {
    s.write(text[i++]);
    await sleep(1000);
  }
  const secs = Math.round((Date.now() - start) / 1000);
  console.log(`${s.closedByPeer ? "closed" : "open"} after ${secs} s ${reply.split("\r\n")[0]}`);
  s.destroy();
  process.exit(0);
}
else if (positionals[0] === "stall") {
  let data = "";
  let ended = false;
  const res = await new Promise((resolve) => {
    http.get({ host: "127.0.0.1", port, path: opt.path,
      headers: { Accept: "text/event-stream", Authorization: `Bearer ${opt.token}` } }, resolve);
  });
  res.setEncoding("utf8");
  res.on("data", (d) => (data += d));
  res.on("end", () => (ended = true));
  await sleep(300);
  res.pause();
  const limit = Date.now() + 120000;
  for (;;) {
    let until = "";
    try {
      until = readFileSync(opt["until-file"], "utf8").trim();
    } catch {}
    if (until || Date.now() > limit) break;
    await sleep(200);
  }
  res.resume();
  let before = -1;
  while (data.length !== before && !ended) {
    before = data.length;
    await sleep(1500);
  }
  const ids = [...data.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
  console.log(`${ended ? "ended" : "open"} ${ids.length ? ids[ids.length - 1] : 0}`);
  process.exit(0);
}
