// Live update of the events list: poll the JSON API for events newer than the newest row
// and prepend them. Rows are built with textContent only (event data is never parsed as
// HTML). Without JavaScript the page works the same, minus the live rows.
//
// Each poll asks again from the newest seq of two polls before: with several collectors on
// PostgreSQL, an event can commit after a newer one, and asking only for seqs above the
// newest shown would skip it. `seen` keeps an event from being shown twice.
(function () {
  "use strict";
  var table = document.getElementById("events");
  if (!table || !table.dataset.api) return;
  var body = table.tBodies[0];
  var status = document.getElementById("live");
  var floors = [Number(table.dataset.after || "0")], lookback = 2, seen = {};
  var every = 3000, maxRows = 500, failures = 0;

  function link(href, text) {
    var a = document.createElement("a");
    a.setAttribute("href", href.charAt(0) === "/" ? href : "#");
    a.textContent = text;
    return a;
  }

  // A long value is cut short in the row, all of it in its title (as the page's own rows).
  function clipped(text) {
    var span = document.createElement("span");
    span.className = "clip";
    span.title = text;
    span.textContent = text;
    return span;
  }

  function cell(row, child, className) {
    var td = row.insertCell(-1);
    if (className) td.className = className;
    if (typeof child === "string") td.textContent = child;
    else if (child) td.appendChild(child);
    return td;
  }

  // The page's view narrowed by one more value, as the page's own rows link: `name` set
  // (or, with `add`, one more condition of that name), no `before`. The server answers with
  // the view's canonical URL.
  function narrowed(name, value, add) {
    var params = new URLSearchParams(window.location.search), pairs = [];
    params.delete("before");
    if (!add) params.delete(name);
    params.forEach(function (v, k) { pairs.push(k + "\u0000" + v); });
    if (pairs.indexOf(name + "\u0000" + value) < 0) params.append(name, value);
    return window.location.pathname + "?" + params.toString();
  }

  function filterLink(name, value, text, className, add) {
    var a = link(narrowed(name, value, add), text);
    if (className) a.className = className;
    return a;
  }

  function row(event) {
    var d = event.display, tr = document.createElement("tr"), td, i;
    tr.className = "new";
    cell(tr, link(d.url, d.time), "time");
    td = cell(tr, null);
    td.appendChild(filterLink("name", event.name, event.name, "clip"));
    td.firstChild.title = event.name;
    td = cell(tr, null);
    for (i = 0; i < (d.users || []).length; i++) {
      td.appendChild(filterLink("user", d.users[i][0], d.users[i][1], "clip", true));
      td.appendChild(document.createTextNode(" "));
    }
    td = cell(tr, null);
    if (event.ip) td.appendChild(filterLink("ip", event.ip, event.ip));
    td = cell(tr, null, "network");
    if (d.country) td.appendChild(filterLink("country", d.country, d.country));
    if (d.kind) {
      if (d.country) td.appendChild(document.createTextNode(" "));
      td.appendChild(filterLink("kind", d.kind, d.kind, "kind kind-" + d.kind));
    }
    if (d.score) td.appendChild(document.createTextNode(" " + d.score));
    cell(tr, d.summary, "props");
    td = cell(tr, null, "severity");
    if (d.severity) td.appendChild(filterLink("severity", d.severity, d.severity, "sev sev-" + d.severity));
    return tr;
  }

  // Once a poll could not show every new event: said until the page is reloaded.
  var gapped = false;
  var GAPPED = " · more arrived than shown: reload to see them all";

  function gap() {
    var tr = document.createElement("tr");
    tr.className = "gap";
    var td = document.createElement("td");
    td.colSpan = 7;
    td.textContent = "More events arrived here than live update shows: reload the page to see them all.";
    tr.appendChild(td);
    return tr;
  }

  function show(text) { if (status) status.textContent = text; }

  function poll() {
    if (document.hidden) { schedule(); return; }
    var sep = table.dataset.api.indexOf("?") < 0 ? "?" : "&";
    // The API's most a page: newest first. More than that since the last poll (a burst of
    // an attack) leaves a gap, which is said rather than skipped in silence.
    fetch(table.dataset.api + sep + "limit=500&after=" + encodeURIComponent(String(floors[0])), {
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (response) {
      if (response.status === 401) { show("Logged out: reload the page."); throw null; }
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(function (data) {
      failures = 0;
      var events = [], i;
      for (i = 0; i < (data.events || []).length; i++) {
        if (!seen[data.events[i].seq]) events.push(data.events[i]);
      }
      if (events.length) {
        var empty = body.querySelector("tr.empty");
        if (empty) empty.remove();
        var marker = data.older ? gap() : null;
        if (marker) body.insertBefore(marker, body.firstChild);
        for (i = events.length - 1; i >= 0; i--) {
          seen[events[i].seq] = true;
          body.insertBefore(row(events[i]), body.firstChild);
        }
        while (body.rows.length > maxRows) body.deleteRow(-1);
        if (marker && !marker.parentNode) {  // trimmed with the old rows: kept last
          body.deleteRow(-1);
          body.appendChild(marker);
        }
        if (marker) gapped = true;
        show(events.length + (data.older ? "+" : "") + " new event" +
             (events.length > 1 ? "s" : "") + " · live" + (gapped ? GAPPED : ""));
      } else {
        show("live" + (gapped ? GAPPED : ""));
      }
      floors.push(Math.max(floors[floors.length - 1], Number(data.newest_seq) || 0));
      if (floors.length > lookback + 1) floors.shift();
      for (var seq in seen) if (Number(seq) <= floors[0]) delete seen[seq];
      schedule();
    }).catch(function (error) {
      if (error === null) return;  // logged out: stop polling
      failures += 1;
      show("live update paused (" + failures + " failed)");
      schedule();
    });
  }

  function schedule() { window.setTimeout(poll, every * Math.min(10, 1 + failures)); }

  show("live");
  schedule();
})();
