// A loopback upstream for test/suites/22-credproxy.  It answers only
// requests that carry one of the two real credentials (what the proxy
// injects), counts every request so that a test can prove nothing was
// forwarded, and has endpoints that misbehave: huge answers, a head that
// never comes, a body that trickles.
//
//   node upstream.js PORT [TLS_PORT CERT KEY]
//
// The credentials it accepts: "Authorization: Bearer S" for any S in the
// comma-separated UPSTREAM_BEARER, or "X-Api-Key: K" with K = UPSTREAM_KEY.
// With TLS_PORT it serves the same over https too.
//
//   GET  /count               {"count": N} (not counted, no credential needed)
//   ANY  /echo...             {"method","url","body","headers","cred"} — 200
//   GET  /big-length          announces Content-Length: 200 MiB
//   GET  /big-chunked?mb=N    streams N MiB (default 100) chunked
//   GET  /slow-head           never answers
//   GET  /trickle             the head at once, then one byte every 200 ms
//   GET  /status/NNN          an empty answer with that status
//   anything without a valid credential: 401
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');

const port = Number(process.argv[2]);
const bearers = (process.env.UPSTREAM_BEARER || '').split(',').filter((b) => b).map((b) => 'Bearer ' + b);
const key = process.env.UPSTREAM_KEY;
let count = 0;

const handler = (req, res) => {
  const url = new URL(req.url, 'http://upstream');
  if (url.pathname === '/count') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ count }));
    return;
  }
  count++;
  let cred = null;
  if (bearers.includes(req.headers.authorization)) cred = 'bearer';
  else if (key && req.headers['x-api-key'] === key) cred = 'key';
  if (!cred) {
    res.writeHead(401, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: 'no valid credential' }));
    req.resume();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const p = url.pathname;
    if (p.startsWith('/echo')) {
      const out = JSON.stringify({ method: req.method, url: req.url, body, headers: req.headers, cred });
      res.writeHead(200, { 'Content-Type': 'application/json', 'X-Upstream': 'yes',
        'Connection': 'keep-alive, X-Hop', 'X-Hop': 'must-not-pass' });
      res.end(out);
    } else if (p === '/big-length') {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(200 << 20) });
      res.write(Buffer.alloc(65536, 'x'));   // then nothing more: the proxy must not wait for it
    } else if (p === '/big-chunked') {
      const total = Number(url.searchParams.get('mb') || 100) << 20;
      const block = Buffer.alloc(65536, 'y');
      let sent = 0;
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      const pump = () => {
        while (sent < total) {
          sent += block.length;
          if (!res.write(block)) { res.once('drain', pump); return; }
        }
        res.end();
      };
      res.on('close', () => { sent = total; });
      pump();
    } else if (p === '/slow-head') {
      // no answer at all; the socket stays open until the peer goes
    } else if (p === '/trickle') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      const t = setInterval(() => res.write('.'), 200);
      res.on('close', () => clearInterval(t));
    } else if (p.startsWith('/status/')) {
      res.writeHead(Number(p.slice(8)) || 500);
      res.end();
    } else {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: 'no such endpoint', path: p }));
    }
  });
};

const server = http.createServer(handler);
server.keepAliveTimeout = 1000;
// Port 0 picks a free one; the line printed names it ("http PORT", "https PORT").
server.listen(port, '127.0.0.1', () => console.log('http ' + server.address().port));
if (process.argv[3]) {
  const tls = https.createServer({ cert: fs.readFileSync(process.argv[4]), key: fs.readFileSync(process.argv[5]) },
    handler);
  tls.listen(Number(process.argv[3]), '127.0.0.1', () => console.log('https ' + tls.address().port));
}
