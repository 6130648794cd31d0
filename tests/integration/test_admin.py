"""The admin endpoint (`loopfleet run --admin`) read by real clients: a Prometheus server
scraping /metrics every second under wrk load while a worker is SIGKILLed, a headless
Chromium showing the status page over the DevTools protocol, and the bad inputs."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websocket  # python3-websocket: the CDP client

from conftest import SLOW, Supervisor, Wrk, binary, free_port

PROMETHEUS = "/usr/bin/prometheus"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def poll(probe, timeout, what, every=0.1):
    """Calls `probe` until it returns something true; the events here (a scrape, a repaint)
    are in other processes, so asking again is the only way to wait for them."""
    deadline = time.monotonic() + timeout * SLOW
    last = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (OSError, ValueError, KeyError, websocket.WebSocketException) as e:
            value, last = None, e
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last})" if last else ""))


def fetch(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout * SLOW) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


class Prometheus:
    """A real Prometheus server on a free loopback port scraping one target every second."""

    def __init__(self, tmp, target):
        if not os.access(PROMETHEUS, os.X_OK):
            pytest.fail(f"{PROMETHEUS} is missing: scripts/install-deps.sh installs it")
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n  - job_name: loopfleet\n    static_configs:\n"
                          f"      - targets: ['{target}']\n")
        self.log = open(tmp / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        poll(lambda: self.proc.poll() is None and fetch(self.url("/-/ready"))[0] == 200, 60, "Prometheus ready",
             every=0.2)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, endpoint, **params):
        _, _, body = fetch(self.url(f"/api/v1/{endpoint}?" + urllib.parse.urlencode(params)))
        reply = json.loads(body)
        assert reply["status"] == "success", reply
        return reply["data"]["result"]

    def query(self, expr):
        return self.api("query", query=expr)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def by_slot(result):
    """{slot: float value} of an instant vector with a slot label."""
    return {r["metric"]["slot"]: float(r["value"][1]) for r in result}


# wrk, Prometheus or Chromium and the workers share two loaded cores here: a worker's loop can
# miss the default 1 s watchdog, and an unplanned replacement would blur what these tests count.
CALM = ["--watchdog", "10s"]


def test_prometheus_scrapes_per_worker_rates_and_a_counter_that_survives_a_kill(supervise, tmp_path):
    admin = free_port()
    sup = supervise(2, ["--admin", str(admin), *CALM])
    prom = Prometheus(tmp_path, f"127.0.0.1:{admin}")
    load = Wrk(sup.port, duration=60, connections=16)
    try:
        began = time.time()
        pids = {str(s["slot"]): s["pid"] for s in sup.status()["slots"]}

        # A request rate per worker, each series naming its slot, pid and generation.
        def rates():
            r = prom.query("rate(loopfleet_worker_requests_total[5s])")
            got = {x["metric"]["slot"]: x for x in r if float(x["value"][1]) > 0}
            return got if set(got) == {"0", "1"} else None
        got = poll(rates, 60, "a request rate for both slots", every=0.25)
        for slot, series in got.items():
            assert series["metric"]["pid"] == str(pids[slot]), (series, pids)
            assert series["metric"]["generation"] == "1", series
        print("request rates:", {s: round(float(x["value"][1])) for s, x in got.items()})

        before = by_slot(prom.query("sum by (slot) (loopfleet_worker_requests_total)"))
        assert set(before) == {"0", "1"} and all(v > 0 for v in before.values()), before
        victim = pids["0"]
        os.kill(victim, signal.SIGKILL)

        # Prometheus sees the replacement: a new series for slot 0, with the new pid.
        def replaced():
            r = prom.query('loopfleet_worker_requests_total{slot="0"}')
            return [x for x in r if x["metric"]["pid"] != str(victim)]
        (new,) = poll(replaced, 30, "the replacement's series in Prometheus", every=0.25)
        assert new["metric"]["pid"] == str(sup.status()["slots"][0]["pid"]), new
        after = by_slot(prom.query("sum by (slot) (loopfleet_worker_requests_total)"))
        assert all(after[s] >= before[s] for s in before), (before, after)
        # The new worker's series starts where the old one ended, not at zero.
        assert float(new["value"][1]) >= before["0"], (new, before)

        # Over the whole run, scrape by scrape, no slot's count ever went down.
        history = prom.api("query_range", query="sum by (slot) (loopfleet_worker_requests_total)",
                           start=f"{began:.3f}", end=f"{time.time():.3f}", step="1")
        for series in history:
            values = [float(v) for _, v in series["values"]]
            assert values == sorted(values), (series["metric"], values)
        crashes = poll(lambda: by_slot(prom.query('loopfleet_slot_restarts_total{reason="crash"} > 0')), 10,
                       "the crash counted as a restart")
        assert crashes == {"0": 1.0}, crashes
        print("requests per slot before the kill:", before, "after:", after)
    finally:
        load.proc.kill()
        load.proc.wait()
        prom.stop()


def test_metrics_and_status_json_over_http(supervise):
    admin = free_port()
    sup = supervise(2, ["--admin", f"127.0.0.1:{admin}"])
    status, ctype, text = fetch(f"http://127.0.0.1:{admin}/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), ctype
    assert "# TYPE loopfleet_worker_requests_total counter" in text, text
    for pid in sup.worker_pids():
        assert f'pid="{pid}"' in text, text
    status, ctype, body = fetch(f"http://127.0.0.1:{admin}/status.json")
    assert status == 200 and ctype == "application/json"
    over_http = json.loads(body)
    cli = sup.status()
    # The same model: the same fields everywhere, the same workers (the clocks moved on).
    assert over_http.keys() == cli.keys()
    assert [s.keys() for s in over_http["slots"]] == [s.keys() for s in cli["slots"]]
    assert [s["pid"] for s in over_http["slots"]] == [s["pid"] for s in cli["slots"]]
    assert over_http["ok"] is True and over_http["name"] == cli["name"]
    status, ctype, page = fetch(f"http://127.0.0.1:{admin}/")
    assert status == 200 and ctype.startswith("text/html") and "/status.json" in page
    # Read-only: anything but GET is refused by the router.
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/status.json", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)
    assert refused.value.code == 405


def metric_samples(admin, prefix):
    """{'name{labels}': value} of the samples of /metrics whose name starts with `prefix`."""
    _, _, text = fetch(f"http://127.0.0.1:{admin}/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_a_reload_is_counted_and_the_request_counters_carry_over(supervise):
    admin = free_port()
    sup = supervise(2, ["--admin", str(admin)])
    # 32 connections: the steering program picks a worker at random per connection, and with 8
    # all of them landed on one worker about once in 128 runs, leaving the other slot at 0.
    load = Wrk(sup.port, duration=2, connections=32)
    assert load.result()["requests"] > 0
    before = metric_samples(admin, "loopfleet_worker_requests_total")
    assert len(before) == 2 and all('generation="1"' in k for k in before), before
    r = sup.cli("reload")
    assert r.returncode == 0, r.stderr
    after = metric_samples(admin, "loopfleet_worker_requests_total")
    assert len(after) == 2 and all('generation="2"' in k for k in after), after
    # Each slot's new worker starts from what the slot had served: nothing went backwards.
    for slot in ("0", "1"):
        old = next(v for k, v in before.items() if f'slot="{slot}"' in k)
        new = next(v for k, v in after.items() if f'slot="{slot}"' in k)
        assert new >= old > 0, (slot, before, after)
    assert metric_samples(admin, "loopfleet_reloads_total") == {
        'loopfleet_reloads_total{result="ok"}': 1, 'loopfleet_reloads_total{result="failed"}': 0}
    assert metric_samples(admin, "loopfleet_generation") == {"loopfleet_generation": 2}


def test_recycles_stalls_and_crashes_are_counted_per_slot(supervise):
    admin = free_port()
    sup = supervise(1, ["--admin", str(admin), "--max-requests", "50"], command=[binary("chaos")])

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{sup.port}{path}", timeout=10 * SLOW) as r:
            return r.read()
    for _ in range(60):
        get("/")
    slot = '{slot="0"}'
    poll(lambda: metric_samples(admin, "loopfleet_slot_recycles_total").get("loopfleet_slot_recycles_total" + slot),
         20, "the recycle after --max-requests 50")
    # The loop blocks past the 1 s watchdog: a stall, and a restart for that reason.
    with pytest.raises(OSError):
        get("/block?ms=3000")
    poll(lambda: metric_samples(admin, "loopfleet_slot_stalls_total").get("loopfleet_slot_stalls_total" + slot), 20,
         "the stall counted")
    poll(lambda: sup.status()["slots"][0]["state"] == "ready", 20, "the replacement ready")
    with pytest.raises(OSError):
        get("/crash")
    restarts = poll(lambda: (lambda m: m if m.get('loopfleet_slot_restarts_total{slot="0",reason="crash"}') else None)(
        metric_samples(admin, "loopfleet_slot_restarts_total")), 20, "the crash counted")
    assert restarts == {'loopfleet_slot_restarts_total{slot="0",reason="crash"}': 1,
                        'loopfleet_slot_restarts_total{slot="0",reason="exit"}': 0,
                        'loopfleet_slot_restarts_total{slot="0",reason="not_ready"}': 0,
                        'loopfleet_slot_restarts_total{slot="0",reason="stall"}': 1}, restarts
    assert metric_samples(admin, "loopfleet_slot_recycles_total")["loopfleet_slot_recycles_total" + slot] == 1
    # Three workers came and went; the slot's count kept every request they served.
    poll(lambda: sup.status()["slots"][0]["state"] == "ready", 20, "the replacement ready")
    (total,) = metric_samples(admin, "loopfleet_worker_requests_total").values()
    assert total >= 60, total


class Chromium:
    """Headless Chromium with a DevTools port, and a CDP session on its first page."""

    def __init__(self, tmp):
        if not os.access(CHROMIUM, os.X_OK):
            pytest.fail(f"{CHROMIUM} is missing: scripts/install-deps.sh installs it")
        self.port = free_port()
        profile = self.profile = tmp / "chromium-profile"
        profile.mkdir()
        self.log = open(tmp / "chromium.log", "w")
        # Its own session, so its helper processes (zygote, renderer) go with it at the end.
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--remote-debugging-port={self.port}", "--window-size=1200,800",
             "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

        def page_target():
            _, _, body = fetch(f"http://127.0.0.1:{self.port}/json/list")
            return next((t for t in json.loads(body) if t["type"] == "page"), None)
        target = poll(page_target, 60, "Chromium's DevTools page target", every=0.2)
        # No Origin header: Chromium refuses DevTools clients from origins it was not told about.
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30 * SLOW,
                                              suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:  # anything else is an event we did not ask for
                assert "error" not in msg, msg
                return msg["result"]

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def stop(self):
        try:
            self.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        # Chromium keeps its singleton socket in a directory of its own under $TMPDIR (a path
        # short enough for a socket) and leaves it behind; the profile links to it.
        link = self.profile / "SingletonSocket"
        if link.is_symlink():
            own = os.path.dirname(os.readlink(link))
            if os.path.basename(own).startswith("org.chromium.Chromium."):  # nothing else
                shutil.rmtree(own, ignore_errors=True)


PAGE_PIDS = "JSON.stringify([...document.querySelectorAll('#workers tbody tr')].map(r => r.dataset.pid || ''))"


def test_status_page_in_headless_chromium_shows_a_replaced_worker_within_2s(supervise, tmp_path):
    admin = free_port()
    sup = supervise(2, ["--admin", str(admin), *CALM])
    load = Wrk(sup.port, duration=30, connections=8)
    browser = Chromium(tmp_path)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"http://127.0.0.1:{admin}/")
        pids = [str(p) for p in sup.worker_pids()]
        poll(lambda: json.loads(browser.evaluate(PAGE_PIDS) or "[]") == pids, 20, f"pids {pids} in the page")
        assert browser.evaluate("document.title").startswith("loopfleet")
        victim = pids[0]
        killed = time.monotonic()
        os.kill(int(victim), signal.SIGKILL)
        shown = poll(lambda: (lambda p: p[0] not in ("", victim) and p)(json.loads(browser.evaluate(PAGE_PIDS))),
                     2.0, "the replacement's pid in the page", every=0.05)
        took = time.monotonic() - killed
        assert shown[0] == str(sup.worker_pids()[0]) and shown[1] == pids[1], (shown, pids)
        print(f"replacement pid {shown[0]} shown {took * 1000:.0f} ms after the kill")
        # A few seconds of history, so the chart in the screenshot has lines.
        # Once a second when the machine is idle; a loaded machine (CI) may starve the browser.
        poll(lambda: browser.evaluate("points.length") >= 5, 60, "five points in the chart", every=0.2)
        rps = browser.evaluate("[...document.querySelectorAll('#workers tbody tr')].map(r => r.cells[11].textContent)")
        assert all(x != "" for x in rps), rps
        shot = browser.call("Page.captureScreenshot", format="png")
        path = tmp_path / "status_page.png"
        import base64
        path.write_bytes(base64.b64decode(shot["data"]))
        assert path.stat().st_size > 1000
        print(f"screenshot: {path}")
    finally:
        browser.stop()
        load.proc.kill()
        load.proc.wait()


class TwoNodes:
    """Two cluster nodes on loopback, each with its own nats-server and --admin port."""

    def __init__(self, tmp, workers=1):
        self.clients, routes, self.admins = [free_port(), free_port()], [free_port(), free_port()], [free_port(),
                                                                                                    free_port()]
        self.nodes = []
        try:
            for i in range(2):
                self.nodes.append(Supervisor(
                    workers, ["--node", f"n{i + 1}", "--nats-listen", f"127.0.0.1:{self.clients[i]}", "--cluster-listen",
                              f"127.0.0.1:{routes[i]}", "--join", f"127.0.0.1:{routes[1 - i]}", "--data-dir",
                              str(tmp / f"n{i + 1}"), "--admin", str(self.admins[i]), *CALM],
                    [binary("cluster-example")], tmp=str(tmp)))
        except BaseException:
            self.stop()
            raise

    def status(self, i):
        _, _, body = fetch(f"http://127.0.0.1:{self.admins[i]}/status.json")
        return json.loads(body)

    def stop(self):
        for n in self.nodes:
            n.stop()


def test_cluster_metrics_count_the_nodes_and_each_streams_replicas(tmp_path):
    two = TwoNodes(tmp_path)
    admins = two.admins
    try:
        def samples():
            out = metric_samples(admins[0], "loopfleet_cluster_")
            return out if out.get("loopfleet_cluster_nodes") == 2 else None
        m = poll(samples, 90, "two nodes up in node n1's metrics", every=0.5)
        jobs = '{stream="LOOPFLEET_JOBS",kind="stream"}'
        m = poll(lambda: (lambda m: m if m and m.get("loopfleet_cluster_stream_replicas" + jobs) == 2 else None)(
            samples()), 60, "the jobs stream on two replicas", every=0.5)
        assert m["loopfleet_cluster_stream_replicas_wanted" + jobs] == 2, m
        assert m["loopfleet_cluster_stream_quorum" + jobs] == 1, m
        assert m["loopfleet_cluster_nats_ready"] == 1, m
    finally:
        two.stop()


PAGE_NODES = ("JSON.stringify([...document.querySelectorAll('#nodes tbody tr')].map(r => "
              "[r.dataset.node, (r.querySelector('a') || {}).href || r.cells[5].textContent]))")


def test_status_page_lists_the_other_node_with_a_link_and_cluster_status_shows_every_workers_pid(tmp_path):
    two = TwoNodes(tmp_path, workers=2)
    browser = Chromium(tmp_path)
    try:
        # Both nodes' heartbeats carry their workers once every slot serves.
        def both_ready():
            st = [two.status(i) for i in range(2)]
            return st if all(s["workers_serving"] == 2 and s["cluster"]["nodes"] == 2 for s in st) else None
        poll(both_ready, 90, "two nodes up, each with 2 workers serving", every=0.5)
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"http://127.0.0.1:{two.admins[0]}/")
        want = [["n1", "this page"], ["n2", f"http://127.0.0.1:{two.admins[1]}/"]]
        poll(lambda: sorted(json.loads(browser.evaluate(PAGE_NODES) or "[]")) == want, 20,
             f"nodes {want} in n1's page")
        # The link leads to n2's own page, which knows itself as n2 and links back to n1.
        browser.evaluate("document.querySelector('#nodes tr[data-node=\"n2\"] a').click()")
        # Null-safe: while the browser goes from one page to the next, the element is not there.
        poll(lambda: "n2" in (browser.evaluate("document.getElementById('cluster-meta')?.textContent") or ""), 20,
             "n2's page after following the link")
        assert browser.evaluate("location.port") == str(two.admins[1])
        poll(lambda: sorted(json.loads(browser.evaluate(PAGE_NODES) or "[]")) ==
             [["n1", f"http://127.0.0.1:{two.admins[0]}/"], ["n2", "this page"]], 20, "n2's page linking to n1")

        # `cluster status` shows each node's workers as the node itself reports them.
        url = f"nats://127.0.0.1:{two.clients[0]}"
        def cli(*args):
            r = subprocess.run([binary("loopfleet"), "cluster", "status", "--nats", url, *args], capture_output=True,
                               text=True, timeout=60 * SLOW)
            assert r.returncode == 0, r.stderr
            return r.stdout

        def pids_agree():
            own = {f"n{i + 1}": sorted(s["pid"] for s in n.status()["slots"]) for i, n in enumerate(two.nodes)}
            listed = {n["node"]: sorted(w["pid"] for w in n["slots"]) for n in json.loads(cli("--json"))["nodes"]}
            return (own, listed) if own == listed else None
        own, _ = poll(pids_agree, 20, "cluster status --json listing the pids each node reports")
        text = cli()
        for name, pids in own.items():
            section = text.split(f"\nnode {name} ", 1)[1].split("\n\n", 1)[0]
            i = int(name[1:]) - 1
            assert f"(status page http://127.0.0.1:{two.admins[i]}/)" in section, text
            for pid in pids:
                assert re.search(rf"^\s+\d+\s+{pid}\s+ready\s", section, re.M), (pid, text)
        print(text)
    finally:
        browser.stop()
        two.stop()


def test_admin_port_in_use_is_one_line_and_exit_2(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        r = subprocess.run([binary("loopfleet"), "run", "--admin", str(port), "--listen", f"127.0.0.1:{free_port()}",
                            "--control", str(tmp_path / "c.sock"), "--", binary("loopfleet-testapp")],
                           capture_output=True, text=True, timeout=30 * SLOW)
    finally:
        holder.close()
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    assert f"--admin 127.0.0.1:{port}" in lines[0] and "address already in use" in lines[0], lines[0]
    assert "choose another address" in lines[0], lines[0]
    r = subprocess.run([binary("loopfleet"), "run", "--admin", "unix:/tmp/x", "--", "true"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "--admin 'unix:/tmp/x' must be HOST:PORT" in r.stderr, r.stderr
