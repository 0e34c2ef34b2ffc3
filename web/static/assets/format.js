// How values read on the pages: sizes, times, ages, statuses.

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const clock = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

export const when = (iso) => (iso ? dateTime.format(new Date(iso)) : "");
export const day = (iso) => (iso ? dateOnly.format(new Date(iso)) : "");
export const time = (iso) => (iso ? clock.format(new Date(iso)) : "");
export const shortId = (id) => id.slice(0, 8);

/** 10298 → "10.3 kB" (decimal units, as X-Package-Size). */
export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** Seconds → "42 s", "3 min", "1.5 h", "2 d"; null → "—". */
export function age(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.floor(seconds / 86400)} d`;
}

export const FINAL = new Set(["completed", "rolled_back", "cancelled"]);

/** Nothing more happens to the job until someone retries it (Job.is_finished). */
export const isFinished = (job) =>
  FINAL.has(job.status) || (job.status === "failed" && job.completed_at !== null);

export function packageLive(job, now = Date.now()) {
  const pkg = job.package;
  return (
    job.status === "completed" &&
    pkg !== null &&
    pkg.deleted_at === null &&
    (pkg.expires_at === null || new Date(pkg.expires_at).getTime() > now)
  );
}

export function statusText(job) {
  if (job.status === "pending" && job.paused) return "pending · paused";
  if (job.status === "pending" && new Date(job.scheduled_at).getTime() > Date.now()) {
    return "scheduled";
  }
  if (job.status === "completed" && !packageLive(job)) return "expired";
  return job.status.replace("_", " ");
}
