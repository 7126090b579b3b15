// Shared pieces of the chaos run: a seeded random source, JSON-lines logs,
// and the stack's control script.
import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const HERE = dirname(fileURLToPath(import.meta.url));
export const STACK = join(HERE, "stack.sh");

// mulberry32: small, fast, and the same sequence for the same seed.
export function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), // lo..hi inclusive
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    chance: (p) => next() < p,
    // a weighted choice: [[value, weight], ...]
    weighted: (pairs) => {
      let r = next() * pairs.reduce((s, [, w]) => s + w, 0);
      for (const [v, w] of pairs) if ((r -= w) < 0) return v;
      return pairs[pairs.length - 1][0];
    },
  };
}

// A JSON-lines log: every record gets the time (ms since the epoch).
export function jsonl(path) {
  const out = createWriteStream(path, { flags: "a" });
  return {
    write: (rec) => out.write(JSON.stringify({ t: Date.now(), ...rec }) + "\n"),
    close: () => new Promise((r) => out.end(r)),
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// stack(env, ...args): run stack.sh; resolves to {code, out, err}.
export function stack(env, args, input) {
  return new Promise((resolve) => {
    const p = spawn("bash", [STACK, ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("close", (code) => resolve({ code, out, err }));
    p.stdin.end(input ?? "");
  });
}

// sqlJson(env, query): the query's one value, parsed as JSON (null if none).
export async function sqlJson(env, query) {
  const r = await stack(env, ["sql"], query);
  if (r.code !== 0) throw new Error(`sql failed: ${r.err.trim()}`);
  const s = r.out.trim();
  return s === "" ? null : JSON.parse(s);
}
