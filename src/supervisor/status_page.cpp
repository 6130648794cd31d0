// The status page served at `/` by the admin endpoint. One document with its CSS and JS
// inline: it works offline, behind any proxy, with no build step and nothing to install. It
// only reads /status.json (every second) and draws; requests per second are computed here,
// from the differences of each slot's request counter over the supervisor's own uptime clock
// (not the browser's: a reply that arrives late must not look like a burst), so the
// supervisor keeps no history.
// Every text from the model goes in with textContent, never as HTML: a worker's STATUS= line
// or last stderr is the worker's to choose.
#include "supervisor/admin_endpoint.hpp"

namespace loopfleet::supervisor {

const std::string_view status_page_html = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loopfleet</title>
<style>
  :root { --fg: #1d2430; --muted: #697386; --line: #dde2ea; --bg: #f7f8fa; --ok: #1a7f37; --warn: #b35900; --bad: #c62828;
          --rps: #2f6fde; --lag: #e07b00; }
  body { font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 0; padding: 16px 24px; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  h2 { font-size: 15px; margin: 20px 0 6px; }
  .meta { color: var(--muted); }
  .meta b { color: var(--fg); font-weight: 600; }
  a { color: var(--rps); }
  table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
  th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
  th { background: #eef1f5; font-weight: 600; }
  td.text, th.text { text-align: left; }
  td.exit { max-width: 28em; overflow: hidden; text-overflow: ellipsis; }
  .ready { color: var(--ok); } .starting, .restarting, .reloading { color: var(--warn); }
  .degraded, .stalled, .bad { color: var(--bad); font-weight: 600; }
  #error { background: #fde8e8; color: var(--bad); padding: 6px 10px; margin: 8px 0; border: 1px solid #f5b5b5; }
  canvas { background: #fff; border: 1px solid var(--line); display: block; width: 900px; max-width: 100%; height: 200px; }
  .legend span { margin-right: 16px; } .legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 4px; }
</style>
</head>
<body>
<h1 id="title">loopfleet</h1>
<div class="meta" id="meta">connecting&hellip;</div>
<div id="error" hidden></div>

<h2>Requests per second and loop lag, last 5 minutes</h2>
<div class="legend meta"><span><i style="background:var(--rps)"></i>requests/s (all workers)</span><span><i style="background:var(--lag)"></i>loop lag p99, worst worker (ms)</span></div>
<canvas id="chart" width="900" height="200"></canvas>

<h2>Workers</h2>
<table id="workers">
  <thead><tr><th>slot</th><th>pid</th><th>gen</th><th class="text">state</th><th>uptime</th><th>restarts</th>
    <th class="text">last exit</th><th>lag p50 ms</th><th>lag p99 ms</th><th>conns</th><th>in flight</th>
    <th>req/s</th><th>RSS MiB</th></tr></thead>
  <tbody></tbody>
</table>
<div class="meta" id="draining"></div>

<div id="cluster" hidden>
  <h2>Cluster</h2>
  <div class="meta" id="cluster-meta"></div>
  <h2>Nodes</h2>
  <table id="nodes">
    <thead><tr><th class="text">node</th><th class="text">state</th><th>workers</th><th>ready</th><th>heartbeat age</th>
      <th class="text">status page</th></tr></thead>
    <tbody></tbody>
  </table>
  <h2>Streams</h2>
  <table id="streams">
    <thead><tr><th class="text">stream</th><th class="text">kind</th><th>replicas</th><th>wanted</th><th>in sync</th>
      <th class="text">quorum</th></tr></thead>
    <tbody></tbody>
  </table>
</div>

<script>
"use strict";
const $ = (id) => document.getElementById(id);
const keep_s = 300;   // the chart's window
let points = [];      // {t, rps, lag} once a second
let last = null;      // {t, requests: {slot: requests_total}} of the previous poll; t in ms of uptime

function duration(s) {
  if (s == null) return "";
  s = Math.floor(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
}
function fixed(v, digits) { return v == null ? "" : Number(v).toFixed(digits); }
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function meta(pairs) {
  const box = document.createDocumentFragment();
  pairs.forEach(([k, v], i) => {
    if (i) box.append("  \u00b7  ");
    box.append(k + " ");
    const b = document.createElement("b");
    b.textContent = v;
    box.append(b);
  });
  return box;
}

function render(st, now) {
  document.title = "loopfleet \u2014 " + st.name;
  $("title").textContent = "loopfleet \u2014 " + st.name;
  const serving = st.workers_serving != null ? st.workers_serving : "?";
  const pairs = [["pid", st.pid], ["generation", st.generation], ["serving", serving + " of " + st.workers],
                 ["listen", st.listen], ["distribution", st.distribution], ["up", duration(st.uptime_s)]];
  if (st.reloads) pairs.push(["reloads", st.reloads.ok + " ok, " + st.reloads.failed + " failed"]);
  if (st.reloading) pairs.push(["state", "reloading"]);
  if (st.stopping) pairs.push(["state", "stopping"]);
  if (st.agent_check) pairs.push(["agent check", st.agent_check.reply]);
  $("meta").replaceChildren(meta(pairs));

  // Another supervisor (restarted, or upgraded in place) has its own clock and counters.
  if (last && (now <= last.t || st.pid !== last.pid)) { last = null; points = []; }
  const dt = last ? (now - last.t) / 1000 : 0;
  const requests = {};
  let total_rps = 0, worst_lag = null;
  const body = document.createElement("tbody");
  for (const s of st.slots) {
    requests[s.slot] = s.requests_total;
    let rps = null;
    if (dt > 0 && last.requests[s.slot] != null && s.requests_total != null)
      rps = Math.max(0, (s.requests_total - last.requests[s.slot]) / dt);
    if (rps != null) total_rps += rps;
    if (s.lag_p99_ms != null) worst_lag = Math.max(worst_lag || 0, s.lag_p99_ms);
    const tr = document.createElement("tr");
    tr.dataset.slot = s.slot;
    if (s.pid != null) tr.dataset.pid = s.pid;
    cell(tr, s.slot);
    cell(tr, s.pid);
    cell(tr, s.generation);
    cell(tr, s.state, "text " + s.state);
    cell(tr, duration(s.uptime_s));
    cell(tr, s.restarts);
    cell(tr, s.last_exit, "text exit").title = s.last_exit || "";
    cell(tr, fixed(s.lag_p50_ms, 2));
    cell(tr, fixed(s.lag_p99_ms, 2));
    cell(tr, s.connections);
    cell(tr, s.in_flight);
    cell(tr, rps == null ? "" : rps.toFixed(0));
    cell(tr, s.rss_kib == null ? "" : (s.rss_kib / 1024).toFixed(1));
    body.appendChild(tr);
  }
  $("workers").replaceChild(body, $("workers").tBodies[0]);
  const draining = (st.draining || []).map((d) => "pid " + d.pid + " (slot " + d.slot + ", generation " + d.generation + ")");
  $("draining").textContent = draining.length ? "draining: " + draining.join(", ") : "";
  if (last) points.push({t: now, rps: total_rps, lag: worst_lag});
  last = {t: now, pid: st.pid, requests};
  points = points.filter((h) => now - h.t <= keep_s * 1000);

  const c = st.cluster;
  $("cluster").hidden = !c;
  if (c) {
    const cm = [["node", c.node], ["nodes up", c.nodes], ["nats", c.nats], ["nats-server", c.nats_ready ? "ready" : "not ready"]];
    $("cluster-meta").replaceChildren(meta(cm));
    const sb = document.createElement("tbody");
    for (const x of c.streams || []) {
      const tr = document.createElement("tr");
      cell(tr, x.name, "text");
      cell(tr, x.kind, "text");
      cell(tr, x.has, x.has < x.want ? "bad" : "");
      cell(tr, x.want);
      cell(tr, x.in_sync);
      cell(tr, x.quorum ? "yes" : "NO", x.quorum ? "text ready" : "text bad");
      sb.appendChild(tr);
    }
    $("streams").replaceChild(sb, $("streams").tBodies[0]);
    // Every node of the cluster, from the heartbeats this node read last second; the others
    // link to their own pages (the address each node advertises, docs/cluster.md).
    const nb = document.createElement("tbody");
    const members = (c.members || []).slice().sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
    for (const m of members) {
      const tr = document.createElement("tr");
      tr.dataset.node = m.node;
      const self = m.node === c.node;
      cell(tr, m.node + (self ? " (this node)" : ""), "text");
      cell(tr, m.stopping ? "stopping" : m.state, "text " + (m.state === "up" && !m.stopping ? "ready" : "bad"));
      cell(tr, m.workers);
      cell(tr, m.ready);
      cell(tr, m.age_s == null ? "" : fixed(m.age_s, 1) + " s");
      const td = cell(tr, "", "text");
      if (self) td.textContent = "this page";
      else if (m.admin) {
        const a = document.createElement("a");
        a.href = "http://" + m.admin + "/";
        a.textContent = m.admin;
        if (/^(127\.|\[::1\]|localhost)/.test(m.admin)) a.title = "loopback: reachable from a browser on that machine only";
        td.appendChild(a);
      } else td.textContent = "no --admin";
      nb.appendChild(tr);
    }
    $("nodes").replaceChild(nb, $("nodes").tBodies[0]);
  }
  draw(now);
}

// Two lines on one time axis, each scaled to its own maximum (labelled on its side).
function draw(now) {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * ratio) { canvas.width = w * ratio; canvas.height = h * ratio; }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 64, right = 72, top = 10, bottom = 22;
  const pw = w - left - right, ph = h - top - bottom;
  const x = (t) => left + pw * (1 - (now - t) / (keep_s * 1000));
  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = "#dde2ea";
  g.fillStyle = "#697386";
  for (let m = 0; m <= 5; ++m) {
    const gx = x(now - m * 60000);
    g.beginPath(); g.moveTo(gx, top); g.lineTo(gx, top + ph); g.stroke();
    g.fillText(m ? "-" + m + " min" : "now", gx - 14, h - 6);
  }
  const css = getComputedStyle(document.documentElement);
  const line = (key, color, side) => {
    const pts = points.filter((p) => p[key] != null);
    let max = Math.max(1e-9, ...pts.map((p) => p[key]));
    g.fillStyle = color;
    g.fillText(key === "rps" ? max.toFixed(0) + "/s" : max.toFixed(1) + " ms", side === "l" ? 4 : w - right + 4, top + 10);
    g.fillText("0", side === "l" ? 4 : w - right + 4, top + ph);
    if (pts.length < 2) return;
    g.strokeStyle = color;
    g.lineWidth = 1.5;
    g.beginPath();
    pts.forEach((p, i) => {
      const px = x(p.t), py = top + ph * (1 - p[key] / max);
      if (i) g.lineTo(px, py); else g.moveTo(px, py);
    });
    g.stroke();
    g.lineWidth = 1;
  };
  line("rps", css.getPropertyValue("--rps").trim(), "l");
  line("lag", css.getPropertyValue("--lag").trim(), "r");
}

// Every second; four times a second while a slot is between workers or a reload is under
// way, so a replacement shows as soon as it is started rather than up to a second later.
async function poll() {
  let next = 1000;
  try {
    const r = await fetch("/status.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const st = await r.json();
    $("error").hidden = true;
    render(st, st.uptime_s * 1000);
    if (st.reloading || st.slots.some((s) => s.state === "restarting" || s.state === "starting")) next = 250;
  } catch (e) {
    $("error").hidden = false;
    $("error").textContent = "cannot read /status.json: " + e.message + " (the instance may have stopped)";
  }
  setTimeout(poll, next);
}
poll();
</script>
</body>
</html>
)html";

}  // namespace loopfleet::supervisor
