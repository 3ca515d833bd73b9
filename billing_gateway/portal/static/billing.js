// The billing page works without this script; it only adds conveniences:
// local times, applying the type filter on change, waiting for a payment's credit, and
// showing the problem of a form that came back refused.
(function () {
  "use strict";

  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) {
      el.textContent = when.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"
      });
      el.title = el.getAttribute("datetime");
    }
  });

  // A form of the automatic top-up section came back with a problem: bring it into view
  // and put the cursor in the field to correct. After "load": the browser's own scroll to
  // the address's #auto-top-up moves the focus to the page, so it must have happened.
  var problem = document.querySelector(
    "#auto-top-up [aria-invalid=true], #auto-top-up .error[role=alert]");
  if (problem) {
    window.addEventListener("load", function () {
      problem.scrollIntoView({ block: "center" });
      if (problem.matches("input")) { problem.focus({ preventScroll: true }); }
    });
  }

  var filter = document.getElementById("type-filter");
  if (filter && filter.form) {
    filter.addEventListener("change", function () { filter.form.submit(); });
  }

  // After Checkout: ask every 1.5 s (for up to 2 minutes) whether the webhook has credited
  // the payment, then reload once so the balance, the banner and the history agree.
  var banner = document.getElementById("payment-status");
  var poll = banner && banner.getAttribute("data-poll");
  if (poll) {
    var tries = 0;
    var timer = setInterval(function () {
      tries += 1;
      if (tries > 80) {
        clearInterval(timer);
        banner.textContent = "Still waiting for the payment to be confirmed. " +
          "Refresh this page in a few minutes; your credits appear once it is.";
        return;
      }
      fetch(poll, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (body && body.state && body.state !== "processing") {
            clearInterval(timer);
            window.location.reload();
          }
        })
        .catch(function () { /* a missed poll is retried on the next tick */ });
    }, 1500);
  }
})();
