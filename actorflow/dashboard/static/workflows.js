// Workflows: every workflow with its triggers (webhooks, schedules, events) and schedules'
// next fire times; each version defined or still run, with its runs in flight. A workflow's
// page (#/workflow/ID) adds its schedules' actions (pause, resume, trigger now), its versions
// and its recent runs.
import { api, badge, esc, live, post, setHTML, time, toast } from "./lib.js";

function triggersHTML(w, schedules) {
  const parts = [];
  for (const hook of w.webhooks || []) parts.push(`<span class="chip" title="webhook">${esc(hook.method)} ${esc(hook.path)}</span>`);
  for (const s of schedules) {
    const what = s.cron ? `cron ${s.cron}${s.tz && s.tz !== "UTC" ? ` (${s.tz})` : ""}` : `every ${s.interval}s`;
    const next = s.paused ? '<b class="paused">paused</b>' : `next ${time(s.next)}`;
    parts.push(`<span class="chip" title="schedule">${esc(what)}: ${next}</span>`);
  }
  for (const e of w.events || []) parts.push(`<span class="chip" title="event">on ${esc(e.event)}</span>`);
  for (const p of w.polls || []) parts.push(`<span class="chip" title="poll">poll every ${esc(p.every)}s</span>`);
  return parts.join(" ") || '<span class="muted">manual only</span>';
}

function versionRows(w, versions) {
  return versions.map((v) => {
    const statuses = Object.entries(v.statuses).map(([s, n]) =>
      `<a href="#/?workflow=${encodeURIComponent(w.id)}&status=${encodeURIComponent(s)}">${badge(s)} ${n}</a>`).join(" ");
    const note = v.newest ? "new runs start here" : !v.defined ? "not defined: its runs wait"
      : v.runs === 0 ? "no runs left: may be dropped" : "";
    return `<tr class="version"><td><a href="#/workflow/${encodeURIComponent(w.id)}">${esc(w.id)}</a></td>
      <td>${esc(v.version)}</td><td>${v.defined ? "yes" : "no"}</td><td>${v.runs}</td>
      <td>${statuses}</td><td class="muted">${esc(note)}</td></tr>`;
  }).join("");
}

async function load() {
  const [{ data: workflows }, schedules] = await Promise.all([
    api("api/workflows"), api("api/schedules").then((r) => r.data).catch(() => [])]);
  const versions = await Promise.all(workflows.map((w) =>
    api(`api/workflows/${encodeURIComponent(w.id)}/versions`).then((r) => r.data).catch(() => [])));
  return { workflows, schedules, versions };
}

export async function workflowsPage(ctx) {
  const { main } = ctx;
  main.innerHTML = '<p class="muted">Loading…</p>';
  async function paint() {
    const { workflows, schedules, versions } = await load();
    if (!ctx.current()) return;
    const cards = workflows.map((w) => `
      <tr class="workflow" data-workflow="${esc(w.id)}"><td><a href="#/workflow/${encodeURIComponent(w.id)}">${esc(w.id)}</a></td>
        <td>${esc(w.kind || "graph")}</td><td class="muted">${esc(w.description || "")}</td>
        <td>${triggersHTML(w, schedules.filter((s) => s.workflow === w.id))}</td></tr>`).join("");
    const rows = workflows.map((w, i) => versionRows(w, versions[i])).join("");
    const html = `<h1>Workflows</h1>
      <div class="card"><table id="definitions"><thead><tr><th>Workflow</th><th>Kind</th>
        <th>Description</th><th>Triggers and schedules</th></tr></thead><tbody>${cards ||
          '<tr><td colspan="4" class="empty">No workflow is defined in this engine yet.</td></tr>'}</tbody></table></div>
      <h2>Schedules</h2>
      <div class="card">${scheduleTable(schedules)}</div>
      <h2>Versions</h2>
      <div class="card"><table id="workflows">
      <thead><tr><th>Workflow</th><th>Version</th><th>Defined</th><th>Runs in flight</th>
      <th>By status</th><th></th></tr></thead><tbody>${rows}</tbody></table></div>`;
    if (main.dataset.html === html) return;  // a live event that changed nothing shown here
    setHTML(main, html);
    wireSchedules(main, paint);
  }
  await paint();
  ctx.listen(live(paint, 1000));
}

function scheduleTable(schedules) {
  if (!schedules.length) return '<p class="muted">No schedule.</p>';
  return `<table id="schedules"><thead><tr><th>Schedule</th><th>When</th><th>State</th>
    <th>Next</th><th>Last slot</th><th>Last run</th><th>Counts</th><th></th></tr></thead>
    <tbody>${schedules.map(scheduleRow).join("")}</tbody></table>`;
}

// The schedules' buttons: pause (with a note), resume, trigger now (then its run's page).
function wireSchedules(root, repaint) {
  for (const tr of root.querySelectorAll("tr.schedule")) {
    const name = encodeURIComponent(tr.dataset.schedule);
    const act = async (what, body, said) => {
      try {
        const { data } = await post(`api/schedules/${name}/${what}`, body);
        toast(said);
        if (what === "trigger" && data && data.run_id) location.hash = `#/run/${data.run_id}`;
        else repaint();
      } catch (e) { toast(e.message, true); }
    };
    const pause = tr.querySelector(".sched-pause");
    if (pause) pause.onclick = () => act("pause", { note: "paused from the dashboard" }, "paused");
    const resume = tr.querySelector(".sched-resume");
    if (resume) resume.onclick = () => act("resume", undefined, "resumed");
    tr.querySelector(".sched-trigger").onclick = () => act("trigger", undefined, "triggered");
  }
}

function scheduleRow(s) {
  const what = s.cron ? `cron <code>${esc(s.cron)}</code> ${esc(s.tz || "")}` : `every ${esc(s.interval)} s`;
  return `<tr class="schedule" data-schedule="${esc(s.name)}">
    <td class="mono">${esc(s.name)}</td><td>${what}</td>
    <td>${s.paused ? `<b class="paused">paused</b>${s.note ? ` <span class="muted">${esc(s.note)}</span>` : ""}` : "active"}</td>
    <td>${s.paused ? "-" : time(s.next)}</td><td>${time(s.last)}</td>
    <td>${s.last_run ? `<a class="mono" href="#/run/${esc(s.last_run)}">${esc(s.last_run)}</a>` : "-"}</td>
    <td>${esc(s.fired)} fired, ${esc(s.skipped)} skipped${s.queued ? `, ${esc(s.queued)} queued` : ""}${
      s.triggered ? `, ${esc(s.triggered)} triggered by hand` : ""}</td>
    <td class="action">${s.paused ? '<button class="secondary small sched-resume">Resume</button>'
      : '<button class="secondary small sched-pause">Pause</button>'}
      <button class="small sched-trigger">Trigger now</button></td></tr>`;
}

export async function workflowPage(ctx, workflowId) {
  const { main } = ctx;
  main.innerHTML = '<p class="muted">Loading…</p>';
  async function paint() {
    const { workflows, schedules, versions } = await load();
    if (!ctx.current()) return;
    const i = workflows.findIndex((w) => w.id === workflowId);
    if (i < 0) {
      main.innerHTML = `<p class="error">no workflow ${esc(workflowId)}</p><p><a href="#/workflows">All workflows</a></p>`;
      return;
    }
    const w = workflows[i];
    const mine = schedules.filter((s) => s.workflow === w.id);
    const { data: runs } = await api(`api/runs?workflow=${encodeURIComponent(w.id)}&limit=10`);
    if (!ctx.current()) return;
    const html = `<h1>Workflow <span class="mono">${esc(w.id)}</span></h1>
      <div class="card"><dl class="meta">
        <dt>Kind</dt><dd>${esc(w.kind || "graph")}</dd>
        <dt>Description</dt><dd>${esc(w.description || "-")}</dd>
        <dt>Version</dt><dd>${esc(w.version)}</dd>
        ${w.rate_limit ? `<dt>Rate limit</dt><dd>${esc(w.rate_limit)}</dd>` : ""}
        <dt>Triggers</dt><dd>${triggersHTML(w, mine)}</dd></dl>
        <div class="actions action"><a class="button" href="#/trigger?workflow=${encodeURIComponent(w.id)}">Trigger a run</a></div></div>
      <h2>Schedules</h2>
      <div class="card">${scheduleTable(mine)}</div>
      <h2>Versions</h2>
      <div class="card"><table id="workflows"><thead><tr><th>Workflow</th><th>Version</th><th>Defined</th>
        <th>Runs in flight</th><th>By status</th><th></th></tr></thead><tbody>${versionRows(w, versions[i])}</tbody></table></div>
      <h2>Recent runs</h2>
      <div class="card"><table id="recent"><tbody>${runs.map((r) => `<tr class="run-row" data-run="${esc(r.id)}">
        <td><a class="mono" href="#/run/${esc(r.id)}">${esc(r.id)}</a></td><td>${badge(r.status)}</td><td>${time(r.created_at)}</td></tr>`).join("")}
        </tbody></table><p><a href="#/?workflow=${encodeURIComponent(w.id)}">All its runs</a></p></div>`;
    if (main.dataset.html === html) return;
    setHTML(main, html);
    wireSchedules(main, paint);
  }
  await paint();
  const refresh = live(paint, 1000);
  ctx.listen((event) => { if (event.workflow_id === workflowId) refresh(); });
}
