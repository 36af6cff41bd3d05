// The runs list: filters (workflow, status, trigger time, search attributes), a search by
// run id prefix or idempotency key, pages by cursor, rows kept up to date by live events.
import { api, badge, esc, h, keyed, live, seconds, time, toast } from "./lib.js";

const STATUSES = ["queued", "running", "waiting_for_definition", "completed", "failed",
  "cancelled", "panicked", "continued"];

// "customer=c-42 amount>100 vip=true" as the API's where: {"customer": "c-42", "amount>": 100,
// "vip": true}. A number or true/false is typed; anything else (quotes dropped) is a string.
export function parseWhere(text) {
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

function duration(run) {
  if (run.duration !== null && run.duration !== undefined) return seconds(run.duration);
  if (run.status === "running" && run.started_at) {
    return `<span class="muted" title="running">${seconds(Date.now() / 1000 - run.created_at)}</span>`;
  }
  return "-";
}

function rowHTML(run) {
  const child = run.parent_run_id
    ? `<a class="child-of" href="#/run/${esc(run.parent_run_id)}" title="child of run ${esc(run.parent_run_id)}"
         onclick="event.stopPropagation()">↳ child</a>` : "";
  const key = run.idempotency_key ? `<div class="muted key" title="idempotency key">${esc(run.idempotency_key)}</div>` : "";
  return `<td class="mono"><a class="run-link" href="#/run/${esc(run.id)}">${esc(run.id)}</a> ${child}${key}</td><td>${esc(run.workflow_id)}</td>
    <td>${badge(run.status)}</td><td>${time(run.created_at)}</td><td class="duration">${duration(run)}</td>`;
}

export async function runsPage(ctx, params) {
  const { main } = ctx;
  const f = Object.fromEntries(["workflow", "status", "search", "since", "until", "q"]
    .map((k) => [k, params.get(k) || ""]));
  const options = ctx.workflows.map((w) =>
    `<option ${w === f.workflow ? "selected" : ""}>${esc(w)}</option>`).join("");
  const statuses = STATUSES.map((s) => `<option ${s === f.status ? "selected" : ""}>${s}</option>`).join("");
  main.innerHTML = `
    <h1>Runs</h1>
    <form class="filters" id="filters">
      <label>Run id or idempotency key<input name="q" placeholder="01a24f… or order-7"
        value="${esc(f.q)}" size="24"></label>
      <label>Workflow<select name="workflow"><option value="">all</option>${options}</select></label>
      <label>Status<select name="status"><option value="">all</option>${statuses}</select></label>
      <label>Since<input type="datetime-local" name="since" value="${esc(f.since)}"></label>
      <label>Until<input type="datetime-local" name="until" value="${esc(f.until)}"></label>
      <label>Search attributes<input name="search" placeholder="customer=c-42 amount>100"
        value="${esc(f.search)}"></label>
      <button type="submit">Filter</button>
    </form>
    <div class="card"><table id="runs">
      <thead><tr><th>Run</th><th>Workflow</th><th>Status</th><th>Triggered</th><th>Duration</th></tr></thead>
      <tbody></tbody></table>
      <p><button class="secondary" id="more" hidden>Load more</button>
         <span class="muted" id="count"></span></p>
    </div>`;
  main.querySelector("#filters").onsubmit = (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(e.target).entries()) if (v) q.set(k, v.trim());
    location.hash = `#/?${q}`;
  };
  const body = main.querySelector("#runs tbody");
  let shown = [];
  let cursor = null;

  function query(before) {
    const q = new URLSearchParams({ limit: "50" });
    if (f.workflow) q.set("workflow", f.workflow);
    if (f.status) q.set("status", f.status);
    if (f.since) q.set("since", String(new Date(f.since).getTime() / 1000));
    if (f.until) q.set("until", String(new Date(f.until).getTime() / 1000));
    if (f.search) q.set("where", JSON.stringify(parseWhere(f.search)));
    if (before) q.set("before", before);
    return q;
  }

  async function fetchPage(before) {
    if (!f.q) {
      const { data, headers } = await api(`api/runs?${query(before)}`);
      return { runs: data, next: headers.get("X-Next-Cursor") };
    }
    // One box, two lookups: the runs whose id starts with it, and those it is the key of.
    const byId = query(before); byId.set("id_prefix", f.q);
    const byKey = query(before); byKey.set("idempotency_key", f.q);
    const [a, b] = await Promise.all([api(`api/runs?${byId}`), api(`api/runs?${byKey}`)]);
    const seen = new Set();
    const runs = [...a.data, ...b.data].filter((r) => !seen.has(r.id) && seen.add(r.id))
      .sort((x, y) => (x.id < y.id ? 1 : -1));
    return { runs, next: a.headers.get("X-Next-Cursor") };
  }

  function draw() {
    keyed(body, shown, (r) => r.id, (run) => {
      const tr = h('<tr class="run-row"></tr>');
      tr.dataset.run = run.id;
      tr.onclick = () => { location.hash = `#/run/${run.id}`; };
      return tr;
    }, (tr, run) => {
      const html = rowHTML(run);
      if (tr.dataset.html !== html) { tr.innerHTML = html; tr.dataset.html = html; }
      tr.dataset.status = run.status;
    });
    main.querySelector("#more").hidden = !cursor;
    main.querySelector("#count").textContent = shown.length ? `${shown.length} run(s) shown`
      : (f.q || f.workflow || f.status || f.search || f.since || f.until)
        ? "No run matches these filters." : "No run yet: trigger one (Trigger, above), or from your code.";
  }

  async function load(reset) {
    const { runs, next } = await fetchPage(reset ? null : cursor);
    if (!ctx.current()) return;
    if (reset) {
      // Keep the pages loaded beyond the first: refresh the first, keep older rows.
      const fresh = new Set(runs.map((r) => r.id));
      const oldest = runs.length ? runs[runs.length - 1].id : "";
      shown = [...runs, ...shown.filter((r) => !fresh.has(r.id) && r.id < oldest)];
      if (!shown.length || shown.length === runs.length) cursor = next;
    } else {
      shown = [...shown, ...runs];
      cursor = next;
    }
    draw();
  }

  main.querySelector("#more").onclick = () => load(false).catch((e) => toast(e.message, true));
  await load(true).catch((e) => toast(e.message, true));  // (a search the API refuses, say)
  const refresh = live(() => load(true), 300);
  ctx.listen((event) => {
    if (event.type === "RunStarted" || event.type === "RunFinished") refresh();
  });
  // Running runs' durations grow: redraw those cells each second.
  const tick = setInterval(() => {
    if (!ctx.current()) { clearInterval(tick); return; }
    for (const tr of body.querySelectorAll("tr[data-status=running]")) {
      const run = shown.find((r) => r.id === tr.dataset.run);
      if (run) tr.querySelector(".duration").innerHTML = duration(run);
    }
  }, 1000);
}
