// "My exports" (/): sign in, start an export, follow it, download it.

import { startSession } from "./session.js";
import { ExportForm } from "./export-form.js";
import { JobList } from "./job-list.js";

const jobs = new JobList({
  list: document.getElementById("jobs"),
  more: document.getElementById("more"),
  status: document.getElementById("list-status"),
});
const form = new ExportForm({
  form: document.getElementById("new-export"),
  onCreated: (job) => jobs.show(job),
});

startSession(async (me) => {
  jobs.reset(me.subject);
  const kinds = form.load().catch((error) => {
    document.getElementById("form-error").textContent = `Could not load the kinds: ${error.message}`;
  });
  await jobs.loadPage();
  // The browser tests read this mark: time from navigation to the first page of jobs.
  performance.mark("exportd:list-rendered");
  await kinds;
});
