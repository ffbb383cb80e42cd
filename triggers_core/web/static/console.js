// The Triggers console's progressive enhancement: every page works without it.
// - Filter forms submit as soon as a checkbox or select changes.
// - A session page with work in flight can refresh itself (a checkbox, off by default).
// - Confirmation forms are sent once (the button is disabled while the request runs).
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form.filters").forEach(function (form) {
      form.querySelectorAll("input[type=checkbox], select").forEach(function (field) {
        field.addEventListener("change", function () { form.submit(); });
      });
    });
    var action = document.getElementById("action-form");
    if (action) {
      action.addEventListener("submit", function () {
        var button = document.getElementById("confirm");
        if (button) { button.disabled = true; button.textContent = "Working…"; }
      });
    }
    var uid = document.getElementById("session-uid");
    var inFlight = document.querySelector(".pill.st-running, .pill.st-scheduled");
    if (uid && inFlight) {
      var label = document.createElement("label");
      label.className = "refresh";
      var box = document.createElement("input");
      box.type = "checkbox";
      box.checked = sessionStorage.getItem("triggers-refresh") === "1";
      label.appendChild(box);
      label.appendChild(document.createTextNode(" refresh every 5 s"));
      uid.appendChild(label);
      var timer = null;
      var arm = function () {
        if (timer) { clearTimeout(timer); timer = null; }
        if (box.checked) { timer = setTimeout(function () { location.reload(); }, 5000); }
      };
      box.addEventListener("change", function () {
        sessionStorage.setItem("triggers-refresh", box.checked ? "1" : "0");
        arm();
      });
      arm();
    }
  });
})();
