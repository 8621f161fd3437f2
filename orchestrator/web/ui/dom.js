//! Building the page: `h(tag, attrs, ...children)` makes elements whose
//! text is always text (strings become text nodes, never HTML: a container
//! named `<img src=x onerror=alert(1)>` shows as those characters), and the
//! small pieces every view shares: a table, a confirmation, a sparkline,
//! and the formats of bytes, percentages and ages.
//!
//! Nothing here parses markup, sets inline styles or inline handlers: the
//! page runs under a Content-Security-Policy without `unsafe-inline`.

const SVG = "http://www.w3.org/2000/svg";

/**
 * An element. `attrs`: `class`, `text`, `on<event>` (a function), `hidden`,
 * `disabled`, `dataset` (an object), anything else as an attribute.
 * Children: elements, strings (as text), numbers, or null/false (skipped).
 */
export function h(tag, attrs, ...children) {
  const el = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "hidden" || k === "disabled" || k === "checked" || k === "selected" || k === "required") el[k] = true;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replace `el`'s children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table: `columns` are header strings; `rows` arrays of cells (strings or elements). */
export function table(columns, rows, attrs) {
  return h(
    "table",
    attrs || {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => (r instanceof Node ? r : h("tr", {}, r.map((c) => h("td", {}, c)))))),
  );
}

/** A button that runs `action` once at a time (disabled while it runs). */
export function button(label, action, attrs) {
  const b = h("button", Object.assign({ type: "button" }, attrs || {}), label);
  b.addEventListener("click", async () => {
    if (b.disabled) return;
    b.disabled = true;
    try {
      await action();
    } finally {
      if (b.isConnected) b.disabled = false;
    }
  });
  return b;
}

/** Ask before something that cannot be undone: true once the person confirms. */
export function confirmed(question) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-label": "confirm" });
    const done = (yes) => {
      dialog.close();
      dialog.remove();
      resolve(yes);
    };
    fill(
      dialog,
      h("p", {}, question),
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "danger", onclick: () => done(true) }, "Yes, do it"),
        h("button", { type: "button", onclick: () => done(false) }, "Cancel"),
      ),
    );
    dialog.addEventListener("cancel", () => resolve(false));
    document.body.appendChild(dialog);
    dialog.showModal();
  });
}

/** An SVG polyline of `values` (0..max) in a `w`×`h` box, newest on the right. */
export function sparkline(values, max, label, w = 120, hgt = 28) {
  const top = Math.max(max, 1e-9);
  const n = values.length;
  const pts = values
    .map((v, i) => {
      const x = n <= 1 ? w : (i / (n - 1)) * w;
      const y = hgt - (Math.min(v, top) / top) * (hgt - 2) - 1;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(" ");
  return h(
    "svg:svg",
    { class: "spark", viewBox: `0 0 ${w} ${hgt}`, width: w, height: hgt, role: "img", "aria-label": label },
    h("svg:polyline", { points: pts, fill: "none", stroke: "currentColor", "stroke-width": "1.5" }),
  );
}

/** 1536 → "1.5 KiB". */
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/** 0.123 → "12 %" (a fraction); `null` → "–". */
export function percent(fraction) {
  if (fraction === null || fraction === undefined || Number.isNaN(fraction)) return "–";
  return `${Math.round(fraction * 100)} %`;
}

/** How long ago `ms` (epoch milliseconds) was, in words: "4 s ago", "3 min ago". */
export function ago(ms, now = Date.now()) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Epoch milliseconds as a local date and time. */
export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "–";
}

/** `{a: "1"}` → "a=1, …"; empty → "none". */
export function pairs(obj) {
  const e = Object.entries(obj || {});
  return e.length ? e.map(([k, v]) => `${k}=${v}`).join(", ") : "none";
}

/** "KEY=value" lines (blank lines skipped) → an object; throws with the bad line. */
export function parsePairs(text, what) {
  const out = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf("=");
    if (i <= 0) throw new Error(`${what}: "${line}" is not KEY=value`);
    out[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  return out;
}
