// The billing page works without this script; it only adds conveniences:
// local times, applying the type filter on change, and waiting for a payment's credit.
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
