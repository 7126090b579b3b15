// events.mjs — a session's event log, live: the SSE stream read with
// fetch() and a ReadableStream (so the token goes in the Authorization
// header, which EventSource cannot send).  The reader keeps the last seq it
// handed on; every reconnect sends it as Last-Event-ID, and any event at or
// below it is dropped, so the caller sees each seq once and in order.
import { headers } from './api.mjs';

export class EventLog {
  // onEvent(event), onState('live' | 'reconnecting' | 'ended', detail);
  // after: the seq to start after (0: the whole log)
  constructor(sessionId, { onEvent, onState, after = 0 }) {
    this.url = `/v1/sessions/${encodeURIComponent(sessionId)}/events`;
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.lastSeq = Number.isSafeInteger(after) && after > 0 ? after : 0;
    this.retryMs = 1000;
    this.stopped = false;
    this.ctrl = null;
    this.wake = null;
    // Offline, a stream may hang without an error: drop it, and come back
    // at once when the network does.
    this.onOffline = () => { if (this.ctrl) this.ctrl.abort(); };
    this.onOnline = () => { if (this.wake) this.wake(); };
  }

  start() {
    window.addEventListener('offline', this.onOffline);
    window.addEventListener('online', this.onOnline);
    this.loop();
    return this;
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('offline', this.onOffline);
    window.removeEventListener('online', this.onOnline);
    if (this.ctrl) this.ctrl.abort();
    if (this.wake) this.wake();
  }

  // One stream at a time.  A stream that ends cleanly (an expired token,
  // an edge shutting down, a slow reader cut off) is reopened like a broken
  // one, from lastSeq; the pause is the server's retry: times the failures
  // in a row (at most 10 s), cut short by the browser's 'online' event.
  // Only a 4xx other than 429 ends the log for good: asking again would get
  // the same answer.
  async loop() {
    let failures = 0;
    while (!this.stopped) {
      this.ctrl = new AbortController();
      try {
        const h = headers({ Accept: 'text/event-stream' });
        if (this.lastSeq > 0) h['Last-Event-ID'] = String(this.lastSeq);
        const r = await fetch(this.url, { headers: h, signal: this.ctrl.signal, cache: 'no-store' });
        if (!r.ok) {
          let problem = null;
          try {
            problem = await r.json();
          } catch {
            problem = null;
          }
          // 4xx other than a limit: reconnecting would not help
          if (r.status >= 400 && r.status < 500 && r.status !== 429) {
            this.onState('ended', { status: r.status, problem });
            return;
          }
          throw new Error(`HTTP ${r.status}`);
        }
        failures = 0;
        this.onState('live');
        await this.read(r.body);
      } catch (e) {
        if (this.stopped) return;
        failures++;
      }
      if (this.stopped) return;
      this.onState('reconnecting', { after: this.lastSeq });
      await new Promise((res) => {
        const t = setTimeout(res, Math.min(this.retryMs * Math.max(1, failures), 10000));
        this.wake = () => { clearTimeout(t); res(); };
      });
      this.wake = null;
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let data = [];
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
        if (line === '') {
          if (data.length) this.dispatch(id, data.join('\n'));
          data = [];
          id = null;
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'data') data.push(val);
        else if (field === 'id') id = val;
        else if (field === 'retry' && /^\d+$/.test(val)) this.retryMs = Math.max(250, Number(val));
        // "event:" names the kind, which the data carries too
      }
    }
  }

  dispatch(id, text) {
    let ev;
    try {
      ev = JSON.parse(text);
    } catch {
      return;
    }
    if (!ev || typeof ev !== 'object') return;
    // the seq in the data is authoritative; the id: line is the same number
    const seq = Number(ev.seq ?? id);
    if (!Number.isSafeInteger(seq) || seq <= this.lastSeq) return; // seen already
    this.lastSeq = seq;
    ev.seq = seq;
    try {
      this.onEvent(ev);
    } catch (e) {
      // the page's trouble with one event must not cut the stream
      console.error(e);
    }
  }
}
