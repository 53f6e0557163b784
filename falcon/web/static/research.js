/* Falcon research page: follows queued research jobs (.job-status[data-job-url]) with the shared
 * job panel of falcon.js (window.falcon.followJobs), and links the researched strategy when done.
 */
(function () {
  "use strict";

  var RESEARCH = {
    resultId: function (result) { return result && result.strategy_id; },
    linkText: "Open research #",
    doneText: "Done: reload the page for the new submission."
  };

  document.addEventListener("DOMContentLoaded", function () {
    if (window.falcon) { window.falcon.followJobs(RESEARCH); }
  });
})();
