// tuner dashboard: draw plots, keep "... ago" current, follow a live study, copy buttons. No build step.
"use strict";
(function () {
  function human(s) {
    s = Math.max(0, Math.floor(s));
    if (s >= 3600) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    if (s >= 60) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return s + "s";
  }
  function ages() {
    var now = Date.now() / 1000;
    document.querySelectorAll(".age[data-epoch]").forEach(function (el) {
      el.textContent = human(now - parseFloat(el.dataset.epoch)) + " ago";
    });
  }
  function plots(root) {
    if (!window.Plotly) return;
    root.querySelectorAll(".plot[data-figure]").forEach(function (div) {
      var src = document.getElementById(div.dataset.figure);
      if (!src) return;
      var fig = JSON.parse(src.textContent);
      window.Plotly.react(div, fig.data, fig.layout, { responsive: true, displaylogo: false });
    });
  }
  function copy(text, button) {
    function done() { button.textContent = "copied"; setTimeout(function () { button.textContent = "copy"; }, 1500); }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
      return;
    }
    var area = document.createElement("textarea");  // plain http from another host: no clipboard API
    area.value = text; document.body.appendChild(area); area.select();
    try { document.execCommand("copy"); done(); } finally { document.body.removeChild(area); }
  }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button.copy");
    if (!b) return;
    var pre = document.getElementById(b.dataset.copy);
    if (pre) copy(pre.textContent, b);
  });
  function follow() {
    var body = document.body, url = body.dataset.live;
    if (!url) return;
    var wait = Math.max(500, parseInt(body.dataset.interval, 10) || 2000);
    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (state) {
          if (!state) return null;
          var fresh = document.querySelector("header .age");
          if (fresh) fresh.dataset.epoch = state.read_at;
          Object.keys(state.heartbeats).forEach(function (n) {
            document.querySelectorAll('.age[data-trial="' + n + '"]').forEach(function (el) { el.dataset.epoch = state.heartbeats[n]; });
          });
          if (state.revision === body.dataset.revision) return null;
          return fetch(location.href, { credentials: "same-origin", cache: "no-store" }).then(function (r) { return r.text(); })
            .then(function (text) {
              var doc = new DOMParser().parseFromString(text, "text/html");
              var main = doc.querySelector("main");
              if (!main) return;
              document.querySelector("main").replaceWith(main);
              body.dataset.revision = doc.body.dataset.revision || state.revision;
              plots(document);
              ages();
            });
        })
        .catch(function () { /* the next tick tries again */ })
        .then(function () { setTimeout(tick, wait); });
    }
    setTimeout(tick, wait);
  }
  plots(document);
  ages();
  setInterval(ages, 1000);
  follow();
})();
