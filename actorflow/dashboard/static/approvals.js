// The approvals inbox: every approval waiting (or, by the filter, resumed, expired, cancelled),
// oldest first, with its run, step, description, metadata, age and expiry, and a resume form.
// Live: cards come and go as approvals are asked for and resolved; a card stays the same
// element while it waits, so a payload being typed into it survives the updates.
import { api, esc, h, jsonInput, keyed, live, post, time, toast } from "./lib.js";

const STATUSES = ["waiting", "resumed", "expired", "cancelled", "all"];

function cardHTML(a, readOnly) {
  const meta = a.metadata && Object.keys(a.metadata).length
    ? `<pre class="mono meta-json">${esc(JSON.stringify(a.metadata, null, 2))}</pre>` : "";
  const form = a.status === "waiting" && !readOnly ? `<div class="action">
      <textarea class="approval-payload">{"approved": true}</textarea>
      <button class="resume">Resume</button></div>` : "";
  return `<div class="card approval-item" data-status="${esc(a.status)}">
    <div class="approval-head"><b>${esc(a.step)}</b> of <a class="mono" href="#/run/${esc(a.run_id)}">${esc(a.run_id)}</a>
      <span class="muted">(${esc(a.workflow)})</span> <span class="badge s-${esc(a.status)}">${esc(a.status)}</span></div>
    ${a.description ? `<p>${esc(a.description)}</p>` : ""}
    <p class="muted">asked ${time(a.created_at)}${a.expires_at && a.status === "waiting" ? ` · expires ${time(a.expires_at)}` : ""}${
      a.resolved_at ? ` · ${esc(a.status)} ${time(a.resolved_at)}` : ""}</p>
    ${a.payload != null ? `<p class="resumed-with">resumed with <code class="mono">${esc(a.payload)}</code></p>` : ""}
    ${meta}${form}</div>`;
}

export async function approvalsPage(ctx, params) {
  const { main } = ctx;
  const status = STATUSES.includes(params.get("status")) ? params.get("status") : "waiting";
  main.innerHTML = `<h1>Approvals</h1>
    <form class="filters" id="approval-filter"><label>Status<select name="status">${STATUSES.map((s) =>
      `<option ${s === status ? "selected" : ""}>${s}</option>`).join("")}</select></label></form>
    <div id="inbox"></div><p class="muted" id="inbox-count"></p>`;
  main.querySelector("#approval-filter select").onchange = (e) => {
    location.hash = `#/approvals?status=${encodeURIComponent(e.target.value)}`;
  };
  const inbox = main.querySelector("#inbox");
  async function paint() {
    const { data } = await api(`api/approvals?status=${encodeURIComponent(status)}`);
    if (!ctx.current()) return;
    keyed(inbox, data, (a) => `${a.token}:${a.status}`, (a) => {
      const card = h(cardHTML(a, ctx.readOnly));
      const resume = card.querySelector(".resume");
      if (resume) {
        resume.onclick = async () => {
          let payload;
          try { payload = jsonInput(card.querySelector(".approval-payload").value, "payload"); }
          catch (e) { toast(e.message, true); return; }
          try {
            await post(`api/approvals/${encodeURIComponent(a.token)}/resume`, payload);
            toast(`resumed ${a.step}`);
            paint();
          } catch (e) { toast(e.message, true); }
        };
      }
      return card;
    }, () => {});
    main.querySelector("#inbox-count").textContent = data.length
      ? `${data.length} approval(s)` : `No approval is ${status === "all" ? "recorded" : status}.`;
  }
  await paint();
  ctx.listen(live(paint, 300));
}
