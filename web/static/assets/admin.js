// The admin page (/admin): queue health from GET /api/v1/admin/dashboard,
// refreshed every few seconds while the tab is visible; Pause/Resume a kind,
// Retry a failed export. Failing webhook endpoints are listed too.

import { api, startSession } from "./session.js";
import { age, shortId, time, when } from "./format.js";

const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
let timer = null;
let signedIn = false;

function cell(content, className = "") {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  return td;
}

function button(text, dataset, label) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  Object.assign(element.dataset, dataset);
  element.setAttribute("aria-label", label);
  return element;
}

function jobCell(id) {
  const code = document.createElement("code");
  code.textContent = shortId(id);
  code.title = id;
  return code;
}

function fill(tableId, rows, columns, empty) {
  const body = $(tableId).tBodies[0];
  if (rows.length === 0) {
    const td = cell(empty, "empty");
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    const tr = document.createElement("tr");
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      tr.append(...columns(row));
      return tr;
    }),
  );
}

function render(data) {
  $("taken-at").textContent = `As of ${time(data.taken_at)}`;
  fill(
    "kinds",
    data.kinds,
    (k) => {
      const name = document.createElement("span");
      name.textContent = k.kind;
      if (k.title) name.title = k.title;
      const action = k.paused
        ? button("Resume", { kind: k.kind, action: "resume" }, `Resume ${k.kind}`)
        : button("Pause", { kind: k.kind, action: "pause" }, `Pause ${k.kind}`);
      const state = k.paused ? `paused${k.paused_by ? ` by ${k.paused_by}` : ""}` : "running";
      return [
        cell(name),
        cell(String(k.pending), "num"),
        cell(String(k.scheduled_later), "num"),
        cell(String(k.running), "num"),
        cell(String(k.failed_last_hour), "num" + (k.failed_last_hour ? " bad" : "")),
        cell(age(k.oldest_pending_seconds), "num"),
        cell(state, k.paused ? "paused" : ""),
        cell(k.known ? action : "not configured"),
      ];
    },
    "No kinds are configured.",
  );
  fill(
    "running",
    data.running,
    (j) => [
      cell(jobCell(j.job_id)),
      cell(j.kind),
      cell(j.owner_id),
      cell(`${j.progress_percentage} %`, "num"),
      cell(j.worker ?? (j.worker_id === null ? "—" : `#${j.worker_id}`)),
      cell(age(j.heartbeat_age_seconds), "num"),
    ],
    "Nothing is running.",
  );
  fill(
    "stalled",
    data.stalled,
    (j) => [
      cell(jobCell(j.job_id)),
      cell(j.kind),
      cell(j.owner_id),
      cell(`${j.attempts} of ${j.max_attempts}`, "num"),
      cell(j.worker_id === null ? "gone" : `#${j.worker_id}`),
      cell(age(j.heartbeat_age_seconds), "num"),
    ],
    "No stalled exports.",
  );
  fill(
    "failures",
    data.failures,
    (j) => [
      cell(when(j.failed_at)),
      cell(jobCell(j.job_id)),
      cell(j.kind),
      cell(j.owner_id),
      cell(`${j.attempts} of ${j.max_attempts}`, "num"),
      cell(j.error_message ?? "", "error-text"),
      cell(button("Retry", { job: j.job_id, action: "retry" }, `Retry ${j.kind} ${shortId(j.job_id)}`)),
    ],
    "No failures.",
  );
  fill(
    "webhooks",
    data.webhooks,
    (w) => [
      cell(w.url + (w.configured ? "" : " (notify_url)")),
      cell(String(w.failing), "num bad"),
      cell(String(w.pending), "num"),
      cell(age(w.oldest_undelivered_seconds), "num"),
      cell(w.last_error ?? "", "error-text"),
    ],
    "Every webhook endpoint is delivering.",
  );
  fill(
    "workers",
    data.workers,
    (w) => [
      cell(`#${w.worker_id}`),
      cell(age(w.heartbeat_age_seconds), "num"),
      cell(String(w.running_jobs), "num"),
    ],
    "No worker is registered.",
  );
}

async function refresh() {
  clearTimeout(timer);
  try {
    const { data } = await api("/api/v1/admin/dashboard");
    $("not-admin").hidden = true;
    $("dashboard").hidden = false;
    $("admin-error").textContent = "";
    render(data);
  } catch (error) {
    if (error.status === 403) {
      $("dashboard").hidden = true;
      $("not-admin").hidden = false;
      $("not-admin-text").textContent =
        `This token is not an admin's, so there is nothing to show here. ` +
        `(The API answered 403 ${error.code}: ${error.message}.)`;
      return; // no refreshing
    }
    if (error.status === 401) return; // the sign-in form is showing
    $("admin-error").textContent = `Could not refresh: ${error.message}`;
  }
  if (document.visibilityState === "visible") timer = setTimeout(refresh, REFRESH_MS);
}

async function act(event) {
  const target = event.target.closest("button[data-action]");
  if (!target) return;
  target.disabled = true;
  $("admin-error").textContent = "";
  const { action, kind, job } = target.dataset;
  const path = kind
    ? `/api/v1/admin/kinds/${encodeURIComponent(kind)}/${action}`
    : `/api/v1/jobs/${job}/retry`;
  try {
    await api(path, { method: "POST" });
  } catch (error) {
    $("admin-error").textContent = error.message;
  }
  // Redrawn: keep the keyboard on the row's new button.
  const selector = kind ? `button[data-kind="${CSS.escape(kind)}"]` : null;
  await refresh();
  if (selector) document.querySelector(selector)?.focus();
}

document.getElementById("dashboard").addEventListener("click", act);
$("refresh").addEventListener("click", refresh);
document.addEventListener("visibilitychange", () => {
  if (signedIn && document.visibilityState === "visible") refresh();
});

startSession(async () => {
  signedIn = true;
  await refresh();
  performance.mark("exportd:dashboard-rendered");
});
