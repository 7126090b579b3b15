// dom.mjs — building the page without ever parsing data as HTML: every
// text goes in through textContent, every attribute through setAttribute
// (event payloads are hostile).
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = String(v);
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

// A relative time for a timestamp ("12 s ago"), the timestamp as its title.
export function ago(ts) {
  if (!ts) return el('span', { class: 'muted', text: '—' });
  const t = Date.parse(ts);
  // not a time ("infinity", garbage): shown as it is, never thrown on
  if (!Number.isFinite(t) || Math.abs(t) > 8.64e15) return el('span', { text: typeof ts === 'string' ? ts : json(ts) });
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  const text = s < 60 ? `${s} s ago` : s < 3600 ? `${Math.floor(s / 60)} min ago`
    : s < 86400 ? `${Math.floor(s / 3600)} h ago` : new Date(t).toISOString().slice(0, 10);
  return el('time', { datetime: ts, title: ts, text });
}

export function json(v) {
  try {
    return JSON.stringify(v, null, 2);
  } catch {
    return String(v);
  }
}

export function badge(state) {
  return el('span', { class: `badge st-${String(state).replace(/[^a-z_]/g, '')}`, text: state });
}

// A text cut to max characters, with what was left out said at its end:
// one event's stdout or message may be megabytes, and the page stays usable.
export const CLIP = 16384;
export function clip(text, max = CLIP) {
  const s = String(text);
  return s.length <= max ? s : `${s.slice(0, max)}\n… ${s.length - max} more characters not shown`;
}
