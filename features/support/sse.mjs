// A Server-Sent Events client over Node's fetch, parsing the stream as the
// WHATWG specification says (lines ended by CRLF, LF or CR; "field: value"
// with one optional space after the colon; comments start with ":"; an
// event is dispatched at a blank line, and only when it has data; "id"
// sets the last event id, which persists across events).  The edge's
// events carry their sequence number as the id.

// parseSse(): a parser object; feed(text) returns the events completed by
// that chunk, each {id, event, data, lastEventId}.
export function parseSse() {
  let buf = "";
  let data = [];
  let event = "";
  let lastEventId = "";
  let idSeen = false;
  let pendingCR = false;
  let retry = null;
  const comments = [];

  function line(l) {
    if (l === "") {
      if (data.length > 0) {
        const ev = { id: idSeen ? lastEventId : null, event: event || "message", data: data.join("\n"), lastEventId };
        data = [];
        event = "";
        idSeen = false;
        return ev;
      }
      event = "";
      idSeen = false;
      return null;
    }
    if (l.startsWith(":")) {
      comments.push(l.slice(1).trim());
      return null;
    }
    const colon = l.indexOf(":");
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? "" : l.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id" && !value.includes("\0")) {
      lastEventId = value;
      idSeen = true;
    } else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
    return null;
  }

  return {
    comments,
    get retry() {
      return retry;
    },
    feed(text) {
      const out = [];
      for (const ch of text) {
        if (pendingCR) {
          pendingCR = false;
          if (ch === "\n") continue;
        }
        if (ch === "\r" || ch === "\n") {
          pendingCR = ch === "\r";
          const ev = line(buf);
          buf = "";
          if (ev) out.push(ev);
        } else buf += ch;
      }
      return out;
    },
  };
}

// openStream(url, headers): a connected stream of parsed events.
//   await s.waitFor(pred, ms): the first received event matching pred
//   s.events: every event received so far ({seq, kind, command_id, ...}
//             from the JSON data, plus sseId, the "id:" field)
//   s.close(): the client disconnects
// The answer's status and headers are s.status and s.headers; a stream
// that was refused (not 200 text/event-stream) has s.problem, its body.
export async function openStream(url, headers) {
  const ctl = new AbortController();
  const res = await fetch(url, { headers: { Accept: "text/event-stream", ...headers }, signal: ctl.signal });
  const s = { status: res.status, headers: res.headers, events: [], closed: false, ended: false, error: null };
  const type = res.headers.get("content-type") || "";
  if (res.status !== 200 || !type.startsWith("text/event-stream")) {
    s.problem = await res.json().catch(() => null);
    s.closed = s.ended = true;
    s.close = () => {};
    return s;
  }
  const parser = parseSse();
  s.parser = parser;
  let wake = () => {};
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const ev of parser.feed(value)) {
          s.events.push({ ...JSON.parse(ev.data), sseId: ev.id });
        }
        wake();
      }
    } catch (e) {
      if (!s.closed) s.error = e;
    } finally {
      s.ended = true;
      wake();
    }
  })();
  s.close = () => {
    s.closed = true;
    ctl.abort();
  };
  s.waitFor = (pred, ms) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        wake = () => {};
        reject(new Error(`no such event on the stream within ${ms} ms; received: ${s.events.map((e) => `${e.seq} ${e.kind}`).join(", ")}`));
      }, ms);
      const check = () => {
        const ev = s.events.find(pred);
        if (ev) {
          clearTimeout(timer);
          wake = () => {};
          resolve(ev);
        } else if (s.ended) {
          clearTimeout(timer);
          wake = () => {};
          reject(new Error(`the stream ended (${s.error ? s.error.message : "closed by the server"}) before the event came`));
        }
      };
      wake = check;
      check();
    });
  return s;
}
