// A code workflow run's "Signal, query or update" card (as Temporal's UI sends a signal).
// The names offered are the handlers the run has registered so far, from its built-in query
// "__actorflow_handlers" (names, signatures, first docstring lines), and the signals its
// waits (ctx.wait_for_signal) are waiting for; any name may be typed. The form is drawn
// once: a live update refreshes what is offered and which kinds are open (a finished run
// answers queries only, a panicked one keeps signals for its restart), never what the user
// is typing.
import { api, esc, FINISHED, jsonInput, post, toast } from "./lib.js";

const HANDLERS_QUERY = "__actorflow_handlers";
const TABLES = { signal: "signals", query: "queries", update: "updates" };
const BODY_LABEL = {
  signal: "Payload (JSON; empty sends none)",
  query: "Arguments (a JSON list)",
  update: "Payload (JSON)",
};

// Whether `n` positional arguments fit a handler taking [least, most] (most null: any).
const fits = ([least, most], n) => least <= n && (most === null || n <= most);

export class Interact {
  // `sent` is called after each signal or update that worked: the page refetches the run,
  // as one that runs no step sends no live event.
  constructor(box, runId, readOnly, sent = () => {}) {
    this.box = box;
    this.runId = runId;
    this.readOnly = readOnly;
    this.sent = sent;
    this.handlers = { signals: [], queries: [], updates: [] };
    this.waits = [];  // signal names a ctx.wait_for_signal is waiting for
    this.why = "";  // why the handlers could not be listed
    this.mode = null;  // the set of kinds open, as last drawn
    this.askedFinished = false;
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
    // The checkbox follows the name typed (a handler that needs several arguments takes a
    // list); the user may change it after.
    this.f.handler.oninput = () => this.hint(true);
    this.form.onsubmit = (e) => { e.preventDefault(); this.send(); };
  }

  // The run changed (or might have): refresh the kinds open and the names offered.
  async update(run) {
    const finished = FINISHED.includes(run.status);
    const panicked = run.status === "panicked";
    let kinds = ["signal", "query", "update"];
    if (finished || this.readOnly) kinds = ["query"];
    else if (panicked) kinds = ["signal"];  // kept for its restart; queries, updates refused
    if (kinds.join() !== this.mode) {
      this.mode = kinds.join();
      const was = this.f.kind.value;
      this.f.kind.innerHTML = kinds.map((k) => `<option value="${k}">${k}</option>`).join("");
      this.f.kind.value = kinds.includes(was) ? was : kinds[0];
      this.kindChanged();
    }
    this.waits = [...new Set(run.steps.filter((s) => s.kind === "signal" && s.status === "running")
      .map((s) => s.name.replace(/#\d+$/, "")))];
    // Handlers are registered as the function runs (in a signal's handler too): ask on each
    // update (the page's refreshes are throttled), once for a finished run (its answer is
    // rebuilt by replaying it), never for a panicked one (it cannot answer).
    if (panicked) {
      this.why = "the run is panicked: its handlers cannot be listed; a signal sent now is kept for its restart";
    } else if (!(finished && this.askedFinished)) {
      this.askedFinished = finished;
      try {
        const { data } = await api(this.url("queries", HANDLERS_QUERY));
        this.handlers = data.result;
        this.why = "";
      } catch (e) {
        this.why = `its handlers cannot be listed: ${e.message}`;  // queued, say
      }
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

  rows(kind) {
    return this.handlers[TABLES[kind]] || [];
  }

  offer() {
    const kind = this.f.kind.value;
    const names = this.rows(kind).map((r) => r.name);
    if (kind === "signal") names.push(...this.waits.filter((w) => !names.includes(w)));
    const list = this.box.querySelector("#handler-names");
    const html = names.map((n) => `<option value="${esc(n)}">`).join("");
    if (list.dataset.html !== html) {
      list.innerHTML = html;
      list.dataset.html = html;
    }
    this.hint();
  }

  // What the named handler takes, or what the run has.
  hint(follow = false) {
    const kind = this.f.kind.value;
    const rows = this.rows(kind);
    const name = this.f.handler.value;
    const el = this.box.querySelector("#handler-hint");
    const found = rows.find((r) => r.name === name);
    if (kind === "signal" && follow) this.f.spread.checked = Boolean(found && found.takes && found.takes[0] > 1);
    let text;
    if (found) {
      text = `${kind} ${found.name}${found.signature ?? "(…)"}${found.doc ? ` - ${found.doc}` : ""}`;
    } else if (kind === "signal" && this.waits.includes(name)) {
      text = `signal ${name}: a ctx.wait_for_signal is waiting for it (it returns the payload, or the list of arguments)`;
    } else {
      const names = rows.map((r) => r.name).concat(kind === "signal" ? this.waits : []);
      text = names.length ? `This run's ${TABLES[kind]}: ${names.join(", ")}`
        : `This run has registered no ${TABLES[kind]} yet.`;
    }
    el.textContent = this.why ? `${text} (${this.why})` : text;
  }

  // The request's body, or why it is not sent.
  body(kind, name) {
    const text = this.f.body.value.trim();
    const body = text ? jsonInput(text, kind === "query" ? "arguments" : "payload") : undefined;
    if (kind === "query" && body !== undefined && !Array.isArray(body)) {
      throw new Error('arguments: expected a JSON list, e.g. [1, "a"]');
    }
    if (kind !== "signal") return body;
    const spread = this.f.spread.checked;
    if (spread && !Array.isArray(body)) {
      throw new Error("payload: a list of arguments was asked for; expected a JSON list");
    }
    // The engine drops a signal whose arguments do not fit its handler (with a warning on
    // its log): say so here instead of reporting it delivered.
    const found = this.rows("signal").find((r) => r.name === name);
    if (found && found.takes) {
      const n = spread ? body.length : 1;
      const ok = fits(found.takes, n) || (!spread && body == null && found.takes[0] === 0);
      if (!ok) {
        const [least, most] = found.takes;
        const want = most === least ? `${least}` : most === null ? `${least} or more` : `${least} to ${most}`;
        throw new Error(`signal ${name}${found.signature} takes ${want} argument(s); this sends ${n}${
          spread ? "" : " (tick \"a list of arguments\" to send several)"}`);
      }
    }
    return body;
  }

  async send() {
    const kind = this.f.kind.value;
    const name = this.f.handler.value.trim();
    const out = this.box.querySelector("#interact-result");
    const button = this.form.querySelector("button[type=submit]");
    const show = (text, bad) => {
      out.classList.toggle("error", bad);
      out.textContent = text;
      out.hidden = false;
    };
    let body;
    try {
      body = this.body(kind, name);
    } catch (e) {
      show(`${kind} ${name}: not sent: ${e.message}`, true);
      toast(e.message, true);
      return;
    }
    button.disabled = true;  // an update runs once per click, not once per impatient click
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
        const taker = this.rows("signal").some((r) => r.name === name) ? "; its handler takes it"
          : this.waits.includes(name) ? "; the wait for it takes it"
          : "; nothing takes it yet: it is kept for a handler or a ctx.wait_for_signal";
        shown = `delivered (durable)${taker}`;
      }
      show(`${kind} ${name} → ${shown}`, false);
      toast(`${kind} ${name} sent`);
      if (kind !== "query") this.sent();
    } catch (e) {
      show(`${kind} ${name}: ${e.message}`, true);
      toast(e.message, true);
    } finally {
      button.disabled = false;
    }
  }
}
