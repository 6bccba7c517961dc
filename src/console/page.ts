/**
 * The console's page: one HTML shell, its style sheet and its script, served by server.ts from
 * these strings (the build is tsc alone, and nothing is fetched from anywhere else: no CDN, no
 * chart library). The script builds the DOM with createElement / createElementNS and puts every
 * value from the network in with textContent or setAttribute on a fixed attribute name: never
 * innerHTML, so a device id, version, error message or log line can only ever be text. The
 * Content-Security-Policy (server.ts) allows no inline script, so even a mistake here could
 * not run injected code.
 *
 * Pictures (docs/console.md): a stacked bar per wave (counts by state), a meter of the failure
 * rate against its threshold, a progress bar per transfer in flight, and an SVG timeline.
 */

export const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>esp-ota console</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header id="top">
  <span class="brand">esp-ota console</span>
  <nav id="tabs">
    <button type="button" data-view="rollouts" class="tab active">Rollouts</button>
    <button type="button" data-view="devices" class="tab">Devices</button>
    <button type="button" data-view="gateways" class="tab">Gateways</button>
  </nav>
  <span id="broker" class="pill">broker ?</span>
  <span id="who"></span>
  <button type="button" id="start-open" class="btn" hidden>Start rollout…</button>
  <button type="button" id="logout" class="btn ghost" hidden>Log out</button>
</header>
<main id="main">
  <form id="login" class="card login" hidden>
    <h2>Log in</h2>
    <label>User <input name="username" autocomplete="username"></label>
    <label>Password or token <input name="password" type="password" autocomplete="current-password"></label>
    <button type="submit" class="btn primary">Log in</button>
    <p id="login-error" class="error"></p>
  </form>
  <section id="view"></section>
</main>
<dialog id="confirm">
  <form method="dialog">
    <h3 id="confirm-title"></h3>
    <p id="confirm-text"></p>
    <label id="confirm-reason-label">Reason (recorded in the rollout) <input id="confirm-reason" maxlength="500"></label>
    <div class="buttons">
      <button value="cancel" class="btn ghost">Cancel</button>
      <button value="ok" id="confirm-ok" class="btn danger">Confirm</button>
    </div>
  </form>
</dialog>
<dialog id="start">
  <form method="dialog" id="start-form">
    <h3>Start a rollout</h3>
    <label>Release directory (on the console's machine) <input name="release" id="start-release" placeholder="/srv/releases/app-1.2.0"></label>
    <button type="button" id="start-load" class="btn">Load devices</button>
    <p id="start-info" class="muted"></p>
    <div id="start-devices" class="devlist"></div>
    <div class="grid2">
      <label>Waves (cumulative %) <input name="waves" value="1,10,50,100"></label>
      <label>Abort above failure rate (%) <input name="maxFailureRate" value="5"></label>
      <label>Judge after finished devices <input name="minSample" value="1"></label>
      <label>Wave timeout <input name="waveTimeout" value="30m"></label>
      <label>Rollout id (optional) <input name="id"></label>
    </div>
    <p id="start-error" class="error"></p>
    <div class="buttons">
      <button value="cancel" class="btn ghost">Cancel</button>
      <button value="ok" id="start-ok" class="btn primary" disabled>Start…</button>
    </div>
  </form>
</dialog>
<div id="toast" role="status"></div>
</body>
</html>
`;

export const APP_CSS = `
:root {
  --bg: #f4f5f7; --card: #fff; --ink: #1d2433; --muted: #667085; --line: #e3e6eb;
  --pending: #d0d5dd; --notified: #9ec5fe; --updating: #3b82f6; --succeeded: #17a34a;
  --rolled-back: #f59e0b; --failed: #dc2626; --cancelled: #8a94a6; --withdrawn: #a78bfa;
  --accent: #2456d6;
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
header#top { display: flex; align-items: center; gap: 12px; padding: 6px 14px; background: #18202f; color: #e8ecf3; position: sticky; top: 0; z-index: 5; }
.brand { font-weight: 650; letter-spacing: .2px; margin-right: 8px; }
nav#tabs { display: flex; gap: 2px; flex: 1; }
.tab { background: none; border: 0; color: #b8c2d3; padding: 6px 10px; border-radius: 4px; cursor: pointer; font: inherit; }
.tab.active, .tab:hover { background: #2a3547; color: #fff; }
.pill { padding: 2px 8px; border-radius: 10px; font-size: 12px; background: #3a4456; }
.pill.ok { background: #145c32; } .pill.bad { background: #8a1c1c; }
#who { color: #b8c2d3; font-size: 12px; }
main { padding: 12px 14px; max-width: 1500px; margin: 0 auto; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; margin-bottom: 12px; }
.login { max-width: 340px; margin: 60px auto; display: grid; gap: 8px; }
label { display: grid; gap: 2px; font-size: 12px; color: var(--muted); }
input { font: inherit; padding: 4px 6px; border: 1px solid #c9ced6; border-radius: 4px; color: var(--ink); }
.btn { font: inherit; padding: 4px 10px; border-radius: 4px; border: 1px solid #c9ced6; background: #fff; color: var(--ink); cursor: pointer; }
header .btn { background: #2a3547; border-color: #3a4456; color: #e8ecf3; }
.btn.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
.btn.danger { background: var(--failed); border-color: var(--failed); color: #fff; }
.btn.ghost { background: transparent; }
.btn:disabled { opacity: .45; cursor: not-allowed; }
.error { color: var(--failed); min-height: 1em; margin: 0; }
.muted { color: var(--muted); }
h2 { font-size: 15px; margin: 0 0 6px; } h3 { font-size: 14px; margin: 0 0 8px; }
.rhead { display: flex; align-items: baseline; gap: 10px; flex-wrap: wrap; }
.rhead .id { font-weight: 650; font-size: 14px; }
.rhead .acts { margin-left: auto; display: flex; gap: 4px; }
.badge { display: inline-block; white-space: nowrap; padding: 0 6px; border-radius: 3px; font-size: 11px; font-weight: 600; text-transform: uppercase; letter-spacing: .3px; color: #fff; background: var(--cancelled); }
.badge.running, .badge.updating, .badge.downloading, .badge.transferring { background: var(--updating); }
.badge.paused { background: var(--rolled-back); } .badge.aborted, .badge.failed { background: var(--failed); }
.badge.completed, .badge.succeeded, .badge.online { background: var(--succeeded); }
.badge.rolled-back { background: var(--rolled-back); } .badge.offline { background: #475467; }
.badge.idle, .badge.unknown { background: #98a2b3; }
.hbadge { display: inline-block; white-space: nowrap; padding: 0 6px; border-radius: 3px; font-size: 11px; font-weight: 600; border: 1px solid; }
.hbadge.ready { color: #0f6b2f; border-color: #9fd6b0; background: #ecf8f0; }
.hbadge.degraded { color: #8a4b00; border-color: #f5c16c; background: #fff6e5; }
.hbadge.not-ready { color: #fff; border-color: var(--failed); background: var(--failed); }
.hbadge.stale { color: var(--muted); border-color: var(--line); background: #f2f4f7; }
.bad { color: var(--failed); font-weight: 600; } .nw { white-space: nowrap; }
.meta { color: var(--muted); font-size: 12px; }
.reason { margin: 6px 0 2px; padding: 4px 8px; border-left: 3px solid var(--rolled-back); background: #fff8eb; }
.reason.aborted { border-color: var(--failed); background: #fdf0f0; }
.cols { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 14px; margin-top: 8px; }
.waves { display: grid; grid-template-columns: 92px minmax(120px, 1fr) auto; gap: 3px 8px; align-items: center; }
.wlabel { font-size: 12px; white-space: nowrap; } .wlabel.cur { font-weight: 700; }
.wmeta { font-size: 11px; color: var(--muted); white-space: nowrap; font-variant-numeric: tabular-nums; }
.bar { display: flex; height: 14px; border-radius: 3px; overflow: hidden; background: #eef0f3; }
.bar > span { display: block; height: 100%; }
.seg-pending { background: var(--pending); } .seg-notified { background: var(--notified); }
.seg-updating { background: var(--updating); } .seg-succeeded { background: var(--succeeded); }
.seg-rolled-back { background: var(--rolled-back); } .seg-failed { background: var(--failed); }
.seg-cancelled { background: var(--cancelled); } .seg-withdrawn { background: var(--withdrawn); }
.legend { display: flex; flex-wrap: wrap; gap: 10px; font-size: 11px; color: var(--muted); margin-top: 4px; }
.legend i { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin-right: 3px; vertical-align: -1px; }
.rate { margin-top: 8px; }
.meter { position: relative; height: 10px; background: #eef0f3; border-radius: 3px; margin: 3px 0; }
.meter .fill { position: absolute; left: 0; top: 0; bottom: 0; background: var(--succeeded); border-radius: 3px; }
.meter .fill.over { background: var(--failed); }
.meter .limit { position: absolute; top: -3px; bottom: -3px; width: 2px; background: var(--ink); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 11px; color: var(--muted); font-weight: 600; text-transform: uppercase; letter-spacing: .3px; position: sticky; top: 0; background: var(--card); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td code, .code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; white-space: nowrap; }
tr.click { cursor: pointer; } tr.click:hover td { background: #f5f8ff; } tr.sel td { background: #eaf1ff; }
.help { font-size: 12px; color: var(--muted); max-width: 520px; }
.timeline svg { width: 100%; height: 64px; display: block; }
.timeline .axis { stroke: #98a2b3; stroke-width: 1; }
.timeline text { font-size: 10px; fill: var(--muted); }
.tk-started, .tk-wave { fill: var(--accent); } .tk-failure { fill: var(--failed); }
.tk-paused { fill: var(--rolled-back); } .tk-aborted { fill: var(--failed); } .tk-completed { fill: var(--succeeded); } .tk-now { fill: #18202f; }
.prog { display: inline-flex; align-items: center; gap: 4px; }
.prog .bar { width: 90px; height: 8px; } .prog .bar > span { background: var(--updating); }
.dot { display: inline-block; width: 7px; height: 7px; border-radius: 50%; margin-right: 4px; background: #98a2b3; }
.dot.on { background: var(--succeeded); } .dot.off { background: var(--failed); }
.split { display: grid; grid-template-columns: minmax(0, 3fr) minmax(320px, 2fr); gap: 12px; align-items: start; }
.filter { margin-bottom: 8px; width: 320px; }
table.devices td, table.gateways td { white-space: nowrap; }
table.gateways { width: auto; min-width: 50%; }
table.gateways th, table.gateways td { padding-right: 12px; }
table.gateways td.wrap { white-space: normal; min-width: 150px; max-width: 190px; }
.scroll { overflow-x: auto; }
pre.log { background: #0f1623; color: #d5dbe5; padding: 6px 8px; border-radius: 4px; max-height: 300px; overflow: auto; font: 11.5px/1.35 ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; word-break: break-all; margin: 0; }
dl.kv { display: grid; grid-template-columns: 120px 1fr; gap: 2px 8px; margin: 0 0 8px; }
dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; }
dialog { border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; max-width: 560px; width: 92vw; box-shadow: 0 10px 30px rgba(0,0,0,.2); }
dialog::backdrop { background: rgba(16, 24, 40, .45); }
dialog label { margin: 6px 0; }
.buttons { display: flex; gap: 8px; justify-content: flex-end; margin-top: 10px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 0 10px; }
.devlist { max-height: 160px; overflow: auto; display: grid; grid-template-columns: repeat(auto-fill, minmax(130px, 1fr)); gap: 2px 8px; margin: 6px 0; }
.devlist label { display: flex; gap: 4px; align-items: center; color: var(--ink); margin: 0; }
#toast { position: fixed; right: 16px; bottom: 16px; max-width: 420px; padding: 8px 12px; border-radius: 6px; background: #18202f; color: #fff; opacity: 0; transition: opacity .2s; pointer-events: none; }
#toast.show { opacity: .95; } #toast.bad { background: #8a1c1c; }
.empty { color: var(--muted); padding: 20px; text-align: center; }
`;

// The script. Plain ES2020 in the browser; no template literals or "${" inside (this is a
// String.raw template), every network value through text() / attr().
export const APP_JS = String.raw`"use strict";
(function () {
  var BUCKETS = ["succeeded", "rolled-back", "failed", "cancelled", "withdrawn", "updating", "notified", "pending"];
  var ACTIONS = [
    ["pause", "Pause", "No new wave starts; notices already published stay."],
    ["resume", "Resume", "The rollout runs again; its wave timeout counts from now."],
    ["next-wave", "Next wave", "Start the next wave now, without waiting for the current one to finish."],
    ["retry-failed", "Retry failed", "Notify again, with a re-issued notice, only the devices whose update failed."],
    ["abort", "Abort", "Withdraw the notices of devices that have not started; devices mid-update finish."]
  ];
  var state = { view: "rollouts", snap: null, session: null, device: null, detail: null, filter: "", es: null };

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, kids) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    add(e, kids);
    return e;
  }
  function add(e, kids) {
    if (kids === undefined || kids === null) return e;
    if (!Array.isArray(kids)) kids = [kids];
    for (var i = 0; i < kids.length; i++) {
      var k = kids[i];
      if (k === undefined || k === null || k === false) continue;
      e.appendChild(typeof k === "object" ? k : document.createTextNode(String(k)));
    }
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function badge(s) { var b = el("span", "badge", s); b.classList.add(String(s).replace(/[^a-z-]/g, "")); return b; }
  /** 14:03:07 today, "Dec 8 14:03" otherwise: 24-hour, as operators read logs. */
  function time(iso) {
    if (!iso) return "-";
    var d = new Date(iso);
    if (isNaN(d)) return "-";
    var hms = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
    if (d.toDateString() === new Date().toDateString()) return hms;
    return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + hms.slice(0, 5);
  }
  function ago(iso) {
    if (!iso) return "-";
    var s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + "s ago"; if (s < 3600) return Math.floor(s / 60) + "m ago";
    if (s < 86400) return Math.floor(s / 3600) + "h ago"; return Math.floor(s / 86400) + "d ago";
  }
  function dur(ms) {
    var s = Math.round(ms / 1000);
    if (s < 60) return s + "s"; if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }
  function toast(msg, bad) {
    var t = $("toast"); t.textContent = msg; t.className = "show" + (bad ? " bad" : "");
    clearTimeout(toast.timer); toast.timer = setTimeout(function () { t.className = ""; }, 5000);
  }
  function api(method, path, body) {
    var h = { "content-type": "application/json" };
    if (state.session && state.session.csrf) h["x-csrf-token"] = state.session.csrf;
    return fetch(path, { method: method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" })
      .then(function (r) { return r.json().catch(function () { return {}; }).then(function (j) { return { status: r.status, body: j }; }); });
  }

  // --- session ---
  function showLogin() {
    state.session = null;
    $("login").hidden = false; $("view").hidden = true; $("logout").hidden = true; $("start-open").hidden = true;
    $("who").textContent = "";
    if (state.es) { state.es.close(); state.es = null; }
  }
  function loggedIn(s) {
    state.session = s;
    $("login").hidden = true; $("view").hidden = false; $("logout").hidden = false;
    $("start-open").hidden = s.role !== "operator";
    $("who").textContent = s.user + " · " + s.role + (s.role === "viewer" ? " (read-only)" : "");
    connect();
  }
  function connect() {
    if (state.es) state.es.close();
    var es = new EventSource("/api/events");
    state.es = es;
    es.addEventListener("snapshot", function (ev) {
      try { state.snap = JSON.parse(ev.data); } catch (e) { return; }
      render();
      if (state.device) loadDetail(state.device);
    });
    es.onerror = function () { setBroker(null); };
  }
  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var f = ev.target;
    api("POST", "/api/login", { username: f.username.value, password: f.password.value }).then(function (r) {
      if (r.status === 200) { $("login-error").textContent = ""; f.password.value = ""; loggedIn(r.body); }
      else $("login-error").textContent = r.body.message || "refused";
    });
  });
  $("logout").addEventListener("click", function () { api("POST", "/api/logout").then(showLogin); });

  // --- tabs ---
  var tabs = document.querySelectorAll(".tab");
  for (var i = 0; i < tabs.length; i++) tabs[i].addEventListener("click", function (ev) {
    state.view = ev.currentTarget.getAttribute("data-view");
    for (var j = 0; j < tabs.length; j++) tabs[j].classList.toggle("active", tabs[j] === ev.currentTarget);
    render();
  });

  function setBroker(ok) {
    var b = $("broker");
    b.textContent = ok === null ? "console unreachable" : ok ? "broker connected" : "broker disconnected";
    b.className = "pill " + (ok ? "ok" : "bad");
  }

  function render() {
    var s = state.snap; if (!s) return;
    setBroker(s.broker.connected);
    var v = $("view");
    var out = state.view === "rollouts" ? rollouts(s) : state.view === "devices" ? devices(s) : gateways(s);
    v.replaceChildren(out);
  }

  // --- rollouts ---
  function waveBar(counts, total) {
    var bar = el("div", "bar");
    for (var i = 0; i < BUCKETS.length; i++) {
      var n = counts[BUCKETS[i]] || 0; if (!n) continue;
      var seg = el("span", "seg-" + BUCKETS[i]);
      seg.style.width = (100 * n / Math.max(1, total)) + "%";
      seg.title = BUCKETS[i] + ": " + n;
      bar.appendChild(seg);
    }
    return bar;
  }
  function countsText(counts) {
    var parts = [];
    for (var i = 0; i < BUCKETS.length; i++) if (counts[BUCKETS[i]]) parts.push(counts[BUCKETS[i]] + " " + BUCKETS[i]);
    return parts.join(" · ");
  }
  function legend() {
    var l = el("div", "legend");
    for (var i = 0; i < BUCKETS.length; i++) { var x = el("i"); x.className = "seg-" + BUCKETS[i]; l.appendChild(el("span", null, [x, BUCKETS[i]])); }
    return l;
  }
  function timeline(r) {
    var marks = r.timeline; var box = el("div", "timeline");
    if (!marks.length) return box;
    var t0 = Date.parse(marks[0].at), t1 = Date.parse(marks[marks.length - 1].at);
    if (!(t1 > t0)) t1 = t0 + 1000;
    var W = 1000, L = 10, R = 990, s = svg("svg", { viewBox: "0 0 1000 64", preserveAspectRatio: "none", role: "img", "aria-label": "rollout timeline" });
    s.appendChild(svg("line", { x1: L, x2: R, y1: 30, y2: 30, "class": "axis" }));
    var lastLabel = -1e9, below = false;
    for (var i = 0; i < marks.length; i++) {
      var m = marks[i], x = L + (R - L) * (Date.parse(m.at) - t0) / (t1 - t0);
      var c = svg(m.kind === "failure" ? "rect" : "circle", m.kind === "failure" ? { x: x - 1.5, y: 22, width: 3, height: 16, "class": "tk-failure" } : { cx: x, cy: 30, r: 5, "class": "tk-" + m.kind });
      var tt = svg("title", {}); tt.textContent = time(m.at) + " " + m.label; c.appendChild(tt);
      s.appendChild(c);
      if (m.kind !== "failure" && x - lastLabel > 90) {
        var tx = svg("text", { x: Math.min(Math.max(x, 30), W - 40), y: below ? 56 : 14, "text-anchor": "middle" });
        tx.textContent = m.label; s.appendChild(tx); lastLabel = x; below = !below;
      }
    }
    box.appendChild(s);
    box.appendChild(el("div", "meta", [time(marks[0].at), " → ", time(marks[marks.length - 1].at), " (", dur(t1 - t0), ")"]));
    return box;
  }
  function actionButtons(r) {
    var box = el("span", "acts");
    var viewer = !state.session || state.session.role !== "operator";
    for (var i = 0; i < ACTIONS.length; i++) (function (a) {
      var why = r.actions[a[0]];
      var b = el("button", "btn" + (a[0] === "abort" ? " danger" : ""), a[1]);
      b.type = "button"; b.setAttribute("data-action", a[0]);
      b.disabled = !!why || viewer;
      b.title = viewer ? "read-only: you may watch, not act" : why ? why : a[2];
      b.addEventListener("click", function () { confirmAction(r, a); });
      if (!why) box.appendChild(b);
    })(ACTIONS[i]);
    return box;
  }
  /** The confirmation dialog: every action and the start go through it. */
  function ask(title, text, okLabel, danger, withReason, onOk) {
    var d = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-reason-label").hidden = !withReason; $("confirm-reason").value = "";
    $("confirm-ok").textContent = okLabel;
    $("confirm-ok").className = "btn " + (danger ? "danger" : "primary");
    d.onclose = function () { if (d.returnValue === "ok") onOk(withReason ? $("confirm-reason").value : ""); };
    d.returnValue = "";
    d.showModal();
  }
  function confirmAction(r, a) {
    var withReason = a[0] === "pause" || a[0] === "abort";
    ask(a[1] + " rollout " + r.rolloutId + "?", a[2] + (a[0] === "retry-failed" ? " (" + r.failuresTotal + " device(s) failed or rolled back; only the failed are retried)" : ""),
      a[1], a[0] === "abort", withReason, function (reason) {
        toast(a[1] + " " + r.rolloutId + "…");
        api("POST", "/api/rollouts/" + encodeURIComponent(r.rolloutId) + "/" + a[0], reason ? { reason: reason } : {}).then(function (res) {
          if (res.status === 200) toast(a[1] + ": rollout " + r.rolloutId + " is " + res.body.state);
          else toast((res.body.error || res.status) + ": " + (res.body.message || "refused"), true);
        });
      });
  }
  function rolloutCard(r) {
    var card = el("div", "card rollout");
    card.setAttribute("data-rollout", r.rolloutId);
    var head = el("div", "rhead", [
      el("span", "id", r.rolloutId), badge(r.state),
      el("span", "meta", [r.releaseId, " (", r.version, ") · ", r.devices, " devices · wave ", r.currentWave || "-", "/", r.waves.length]),
      el("span", "meta", ["started ", time(r.startedAt), r.finishedAt ? " · finished " + time(r.finishedAt) : ""]),
      r.owner ? el("span", "meta", ["owner ", r.owner.host, ":", r.owner.pid, r.owner.live ? "" : " (gone)"]) : el("span", "meta", "no owner"),
      actionButtons(r)
    ]);
    card.appendChild(head);
    if (r.reason) card.appendChild(el("div", "reason" + (r.state === "aborted" ? " aborted" : ""), [el("b", null, r.reason.kind), ": ", r.reason.message]));
    var left = el("div");
    var waves = el("div", "waves");
    for (var i = 0; i < r.waves.length; i++) {
      var w = r.waves[i];
      waves.appendChild(el("span", "wlabel" + (w.wave === r.currentWave ? " cur" : ""), ["wave ", w.wave, " · ", w.percent, "%"]));
      waves.appendChild(waveBar(w.counts, w.devices));
      waves.appendChild(el("span", "wmeta", [countsText(w.counts) || "0 devices", w.startedAt ? " · " + time(w.startedAt) : "", w.finishedAt ? " → " + time(w.finishedAt) : ""]));
    }
    left.appendChild(waves);
    left.appendChild(legend());
    var fr = r.failureRate, rate = el("div", "rate");
    var meter = el("div", "meter"), fill = el("div", "fill" + (fr.finished >= fr.minSample && fr.percent > fr.max ? " over" : "")), lim = el("div", "limit");
    fill.style.width = Math.min(100, fr.percent) + "%"; lim.style.left = Math.min(100, fr.max) + "%"; lim.title = "abort above " + fr.max + "%";
    meter.appendChild(fill); meter.appendChild(lim);
    rate.appendChild(el("div", "meta", ["failure rate ", fr.failed, "/", fr.finished, " = ", fr.percent, "% · aborts above ", fr.max, "% once ", fr.minSample, " finished"]));
    rate.appendChild(meter);
    left.appendChild(rate);
    left.appendChild(timeline(r));
    var right = el("div");
    right.appendChild(el("h3", null, r.failuresTotal ? "Failing devices (" + r.failuresTotal + ")" : "No failing devices"));
    if (r.failuresTotal) {
      var t = el("table", "failures"), hd = el("tr");
      ["device", "state", "error", "what to do"].forEach(function (h) { hd.appendChild(el("th", null, h)); });
      t.appendChild(hd);
      r.failures.forEach(function (f) {
        var tr = el("tr", "click", [el("td", null, el("code", null, f.deviceId)), el("td", null, badge(f.state)), el("td", null, el("code", null, f.errorCode || "-")),
          el("td", "help", f.help ? [f.help.action] : "not in docs/errors.md")]);
        if (f.help) tr.title = f.help.meaning;
        tr.addEventListener("click", function () { openDevice(f.deviceId); });
        t.appendChild(tr);
      });
      right.appendChild(t);
    }
    card.appendChild(el("div", "cols", [left, right]));
    return card;
  }
  function rollouts(s) {
    var box = el("div");
    if (!s.rollouts.length) box.appendChild(el("div", "card empty", "No rollout is retained on this broker. Start one with “Start rollout…” or esp-ota rollout start."));
    s.rollouts.forEach(function (r) { box.appendChild(rolloutCard(r)); });
    return box;
  }

  // --- devices ---
  function progress(p) {
    var bar = el("div", "bar"), f = el("span"); f.style.width = p + "%"; bar.appendChild(f);
    return el("span", "prog", [bar, p + "%"]);
  }
  function openDevice(id) { state.view = "devices"; state.device = id; for (var j = 0; j < tabs.length; j++) tabs[j].classList.toggle("active", tabs[j].getAttribute("data-view") === "devices"); render(); loadDetail(id); }
  function loadDetail(id) {
    api("GET", "/api/devices/" + encodeURIComponent(id)).then(function (r) {
      if (r.status === 200 && state.device === id) { state.detail = r.body; if (state.view === "devices") render(); }
    });
  }
  function detailPanel(d) {
    var c = el("div", "card detail");
    c.appendChild(el("h2", null, ["Device ", el("code", null, d.deviceId)]));
    var kv = el("dl", "kv"), row = d.row || {};
    function pair(k, v) { kv.appendChild(el("dt", null, k)); kv.appendChild(el("dd", null, v)); }
    pair("state", badge(row.state || "unknown"));
    pair("gateway", row.gatewayId ? [el("span", "dot " + (row.gatewayOnline === false ? "off" : row.gatewayOnline ? "on" : "")), row.gatewayId] : "-");
    if (d.inventory) pair("port", d.inventory.port + " · " + d.inventory.chip);
    pair("running", (row.runningVersion || "-") + (row.runningSlot ? " from " + row.runningSlot : ""));
    if (row.releaseId) pair("release", row.releaseId + (row.targetVersion ? " (" + row.targetVersion + ")" : ""));
    if (d.status && d.status.step) pair("step", d.status.step);
    if (row.progress !== undefined) pair("progress", progress(row.progress));
    if (d.status && d.status.error) {
      pair("error", [el("code", null, d.status.error.code), " at ", d.status.error.step, ": ", d.status.error.message]);
      if (d.status.error.help) pair("what to do", el("span", "help", d.status.error.help.action));
    }
    c.appendChild(kv);
    c.appendChild(el("h3", null, "History"));
    if (!d.history.length) c.appendChild(el("p", "muted", "No final status seen since the console started (the retained one shows above)."));
    else {
      var t = el("table"), hd = el("tr");
      ["when", "release", "outcome", "error"].forEach(function (h) { hd.appendChild(el("th", null, h)); });
      t.appendChild(hd);
      d.history.forEach(function (h) { t.appendChild(el("tr", null, [el("td", null, time(h.at)), el("td", null, (h.releaseId || "-") + (h.targetVersion ? " (" + h.targetVersion + ")" : "")), el("td", null, badge(h.state)), el("td", null, h.errorCode ? [el("code", null, h.errorCode), h.errorMessage ? el("div", "help", h.errorMessage) : null] : "-")])); });
      c.appendChild(t);
    }
    c.appendChild(el("h3", null, "Log (" + d.logs.length + " lines)"));
    var pre = el("pre", "log");
    pre.textContent = d.logs.length ? d.logs.map(function (l) { return l.text; }).join("\n") : "(no forwarded log lines yet)";
    c.appendChild(pre);
    return c;
  }
  function releaseCell(d) {
    var td = el("td", null, d.targetVersion || d.releaseId || "-");
    if (d.releaseId) td.title = d.releaseId;
    return td;
  }
  function devices(s) {
    var wrap = el("div", state.device ? "split" : null), left = el("div", "card scroll");
    var f = el("input", "filter"); f.placeholder = "filter: id, gateway, state, version, error"; f.value = state.filter;
    f.addEventListener("input", function () { state.filter = f.value; var pos = f.selectionStart; render(); var nf = document.querySelector(".filter"); if (nf) { nf.focus(); nf.setSelectionRange(pos, pos); } });
    left.appendChild(f);
    var q = state.filter.toLowerCase();
    var rows = s.devices.filter(function (d) { return !q || [d.deviceId, d.gatewayId, d.state, d.runningVersion, d.releaseId, d.errorCode].join(" ").toLowerCase().indexOf(q) >= 0; });
    var t = el("table", "devices"), hd = el("tr");
    ["device", "gateway", "state", "progress", "running", "slot", "target", "error", "updated"].forEach(function (h) { hd.appendChild(el("th", null, h)); });
    t.appendChild(hd);
    rows.slice(0, 2000).forEach(function (d) {
      var tr = el("tr", "click" + (d.deviceId === state.device ? " sel" : ""), [
        el("td", null, el("code", null, d.deviceId)),
        el("td", null, d.gatewayId ? [el("span", "dot " + (d.gatewayOnline === false ? "off" : d.gatewayOnline ? "on" : "")), d.gatewayId] : "-"),
        el("td", null, [badge(d.state), d.step && ["succeeded", "failed", "rolled-back", "cancelled", "idle"].indexOf(d.state) < 0 ? el("span", "meta", " " + d.step) : null]),
        el("td", null, d.progress !== undefined ? progress(d.progress) : ""),
        el("td", null, d.runningVersion || "-"), el("td", null, d.runningSlot || "-"),
        releaseCell(d), el("td", null, el("code", null, d.errorCode || "")),
        el("td", "meta", ago(d.updatedAt))]);
      tr.setAttribute("data-device", d.deviceId);
      tr.addEventListener("click", function () { state.device = d.deviceId; loadDetail(d.deviceId); render(); });
      t.appendChild(tr);
    });
    left.appendChild(t);
    if (rows.length > 2000) left.appendChild(el("p", "muted", "first 2000 of " + rows.length + ": narrow the filter"));
    if (!rows.length) left.appendChild(el("p", "empty", "No device matches."));
    wrap.appendChild(left);
    if (state.device && state.detail && state.detail.deviceId === state.device) wrap.appendChild(detailPanel(state.detail));
    return wrap;
  }

  // --- gateways ---
  function uptime(sec) {
    if (sec < 3600) return Math.floor(sec / 60) + "m";
    if (sec < 86400) return Math.floor(sec / 3600) + "h " + Math.floor((sec % 3600) / 60) + "m";
    return Math.floor(sec / 86400) + "d " + Math.floor((sec % 86400) / 3600) + "h";
  }
  function mib(b) { return b < 1048576 ? Math.round(b / 1024) + " KiB" : (b / 1048576).toFixed(1) + " MiB"; }
  /** "11 attached · 1 updating": the non-zero counts, those in bad (failed, conflict) in red. */
  function counts(o, names, bad) {
    var parts = [];
    for (var i = 0; i < names.length; i++) {
      var n = o[names[i][0]] || 0; if (!n) continue;
      if (parts.length) parts.push(" · ");
      parts.push(el("span", bad.indexOf(names[i][0]) >= 0 ? "nw bad" : "nw", n + " " + names[i][1]));
    }
    return parts.length ? parts : "-";
  }
  var PORTS = [["attached", "attached"], ["updating", "updating"], ["identifying", "identifying"], ["failed", "failed"], ["conflict", "conflict"]];
  var UPDATES = [["started", "started"], ["succeeded", "ok"], ["failed", "failed"], ["rolledBack", "rolled back"], ["cancelled", "cancelled"]];
  function healthBadge(h) {
    var b = el("span", "hbadge " + h.badge, h.badge === "not-ready" ? "not ready" : h.badge);
    b.title = (h.problems.length ? h.problems.join("; ") : "ready: broker connected, ports scanned, state directory writable") +
      " · staging " + mib(h.stagingBytes) + " · reported " + time(h.at);
    return b;
  }
  function gateways(s) {
    var c = el("div", "card scroll"), t = el("table", "gateways"), hd = el("tr");
    ["gateway", "presence", "health", "agent", "ports", "updating", "failed", "rolled back", "updates since start", "last failure", "frame err. / reconn.", "loop p99", "uptime", "last heard"].forEach(function (h) { hd.appendChild(el("th", null, h)); });
    t.appendChild(hd);
    var by = {};
    s.devices.forEach(function (d) {
      if (!d.gatewayId) return;
      var c = by[d.gatewayId] || (by[d.gatewayId] = { updating: 0, failed: 0, rb: 0 });
      if (d.state === "failed") c.failed++; else if (d.state === "rolled-back") c.rb++;
      else if (["idle", "offline", "unknown", "succeeded", "cancelled"].indexOf(d.state) < 0) c.updating++;
    });
    s.gateways.forEach(function (g) {
      var c = by[g.gatewayId] || { updating: 0, failed: 0, rb: 0 }, h = g.health;
      var pres = el("td", null, badge(g.state)); if (g.since) pres.title = "presence published " + time(g.since);
      var lf = el("td", null, "-");
      if (h && h.lastFailure) {
        lf = el("td", null, [el("code", null, h.lastFailure.code), el("span", "meta", " " + ago(h.lastFailure.at))]);
        lf.title = h.lastFailureHelp ? h.lastFailureHelp.meaning + " What to do: " + h.lastFailureHelp.action : "not in docs/errors.md";
      }
      var tr = el("tr", null, [el("td", null, el("code", null, g.gatewayId)), pres,
        el("td", null, h ? healthBadge(h) : el("span", "muted", "no summary")),
        el("td", null, g.version || "-"),
        el("td", "wrap", h ? counts(h.devices, PORTS, ["failed", "conflict"]) : g.devices === undefined ? "-" : g.devices + " in inventory"),
        el("td", "num", c.updating || "-"), el("td", "num", c.failed || "-"), el("td", "num", c.rb || "-"),
        el("td", "wrap", h ? counts(h.updates, UPDATES, ["failed", "rolledBack"]) : "-"), lf,
        el("td", "num", h ? (h.uartFrameErrors || "-") + " / " + (h.mqttReconnects || "-") : "-"),
        el("td", "num" + (h && h.eventLoopDelayMs > 100 ? " bad" : ""), h ? h.eventLoopDelayMs + " ms" : "-"),
        el("td", "num", h ? uptime(h.uptimeSec) : "-"),
        el("td", "meta", g.lastSeenAt ? ago(g.lastSeenAt) : "-")]);
      tr.setAttribute("data-gateway", g.gatewayId);
      t.appendChild(tr);
    });
    c.appendChild(t);
    if (!s.gateways.length) c.appendChild(el("p", "empty", "No gateway has published its presence or inventory."));
    else c.appendChild(el("p", "meta", "Health is the summary each agent puts in its retained presence every minute (docs/mqtt-api.md): counters since the agent started; hover a badge for why it is not ready."));
    return c;
  }

  // --- start dialog ---
  var release = null;
  $("start-open").addEventListener("click", function () { $("start-error").textContent = ""; $("start").showModal(); });
  $("start-load").addEventListener("click", function () {
    var dir = $("start-release").value;
    api("GET", "/api/release?dir=" + encodeURIComponent(dir)).then(function (r) {
      var box = $("start-devices"); box.replaceChildren();
      if (r.status !== 200) { release = null; $("start-ok").disabled = true; $("start-error").textContent = r.body.message || "refused"; return; }
      release = r.body; $("start-error").textContent = "";
      $("start-info").textContent = release.releaseId + " (" + release.version + "): " + release.devices.length + " device(s); manifests at " + release.baseUrl;
      release.devices.forEach(function (id) { var cb = el("input"); cb.type = "checkbox"; cb.checked = true; cb.value = id; box.appendChild(el("label", null, [cb, id])); });
      $("start-ok").disabled = false;
    });
  });
  $("start-ok").addEventListener("click", function (ev) {
    ev.preventDefault();
    if (!release) return;
    var f = $("start-form");
    var chosen = Array.prototype.slice.call($("start-devices").querySelectorAll("input:checked")).map(function (c) { return c.value; });
    var body = { release: release.dir, devices: chosen, waves: f.waves.value, maxFailureRate: f.maxFailureRate.value, minSample: f.minSample.value, waveTimeout: f.waveTimeout.value, id: f.id.value };
    ask("Start rollout of " + release.releaseId + "?", chosen.length + " device(s) in waves " + f.waves.value + "%, aborting above " + f.maxFailureRate.value + "% failed.",
      "Start", false, false, function () {
        api("POST", "/api/rollouts", body).then(function (r) {
          if (r.status === 200) { $("start").close(); toast("rollout " + r.body.rolloutId + " started"); }
          else $("start-error").textContent = (r.body.error || r.status) + ": " + (r.body.message || "refused");
        });
      });
  });

  setInterval(function () { if (state.snap && state.view !== "rollouts") render(); }, 10000);
  fetch("/api/session", { credentials: "same-origin" }).then(function (r) { return r.status === 200 ? r.json().then(loggedIn) : showLogin(); });
})();
`;
