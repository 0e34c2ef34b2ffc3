// One export on "My exports": its card, built from the page's <template>.
//
// A progress update touches only the bar (a transform: no layout) and two
// single-line texts of fixed height, so nothing on the page moves while a job
// runs. Everything else is redrawn on a status change.

import { bytes, day, isFinished, packageLive, shortId, statusText, when } from "./format.js";

const template = document.getElementById("job-template");

export function createCard(job) {
  const card = template.content.firstElementChild.cloneNode(true);
  card.dataset.jobId = job.job_id;
  updateCard(card, job);
  return card;
}

export function updateCard(card, job) {
  const $ = (selector) => card.querySelector(selector);
  card.dataset.status = job.status;
  $(".job-kind").textContent = job.kind;
  $(".job-id").textContent = shortId(job.job_id);
  $(".job-id").title = job.job_id;
  const status = $(".status");
  status.textContent = statusText(job);
  status.dataset.status = job.status;
  updateProgress(card, job.status === "completed" ? { ...job.progress, percentage: 100 } : job.progress);
  $(".created").textContent = `Created ${when(job.created_at)}`;
  $(".size").textContent = job.package ? bytes(job.package.size_bytes) : "";
  $(".expiry").textContent = expiry(job);
  const failed = job.status === "failed" || job.status === "rolled_back";
  $(".job-error").textContent = failed && job.error_message ? job.error_message : "";
  renderActions(card, job);
}

export function updateProgress(card, progress) {
  const percentage = Math.max(0, Math.min(100, progress.percentage ?? 0));
  const bar = card.querySelector(".bar");
  bar.setAttribute("aria-valuenow", String(percentage));
  bar.setAttribute("aria-label", `Progress of ${shortId(card.dataset.jobId)}`);
  card.querySelector(".fill").style.transform = `scaleX(${percentage / 100})`;
  card.querySelector(".pct").textContent = `${percentage} %`;
  card.querySelector(".step").textContent = progress.current_step ?? "";
}

function expiry(job) {
  const pkg = job.package;
  if (!pkg) return "";
  if (packageLive(job)) return pkg.expires_at ? `expires ${day(pkg.expires_at)}` : "";
  return `expired ${day(pkg.deleted_at ?? pkg.expires_at)}`;
}

/** The actions the API allows now: cancel, retry (or export again), download. */
export function actionsFor(job) {
  if (job.status === "pending" || job.status === "in_progress") return ["cancel"];
  if (job.status === "completed") return packageLive(job) ? ["download"] : ["retry"];
  if (isFinished(job)) return ["retry"];
  return [];
}

const LABELS = { cancel: "Cancel", retry: "Retry", download: "Download" };

function renderActions(card, job) {
  const area = card.querySelector(".actions");
  const title = card.querySelector(".job-title");
  // Focus in the buttons, or on the title where it was put while there were none.
  const hadFocus = area.contains(document.activeElement) || document.activeElement === title;
  const wanted = actionsFor(job);
  if (area.dataset.actions === wanted.join(" ")) return;
  area.dataset.actions = wanted.join(" ");
  area.replaceChildren(
    ...wanted.map((action) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = action;
      button.className = action === "download" ? "primary" : "";
      button.textContent =
        action === "retry" && job.status === "completed" ? "Export again" : LABELS[action];
      button.setAttribute("aria-label", `${button.textContent} ${job.kind} ${shortId(job.job_id)}`);
      return button;
    }),
  );
  // Keep the keyboard where it was: on the new button, else on the card's title.
  if (hadFocus) (area.querySelector("button") ?? title).focus();
}
