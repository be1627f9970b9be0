// A job's live state and log: polls the job API while the job runs, then reloads once for its
// end (its times, end reason and release).
(function () {
  "use strict";
  const root = document.getElementById("job");
  const log = document.getElementById("log");
  const state = document.getElementById("job-state");
  const id = root.dataset.id;
  async function tick() {
    const answer = await fetch("/api/v1/jobs/" + id + "/logs", { credentials: "same-origin" });
    log.textContent = answer.ok ? (await answer.text()) || "(nothing logged yet)" : "the log cannot be read now";
    if (root.dataset.ended === "yes") return;
    const job = await (await fetch("/api/v1/jobs/" + id, { credentials: "same-origin" })).json();
    state.textContent = job.state;
    state.className = "state state-" + job.state;
    const ended = ["succeeded", "failed", "cancelled", "timed_out", "lost"].includes(job.state);
    if (ended && (job.release || job.state !== "succeeded" || root.dataset.waited === "yes")) {
      window.location.reload();
      return;
    }
    if (ended) root.dataset.waited = "yes";  // one more round: its release is being made
    setTimeout(tick, 2000);
  }
  tick();
})();
