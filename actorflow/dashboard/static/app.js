// The actorflow dashboard: a single page on the engine's JSON API. No build step: plain
// ES modules, one vendored layout library (dagre, for the graph), SVG for the graph and the
// timeline, server-sent events (api/stream) for live updates. Hash routes:
//   #/                runs (filters, search by run id / idempotency key / attributes)
//   #/run/ID          a run: graph, timeline, steps (inputs, outputs, logs), history, actions
//   #/workflows       workflows, their triggers and schedules; #/workflow/ID one of them
//   #/approvals       the approvals inbox
//   #/trigger         start a run
// Every URL is relative to the page, so the dashboard works wherever the engine's app is
// mounted (/, /flows/, behind a proxy's prefix). A page renders its frame once, then live
// events patch the parts that changed in place (see lib.js `keyed` and `setHTML`).
import { api, esc, refreshTimes } from "./lib.js";
import { runsPage } from "./runs.js";
import { runPage } from "./run.js";
import { workflowsPage, workflowPage } from "./workflows.js";
import { approvalsPage } from "./approvals.js";
import { triggerPage } from "./trigger.js";

const main = document.getElementById("main");
const state = { readOnly: false, workflows: [], source: null, listener: null, page: 0 };

function connect() {
  if (state.source) return;
  const source = new EventSource("api/stream");
  const live = document.getElementById("live");
  source.onopen = () => live.classList.add("on");
  source.onerror = () => live.classList.remove("on");
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (state.listener) state.listener(event);
  };
  state.source = source;
}

// What a page gets: where to draw, the page's settings, and `listen` for live events (one
// page at a time: a listener of a page left is dropped, and so is a page's late rendering).
function context() {
  const page = ++state.page;
  state.listener = null;
  delete main.dataset.html;  // what setHTML last put there belongs to the page left
  return {
    main,
    readOnly: state.readOnly,
    workflows: state.workflows,
    current: () => page === state.page,
    listen(fn) {
      if (page === state.page) state.listener = fn;
    },
  };
}

function markNav(path) {
  const section = path.startsWith("/workflow") ? "workflows"
    : path.startsWith("/approvals") ? "approvals"
      : path.startsWith("/trigger") ? "trigger" : "runs";
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("current", a.id === `nav-${section}`);
  }
}

function decoded(text) {
  try { return decodeURIComponent(text); } catch (e) { return text; }
}

async function route() {
  const hash = location.hash || "#/";
  const [raw, query] = hash.slice(1).split("?");
  let path;
  try { path = decodeURI(raw); } catch (e) { path = raw; }  // (a malformed %-escape: as typed)
  const params = new URLSearchParams(query || "");
  const ctx = context();
  markNav(path);
  try {
    if (path.startsWith("/run/")) await runPage(ctx, decoded(raw.slice(5)), params);
    else if (path.startsWith("/workflow/")) await workflowPage(ctx, decoded(raw.slice(10)));
    else if (path === "/workflows") await workflowsPage(ctx);
    else if (path === "/approvals") await approvalsPage(ctx, params);
    else if (path === "/trigger" && !state.readOnly) triggerPage(ctx, params);
    else await runsPage(ctx, params);
  } catch (e) {
    if (ctx.current()) main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
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
  // Back to the page asked for before signing in (login.html kept its address).
  const after = sessionStorage.getItem("actorflow-after-login");
  if (after) {
    sessionStorage.removeItem("actorflow-after-login");
    if (!location.hash || location.hash === "#/") history.replaceState(null, "", after);
  }
  connect();
  setInterval(() => refreshTimes(main), 15_000);
  window.addEventListener("hashchange", route);
  await route();
}

start();
