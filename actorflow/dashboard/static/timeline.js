// A run's timeline: one row per step that has attempts, each attempt a bar (queued time light,
// then running, coloured by outcome), over a time axis with ticks at round intervals.
//
// Long waits: an approval that waited an hour would squash every other bar to a sliver on a
// linear axis. So, by default, stretches of time in which only waits (approvals, sleeps,
// events, signals) are running, and that are longer than a tenth of the run, are collapsed
// to a fixed-width break (a zig-zag, labelled with the time it stands for); "linear" draws
// real proportions, "log" a log scale from the run's start. Zoom: drag across the axis to
// zoom into a span, "reset" to see the whole run.
import { esc, seconds, WAITS } from "./lib.js";

const L = 190, R = 16, RH = 22, AXIS = 28;
const MAX_ROWS = 200;  // rows drawn; a note says how many more steps there are
const BREAK = 36;  // pixels a collapsed wait takes

// Round steps of a time axis, in seconds: 1-2-5 below a second, then the clock's own units.
const STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60,
  120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

function niceStep(span, ticks) {
  const raw = span / ticks;
  return STEPS.find((s) => s >= raw) || STEPS[STEPS.length - 1];
}

function tickLabel(t, step) {
  if (t === 0) return "0";
  if (step < 1) return `${+(t * 1000).toFixed(step < 0.01 ? 1 : 0)} ms`;
  if (step < 60) return `${+t.toFixed(step < 1 ? 1 : 0)} s`;
  if (step < 3600) return `${+(t / 60).toFixed(step < 60 ? 1 : 0)} min`;
  if (step < 86400) return `${+(t / 3600).toFixed(1)} h`;
  return `${+(t / 86400).toFixed(1)} d`;
}

// A piecewise-linear map from time to x: `segments` are [t0, t1, collapsed] in order.
function scale(segments, x0, x1) {
  const flex = segments.filter((s) => !s[2]).reduce((a, s) => a + (s[1] - s[0]), 0) || 1;
  const fixed = segments.filter((s) => s[2]).length * BREAK;
  const px = Math.max(1, x1 - x0 - fixed) / flex;
  const starts = [];
  let x = x0;
  for (const s of segments) {
    starts.push(x);
    x += s[2] ? BREAK : (s[1] - s[0]) * px;
  }
  return (t) => {
    for (let i = 0; i < segments.length; i++) {
      const [a, b, c] = segments[i];
      if (t <= b || i === segments.length - 1) {
        if (c) return starts[i] + (Math.min(Math.max(t, a), b) - a) / Math.max(b - a, 1e-9) * BREAK;
        return starts[i] + (Math.max(t, a) - a) * px;
      }
    }
    return x1;
  };
}

// Stretches longer than `min` in which a wait (an approval, a sleep, an event) is in progress
// and no other step is dispatched or running: only those are collapsed, so idle time between
// steps, and a retry's back-off, keep their real length.
function waitsOnly(rows, t0, t1, min) {
  const busy = [];
  const waits = [];
  for (const s of rows) {
    const spans = s.attempts.map((a) => [a.started_at || s.dispatched_at || t0, a.ended_at || t1]);
    if (WAITS.has(s.kind)) { waits.push(...spans); continue; }
    busy.push(...spans);
    if (s.dispatched_at) busy.push([s.dispatched_at, s.started_at || s.dispatched_at]);
  }
  busy.sort((a, b) => a[0] - b[0]);
  const idle = [];
  let at = t0;
  for (const [a, b] of busy) {
    if (a > at) idle.push([at, a]);
    at = Math.max(at, b);
  }
  if (t1 > at) idle.push([at, t1]);
  const gaps = [];
  for (const [a, b] of idle) {
    for (const [wa, wb] of waits) {
      const lo = Math.max(a, wa, t0), hi = Math.min(b, wb, t1);
      if (hi - lo > min) gaps.push([lo, hi]);
    }
  }
  gaps.sort((x, y) => x[0] - y[0]);
  const merged = [];  // overlapping waits (two approvals at once) make one break
  for (const g of gaps) {
    const last = merged[merged.length - 1];
    if (last && g[0] <= last[1]) last[1] = Math.max(last[1], g[1]);
    else merged.push(g);
  }
  return merged;
}

export class Timeline {
  constructor(box) {
    this.box = box;
    this.mode = "collapse";
    this.window = null;  // [t0, t1] zoomed into, or null: the whole run
    this.run = null;
  }

  draw(run) {
    this.run = run;
    // Rows in the order the steps began (their first attempt, else their dispatch).
    // A wait in progress (an approval, a sleep) has no attempt yet: it shows as one bar from
    // when it began, in the waiting colour.
    const rows = run.steps.map((s) => {
      if (s.attempts && s.attempts.length) return s;
      const since = s.started_at || s.dispatched_at;
      if (!since || !["running", "waiting"].includes(s.status)) return null;
      const status = WAITS.has(s.kind) ? "waiting" : s.status;
      return { ...s, attempts: [{ attempt: 1, status, started_at: since, ended_at: null }] };
    }).filter(Boolean);
    const began = (s) => Math.min(...s.attempts.map((a) => a.started_at || Infinity), s.dispatched_at || Infinity);
    rows.sort((a, b) => began(a) - began(b));
    const hidden = Math.max(0, rows.length - MAX_ROWS);
    rows.length = Math.min(rows.length, MAX_ROWS);
    // As wide as its card (the width is fixed at the first drawing: a live update or a
    // resize does not move the bars under the pointer).
    this.W = this.W || Math.max(720, Math.floor((this.box.clientWidth || 992) - 32));
    const W = this.W;
    if (!rows.length) {
      this.box.innerHTML = '<p class="muted">No step has started yet.</p>';
      this.box.dataset.html = "";
      return;
    }
    const now = Date.now() / 1000;
    const start = run.created_at;
    const end = Math.max(run.ended_at || now, ...rows.flatMap((s) => s.attempts.map((a) => a.ended_at || now)));
    const [t0, t1] = this.window || [start, end];
    const span = Math.max(t1 - t0, 0.001);
    let segments = [[t0, t1, false]];
    let gaps = [];
    if (this.mode === "collapse") {
      gaps = waitsOnly(rows, t0, t1, span / 10);
      segments = [];
      let at = t0;
      for (const [a, b] of gaps) {
        if (a > at) segments.push([at, a, false]);
        segments.push([a, b, true]);
        at = b;
      }
      if (at < t1) segments.push([at, t1, false]);
    }
    const x = this.mode === "log"
      ? (t) => L + (Math.log1p(Math.max(0, t - t0) * 1000) / Math.log1p(span * 1000)) * (W - L - R)
      : scale(segments, L, W - R);
    const clamp = (v) => Math.min(W - R, Math.max(L, v));
    const H = rows.length * RH;
    let svg = `<svg id="timeline" width="${W}" height="${H + AXIS + 6}" role="img" data-mode="${this.mode}">`;
    let under = "";  // the breaks and the grid: drawn first, so that no bar is hidden by them
    for (const [a, b] of gaps) {
      const xa = x(a), xb = x(b), mid = (xa + xb) / 2;
      under += `<g class="gap" data-seconds="${(b - a).toFixed(3)}"><rect x="${xa}" y="0" width="${xb - xa}" height="${H}"/>
        <path d="M${mid - 4},0 ${Array.from({ length: Math.ceil(H / 8) }, (_, k) => `L${mid + (k % 2 ? -4 : 4)},${(k + 1) * 8}`).join(" ")}"/>
        <text x="${mid}" y="${H + 22}" text-anchor="middle">⋯ ${esc(seconds(b - a))}</text></g>`;
    }
    let bars = "";
    rows.forEach((s, i) => {
      const y = i * RH + 4;
      const name = s.path.length > 28 ? `${s.path.slice(0, 27)}…` : s.path;
      bars += `<text x="4" y="${y + 14}"><title>${esc(s.path)}</title>${esc(name)}</text>`;
      if (s.dispatched_at && s.started_at && s.started_at > s.dispatched_at) {
        const a = clamp(x(s.dispatched_at)), b = clamp(x(s.started_at));
        bars += `<rect class="queued" x="${a}" y="${y + 5}" width="${Math.max(1, b - a)}" height="8"><title>queued ${seconds(s.started_at - s.dispatched_at)}</title></rect>`;
      }
      for (const at of s.attempts) {
        const a0 = at.started_at || s.dispatched_at || t0;
        const a1 = at.ended_at || now;
        if (a1 < t0 || a0 > t1) continue;  // outside the zoomed window
        const a = clamp(x(a0)), b = clamp(x(a1));
        bars += `<rect class="bar st-${esc(at.status)}" data-step="${esc(s.path)}" x="${a}" y="${y + 2}" width="${Math.max(3, b - a)}"
          height="14"><title>${esc(s.path)} attempt ${at.attempt}: ${esc(at.status)} ${seconds(a1 - a0)}${at.error ? " - " + esc(at.error) : ""}</title></rect>`;
      }
    });
    // The axis: ticks at round steps of each linear segment (and decades on a log scale).
    let axis = `<line class="axis" x1="${L}" y1="${H + 4}" x2="${W - R}" y2="${H + 4}"/>`;
    const ticks = [];  // [time, the step it is a multiple of]
    if (this.mode === "log") {
      ticks.push([t0, 1]);
      for (let d = 0.001; d <= span; d *= 10) ticks.push([t0 + d, d]);
    } else {
      // Each drawn stretch gets its own round step (one stretch may be 3 ms, the next 2 s),
      // labelled with the time since the run was triggered.
      for (const [a, b, c] of segments) {
        const width = x(b) - x(a);
        if (c || width < 40) continue;
        const step = niceStep(b - a, Math.max(1, Math.round(width / 110)));
        const first = Math.ceil((a - start) / step - 1e-9) * step;
        for (let t = first; start + t <= b + 1e-9; t += step) ticks.push([start + t, step]);
      }
    }
    for (const [t, step] of ticks) {
      const tx = x(t);
      under += `<line class="grid" x1="${tx}" y1="0" x2="${tx}" y2="${H + 4}"/>`;
      axis += `<g class="tick"><line x1="${tx}" y1="${H + 4}" x2="${tx}" y2="${H + 9}"/>
        <text x="${tx}" y="${H + 21}" text-anchor="middle">${esc(tickLabel(t - start, step))}</text></g>`;
    }
    svg += under + bars + axis;
    svg += `<rect class="brush-area" x="${L - 10}" y="${H + 2}" width="${W - L - R + 20}" height="${AXIS}"/><rect class="brush" x="0" y="0" width="0" height="${H + 4}" hidden/></svg>`;
    const tools = `<div class="timeline-tools">
      <label><input type="radio" name="tl-mode" value="collapse" ${this.mode === "collapse" ? "checked" : ""}> collapse long waits</label>
      <label><input type="radio" name="tl-mode" value="linear" ${this.mode === "linear" ? "checked" : ""}> linear</label>
      <label><input type="radio" name="tl-mode" value="log" ${this.mode === "log" ? "checked" : ""}> log scale</label>
      <button class="secondary small tl-reset" ${this.window ? "" : "disabled"}>reset zoom</button>
      <span class="muted">drag across the axis to zoom</span></div>`;
    const more = hidden ? `<p class="muted timeline-more">The first ${MAX_ROWS} steps to start are drawn; ${hidden} more are in the steps table below (filter it by name or status).</p>` : "";
    const html = tools + svg + more;
    if (this.box.dataset.html === html) return;
    this.box.innerHTML = html;
    this.box.dataset.html = html;
    this.wire(x, t0, t1, H);
  }

  wire(x, t0, t1, H) {
    const box = this.box;
    const W = this.W;
    for (const input of box.querySelectorAll("input[name=tl-mode]")) {
      input.onchange = () => { this.mode = input.value; this.draw(this.run); };
    }
    box.querySelector(".tl-reset").onclick = () => { this.window = null; this.draw(this.run); };
    const svg = box.querySelector("svg");
    const brush = svg.querySelector(".brush");
    // The inverse of x, by bisection (x is monotone, whichever scale is drawn).
    const timeAt = (px) => {
      let lo = t0, hi = t1;
      for (let i = 0; i < 50; i++) {
        const mid = (lo + hi) / 2;
        if (x(mid) < px) lo = mid; else hi = mid;
      }
      return (lo + hi) / 2;
    };
    let from = null;
    const px = (e) => e.clientX - svg.getBoundingClientRect().left;
    svg.querySelector(".brush-area").addEventListener("pointerdown", (e) => {
      from = px(e);
      svg.setPointerCapture(e.pointerId);
    });
    svg.addEventListener("pointermove", (e) => {
      if (from === null) return;
      const a = Math.min(from, px(e)), b = Math.max(from, px(e));
      brush.hidden = false;
      brush.setAttribute("x", String(a));
      brush.setAttribute("width", String(b - a));
    });
    svg.addEventListener("pointerup", (e) => {
      if (from === null) return;
      const a = Math.min(from, px(e)), b = Math.max(from, px(e));
      from = null;
      brush.hidden = true;
      if (b - a < 4) return;
      // (the area reaches 10 px past each end of the axis: a drag begun there starts at the
      // window's very edge)
      this.window = [a <= L ? t0 : timeAt(a), b >= W - R ? t1 : timeAt(b)];
      this.draw(this.run);
    });
    void H;
  }
}
