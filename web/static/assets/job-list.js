// The owner's exports, newest first: keyset pages ("Show older exports"),
// live progress (live.js), and the Cancel, Retry and Download buttons.

import { api } from "./session.js";
import { createCard, updateCard, updateProgress } from "./job-card.js";
import { LiveJobs } from "./live.js";

export const PAGE_SIZE = 50;

export class JobList {
  constructor({ list, more, status }) {
    this.list = list;
    this.more = more;
    this.status = status;
    this.cards = new Map();
    this.live = new LiveJobs({
      onStatus: (job) => this.show(job),
      onProgress: (progress) => {
        const card = this.cards.get(progress.job_id);
        if (card && card.dataset.status === "in_progress") updateProgress(card, progress);
      },
    });
    list.addEventListener("click", (event) => this.act(event));
    more.addEventListener("click", () => {
      if (more.getAttribute("aria-disabled") !== "true") this.loadPage();
    });
  }

  /** Start over for `subject` (after every sign-in). */
  reset(subject) {
    this.live.stopAll();
    this.cards.clear();
    this.list.replaceChildren();
    this.subject = subject;
    this.cursor = null;
  }

  async loadPage() {
    const query = new URLSearchParams({ owner: this.subject, limit: String(PAGE_SIZE) });
    if (this.cursor) query.set("cursor", this.cursor);
    this.more.setAttribute("aria-disabled", "true"); // keeps the keyboard focus
    try {
      const page = await api(`/api/v1/jobs?${query}`);
      const cards = [];
      for (const job of page.data) {
        if (this.cards.has(job.job_id)) continue;
        const card = createCard(job);
        this.cards.set(job.job_id, card);
        cards.push(card);
        this.live.watch(job);
      }
      this.list.append(...cards);
      this.cursor = page.next_cursor;
      this.more.hidden = this.cursor === null;
      this.status.textContent = this.cards.size ? "" : "No exports yet: start one above.";
    } catch (error) {
      this.status.textContent = `Could not load your exports: ${error.message}`;
    } finally {
      this.more.removeAttribute("aria-disabled");
    }
  }

  /** A job just created (or re-read): on top if new, else redrawn in place. */
  show(job) {
    let card = this.cards.get(job.job_id);
    if (!card) {
      card = createCard(job);
      this.cards.set(job.job_id, card);
      this.list.prepend(card);
      this.status.textContent = "";
    } else {
      updateCard(card, job);
    }
    this.live.watch(job);
  }

  async act(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || button.getAttribute("aria-disabled") === "true") return;
    const card = button.closest(".job");
    const id = card.dataset.jobId;
    const note = card.querySelector(".job-note");
    note.textContent = "";
    // aria-disabled, not disabled: a disabled button would drop the keyboard focus.
    button.setAttribute("aria-disabled", "true");
    try {
      if (button.dataset.action === "download") {
        // A signed link: the browser downloads (and resumes) it without the token.
        const { data } = await api(`/api/v1/jobs/${id}/links`, { method: "POST" });
        window.location.assign(data.url);
      } else {
        const { data } = await api(`/api/v1/jobs/${id}/${button.dataset.action}`, {
          method: "POST",
        });
        this.show(data);
      }
    } catch (error) {
      note.textContent = error.message;
    } finally {
      button.removeAttribute("aria-disabled");
    }
  }
}
