// Live updates of the jobs on the page, each from its own event stream
// (GET /api/v1/jobs/{id}/events, read by sse.js).
//
// A browser opens at most six HTTP/1.1 connections to one server, and a
// stream holds one for as long as its job runs: at most MAX_STREAMS are open
// at once, so the buttons and the list always have connections left. Running
// jobs come first, then pending ones, oldest first (the next to start); when a
// stream ends (its job finished) the next job in line gets one.

import { readEvents } from "./sse.js";
import { isFinished } from "./format.js";

export const MAX_STREAMS = 3;
const RETRY_MS = 2000;
const MAX_RETRY_MS = 30000;

function rank(job) {
  const running = job.status === "in_progress" || job.status === "cancelling";
  return [running ? 0 : 1, running ? job.started_at ?? "" : job.created_at];
}

function compare(a, b) {
  const [x, y] = [rank(a), rank(b)];
  return x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
}

const pause = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

export class LiveJobs {
  constructor({ onStatus, onProgress }) {
    this.onStatus = onStatus;
    this.onProgress = onProgress;
    this.wanted = new Map(); // job id -> last known job, unfinished
    this.open = new Map(); // job id -> AbortController of its stream
  }

  /** Follow `job` while it is unfinished (called with every new state of it). */
  watch(job) {
    if (isFinished(job)) this.wanted.delete(job.job_id);
    else this.wanted.set(job.job_id, job);
    this.schedule();
  }

  stopAll() {
    this.wanted.clear();
    for (const controller of this.open.values()) controller.abort();
    this.open.clear();
  }

  schedule() {
    const best = [...this.wanted.values()].sort(compare).slice(0, MAX_STREAMS);
    const keep = new Set(best.map((job) => job.job_id));
    for (const [id, controller] of this.open) {
      if (!keep.has(id)) {
        controller.abort(); // finished, or outranked by a job that started running
        this.open.delete(id);
      }
    }
    for (const job of best) if (!this.open.has(job.job_id)) this.follow(job.job_id);
  }

  async follow(id) {
    const controller = new AbortController();
    this.open.set(id, controller);
    const { signal } = controller;
    let delay = RETRY_MS;
    while (!signal.aborted && this.wanted.has(id)) {
      try {
        const retry = await readEvents(
          `/api/v1/jobs/${id}/events`,
          (name, data) => {
            delay = RETRY_MS;
            if (name === "status") this.onStatus(data);
            else if (name === "progress") this.onProgress(data);
          },
          signal,
        );
        delay = retry ?? delay; // ended early (a restarting server): back soon
      } catch (error) {
        if (signal.aborted) break;
        // 401 (signed out), 403, 404: following it again cannot work.
        if (error.status >= 400 && error.status < 500 && error.status !== 429) {
          this.wanted.delete(id);
          break;
        }
        delay = Math.min(delay * 2, MAX_RETRY_MS);
      }
      if (this.wanted.has(id) && !signal.aborted) await pause(delay, signal);
    }
    if (this.open.get(id) === controller) {
      this.open.delete(id);
      this.schedule();
    }
  }
}
