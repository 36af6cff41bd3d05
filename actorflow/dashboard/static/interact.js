// A code workflow run's "Signal, query or update" card (as Temporal's UI sends a signal).
// The handlers offered are the ones the run has registered so far, from its built-in query
// "__actorflow_handlers" (names, parameters, first docstring lines); any name may be typed.
// The form is drawn once: a live update refreshes the offered names and which kinds are
// open (a finished run only answers queries), never what the user is typing.
import { api, esc, FINISHED, jsonInput, post, toast } from "./lib.js";

const HANDLERS_QUERY = "__actorflow_handlers";
const TABLES = { signal: "signals", query: "queries", update: "updates" };
const BODY_LABEL = {
  signal: "Payload (JSON; empty sends none)",
  query: "Arguments (a JSON list)",
  update: "Payload (JSON)",
};

export class Interact {
  // `sent` is called after each send that worked: the page refetches the run, as a signal
  // or an update that runs no step sends no live event.
  constructor(box, runId, readOnly, sent = () => {}) {
    this.box = box;
    this.sent = sent;
    this.runId = runId;
    this.readOnly = readOnly;
    this.handlers = { signals: [], queries: [], updates: [] };
    this.finished = null;
    this.asked = null;  // the run's state the handlers were last asked for at
    box.innerHTML = `<form class="interact" id="interact-form">
        <label>Send <select name="kind"></select></label>
        <label>Name <input name="handler" list="handler-names" autocomplete="off" required></label>
        <datalist id="handler-names"></datalist>
        <label class="spread"><input type="checkbox" name="spread"> a list of arguments</label>
        <label class="body"><span class="body-label"></span><textarea name="body" rows="3"></textarea></label>
        <button type="submit">Send</button>
      </form>
      <p class="muted" id="handler-hint"></p>
      <pre class="mono" id="interact-result" hidden></pre>`;
    this.form = box.querySelector("form");
    this.f = this.form.elements;
    this.f.kind.onchange = () => this.kindChanged();
    // The checkbox follows the name typed (a handler of several parameters takes a list);
    // the user may change it after.
    this.f.handler.oninput = () => this.hint(true);
    this.form.onsubmit = (e) => { e.preventDefault(); this.send(); };
  }

  // The run's status and handlers changed (or might have): refresh what is offered.
  async update(run) {
    const finished = FINISHED.includes(run.status);
    if (finished !== this.finished) {
      this.finished = finished;
      const kinds = finished || this.readOnly ? ["query"] : ["signal", "query", "update"];
      const was = this.f.kind.value;
      this.f.kind.innerHTML = kinds.map((k) => `<option value="${k}">${k}</option>`).join("");
      this.f.kind.value = kinds.includes(was) ? was : kinds[0];
      this.kindChanged();
    }
    // Handlers are registered as the function runs: ask again when the run moved on, not on
    // every event (a finished run's answer is rebuilt by replaying it).
    const at = `${run.status}:${run.steps.length}`;
    if (at === this.asked) return;
    this.asked = at;
    try {
      const { data } = await api(this.url("queries", HANDLERS_QUERY));
      this.handlers = data.result;
    } catch {
      return;  // a run not yet started, or panicked: keep what was offered
    }
    this.offer();
  }

  url(kind, name) {
    return `api/runs/${encodeURIComponent(this.runId)}/${kind}/${encodeURIComponent(name)}`;
  }

  kindChanged() {
    const kind = this.f.kind.value;
    this.form.querySelector(".body-label").textContent = BODY_LABEL[kind];
    this.form.querySelector(".spread").hidden = kind !== "signal";
    if (kind === "query" && !this.f.body.value.trim()) this.f.body.value = "[]";
    if (kind !== "query" && this.f.body.value.trim() === "[]") this.f.body.value = "";
    this.offer();
  }

  offer() {
    const rows = this.handlers[TABLES[this.f.kind.value]] || [];
    const list = this.box.querySelector("#handler-names");
    const html = rows.map((r) => `<option value="${esc(r.name)}">`).join("");
    if (list.dataset.html !== html) {
      list.innerHTML = html;
      list.dataset.html = html;
    }
    this.hint();
  }

  // What the named handler takes; a signal handler of several parameters takes a list.
  hint(follow = false) {
    const kind = this.f.kind.value;
    const rows = this.handlers[TABLES[kind]] || [];
    const el = this.box.querySelector("#handler-hint");
    const found = rows.find((r) => r.name === this.f.handler.value);
    if (found) {
      const params = found.params ? `(${found.params.join(", ")})` : "(…)";
      el.textContent = `${kind} ${found.name}${params}${found.doc ? ` - ${found.doc}` : ""}`;
      if (kind === "signal" && follow) this.f.spread.checked = Boolean(found.params && found.params.length > 1);
    } else {
      if (kind === "signal" && follow) this.f.spread.checked = false;
      el.textContent = rows.length
        ? `This run's ${TABLES[kind]}: ${rows.map((r) => r.name).join(", ")}`
        : `This run has registered no ${TABLES[kind]} yet.`;
    }
  }

  async send() {
    const kind = this.f.kind.value;
    const name = this.f.handler.value.trim();
    const text = this.f.body.value.trim();
    const out = this.box.querySelector("#interact-result");
    let body;
    try {
      body = text ? jsonInput(text, kind === "query" ? "arguments" : "payload") : undefined;
      if (kind === "query" && body !== undefined && !Array.isArray(body)) {
        throw new Error('arguments: expected a JSON list, e.g. [1, "a"]');
      }
      if (kind === "signal" && this.f.spread.checked && !Array.isArray(body)) {
        throw new Error("payload: a list of arguments was asked for; expected a JSON list");
      }
    } catch (e) { toast(e.message, true); return; }
    try {
      let shown;
      if (kind === "query") {
        const { data } = await api(`${this.url("queries", name)}?args=${encodeURIComponent(JSON.stringify(body || []))}`);
        shown = JSON.stringify(data.result, null, 2);
      } else if (kind === "update") {
        const { data } = await post(this.url("updates", name), body);
        shown = JSON.stringify(data.result, null, 2);
      } else {
        const spread = this.f.spread.checked ? "?args=true" : "";
        await post(`${this.url("signals", name)}${spread}`, body);
        shown = `signal ${name} delivered (durable)`;
      }
      out.classList.remove("error");
      out.textContent = `${kind} ${name} → ${shown}`;
      toast(`${kind} ${name} sent`);
      if (kind !== "query") this.sent();
    } catch (e) {
      out.classList.add("error");
      out.textContent = `${kind} ${name}: ${e.message}`;
      toast(e.message, true);
    }
    out.hidden = false;
  }
}
