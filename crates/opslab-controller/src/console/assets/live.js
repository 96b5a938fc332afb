// Live updates for the console: the one script, loaded from the console's own origin (the CSP
// allows no inline script). The page names its feed in data-live; the server sends `patch` events
// whose first line is "append ID" or "replace ID" and whose rest is server-rendered, escaped HTML.
// Without JavaScript every page is complete as served; only these updates are lost.
(function () {
  "use strict";
  var root = document.querySelector("[data-live]");
  if (!root || !window.EventSource) {
    return;
  }
  var feed = new EventSource(root.getAttribute("data-live"));
  var status = document.getElementById("live-status");
  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }
  feed.addEventListener("open", function () {
    say("live");
  });
  feed.addEventListener("error", function () {
    say("reconnecting…");
  });
  feed.addEventListener("patch", function (event) {
    var newline = event.data.indexOf("\n");
    var head = newline < 0 ? event.data : event.data.slice(0, newline);
    var html = newline < 0 ? "" : event.data.slice(newline + 1);
    var parts = head.split(" ");
    var target = document.getElementById(parts[1]);
    if (!target) {
      return;
    }
    if (parts[0] === "append") {
      target.insertAdjacentHTML("beforeend", html);
    } else if (parts[0] === "replace") {
      target.outerHTML = html;
    }
  });
  feed.addEventListener("end", function () {
    feed.close();
    say("session ended");
  });
})();
