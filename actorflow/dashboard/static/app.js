// The actorflow dashboard: a single page on the engine's JSON API. No build step, no
// dependencies: hash routes (#/, #/run/ID, #/workflows, #/trigger), SVG for the graph and the timeline,
// server-sent events (api/stream) for live updates. Every URL is relative to the page, so the
// dashboard works wherever the engine's app is mounted (/, /flows/, behind a proxy's prefix).
"use strict";

const main = document.getElementById("main");
const state = { readOnly: false, workflows: [], source: null, listeners: new Set() };

// -- helpers ---------------------------------------------------------------------------------

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

function when(t) {
  return t ? new Date(t * 1000).toLocaleString() : "-";
}

function seconds(s) {
  if (s === null || s === undefined) return "-";
  if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
  if (s < 120) return `${s.toFixed(2)} s`;
  return `${(s / 60).toFixed(1)} min`;
}

function badge(status) {
  return `<span class="badge s-${esc(status)}">${esc(status)}</span>`;
}

function toast(message, bad) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.style.background = bad ? "#d64545" : "#16161a";
  el.classList.add("show");
  setTimeout(() => el.classList.remove("show"), 3500);
}

async function api(path, options = {}) {
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
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    throw new Error((data && (data.detail || data.error)) || `${response.status}`);
  }
  return { data, headers: response.headers };
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// -- live updates ------------------------------------------------------------------------------

function connect() {
  if (state.source) return;
  const source = new EventSource("api/stream");
  const live = document.getElementById("live");
  source.onopen = () => live.classList.add("on");
  source.onerror = () => live.classList.remove("on");
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    for (const listener of state.listeners) listener(event);
  };
  state.source = source;
}

function listen(fn) {
  state.listeners.clear();  // one page at a time
  state.listeners.add(fn);
}

// -- runs list ---------------------------------------------------------------------------------

// "customer=c-42 amount>100 vip=true" as the API's where: {"customer": "c-42", "amount>": 100,
// "vip": true}. A number or true/false is typed; anything else (quotes dropped) is a string.
function parseWhere(text) {
  const where = {};
  for (const token of text.trim().split(/\s+/).filter(Boolean)) {
    const m = /^([^<>=!]+)(>=|<=|!=|>|<|=)(.*)$/.exec(token);
    if (!m) throw new Error(`search: expected name=value, name>value... got ${token}`);
    let value = m[3].replace(/^"(.*)"$/, "$1");
    if (/^-?\d+(\.\d+)?$/.test(value)) value = Number(value);
    else if (value === "true" || value === "false") value = value === "true";
    where[m[1] + (m[2] === "=" ? "" : m[2])] = value;
  }
  return where;
}

async function runsPage(params) {
  const workflow = params.get("workflow") || "";
  const status = params.get("status") || "";
  const search = params.get("search") || "";
  const since = params.get("since") || "";
  const until = params.get("until") || "";
  const options = state.workflows.map((w) =>
    `<option ${w === workflow ? "selected" : ""}>${esc(w)}</option>`).join("");
  const statuses = ["queued", "running", "waiting_for_definition", "completed", "failed",
    "cancelled", "panicked", "continued"]
    .map((s) => `<option ${s === status ? "selected" : ""}>${s}</option>`).join("");
  main.innerHTML = `
    <h1>Runs</h1>
    <form class="filters" id="filters">
      <label>Workflow<select name="workflow"><option value="">all</option>${options}</select></label>
      <label>Status<select name="status"><option value="">all</option>${statuses}</select></label>
      <label>Since<input type="datetime-local" name="since" value="${esc(since)}"></label>
      <label>Until<input type="datetime-local" name="until" value="${esc(until)}"></label>
      <label>Search attributes<input name="search" placeholder="customer=c-42 amount>100"
        value="${esc(search)}"></label>
      <button type="submit">Filter</button>
    </form>
    <div class="card"><table id="runs">
      <thead><tr><th>Run</th><th>Workflow</th><th>Status</th><th>Triggered</th><th>Duration</th></tr></thead>
      <tbody></tbody></table>
      <p><button class="secondary" id="more" hidden>Load more</button>
         <span class="muted" id="count"></span></p>
    </div>`;
  document.getElementById("filters").onsubmit = (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const q = new URLSearchParams();
    for (const [k, v] of form.entries()) if (v) q.set(k, v);
    location.hash = `#/?${q}`;
  };
  const body = main.querySelector("#runs tbody");
  let cursor = null;
  let shown = 0;
  async function load(reset) {
    const q = new URLSearchParams({ limit: "50" });
    if (workflow) q.set("workflow", workflow);
    if (status) q.set("status", status);
    if (since) q.set("since", String(new Date(since).getTime() / 1000));
    if (until) q.set("until", String(new Date(until).getTime() / 1000));
    if (search) q.set("where", JSON.stringify(parseWhere(search)));
    if (!reset && cursor) q.set("before", cursor);
    const { data, headers } = await api(`api/runs?${q}`);
    if (reset) { body.innerHTML = ""; shown = 0; }
    for (const run of data) {
      const tr = document.createElement("tr");
      tr.className = "run-row";
      tr.dataset.run = run.id;
      tr.innerHTML = `<td class="mono">${esc(run.id)}</td><td>${esc(run.workflow_id)}</td>
        <td>${badge(run.status)}</td><td>${when(run.created_at)}</td>
        <td>${seconds(run.duration)}</td>`;
      tr.onclick = () => { location.hash = `#/run/${run.id}`; };
      body.appendChild(tr);
    }
    shown += data.length;
    cursor = headers.get("X-Next-Cursor");
    document.getElementById("more").hidden = !cursor;
    document.getElementById("count").textContent = `${shown} run(s) shown`;
  }
  document.getElementById("more").onclick = () => load(false).catch((e) => toast(e.message, true));
  await load(true).catch((e) => toast(e.message, true));  // (a search the API refuses, say)
  const refresh = debounce(() => load(true).catch(() => {}), 300);
  listen((event) => {
    if (event.type === "RunStarted" || event.type === "RunFinished") refresh();
  });
}

// -- run detail --------------------------------------------------------------------------------

const STATUS_COLORS = {
  succeeded: "#1f9d55", completed: "#1f9d55", failed: "#d64545", running: "#2f6fde",
  retrying: "#2f6fde", pending: "#c9c9cf", skipped: "#e4e4e8", cancelled: "#a0a0a8",
  waiting: "#c98a0b",
};

function layout(graph) {
  // Longest-path ranks over every edge (the plan is acyclic), then a column per node in rank.
  const rank = new Map(graph.nodes.map((n) => [n.id, 0]));
  for (let pass = 0; pass < graph.nodes.length; pass++) {
    let changed = false;
    for (const e of graph.edges) {
      if (rank.get(e.to) < rank.get(e.from) + 1) { rank.set(e.to, rank.get(e.from) + 1); changed = true; }
    }
    if (!changed) break;
  }
  const columns = new Map();
  const pos = new Map();
  for (const n of graph.nodes) {
    const r = rank.get(n.id);
    const c = columns.get(r) || 0;
    columns.set(r, c + 1);
    pos.set(n.id, { x: c, y: r });
  }
  return pos;
}

function drawGraph(graph, run) {
  if (graph.code) {
    // A code workflow: its recorded steps, in order.
    graph = {
      nodes: run.steps.map((s, i) => ({ id: i, name: s.name, kind: s.kind })),
      edges: run.steps.slice(1).map((_, i) => ({ from: i, to: i + 1, type: "next" })),
    };
  }
  const byName = new Map(run.steps.map((s) => [s.name, s]));
  const pos = layout(graph);
  const W = 170, H = 64, BW = 140, BH = 34;
  const maxX = Math.max(1, ...[...pos.values()].map((p) => p.x + 1));
  const maxY = Math.max(1, ...[...pos.values()].map((p) => p.y + 1));
  const center = (id) => ({ x: pos.get(id).x * W + 10 + BW / 2, y: pos.get(id).y * H + 10 });
  let svg = `<svg id="graph" width="${maxX * W + 20}" height="${maxY * H + 20}" role="img">`;
  for (const e of graph.edges) {
    const a = center(e.from), b = center(e.to);
    const dash = e.type === "body" ? 'stroke-dasharray="4 3"' : "";
    svg += `<line x1="${a.x}" y1="${a.y + BH}" x2="${b.x}" y2="${b.y}" stroke="#9a9aa2" ${dash}/>`;
    if (e.label) {
      svg += `<text x="${(a.x + b.x) / 2 + 4}" y="${(a.y + BH + b.y) / 2}" fill="#6b6b72">${esc(e.label)}</text>`;
    }
  }
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const x = p.x * W + 10, y = p.y * H + 10;
    const step = byName.get(n.name);
    const status = step ? step.status : (n.kind === "join" ? "" : "pending");
    if (n.kind === "join") {
      svg += `<circle cx="${x + BW / 2}" cy="${y + BH / 2}" r="5" fill="#9a9aa2"/>`;
      continue;
    }
    let extra = "";
    if (step && step.items) extra = ` ${step.items.succeeded}/${step.items.total}`;
    if (step && step.iterations) extra = ` ×${step.iterations}`;
    const fill = STATUS_COLORS[status] || "#c9c9cf";
    const text = status === "pending" || status === "skipped" ? "#1d1d1f" : "#fff";
    svg += `<g class="node" data-node="${esc(n.name)}" data-status="${esc(status)}">
      <title>${esc(n.kind)} ${esc(n.name)}: ${esc(status)}</title>
      <rect x="${x}" y="${y}" width="${BW}" height="${BH}" rx="6" fill="${fill}" stroke="#0002"/>
      <text x="${x + 8}" y="${y + 21}" fill="${text}">${esc(n.name.slice(0, 18))}${esc(extra)}</text></g>`;
  }
  svg += "</svg>";
  svg += `<div class="legend">${["succeeded", "running", "failed", "pending", "skipped", "cancelled"]
    .map((s) => `<span><i style="background:${STATUS_COLORS[s]}"></i>${s}</span>`).join("")}</div>`;
  return svg;
}

function drawTimeline(run) {
  const rows = run.steps.filter((s) => s.attempts && s.attempts.length).slice(0, 60);
  if (!rows.length) return '<p class="muted">No step has started yet.</p>';
  const t0 = run.created_at;
  const now = Date.now() / 1000;
  const t1 = Math.max(run.ended_at || now, ...rows.flatMap((s) => s.attempts.map((a) => a.ended_at || now)));
  const span = Math.max(t1 - t0, 0.001);
  const W = 900, L = 160, RH = 22;
  const x = (t) => L + ((t - t0) / span) * (W - L - 10);
  let svg = `<svg id="timeline" width="${W}" height="${rows.length * RH + 30}" role="img">`;
  rows.forEach((s, i) => {
    const y = i * RH + 4;
    svg += `<text x="4" y="${y + 14}">${esc(s.path.slice(0, 22))}</text>`;
    if (s.dispatched_at && s.started_at && s.started_at > s.dispatched_at) {
      svg += `<rect x="${x(s.dispatched_at)}" y="${y + 5}" width="${Math.max(1, x(s.started_at) - x(s.dispatched_at))}"
        height="8" fill="#e0e0e6"><title>queued</title></rect>`;
    }
    for (const a of s.attempts) {
      const start = a.started_at || s.dispatched_at || t0;
      const end = a.ended_at || now;
      const fill = STATUS_COLORS[a.status] || "#2f6fde";
      svg += `<rect class="bar" x="${x(start)}" y="${y + 2}" width="${Math.max(2, x(end) - x(start))}"
        height="14" fill="${fill}"><title>attempt ${a.attempt}: ${esc(a.status)} ${seconds(end - start)}${a.error ? " - " + esc(a.error) : ""}</title></rect>`;
    }
  });
  svg += `<text x="${L}" y="${rows.length * RH + 24}" fill="#6b6b72">0</text>
    <text x="${W - 80}" y="${rows.length * RH + 24}" fill="#6b6b72">${seconds(span)}</text></svg>`;
  return svg;
}

async function runPage(runId) {
  main.innerHTML = '<p class="muted">Loading…</p>';
  let run;
  try {
    run = (await api(`api/runs/${encodeURIComponent(runId)}`)).data;
  } catch (e) {
    main.innerHTML = `<p class="error">${esc(e.message)}</p><p><a href="#/">All runs</a></p>`;
    return;
  }
  const [graph, approvals] = await Promise.all([
    // The plan this run started on (a deploy may have changed the workflow since).
    api(`api/workflows/${encodeURIComponent(run.workflow_id)}/graph?run=${encodeURIComponent(run.id)}`).then((r) => r.data).catch(() => ({ nodes: [], edges: [] })),
    api("api/approvals?status=waiting").then((r) => r.data.filter((a) => a.run_id === run.id)).catch(() => []),
  ]);
  const finished = ["completed", "failed", "cancelled", "continued"].includes(run.status);
  const error = run.error ? `<h2>Error</h2><div class="card error-card">
      <p class="error"><b>${esc(run.error.type)}</b>: ${esc(run.error.message)}
      ${run.error.step ? ` (step ${esc(run.error.step)}, attempt ${esc(run.error.attempt)})` : ""}</p>
      ${run.error.traceback ? `<pre>${esc(run.error.traceback)}</pre>` : ""}</div>` : "";
  const approvalForms = approvals.map((a) => `
      <div class="card action approval" data-token="${esc(a.token)}">
        <b>Waiting for approval at ${esc(a.step)}</b> ${a.description ? `- ${esc(a.description)}` : ""}
        <textarea class="approval-payload">{"approved": true}</textarea>
        <button class="resume">Resume</button></div>`).join("");
  const children = run.steps.filter((s) => s.child_run_id)
    .map((s) => `<li><a href="#/run/${esc(s.child_run_id)}">${esc(s.name)}: ${esc(s.child_run_id)}</a></li>`).join("");
  const stepRows = run.steps.map((s) => `<tr>
      <td class="mono">${esc(s.path)}</td><td>${esc(s.kind)}</td><td>${badge(s.status)}</td>
      <td>${s.attempt}</td><td>${seconds(s.duration)}</td>
      <td class="mono">${esc(s.output ?? "")}${s.error ? `<div class="error">${esc(s.error.type)}: ${esc(s.error.message)}</div>
        ${s.error.traceback ? `<details><summary>traceback</summary><pre>${esc(s.error.traceback)}</pre></details>` : ""}` : ""}</td></tr>`).join("");
  main.innerHTML = `
    <h1>Run <span class="mono">${esc(run.id)}</span> ${badge(run.status)}</h1>
    <div class="card"><dl class="meta">
      <dt>Workflow</dt><dd><a href="#/workflows">${esc(run.workflow_id)}</a>${run.version && run.version !== 1 ? ` version ${esc(run.version)}` : ""}</dd>
      <dt>Triggered</dt><dd>${when(run.created_at)}</dd>
      <dt>Ended</dt><dd>${when(run.ended_at)}</dd>
      <dt>Duration</dt><dd>${seconds(run.duration)}</dd>
      <dt>Input</dt><dd class="mono">${esc(run.payload)}</dd>
      <dt>Result</dt><dd class="mono" id="result">${esc(run.result ?? "")}</dd>
      ${run.cancel_reason ? `<dt>Cancelled</dt><dd>${esc(run.cancel_reason)}</dd>` : ""}
      ${Object.keys(run.search_attributes || {}).length ? `<dt>Search attributes</dt><dd class="mono" id="attrs">${
        Object.entries(run.search_attributes).map(([k, v]) => `${esc(k)}=${esc(JSON.stringify(v))}`).join(" ")}</dd>` : ""}
      ${run.memo ? `<dt>Memo</dt><dd class="mono">${esc(JSON.stringify(run.memo))}</dd>` : ""}
      ${run.held ? `<dt>Waiting for its definition</dt><dd>${esc(run.held)}</dd>` : ""}
    </dl>
    <div class="actions action">
      <button class="danger" id="cancel" ${finished ? "disabled" : ""}>Cancel</button>
      <button class="danger" id="terminate" ${finished ? "disabled" : ""}
        title="End it at once: neither its code nor its on_cancel hook is told">Terminate</button>
      <button class="secondary" id="retry" ${["failed", "cancelled"].includes(run.status) ? "" : "disabled"}>Retry</button>
    </div></div>
    ${approvalForms}
    ${error}
    <h2>Graph</h2><div class="card">${drawGraph(graph, run)}</div>
    <h2>Timeline</h2><div class="card">${drawTimeline(run)}</div>
    ${children ? `<h2>Child runs</h2><div class="card"><ul>${children}</ul></div>` : ""}
    <h2>Steps</h2><div class="card"><table id="steps"><thead><tr><th>Step</th><th>Kind</th><th>Status</th>
      <th>Attempt</th><th>Duration</th><th>Output / error</th></tr></thead><tbody>${stepRows}</tbody></table></div>
    <p><a href="#/">All runs</a></p>`;
  document.getElementById("cancel").onclick = async () => {
    try {
      await api(`api/runs/${encodeURIComponent(run.id)}/cancel`, { method: "POST", body: JSON.stringify({ reason: "cancelled from the dashboard" }) });
      toast("cancelled");
      runPage(run.id);
    } catch (e) { toast(e.message, true); }
  };
  document.getElementById("terminate").onclick = async () => {
    if (!confirm("Terminate this run at once? Its clean-up code does not run.")) return;
    try {
      await api(`api/runs/${encodeURIComponent(run.id)}/cancel`, { method: "POST", body: JSON.stringify({ reason: "terminated from the dashboard", terminate: true }) });
      toast("terminated");
      runPage(run.id);
    } catch (e) { toast(e.message, true); }
  };
  document.getElementById("retry").onclick = async () => {
    try {
      const { data } = await api(`api/runs/${encodeURIComponent(run.id)}/retry`, { method: "POST" });
      location.hash = `#/run/${data.run_id}`;
    } catch (e) { toast(e.message, true); }
  };
  for (const card of main.querySelectorAll(".approval")) {
    card.querySelector(".resume").onclick = async () => {
      let payload;
      try { payload = JSON.parse(card.querySelector(".approval-payload").value || "null"); }
      catch (e) { toast(`payload: ${e.message}`, true); return; }
      try {
        await api(`api/approvals/${encodeURIComponent(card.dataset.token)}/resume`, { method: "POST", body: JSON.stringify(payload) });
        toast("resumed");
        setTimeout(() => runPage(run.id), 200);
      } catch (e) { toast(e.message, true); }
    };
  }
  const refresh = debounce(() => { if (location.hash === `#/run/${run.id}`) runPage(run.id); }, 250);
  listen((event) => { if (event.run_id === run.id) refresh(); });
}

// -- workflows and their versions --------------------------------------------------------------

async function workflowsPage() {
  main.innerHTML = '<p class="muted">Loading…</p>';
  const { data: workflows } = await api("api/workflows");
  // Each version defined or still run, and its runs in flight: an old version may be
  // dropped from the code once it has none.
  const versions = await Promise.all(workflows.map((w) =>
    api(`api/workflows/${encodeURIComponent(w.id)}/versions`).then((r) => r.data).catch(() => [])));
  const rows = workflows.map((w, i) => versions[i].map((v) => {
    const statuses = Object.entries(v.statuses).map(([s, n]) =>
      `<a href="#/?workflow=${encodeURIComponent(w.id)}&status=${encodeURIComponent(s)}">${badge(s)} ${n}</a>`).join(" ");
    const note = v.newest ? "new runs start here" : !v.defined ? "not defined: its runs wait"
      : v.runs === 0 ? "no runs left: may be dropped" : "";
    return `<tr class="version"><td><a href="#/?workflow=${encodeURIComponent(w.id)}">${esc(w.id)}</a></td>
      <td>${esc(v.version)}</td><td>${v.defined ? "yes" : "no"}</td><td>${v.runs}</td>
      <td>${statuses}</td><td class="muted">${esc(note)}</td></tr>`;
  }).join("")).join("");
  main.innerHTML = `<h1>Workflows</h1><div class="card"><table id="workflows">
      <thead><tr><th>Workflow</th><th>Version</th><th>Defined</th><th>Runs in flight</th>
      <th>By status</th><th></th></tr></thead><tbody>${rows}</tbody></table></div>`;
  listen(debounce(() => { if (location.hash.startsWith("#/workflows")) workflowsPage(); }, 1000));
}

// -- trigger -----------------------------------------------------------------------------------

function triggerPage() {
  const options = state.workflows.map((w) => `<option>${esc(w)}</option>`).join("");
  main.innerHTML = `<h1>Trigger a run</h1><form class="card" id="trigger">
      <p><label>Workflow <select name="workflow">${options}</select></label></p>
      <p><label>Payload (JSON)<textarea name="payload">{}</textarea></label></p>
      <p><label>Idempotency key (optional) <input name="key"></label></p>
      <button type="submit">Trigger</button></form>`;
  document.getElementById("trigger").onsubmit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    let payload;
    try { payload = JSON.parse(form.get("payload") || "null"); }
    catch (err) { toast(`payload: ${err.message}`, true); return; }
    const headers = {};
    if (form.get("key")) headers["Idempotency-Key"] = form.get("key");
    try {
      const { data } = await api(`api/workflows/${encodeURIComponent(form.get("workflow"))}/trigger`, {
        method: "POST", headers, body: JSON.stringify(payload),
      });
      location.hash = `#/run/${data.run_id}`;
    } catch (err) { toast(err.message, true); }
  };
  listen(() => {});
}

// -- routing -----------------------------------------------------------------------------------

async function route() {
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  try {
    if (path.startsWith("/run/")) await runPage(decodeURIComponent(path.slice(5)));
    else if (path === "/trigger" && !state.readOnly) triggerPage();
    else if (path === "/workflows") await workflowsPage();
    else await runsPage(new URLSearchParams(query || ""));
  } catch (e) {
    main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

async function start() {
  try {
    const { data } = await api("ui/config");
    state.readOnly = data.read_only;
    state.workflows = data.workflows;
  } catch (e) { /* older server: defaults */ }
  if (state.readOnly) {
    document.body.classList.add("read-only");
    document.getElementById("mode").textContent = "read-only";
  }
  connect();
  window.addEventListener("hashchange", route);
  await route();
}

start();
