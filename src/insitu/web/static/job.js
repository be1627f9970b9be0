// A job's live log: polls the job API while the job runs, then reloads once for its end.
(function () {
  "use strict";
  const root = document.getElementById("job");
  const log = document.getElementById("log");
  const id = root.dataset.id;
  async function tick() {
    const answer = await fetch("/api/v1/jobs/" + id + "/logs", { credentials: "same-origin" });
    log.textContent = answer.ok ? (await answer.text()) || "(nothing logged yet)" : "the log cannot be read now";
    if (root.dataset.ended === "yes") return;
    const job = await (await fetch("/api/v1/jobs/" + id, { credentials: "same-origin" })).json();
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
