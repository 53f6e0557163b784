/* Falcon dashboard: CSRF for fetch, live updates from /events/stream, and job panels.
 *
 * No framework and no inline script (the CSP forbids it). Text from events is only ever put into
 * the page with textContent, never innerHTML: event payloads can carry text an LLM or a video wrote.
 * Chart libraries, when they come, are vendored into static/vendor/ and read the JSON that pages
 * embed in <script type="application/json" id="..."> next to each .chart-slot.
 */
(function () {
  "use strict";

  var MAX_ROWS = 50;

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  /* fetch() for the page's own API calls: same-origin cookie plus the CSRF header. */
  function falconFetch(url, options) {
    options = options || {};
    var headers = new Headers(options.headers || {});
    var method = (options.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD") {
      headers.set("X-CSRF-Token", csrfToken());
    }
    if (options.body && typeof options.body !== "string" && !(options.body instanceof FormData)) {
      options.body = JSON.stringify(options.body);
      headers.set("Content-Type", "application/json");
    }
    options.headers = headers;
    options.credentials = "same-origin";
    return fetch(url, options);
  }

  function timeZone() {
    return document.body.getAttribute("data-tz") || "America/New_York";
  }

  function formatTime(iso) {
    if (!iso) { return ""; }
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return String(iso); }
    return d.toLocaleString("en-US", { timeZone: timeZone(), hour12: false });
  }

  function cell(text, numeric) {
    var td = document.createElement("td");
    td.textContent = text === undefined || text === null ? "" : String(text);
    if (numeric) { td.className = "num"; }
    return td;
  }

  function prepend(container, node) {
    var empty = container.querySelector(".empty");
    if (empty) { empty.remove(); }
    container.insertBefore(node, container.firstChild);
    while (container.children.length > MAX_ROWS) { container.removeChild(container.lastChild); }
    node.classList.add("new");
  }

  function fmt(value, digits) {
    var n = Number(value);
    return isFinite(n) ? n.toFixed(digits) : (value === undefined ? "" : String(value));
  }

  var renderers = {
    fill: function (ev) {
      var p = ev.payload || {};
      var tr = document.createElement("tr");
      [formatTime(p.ts || ev.ts), p.ticker, p.side].forEach(function (t) { tr.appendChild(cell(t)); });
      tr.appendChild(cell(p.qty, true));
      tr.appendChild(cell(fmt(p.price, 2), true));
      tr.appendChild(cell(fmt(p.fee, 2), true));
      return tr;
    },
    alert: function (ev) {
      var p = ev.payload || {};
      var tr = document.createElement("tr");
      tr.appendChild(cell(formatTime(p.created_at || ev.ts)));
      tr.appendChild(cell(p.ticker));
      tr.appendChild(cell(p.message));
      tr.appendChild(cell(p.latency_ms === undefined ? "" : fmt(p.latency_ms, 0) + " ms", true));
      return tr;
    },
    "*": function (ev) {
      var li = document.createElement("li");
      var time = document.createElement("time");
      time.textContent = formatTime(ev.ts);
      var kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = ev.kind;
      var detail = document.createElement("span");
      detail.className = "detail";
      var text = JSON.stringify(ev.payload || {});
      detail.textContent = text.length > 120 ? text.slice(0, 119) + "\u2026" : text;
      li.appendChild(time);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(kind);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(detail);
      return li;
    }
  };

  function apply(ev) {
    document.querySelectorAll("[data-live-kind]").forEach(function (el) {
      var want = el.getAttribute("data-live-kind");
      if (want !== "*" && want !== ev.kind) { return; }
      var render = renderers[want];
      if (!render) { return; }
      var target = el.tagName === "TABLE" ? el.tBodies[0] : el;
      prepend(target, render(ev));
    });
    if (ev.kind === "account_halted" || ev.kind === "account_resumed") {
      var p = ev.payload || {};
      var note = document.createElement("p");
      note.className = "flash " + (ev.kind === "account_halted" ? "error" : "info");
      note.textContent = (p.account || "account") + (ev.kind === "account_halted" ? " halted: " : " resumed: ") +
        (p.reason || "") + " (reload for the current state)";
      var main = document.querySelector("main");
      if (main) { main.insertBefore(note, main.firstChild); }
    }
    document.dispatchEvent(new CustomEvent("falcon:event", { detail: ev }));
  }

  function connect() {
    var url = document.body.getAttribute("data-stream");
    if (!url || !window.EventSource) { return; }
    var dot = document.getElementById("live-status");
    var source = new EventSource(url);
    source.onopen = function () { if (dot) { dot.className = "live-dot on"; } };
    source.onerror = function () { if (dot) { dot.className = "live-dot off"; } };
    source.onmessage = function (msg) {
      try { apply(JSON.parse(msg.data)); } catch (e) { /* a malformed frame is skipped */ }
    };
  }

  /* --- queued jobs ------------------------------------------------------------------------
   * A .job-status panel (data-job-url, data-result-base) follows its job by polling
   * /api/v1/jobs/<id> until the job is final, then links the result. Used by charts.js
   * (backtests) and research.js (research), each saying how to read its result:
   *   kind = { resultId: function (result) -> positive id or null,
   *            linkText: "Open backtest #", doneText: "Done: reload the page ..." }
   * Job notes and errors can quote what a strategy author, a video or an LLM wrote: they only
   * reach the page through textContent, and the one link is data-result-base plus a numeric id.
   */
  var JOB_POLL_MS = 1000;
  var JOB_POLL_MAX_MS = 5000;
  var JOB_FINAL = { done: true, failed: true, canceled: true, cancelled: true };

  function positiveId(value) {
    return typeof value === "number" && value > 0 && Math.floor(value) === value ? value : null;
  }

  function showJob(panel, job, kind) {
    var state = panel.querySelector(".job-state");
    var note = panel.querySelector(".job-note");
    var bar = panel.querySelector("progress");
    var out = panel.querySelector(".job-result");
    if (state) { state.textContent = job.status; }
    if (note) { note.textContent = job.progress_note || ""; }
    if (bar) { bar.value = job.status === "done" ? 1 : (Number(job.progress) || 0); }
    panel.setAttribute("data-status", job.status);
    if (!out || !JOB_FINAL[job.status]) { return; }
    panel.classList.add(job.status === "done" ? "done" : "failed");
    out.textContent = "";
    var id = positiveId(kind.resultId(job.result || null));
    if (job.status === "done" && id) {
      var a = document.createElement("a");
      a.href = panel.getAttribute("data-result-base") + id;
      a.className = "job-link";
      a.textContent = kind.linkText + id;
      out.appendChild(a);
    } else if (job.status === "done") {
      out.textContent = kind.doneText;
    } else {
      out.textContent = job.error || ("Job " + job.status + ".");
    }
  }

  function followJob(panel, kind) {
    var url = panel.getAttribute("data-job-url");
    var wait = JOB_POLL_MS;
    function tick() {
      falconFetch(url).then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      }).then(function (job) {
        wait = JOB_POLL_MS;
        showJob(panel, job, kind);
        if (!JOB_FINAL[job.status]) { setTimeout(tick, JOB_POLL_MS); }
      }).catch(function () {
        wait = Math.min(wait * 2, JOB_POLL_MAX_MS);  // a restarting server: back off, keep trying
        setTimeout(tick, wait);
      });
    }
    tick();
  }

  /* Follow every job panel of the page with ``kind`` (see above). */
  function followJobs(kind) {
    document.querySelectorAll(".job-status[data-job-url]").forEach(function (panel) {
      followJob(panel, kind);
    });
  }

  window.falcon = { fetch: falconFetch, csrfToken: csrfToken, followJobs: followJobs };
  document.addEventListener("DOMContentLoaded", connect);
})();
