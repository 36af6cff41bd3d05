// Start a run of any workflow with a JSON payload and an optional idempotency key.
import { esc, jsonInput, post, toast } from "./lib.js";

export function triggerPage(ctx, params) {
  const chosen = params.get("workflow") || "";
  const options = ctx.workflows.map((w) =>
    `<option ${w === chosen ? "selected" : ""}>${esc(w)}</option>`).join("");
  ctx.main.innerHTML = `<h1>Trigger a run</h1><form class="card" id="trigger">
      <p><label>Workflow <select name="workflow">${options}</select></label></p>
      <p><label>Payload (JSON)<textarea name="payload">{}</textarea></label></p>
      <p><label>Idempotency key (optional) <input name="key"></label></p>
      <button type="submit">Trigger</button></form>`;
  if (!ctx.workflows.length) {
    ctx.main.querySelector("#trigger button").disabled = true;
    ctx.main.querySelector("#trigger").insertAdjacentHTML("beforeend",
      '<p class="muted">No workflow is defined in this engine yet.</p>');
  }
  ctx.main.querySelector("#trigger").onsubmit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    let payload;
    try { payload = jsonInput(form.get("payload"), "payload"); }
    catch (err) { toast(err.message, true); return; }
    const headers = {};
    if (form.get("key")) headers["Idempotency-Key"] = form.get("key");
    try {
      const { data } = await post(`api/workflows/${encodeURIComponent(form.get("workflow"))}/trigger`, payload, headers);
      location.hash = `#/run/${data.run_id}`;
    } catch (err) { toast(err.message, true); }
  };
}
