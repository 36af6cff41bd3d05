// A run's page: its header and actions, approvals waiting on it, its error, graph, timeline,
// steps (input, output, error, logs), child runs and event history. The frame is drawn once;
// each live event of the run refetches it and patches what changed in place, so a resume
// payload being typed, an open traceback or log, and the graph's zoom all stay as they are.
import {
  api, badge, clock, debounce, esc, FINISHED, h, jsonInput, keyed, live, post, seconds, setHTML,
  shownStatus, time, toast, when,
} from "./lib.js";
import { drawGraph, paintGraph } from "./graph.js";
import { Interact } from "./interact.js";
import { Timeline } from "./timeline.js";

// "builtins.ValueError" as Python prints it: "ValueError"; other modules' names stay whole.
const typeName = (type) => String(type || "").replace(/^builtins\./, "");

function errorHTML(err) {
  if (!err) return "";
  const where = err.step ? ` (step ${esc(err.step)}, attempt ${esc(err.attempt)})` : "";
  return `<p class="error"><b>${esc(typeName(err.type))}</b>: ${esc(err.message)}${where}</p>${tracebackHTML(err)}`;
}

// The user's frames first; the whole traceback (engine frames too) a click away.
export function tracebackHTML(err) {
  const full = err.traceback || "";
  const mine = err.user_traceback || full;
  if (!full) return "";
  const more = mine !== full
    ? `<details class="full-tb"><summary>full traceback (with the engine's frames)</summary><pre>${esc(full)}</pre></details>` : "";
  return `<pre class="tb">${esc(mine)}</pre>${more}`;
}

function metaHTML(run) {
  const attrs = Object.entries(run.search_attributes || {});
  const version = run.version && run.version !== 1 ? ` version ${esc(run.version)}` : "";
  return `
    <dt>Workflow</dt><dd><a href="#/workflow/${encodeURIComponent(run.workflow_id)}">${esc(run.workflow_id)}</a>${version}</dd>
    ${run.parent_run_id ? `<dt>Parent run</dt><dd><a class="mono" href="#/run/${esc(run.parent_run_id)}">${esc(run.parent_run_id)}</a></dd>` : ""}
    <dt>Triggered</dt><dd>${time(run.created_at)}</dd>
    <dt>Started</dt><dd>${time(run.started_at)}</dd>
    <dt>Ended</dt><dd>${time(run.ended_at)}</dd>
    <dt>Duration</dt><dd>${seconds(run.duration)}</dd>
    ${run.idempotency_key ? `<dt>Idempotency key</dt><dd class="mono">${esc(run.idempotency_key)}</dd>` : ""}
    <dt>Input</dt><dd class="mono">${esc(run.payload)}</dd>
    <dt>Result</dt><dd class="mono" id="result">${esc(run.result ?? "")}</dd>
    ${run.cancel_reason ? `<dt>Cancelled</dt><dd>${esc(run.cancel_reason)}</dd>` : ""}
    ${attrs.length ? `<dt>Search attributes</dt><dd class="mono" id="attrs">${
      attrs.map(([k, v]) => `${esc(k)}=${esc(JSON.stringify(v))}`).join(" ")}</dd>` : ""}
    ${run.memo ? `<dt>Memo</dt><dd class="mono">${esc(JSON.stringify(run.memo))}</dd>` : ""}
    ${run.held ? `<dt>Waiting for its definition</dt><dd>${esc(run.held)}</dd>` : ""}`;
}

function stepCells(s, withInput) {
  const err = s.error ? `<div class="error">${esc(typeName(s.error.type))}: ${esc(s.error.message)}</div>
    ${s.error.traceback ? `<details class="step-tb"><summary>traceback</summary>${tracebackHTML(s.error)}</details>` : ""}` : "";
  return `<td class="mono">${esc(s.path)}</td><td>${esc(s.kind)}</td><td>${badge(shownStatus(s))}</td>
    <td>${s.attempt}</td><td>${seconds(s.duration)}</td>
    ${withInput ? `<td class="mono io">${esc(s.input ?? "")}</td>` : ""}
    <td class="mono io">${esc(s.output ?? "")}${err}</td>
    <td><button class="secondary small logs-toggle" ${s.attempt ? "" : "disabled"}>logs</button></td>`;
}

// A big run's page draws its steps and its history a page at a time (thousands of rows
// would take the browser seconds to lay out, on every update); "show more" adds a page.
const PAGE = 200;

function moreHTML(shown, total, what) {
  return shown < total ? `Showing ${shown} of ${total} ${what}.
    <button type="button" class="secondary small more">Show ${Math.min(PAGE, total - shown)} more</button>
    <button type="button" class="secondary small all">Show all</button>` : "";
}

function historyHTML(all, limit) {
  if (!all.length) return '<p class="muted">Nothing recorded yet.</p>';
  const t0 = all[0].time;
  const events = all.slice(0, limit);
  return `<table id="history"><thead><tr><th>#</th><th>Time</th><th>+</th><th>Event</th>
      <th>Step</th><th>Attempt</th><th>Detail</th></tr></thead><tbody>${events.map((e, i) => `
    <tr class="event ev-${esc(e.type)}"><td class="muted">${i + 1}</td><td class="mono" title="${esc(when(e.time))}">${esc(clock(e.time))}</td>
      <td class="muted">${seconds(e.time - t0)}</td><td><code>${esc(e.type)}</code></td>
      <td class="mono">${esc(e.step ?? "")}</td><td>${esc(e.attempt ?? "")}</td>
      <td class="mono io">${esc(e.detail)}</td></tr>`).join("")}</tbody></table>
    <p class="more" id="history-more">${moreHTML(events.length, all.length, "events")}</p>`;
}

const STEP_STATUSES = ["pending", "running", "waiting", "retrying", "succeeded", "failed", "cancelled", "skipped"];

async function loadLogs(run, step, cell) {
  cell.innerHTML = '<span class="muted">Loading…</span>';
  try {
    const { data } = await api(`api/runs/${encodeURIComponent(run.id)}/logs?step=${encodeURIComponent(step.path)}`);
    // {"records": [...], "dropped": [{"step", "attempt", "count"}]}: see engine.logs.
    const records = data.records || [];
    const dropped = (data.dropped || []).reduce((n, d) => n + d.count, 0);
    cell.innerHTML = records.length || dropped ? `<pre class="logs">${records.map((r) =>
      `<span class="lv-${esc(r.level)}">${esc(new Date(r.time * 1000).toISOString().slice(11, 23))} ${esc(r.level.padEnd(7))} #${esc(r.attempt)} ${esc(r.message)}</span>`).join("\n")}${
      dropped ? `\n<span class="muted">${dropped} more record(s) dropped (over the per-attempt limit)</span>` : ""}</pre>`
      : '<span class="muted">This step logged nothing (ctx.log).</span>';
  } catch (e) {
    cell.innerHTML = `<span class="error">${esc(e.message)}</span>`;
  }
}

export async function runPage(ctx, runId) {
  const { main } = ctx;
  if (!runId) {
    main.innerHTML = '<p class="error">no run id in the address</p><p><a href="#/">All runs</a></p>';
    return;
  }
  main.innerHTML = '<p class="muted">Loading…</p>';
  let run;
  try {
    run = (await api(`api/runs/${encodeURIComponent(runId)}`)).data;
  } catch (e) {
    main.innerHTML = `<p class="error">${esc(e.message)}</p><p><a href="#/">All runs</a></p>`;
    return;
  }
  const graph = await api(`api/workflows/${encodeURIComponent(run.workflow_id)}/graph?run=${encodeURIComponent(run.id)}`)
    .then((r) => r.data).catch(() => ({ nodes: [], edges: [] }));
  if (!ctx.current()) return;
  main.innerHTML = `
    <h1>Run <span class="mono">${esc(run.id)}</span> <span id="run-status"></span></h1>
    <div class="card"><dl class="meta" id="meta"></dl>
    <div class="actions action">
      <button class="danger" id="cancel">Cancel</button>
      <button class="danger" id="terminate"
        title="End it at once: neither its code nor its on_cancel hook is told">Terminate</button>
      <button class="secondary" id="retry">Retry</button>
    </div></div>
    <div id="approvals"></div>
    ${graph.code ? '<h2>Signal, query or update</h2><div class="card" id="interact-box"></div>' : ""}
    <div id="error"></div>
    <h2>Graph</h2><div class="card graph-card" id="graph-box"></div>
    <h2>Timeline</h2><div class="card" id="timeline-box"></div>
    <div id="children"></div>
    <h2>Steps</h2><div class="card">
      <form class="filters" id="step-filter">
        <label>Step<input name="q" placeholder="name contains" autocomplete="off"></label>
        <label>Status<select name="status"><option value="">any</option>${
          STEP_STATUSES.map((st) => `<option>${st}</option>`).join("")}</select></label>
        <span class="muted" id="steps-count"></span>
      </form>
      <table id="steps"><thead></thead><tbody></tbody></table>
      <p class="more" id="steps-more"></p></div>
    <h2>History</h2><div class="card" id="history-box"><p class="muted">Loading…</p></div>
    <p><a href="#/">All runs</a></p>`;
  const timeline = new Timeline(main.querySelector("#timeline-box"));
  const filter = main.querySelector("#step-filter").elements;
  let stepLimit = PAGE;
  let historyLimit = PAGE;
  main.querySelector("#step-filter").onsubmit = (e) => e.preventDefault();
  const refilter = () => { stepLimit = PAGE; paint(); };
  filter.q.oninput = debounce(refilter, 150);
  filter.status.onchange = refilter;
  main.querySelector("#steps-more").onclick = (e) => {
    if (!e.target.matches("button")) return;
    stepLimit = e.target.classList.contains("all") ? Infinity : stepLimit + PAGE;
    paint();
  };
  main.querySelector("#history-box").onclick = (e) => {
    if (!e.target.matches("#history-more button")) return;
    historyLimit = e.target.classList.contains("all") ? Infinity : historyLimit + PAGE;
    loadHistory();
  };
  const graphBox = main.querySelector("#graph-box");
  const interact = graph.code ? new Interact(main.querySelector("#interact-box"), run.id, ctx.readOnly, () => refresh())
    : null;
  let drawnGraph = null;  // the node set drawn (a code workflow's grows as it runs)
  let approvals = [];

  function paint() {
    setHTML(main.querySelector("#run-status"), badge(run.status));
    setHTML(main.querySelector("#meta"), metaHTML(run));
    const finished = FINISHED.includes(run.status);
    main.querySelector("#cancel").disabled = finished;
    main.querySelector("#terminate").disabled = finished;
    main.querySelector("#retry").disabled = !["failed", "cancelled"].includes(run.status);
    setHTML(main.querySelector("#error"), run.error
      ? `<h2>Error</h2><div class="card error-card">${errorHTML(run.error)}</div>` : "");
    // The graph: laid out once per node set, then only its nodes' statuses change.
    // (a code workflow's: its steps, a map's items being one node)
    const shape = graph.code ? [...new Set(run.steps.map((s) => s.path.replace(/\[\d+\]$/, "")))].join("\n") : "plan";
    if (drawnGraph !== shape) {
      drawnGraph = shape;
      drawGraph(graphBox, graph, run);
    } else {
      paintGraph(graphBox, run);
    }
    timeline.draw(run);
    const kids = run.steps.filter((s) => s.child_run_id).map((s) =>
      `<li><a href="#/run/${esc(s.child_run_id)}">${esc(s.name)}: ${esc(s.child_run_id)}</a></li>`).join("");
    setHTML(main.querySelector("#children"), kids ? `<h2>Child runs</h2><div class="card"><ul>${kids}</ul></div>` : "");
    const withInput = run.steps.some((s) => s.input !== undefined && s.input !== null);
    setHTML(main.querySelector("#steps thead"), `<tr><th>Step</th><th>Kind</th><th>Status</th>
      <th>Attempt</th><th>Duration</th>${withInput ? "<th>Input</th>" : ""}<th>Output / error</th><th></th></tr>`);
    const body = main.querySelector("#steps tbody");
    const q = filter.q.value.trim().toLowerCase();
    const status = filter.status.value;
    const matching = run.steps.filter((s) => (!q || s.path.toLowerCase().includes(q))
      && (!status || shownStatus(s) === status));
    const shown = matching.slice(0, stepLimit);
    setHTML(main.querySelector("#steps-count"), matching.length === run.steps.length
      ? `${run.steps.length} step(s)` : `${matching.length} of ${run.steps.length} step(s) match`);
    setHTML(main.querySelector("#steps-more"), moreHTML(shown.length, matching.length, "matching steps"));
    if (!matching.length) {
      body.innerHTML = `<tr class="empty-row"><td colspan="9" class="empty">${
        run.steps.length ? "No step matches." : "No step recorded yet."}</td></tr>`;
      return;
    }
    body.querySelector("tr.empty-row")?.remove();
    const rows = shown.flatMap((s) => [{ s, kind: "step" }, { s, kind: "logs" }]);
    keyed(body, rows, (r) => `${r.kind}:${r.s.path}`, (r) => h(r.kind === "step"
      ? '<tr class="step-row"></tr>' : '<tr class="logs-row" hidden><td colspan="9" class="logs-cell"></td></tr>'),
    (tr, r) => {
      if (r.kind !== "step") return;
      tr.dataset.step = r.s.path;
      const html = stepCells(r.s, withInput) + String(withInput);
      if (tr.dataset.html === html) return;
      const open = [...tr.querySelectorAll("details")].map((d) => d.open);
      tr.innerHTML = stepCells(r.s, withInput);
      tr.dataset.html = html;
      tr.querySelectorAll("details").forEach((d, i) => { d.open = Boolean(open[i]); });
      tr.querySelector(".logs-toggle").onclick = () => {
        const logs = tr.nextElementSibling;
        logs.hidden = !logs.hidden;
        if (!logs.hidden) loadLogs(run, r.s, logs.querySelector(".logs-cell"));
      };
    });
  }

  function paintApprovals() {
    keyed(main.querySelector("#approvals"), approvals, (a) => a.token, (a) => {
      const card = h(`<div class="card action approval">
        <b>Waiting for approval at ${esc(a.step)}</b> ${a.description ? `- ${esc(a.description)}` : ""}
        <span class="muted">${a.expires_at ? `expires ${time(a.expires_at)}` : ""}</span>
        ${a.metadata ? `<pre class="mono">${esc(JSON.stringify(a.metadata, null, 1))}</pre>` : ""}
        <textarea class="approval-payload">{"approved": true}</textarea>
        <button class="resume">Resume</button></div>`);
      card.dataset.token = a.token;
      card.querySelector(".resume").onclick = async () => {
        let payload;
        try { payload = jsonInput(card.querySelector(".approval-payload").value, "payload"); }
        catch (e) { toast(e.message, true); return; }
        try {
          await post(`api/approvals/${encodeURIComponent(a.token)}/resume`, payload);
          toast("resumed");
          refresh();
        } catch (e) { toast(e.message, true); }
      };
      return card;
    }, () => {});
  }

  async function loadHistory() {
    try {
      const { data } = await api(`api/runs/${encodeURIComponent(run.id)}/history`);
      if (ctx.current()) setHTML(main.querySelector("#history-box"), historyHTML(data, historyLimit));
    } catch (e) {
      setHTML(main.querySelector("#history-box"), `<p class="error">${esc(e.message)}</p>`);
    }
  }

  async function fetchApprovals() {
    if (FINISHED.includes(run.status)) return [];
    return api("api/approvals?status=waiting").then((r) => r.data.filter((a) => a.run_id === run.id)).catch(() => approvals);
  }

  async function reload() {
    const [fresh, waiting] = await Promise.all([
      api(`api/runs/${encodeURIComponent(run.id)}`).then((r) => r.data), fetchApprovals()]);
    if (!ctx.current()) return;
    run = fresh;
    approvals = FINISHED.includes(run.status) ? [] : waiting;
    paint();
    paintApprovals();
    // Awaited: the live refresh spaces its runs by what they cost (lib.live).
    await Promise.all([loadHistory(), interact && interact.update(run)]);
  }
  const refresh = live(reload, 250);

  async function act(path, body, done) {
    try {
      const { data } = await post(path, body);
      toast(done);
      if (data && data.run_id && data.run_id !== run.id) location.hash = `#/run/${data.run_id}`;
      else refresh();
    } catch (e) { toast(e.message, true); }
  }
  const base = `api/runs/${encodeURIComponent(run.id)}`;
  main.querySelector("#cancel").onclick = () => act(`${base}/cancel`, { reason: "cancelled from the dashboard" }, "cancelled");
  main.querySelector("#terminate").onclick = () => {
    if (confirm("Terminate this run at once? Its clean-up code does not run.")) {
      act(`${base}/cancel`, { reason: "terminated from the dashboard", terminate: true }, "terminated");
    }
  };
  main.querySelector("#retry").onclick = () => act(`${base}/retry`, undefined, "retried");

  approvals = await fetchApprovals();
  paint();
  paintApprovals();
  loadHistory();
  if (interact) interact.update(run);
  ctx.listen((event) => { if (event.run_id === run.id) refresh(); });
}
