/* Falcon research page: follows queued research jobs (.job-status[data-job-url]) by polling
 * /api/v1/jobs/<id>, as charts.js does for backtests, and links the researched strategy when done.
 *
 * Job notes and errors can quote what a video or an LLM wrote: they only ever reach the page
 * through textContent, and the one link built here is data-result-base plus a numeric id.
 */
(function () {
  "use strict";

  var POLL_MS = 1000;
  var POLL_MAX_MS = 5000;
  var FINAL = { done: true, failed: true, canceled: true, cancelled: true };

  function strategyId(result) {
    var id = result && result.strategy_id;
    return typeof id === "number" && id > 0 && Math.floor(id) === id ? id : null;
  }

  function showJob(panel, job) {
    var state = panel.querySelector(".job-state");
    var note = panel.querySelector(".job-note");
    var bar = panel.querySelector("progress");
    var out = panel.querySelector(".job-result");
    if (state) { state.textContent = job.status; }
    if (note) { note.textContent = job.progress_note || ""; }
    if (bar) { bar.value = job.status === "done" ? 1 : (Number(job.progress) || 0); }
    panel.setAttribute("data-status", job.status);
    if (!out || !FINAL[job.status]) { return; }
    panel.classList.add(job.status === "done" ? "done" : "failed");
    out.textContent = "";
    var id = strategyId(job.result);
    if (job.status === "done" && id) {
      var a = document.createElement("a");
      a.href = panel.getAttribute("data-result-base") + id;
      a.className = "job-link";
      a.textContent = "Open research #" + id;
      out.appendChild(a);
    } else if (job.status === "done") {
      out.textContent = "Done: reload the page for the new submission.";
    } else {
      out.textContent = job.error || ("Job " + job.status + ".");
    }
  }

  function follow(panel) {
    var url = panel.getAttribute("data-job-url");
    var wait = POLL_MS;
    function tick() {
      window.falcon.fetch(url).then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      }).then(function (job) {
        wait = POLL_MS;
        showJob(panel, job);
        if (!FINAL[job.status]) { setTimeout(tick, POLL_MS); }
      }).catch(function () {
        wait = Math.min(wait * 2, POLL_MAX_MS);  // a restarting server: back off, keep trying
        setTimeout(tick, wait);
      });
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.falcon) { return; }
    document.querySelectorAll(".job-status[data-job-url]").forEach(follow);
  });
})();
