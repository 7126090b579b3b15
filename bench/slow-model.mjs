#!/usr/bin/env node
// bench/slow-model.mjs — a slow OpenAI-compatible model provider on
// loopback, for bench/compare workload D.  Node's http module only, no
// dependencies.
//
//   node bench/slow-model.mjs [--port N] [--host ADDR] [--delay MS] [--fast-marker TEXT]
//
// POST …/chat/completions (nadi.model_url + "/chat/completions": with
// nadi.model_url = http://HOST:PORT/v1 that is /v1/chat/completions)
// answers after --delay ms (default 1500) with a chat completion holding
// one plain assistant message, no tool calls.  A request whose last
// message contains --fast-marker (default "[fast]") is answered at once.
// Every request waits on a timer of its own: thousands can be in flight at
// once (listen backlog 4096, keep-alive connections, no request timeout).
//
//   POST /control {"delay_ms": N}   changes the delay from now on (requests
//                                   already waiting keep theirs)
//   GET  /stats                     {"in_flight", "max_in_flight", "served",
//                                   "slow", "fast", "delay_ms"}
//   POST /stats/reset               zeroes the counters (not in_flight)
//
// Once it listens it prints one line, "slow-model ready port=N pid=P", on stdout;
// --port 0 (the default) takes a port the kernel picks.  SIGTERM or SIGINT
// ends it.
import http from 'node:http';

const opts = { port: '0', host: '127.0.0.1', delay: '1500', fastMarker: '[fast]' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
  const key = m && m[1].replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  if (!m || !(key in opts)) {
    process.stderr.write('usage: slow-model.mjs [--port N] [--host ADDR] [--delay MS] [--fast-marker TEXT]\n');
    process.exit(2);
  }
  opts[key] = m[2] ?? argv[++i];
}
let delayMs = Number(opts.delay);
if (!Number.isFinite(delayMs) || delayMs < 0) {
  process.stderr.write('slow-model: --delay must be a number of milliseconds, 0 or more\n');
  process.exit(2);
}

const stats = { in_flight: 0, max_in_flight: 0, served: 0, slow: 0, fast: 0 };
let nextId = 1;

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function lastContent(body) {
  const msgs = body && Array.isArray(body.messages) ? body.messages : [];
  const last = msgs[msgs.length - 1];
  return last && typeof last.content === 'string' ? last.content : '';
}

function completion(body, text) {
  return {
    id: `chatcmpl-bench-${nextId++}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: typeof body.model === 'string' ? body.model : 'bench',
    choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
  };
}

function onRequest(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const path = (req.url || '').split('?')[0];
    let body = {};
    if (chunks.length) {
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return send(res, 400, { error: { message: 'the body is not JSON', type: 'invalid_request_error' } });
      }
    }
    if (req.method === 'GET' && path === '/stats') return send(res, 200, { ...stats, delay_ms: delayMs });
    if (req.method === 'POST' && path === '/stats/reset') {
      Object.assign(stats, { max_in_flight: stats.in_flight, served: 0, slow: 0, fast: 0 });
      return send(res, 200, { ...stats, delay_ms: delayMs });
    }
    if (req.method === 'POST' && path === '/control') {
      const d = Number(body.delay_ms);
      if (!Number.isFinite(d) || d < 0) return send(res, 400, { error: { message: 'delay_ms: a number, 0 or more' } });
      delayMs = d;
      return send(res, 200, { delay_ms: delayMs });
    }
    if (req.method !== 'POST' || !path.endsWith('/chat/completions'))
      return send(res, 404, { error: { message: `no route ${req.method} ${path}`, type: 'invalid_request_error' } });
    const text = lastContent(body);
    const fast = text.includes(opts.fastMarker);
    stats.in_flight++;
    stats.max_in_flight = Math.max(stats.max_in_flight, stats.in_flight);
    const answer = () => {
      stats.in_flight--;
      stats.served++;
      stats[fast ? 'fast' : 'slow']++;
      if (!res.destroyed) send(res, 200, completion(body, `Done: ${text.slice(0, 200)}`));
    };
    if (fast || delayMs === 0) answer();
    else setTimeout(answer, delayMs);
  });
}

const server = http.createServer({ keepAlive: true }, onRequest);
server.keepAliveTimeout = 120000; // clients keep their connections between calls
server.headersTimeout = 130000;
server.requestTimeout = 0; // a request may wait as long as the delay says
server.maxHeadersCount = 100;
server.on('clientError', (err, socket) => socket.destroy());
server.listen({ port: Number(opts.port), host: opts.host, backlog: 4096 }, () => {
  process.stdout.write(`slow-model ready port=${server.address().port} pid=${process.pid}\n`);
});
server.on('error', (e) => {
  process.stderr.write(`slow-model: ${e.message}\n`);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
