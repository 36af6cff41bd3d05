// A run's graph, laid out by dagre (vendored: dagre.min.js, MIT, see dagre.LICENSE) and drawn
// in SVG. Layered layout with crossing minimisation; edges are routed through the space
// between ranks, as straight segments between dagre's bend points, so that no edge runs
// through a node's box. A loop's body (for_each, batch, while) is a group box: the loop's node
// heads it, its body hangs inside it, and what follows the loop leaves from the group's foot
// (a small exit dot), so a body never reads as a branch of the next node. Zoom with the
// buttons, or the wheel with Ctrl; drag to pan. Node colours are the steps table's badges'
// (one palette in style.css: --st-<status>).
import { esc, shownStatus } from "./lib.js";

const LOOPS = new Set(["for_each", "batch", "while"]);
const NODE_H = 34;
const MAX_LABEL = 48;  // characters shown in a box; the full name is in its tooltip

let measure = null;
function textWidth(text) {
  if (!measure) {
    measure = document.createElement("canvas").getContext("2d");
    measure.font = "12px system-ui, sans-serif";
  }
  return measure.measureText(text).width;
}

function label(name) {
  return name.length > MAX_LABEL ? `${name.slice(0, MAX_LABEL - 1)}…` : name;
}

// The status a node shows: its step's, or, for a node inside a loop (one record per item or
// iteration), the most telling of its records' statuses.
const RANK = ["failed", "running", "retrying", "waiting", "cancelled", "succeeded", "skipped", "pending"];
function statusOf(steps, node) {
  const mine = steps.get(node.name);
  if (!mine || !mine.length) return node.kind === "join" ? "" : "pending";
  let best = shownStatus(mine[0]);
  for (const s of mine) {
    const status = shownStatus(s);
    if (RANK.indexOf(status) < RANK.indexOf(best)) best = status;
  }
  return best;
}

function extraOf(steps, node) {
  const mine = steps.get(node.name) || [];
  const s = mine.find((x) => x.items || x.iterations);
  if (s && s.items) return ` ${s.items.succeeded}/${s.items.total}`;
  if (s && s.iterations) return ` ×${s.iterations}`;
  if (mine.length > 1) {
    const done = mine.filter((x) => x.status === "succeeded").length;
    return done === mine.length ? ` ×${mine.length}` : ` ${done}/${mine.length}`;
  }
  return "";
}

// A code workflow's step as its graph has it: a ctx.map's items (`name[i]`) are one node.
const codeKey = (path) => path.replace(/\[\d+\]$/, "");

function byName(run, code) {
  const out = new Map();
  for (const s of run.steps) {
    const key = code ? codeKey(s.path) : s.name;
    if (!out.has(key)) out.set(key, []);
    out.get(key).push(s);
  }
  return out;
}

function codeGraph(run) {
  // A code workflow: its recorded steps, in the order it issued them; a map's items are
  // one node (their progress on it), as a for_each is in a graph workflow.
  const names = [...new Set(run.steps.map((s) => codeKey(s.path)))];
  const kinds = new Map(run.steps.map((s) => [codeKey(s.path), s.path === codeKey(s.path) ? s.kind : "map"]));
  return {
    code: true,
    nodes: names.map((name, i) => ({ id: i, name, kind: kinds.get(name), owner: -1 })),
    edges: names.slice(1).map((_, i) => ({ from: i, to: i + 1, type: "next" })),
  };
}

// The dagre graph: nodes (a loop's body in a cluster), and edges, with a loop's outgoing
// edges leaving from its exit node.
function build(graph) {
  const g = new dagre.graphlib.Graph({ compound: true, multigraph: true });
  g.setGraph({ rankdir: "TB", nodesep: 28, ranksep: 42, edgesep: 14, marginx: 14, marginy: 14 });
  const nodes = new Map(graph.nodes.map((n) => [n.id, n]));
  const hasBody = new Set(graph.edges.filter((e) => e.type === "body").map((e) => e.from));
  const cluster = (loopId) => `c${loopId}`;
  for (const n of graph.nodes) {
    const join = n.kind === "join";
    const w = join ? 12 : Math.max(72, textWidth(label(n.name) + "  ×888/888") + 22);
    g.setNode(`n${n.id}`, { node: n, width: w, height: join ? 12 : NODE_H });
  }
  for (const id of hasBody) {
    const loop = nodes.get(id);
    g.setNode(cluster(id), { cluster: loop, paddingTop: 8 });
    g.setNode(`x${id}`, { exit: loop, width: 10, height: 10 });
    g.setParent(`n${id}`, cluster(id));
    g.setParent(`x${id}`, cluster(id));
    if (loop.owner >= 0 && hasBody.has(loop.owner)) g.setParent(cluster(id), cluster(loop.owner));
  }
  for (const n of graph.nodes) {
    if (n.owner >= 0 && hasBody.has(n.owner) && !hasBody.has(n.id)) g.setParent(`n${n.id}`, cluster(n.owner));
  }
  const from = (id) => (hasBody.has(id) ? `x${id}` : `n${id}`);
  const leaves = new Map();  // loop -> its body's nodes that nothing follows inside the body
  const bodyScope = new Map(graph.edges.filter((e) => e.type === "body")
    .map((e) => [e.from, nodes.get(e.to).scope]));
  const followed = new Set(graph.edges.filter((e) => e.type !== "body").map((e) => e.from));
  for (const n of graph.nodes) {
    if (n.owner >= 0 && bodyScope.get(n.owner) === n.scope && !followed.has(n.id)) {
      if (!leaves.has(n.owner)) leaves.set(n.owner, []);
      leaves.get(n.owner).push(n.id);
    }
  }
  let k = 0;
  for (const e of graph.edges) {
    const v = e.type === "body" ? `n${e.from}` : from(e.from);
    const meta = { edge: e, minlen: 1 };
    if (e.label) Object.assign(meta, { label: e.label, width: textWidth(e.label) + 8, height: 14, labelpos: "c" });
    g.setEdge(v, `n${e.to}`, meta, `e${k++}`);
  }
  for (const [loop, ids] of leaves) {
    for (const id of ids) g.setEdge(from(id), `x${loop}`, { edge: { type: "exit" } }, `e${k++}`);
  }
  return g;
}

function pathOf(points) {
  return points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
}

function svgOf(g, run, code) {
  const steps = byName(run, code);
  const { width, height } = g.graph();
  let clusters = "", edges = "", labels = "", boxes = "";
  for (const id of g.nodes()) {
    const d = g.node(id);
    if (d.cluster) {
      const x = d.x - d.width / 2, y = d.y - d.height / 2;
      clusters += `<g class="group" data-group="${esc(d.cluster.name)}">
        <rect x="${x}" y="${y}" width="${d.width}" height="${d.height}" rx="8"/>
        <text x="${x + 8}" y="${y + d.height - 6}" class="group-label">each ${esc(d.cluster.kind === "while" ? "iteration" : "item")} of ${esc(d.cluster.name)}</text></g>`;
    } else if (d.exit) {
      boxes += `<circle class="exit" cx="${d.x}" cy="${d.y}" r="4"><title>${esc(d.exit.name)} ends</title></circle>`;
    }
  }
  for (const e of g.edges()) {
    const d = g.edge(e);
    const type = d.edge.type;
    edges += `<path class="edge e-${type}" data-from="${esc(e.v)}" data-to="${esc(e.w)}" d="${pathOf(d.points)}" marker-end="url(#arrow)"/>`;
    if (d.label) {
      labels += `<text class="edge-label" x="${d.x}" y="${d.y + 4}" text-anchor="middle">${esc(d.label)}</text>`;
    }
  }
  for (const id of g.nodes()) {
    const d = g.node(id);
    if (!d.node) continue;
    const n = d.node;
    if (n.kind === "join") {
      boxes += `<circle class="join" data-node="${esc(n.name)}" cx="${d.x}" cy="${d.y}" r="5"/>`;
      continue;
    }
    const status = statusOf(steps, n);
    const x = d.x - d.width / 2, y = d.y - d.height / 2;
    boxes += `<g class="node st-${esc(status)}" data-node="${esc(n.name)}" data-status="${esc(status)}"
        data-id="${esc(id)}" data-box="${x},${y},${d.width},${d.height}">
      <title>${esc(n.kind)} ${esc(n.name)}: ${esc(status)}</title>
      <rect x="${x}" y="${y}" width="${d.width}" height="${d.height}" rx="6"/>
      <text x="${d.x}" y="${d.y + 4}" text-anchor="middle"><tspan class="name">${esc(label(n.name))}</tspan><tspan class="extra">${esc(extraOf(steps, n))}</tspan></text></g>`;
  }
  return { width, height, body: clusters + edges + labels + boxes };
}

// -- zoom and pan ----------------------------------------------------------------------------

function applyView(box) {
  const v = box._view;
  box.querySelector("g.viewport").setAttribute("transform", `translate(${v.x},${v.y}) scale(${v.k})`);
}

function fit(box) {
  const svg = box.querySelector("svg");
  const { width, height } = box._size;
  const room = svg.clientWidth || width;
  // The whole graph in view, unless that would make its text unreadable (below half size):
  // then half size, and the box grows to the graph's height (pan or zoom for the rest).
  const k = Math.max(0.5, Math.min(1, room / Math.max(width, 1), 720 / Math.max(height, 1)));
  box._view = { k, x: Math.max(0, (room - width * k) / 2), y: 0 };
  svg.setAttribute("height", String(Math.max(80, Math.ceil(height * k))));
  applyView(box);
}

function zoom(box, factor, cx, cy) {
  const v = box._view;
  const k = Math.min(4, Math.max(0.1, v.k * factor));
  v.x = cx - ((cx - v.x) * k) / v.k;
  v.y = cy - ((cy - v.y) * k) / v.k;
  v.k = k;
  applyView(box);
}

function controls(box) {
  const svg = box.querySelector("svg");
  const center = () => [svg.clientWidth / 2, svg.clientHeight / 2];
  box.querySelector(".zoom-in").onclick = () => zoom(box, 1.25, ...center());
  box.querySelector(".zoom-out").onclick = () => zoom(box, 0.8, ...center());
  box.querySelector(".zoom-fit").onclick = () => fit(box);
  svg.addEventListener("wheel", (e) => {
    if (!e.ctrlKey && !e.metaKey) return;  // a plain wheel scrolls the page
    e.preventDefault();
    const r = svg.getBoundingClientRect();
    zoom(box, e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, vx: box._view.x, vy: box._view.y };
    svg.setPointerCapture(e.pointerId);
    svg.classList.add("dragging");
  });
  svg.addEventListener("pointermove", (e) => {
    if (!drag) return;
    box._view.x = drag.vx + e.clientX - drag.x;
    box._view.y = drag.vy + e.clientY - drag.y;
    applyView(box);
  });
  const end = () => { drag = null; svg.classList.remove("dragging"); };
  svg.addEventListener("pointerup", end);
  svg.addEventListener("pointercancel", end);
}

const LEGEND = ["succeeded", "running", "waiting", "failed", "pending", "skipped", "cancelled"];

export function drawGraph(box, graph, run) {
  const data = graph.code ? codeGraph(run) : graph;
  if (!data.nodes.length) {
    box.innerHTML = '<p class="muted">No step has been recorded yet.</p>';
    return;
  }
  if (typeof dagre === "undefined") {
    box.innerHTML = '<p class="error">The graph layout library (static/dagre.min.js) did not load.</p>';
    return;
  }
  const g = build(data);
  dagre.layout(g);
  const { width, height, body } = svgOf(g, run, Boolean(data.code));
  box._code = Boolean(data.code);
  box._size = { width, height };
  box.innerHTML = `
    <div class="graph-tools"><button class="secondary small zoom-in" title="zoom in">+</button>
      <button class="secondary small zoom-out" title="zoom out">−</button>
      <button class="secondary small zoom-fit" title="fit to the page">fit</button>
      <span class="muted">Ctrl+wheel zooms, drag pans</span></div>
    <svg id="graph" width="100%" height="${height}" role="img" data-width="${width}" data-height="${height}">
      <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
        <path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>
      <g class="viewport">${body}</g></svg>
    <div class="legend">${LEGEND.map((s) => `<span><i class="sw st-${s}"></i>${s}</span>`).join("")}</div>`;
  controls(box);
  fit(box);
}

// Live: recolour the nodes drawn (the plan does not change while the run runs).
export function paintGraph(box, run) {
  const steps = byName(run, box._code);
  for (const el of box.querySelectorAll("g.node")) {
    const node = { name: el.dataset.node, kind: "" };
    const status = statusOf(steps, node);
    if (el.dataset.status !== status) {
      el.dataset.status = status;
      el.setAttribute("class", `node st-${status}`);
      el.querySelector("title").textContent = el.querySelector("title").textContent.replace(/: [^:]*$/, `: ${status}`);
    }
    const extra = extraOf(steps, node);
    const span = el.querySelector("tspan.extra");
    if (span.textContent !== extra) span.textContent = extra;
  }
}
