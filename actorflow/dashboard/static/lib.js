// Shared helpers of the dashboard's pages: escaping, the API, times, badges, and patching
// the page in place (live updates change the nodes that changed, never a form being typed in).

export function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

export function h(html) {
  // One element from HTML text (the first child of a template).
  const t = document.createElement("template");
  t.innerHTML = html.trim();
  return t.content.firstElementChild;
}

// Formatters made once: toLocaleString() builds one per call, which a page of thousands of
// times (a big run's history) pays for in seconds.
const FULL = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric",
});
const CLOCK = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});

export function when(t) {
  return t ? FULL.format(new Date(t * 1000)) : "-";
}

// A time of day to the millisecond (a run's history has many events within one second).
export function clock(t) {
  const d = new Date(t * 1000);
  return `${CLOCK.format(d)}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

// "3 min ago", "in 2 h": relative to now; the absolute time goes in the title attribute.
export function ago(t, now = Date.now() / 1000) {
  if (!t) return "-";
  const d = t - now;
  const a = Math.abs(d);
  let text;
  if (a < 5) return d <= 0 ? "just now" : "in a moment";
  if (a < 90) text = `${Math.round(a)} s`;
  else if (a < 90 * 60) text = `${Math.round(a / 60)} min`;
  else if (a < 36 * 3600) text = `${Math.round(a / 3600)} h`;
  else text = `${Math.round(a / 86400)} d`;
  return d < 0 ? `${text} ago` : `in ${text}`;
}

export function time(t) {
  // A relative time with the absolute one on hover; `data-t` lets the clock refresh it.
  if (!t) return "-";
  return `<time class="rel" data-t="${t}" datetime="${new Date(t * 1000).toISOString()}"
    title="${esc(when(t))}">${esc(ago(t))}</time>`;
}

export function refreshTimes(root = document) {
  const now = Date.now() / 1000;
  for (const el of root.querySelectorAll("time.rel[data-t]")) {
    const text = ago(Number(el.dataset.t), now);
    if (el.textContent !== text) el.textContent = text;
  }
}

export function seconds(s) {
  if (s === null || s === undefined) return "-";
  if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
  if (s < 120) return `${s.toFixed(2)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function badge(status) {
  return `<span class="badge s-${esc(status)}">${esc(status)}</span>`;
}

export function toast(message, bad) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.classList.toggle("bad", Boolean(bad));
  el.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("show"), 3500);
}

export async function api(path, options = {}) {
  // `path` is relative ("api/runs"): resolved against the page, under the app's prefix.
  // The server takes actions only as JSON, or with X-Actorflow-Client: headers another
  // site's page cannot send here (they need a CORS preflight, which is never granted).
  const response = await fetch(path, {
    ...options,
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json",
      "X-Actorflow-Client": "dashboard",
      ...(options.headers || {}),
    },
  });
  if (response.status === 401) {
    location.reload();  // the token's cookie is gone: the page itself answers with the login
    throw new Error("unauthorized");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not the API's JSON (a proxy's error page, a route that is not there): say what came.
    throw new Error(`${response.status} ${response.statusText}: ${text.slice(0, 200)}`.trim());
  }
  if (!response.ok) {
    throw new Error((data && (data.detail || data.error)) || `${response.status}`);
  }
  return { data, headers: response.headers };
}

export function post(path, body, headers = {}) {
  return api(path, { method: "POST", headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

// Follow live events with `fn` (async). The first event runs it `ms` later; events that
// arrive meanwhile, or while it runs, are folded into one more run after it. Unlike a
// debounce, a steady stream of events (a busy run sends one every few milliseconds) cannot
// put it off until the stream stops; and the next run waits at least three times as long
// as the last took, so a big page refetched while its run is busy costs the engine at most
// a quarter of its time.
export function live(fn, ms) {
  let timer = null;
  let running = false;
  let again = false;
  let next = 0;  // the earliest time of the next run
  const start = async () => {
    timer = null;
    running = true;
    again = false;
    const began = performance.now();
    try { await fn(); } catch { /* the next event tries again */ }
    running = false;
    next = performance.now() + Math.max(ms, 3 * (performance.now() - began));
    if (again) call();
  };
  const call = () => {
    if (running) again = true;
    else if (!timer) timer = setTimeout(start, Math.max(ms, next - performance.now()));
  };
  return call;
}

// Run `fn` once the calls have stopped for `ms` (typing in a search box).
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export const FINISHED = ["completed", "failed", "cancelled", "continued"];

// Step kinds that wait (for a person, a time, an event, a signal, a condition).
export const WAITS = new Set(["approval", "wait", "wait_for_event", "event", "sleep", "signal", "wait_condition"]);

// The status a step shows: a wait in progress is "waiting" (the API says running, as the
// step is in flight), in the graph, the steps table and the timeline alike.
export function shownStatus(step) {
  return step.status === "running" && WAITS.has(step.kind) ? "waiting" : step.status;
}

// Set an element's HTML only when it changed: a live update leaves untouched what it does not
// change (a focused control, a text selection, an open <details>).
export function setHTML(el, html) {
  if (el && el.dataset.html !== html) {
    el.innerHTML = html;
    el.dataset.html = html;
  }
}

// Keep `container`'s children in step with `items`: one child per key, created by `make`,
// updated by `update`, in the items' order; children of keys gone are removed. Children that
// stay are the same nodes, so whatever the user typed into them stays.
// Linear in the children: it walks siblings (indexing `children` while inserting is
// quadratic, as the live collection is recomputed after each change).
export function keyed(container, items, key, make, update) {
  const old = new Map([...container.children].map((el) => [el.dataset.key, el]));
  let prev = null;
  for (const item of items) {
    const k = String(key(item));
    let el = old.get(k);
    if (el) old.delete(k);
    else {
      el = make(item);
      el.dataset.key = k;
    }
    update(el, item);
    const here = prev ? prev.nextElementSibling : container.firstElementChild;
    if (here !== el) container.insertBefore(el, here);
    prev = el;
  }
  for (const el of old.values()) el.remove();
}

export function jsonInput(text, what) {
  try {
    return JSON.parse(text || "null");
  } catch (e) {
    throw new Error(`${what}: ${e.message}`);
  }
}
