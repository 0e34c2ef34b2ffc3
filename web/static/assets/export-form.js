// "New export": a form generated from GET /api/v1/kinds — one field per
// declared param, its input type from the param's type, `required` and the
// default from the declaration. The server is the judge: its errors are shown
// next to the field they name (`field`: "kind", "params.NAME").

import { api, randomId } from "./session.js";

const INPUTS = {
  text: { type: "text" },
  int: { type: "number", step: "1", inputMode: "numeric" },
  float: { type: "number", step: "any", inputMode: "decimal" },
  date: { type: "date" },
  timestamp: { type: "datetime-local", step: "1" },
  uuid: { type: "text", spellcheck: false, autocomplete: "off" },
};

export class ExportForm {
  constructor({ form, onCreated }) {
    this.form = form;
    this.onCreated = onCreated;
    this.kinds = [];
    this.select = form.elements.kind;
    this.select.addEventListener("change", () => this.renderParams());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    // One key per intended export: a resubmission after a lost answer is not a second export.
    form.addEventListener("input", () => {
      this.idempotencyKey = null;
    });
  }

  async load() {
    const { data } = await api("/api/v1/kinds");
    this.kinds = data;
    const chosen = this.select.value;
    this.select.replaceChildren(
      ...data.map((kind) => {
        const option = document.createElement("option");
        option.value = kind.kind;
        const name = kind.title ? `${kind.title} (${kind.kind})` : kind.kind;
        option.textContent = kind.paused ? `${name}, paused` : name;
        return option;
      }),
    );
    if (data.some((kind) => kind.kind === chosen)) this.select.value = chosen;
    this.renderParams();
  }

  get kind() {
    return this.kinds.find((kind) => kind.kind === this.select.value);
  }

  renderParams() {
    const kind = this.kind;
    const fields = this.form.querySelector("#param-fields");
    const params = kind ? Object.entries(kind.params) : [];
    fields.replaceChildren(...params.map(([name, spec]) => paramField(name, spec)));
    this.form.querySelector("#params").hidden = params.length === 0;
    this.form.querySelector("#kind-note").textContent = kind?.paused
      ? "This kind is paused by an operator: a new export waits until it is resumed."
      : "";
    this.clearErrors();
  }

  clearErrors() {
    for (const element of this.form.querySelectorAll(".field-error, .form-error")) {
      element.textContent = "";
    }
    for (const element of this.form.querySelectorAll("[aria-invalid]")) {
      element.removeAttribute("aria-invalid");
    }
  }

  showError(error) {
    const target = error.field && this.form.querySelector(`[data-error-for="${CSS.escape(error.field)}"]`);
    if (target) {
      target.textContent = error.message;
      const input = document.getElementById(target.dataset.input);
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } else {
      this.form.querySelector("#form-error").textContent = error.message;
    }
  }

  values() {
    const params = {};
    for (const [name, spec] of Object.entries(this.kind?.params ?? {})) {
      const input = this.form.elements[`param-${name}`];
      const raw = input.value;
      if (raw === "") continue; // left out: the kind's default applies
      if (spec.type === "int" || spec.type === "float") params[name] = Number(raw);
      else if (spec.type === "bool") params[name] = raw === "true";
      else if (spec.type === "timestamp") params[name] = new Date(raw).toISOString();
      else params[name] = raw;
    }
    return params;
  }

  async submit() {
    if (this.busy) return;
    this.clearErrors();
    const status = this.form.querySelector("#form-status");
    const button = this.form.querySelector("#start");
    this.idempotencyKey ??= randomId();
    // aria-disabled, not disabled: a disabled button would drop the keyboard focus.
    this.busy = true;
    button.setAttribute("aria-disabled", "true");
    status.textContent = "Starting…";
    try {
      const { data } = await api("/api/v1/jobs", {
        method: "POST",
        body: { kind: this.select.value, params: this.values() },
        headers: { "Idempotency-Key": this.idempotencyKey },
      });
      this.idempotencyKey = null;
      status.textContent = `Started ${data.kind} ${data.job_id.slice(0, 8)}.`;
      this.onCreated(data);
    } catch (error) {
      status.textContent = "";
      this.showError(error);
    } finally {
      this.busy = false;
      button.removeAttribute("aria-disabled");
    }
  }
}

function paramField(name, spec) {
  const id = `param-${name}`;
  const wrapper = document.createElement("div");
  wrapper.className = "field";
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = spec.required ? `${name} (required)` : name;
  const hint = document.createElement("span");
  hint.className = "hint";
  hint.textContent = ` ${spec.type}`;
  label.append(hint);
  const input = spec.type === "bool" ? boolSelect(spec) : document.createElement("input");
  if (spec.type !== "bool") {
    Object.assign(input, INPUTS[spec.type] ?? INPUTS.text);
    if (spec.default !== null && spec.type !== "timestamp") input.value = String(spec.default);
    if (spec.default !== null && spec.type === "timestamp") input.placeholder = spec.default;
  }
  input.id = id;
  input.name = id;
  input.required = spec.required;
  const error = document.createElement("p");
  error.className = "field-error";
  error.id = `error-params.${name}`;
  error.dataset.errorFor = `params.${name}`;
  error.dataset.input = id;
  input.setAttribute("aria-describedby", error.id);
  wrapper.append(label, input, error);
  return wrapper;
}

function boolSelect(spec) {
  const select = document.createElement("select");
  const choices = [["true", "yes"], ["false", "no"]];
  if (!spec.required) {
    const fallback = spec.default === null ? "not set" : spec.default ? "yes" : "no";
    choices.unshift(["", `default (${fallback})`]);
  }
  for (const [value, text] of choices) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = text;
    select.append(option);
  }
  return select;
}
