"""The front: `loopfleet front` runs a real HAProxy in front of real `loopfleet run` nodes, each
answering HAProxy's agent check. A node stopped gracefully, or SIGKILLed whole, under load
costs no request; bad input gets one line and exit 2; the front itself stops gracefully. With
--nats the front follows a real cluster (each node with its own nats-server): a node that joins
is balanced to, one that stops or dies is taken out, and haproxy is never reloaded."""
import contextlib
import datetime
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
import types
import urllib.request

import pytest

from conftest import SLOW, Lines, Supervisor, Wrk, binary, free_port, stop_process, wait_until
from loadkit import lasting_port

CHECK = "250ms"  # check and agent interval: a node's state is known within a second


class Front:
    def __init__(self, tmp, nodes, extra=()):
        self.port, self.stats = free_port(), free_port()
        # Short: HAProxy's admin socket, STATE_DIR/NAME.haproxy.sock, must fit in 95 bytes, and
        # pytest-xdist's temporary directories are long.
        self.name = f"fr{time.monotonic_ns() % 1000000}"
        cmd = [binary("loopfleet"), "front", "--name", self.name, "--state-dir", str(tmp), "--listen",
               f"127.0.0.1:{self.port}", "--stats", f"127.0.0.1:{self.stats}", "--check-interval", CHECK]
        for n in nodes:
            cmd += ["--server", f"127.0.0.1:{n.port}@{n.agent_port}"]
        self.proc = subprocess.Popen(cmd + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = Lines(self.proc.stdout)
        self.log = Lines(self.proc.stderr)
        self.log.wait_for(r"Loading success", timeout=30)
        self.haproxy = int(re.search(r"haproxy pid (\d+)", self.log.wait_for(r"haproxy pid \d+")[0]).group(1))

    def haproxy_processes(self):
        """haproxy's master and its workers: a reload would replace the workers."""
        with open(f"/proc/{self.haproxy}/task/{self.haproxy}/children") as f:
            return [self.haproxy] + [int(p) for p in f.read().split()]

    def slot_of(self, n, count=1):
        """The slot (`nodeN`) the front put node `n` in, the `count`th time it did."""
        lines = self.log.wait_for(rf"at 127\.0\.0\.1:{n.port} .*: in slot (node\d+)", count=count, timeout=30)
        return re.search(r"in slot (node\d+)", lines[-1]).group(1)

    def wait_slot_state(self, slot, state, timeout=10):
        wait_until(lambda: self.states().get(slot) == state, timeout=timeout * SLOW, what=f"{slot} {state} in the front")

    def states(self):
        """Server name -> HAProxy state (UP, DOWN, DRAIN, ...), from the Prometheus endpoint."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {m.group(1): m.group(2)
                for m in re.finditer(r'haproxy_server_status\{proxy="nodes",server="([^"]+)",state="(\w+)"\} 1', text)}

    def wait_state(self, node, state, timeout=10):
        server = f"127.0.0.1_{node.port}"
        wait_until(lambda: self.states().get(server) == state, timeout=timeout * SLOW,
                   what=f"{server} {state} in the front")

    def get(self, path="/"):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        return r.status, body

    def stop(self):
        stop_process(self.proc)


def node(tmp, workers=2, port=None, agent_port=None, extra=()):
    agent_port = agent_port or free_port()
    n = Supervisor(workers, ["--agent-check", f"127.0.0.1:{agent_port}", "--front-drain", "1s", *extra], tmp=str(tmp),
                   port=port)
    n.agent_port = agent_port
    return n


@contextlib.contextmanager
def two_nodes_behind_a_front(tmp, workers=2, extra_a=()):
    """Nodes `a` and `b`, both UP in a front. A test may put a node started again in its place
    (`pair.a = node(...)`): whatever stands there at the end is stopped, the front first."""
    pair = types.SimpleNamespace(a=node(tmp, workers, extra=extra_a), b=node(tmp, workers))
    pair.front = Front(tmp, [pair.a, pair.b])
    try:
        pair.front.wait_state(pair.a, "UP")
        pair.front.wait_state(pair.b, "UP")
        yield pair
    finally:
        pair.front.stop()
        pair.a.stop()
        pair.b.stop()


def kill_whole(n):
    """SIGKILL a node: its supervisor, its workers and its socket keeper, as a lost machine would."""
    pids = n.worker_pids() + n.keeper_pids()
    n.proc.kill()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    n.proc.wait()


def test_front_spreads_requests_and_reads_each_nodes_agent(tmp_path):
    with two_nodes_behind_a_front(tmp_path, 1, extra_a=["--watchdog", "60s"]) as pair:
        a, b, front = pair.a, pair.b, pair.front
        try:
            pids = {front.get("/pid")[1] for _ in range(60)}
            assert pids == {str(a.worker_pids()[0]), str(b.worker_pids()[0])}  # both nodes serve
            assert a.status()["agent_check"]["reply"] == "up ready 100% # 1/1 workers serving"
            # A node whose only worker stops serving says "down" and gets nothing. (The watchdog,
            # 60 s here, would replace the worker; until then its loop is known to be silent.)
            os.kill(a.worker_pids()[0], signal.SIGSTOP)
            front.wait_state(a, "DOWN")
            assert {front.get("/pid")[1] for _ in range(20)} == {str(b.worker_pids()[0])}
            assert a.status()["agent_check"]["reply"].startswith("down")
        finally:
            for p in a.worker_pids():
                os.kill(p, signal.SIGCONT)


# Release build only: 40 to 100 s under ASan; the front's own code (its configuration, the
# follower) runs under ASan in this file's shorter tests.
@pytest.mark.soak
def test_a_node_stopped_then_another_killed_under_load_fails_no_request(tmp_path):
    with two_nodes_behind_a_front(tmp_path) as pair:
        a, b, front = pair.a, pair.b, pair.front
        load = Wrk(front.port, duration=int(14 * SLOW), connections=32)
        began = time.monotonic()
        time.sleep(1.5)  # load is flowing through both nodes
        a.proc.send_signal(signal.SIGTERM)  # graceful: the agent says drain, then the workers stop
        front.wait_state(a, "DRAIN")
        assert a.proc.wait(timeout=30 * SLOW) == 0
        a = pair.a = node(tmp_path, port=a.port, agent_port=a.agent_port)  # back on the same addresses
        front.wait_state(a, "UP")
        kill_whole(b)  # a lost machine: requests in flight on it are sent again to `a`
        killed_at = time.monotonic() - began
        front.wait_state(b, "DOWN")
        r = load.result()
        assert killed_at < 14 * SLOW - 2, f"the kill came {killed_at:.1f} s into a {14 * SLOW} s load: too late"
        assert r["requests"] > 1000, r["text"]
        assert r["failed"] == 0, r["text"]
        print(f"front: {r['requests']} requests, 0 failed; node A stopped and back, node B killed at "
              f"{killed_at:.1f} s")


def test_a_node_whose_supervisor_died_is_drained_by_its_keeper_until_it_is_started_again(tmp_path):
    """Only the supervisor dies: its workers serve on and its keeper holds the sockets, so the
    TCP check still passes; the keeper answers the agent check with "drain", so the front
    sends new connections to the other node until the supervisor is started again."""
    with two_nodes_behind_a_front(tmp_path) as pair:
        b, front = pair.b, pair.front
        load = Wrk(front.port, duration=int(8 * SLOW), connections=32)
        time.sleep(1)  # load is flowing through both nodes
        os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait()
        front.wait_state(b, "DRAIN")
        b.restart()
        front.wait_state(b, "UP")
        r = load.result()
        assert r["requests"] > 1000, r["text"]
        assert r["failed"] == 0, r["text"]
        print(f"front: {r['requests']} requests, 0 failed; node B's supervisor killed, drained by its keeper, "
              f"started again")


def test_front_bad_input_is_one_line_and_exit_2(tmp_path):
    def front(*args):
        return subprocess.run([binary("loopfleet"), "front", "--state-dir", str(tmp_path), *args], capture_output=True,
                              text=True, timeout=30)
    r = front("--listen", "127.0.0.1:1")
    assert r.returncode == 2 and "at least one --server" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    r = front("--listen", "127.0.0.1:1", "--server", "127.0.0.1:2@nine")
    assert r.returncode == 2 and "agent port after '@'" in r.stderr, r.stderr
    busy = Supervisor(1, tmp=str(tmp_path))
    try:
        r = front("--listen", f"127.0.0.1:{busy.port}", "--server", "127.0.0.1:2@3")
        assert r.returncode == 2 and "address already in use" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        busy.stop()
    r = subprocess.run([binary("loopfleet"), "run", "--agent-check", "unix:/tmp/x", "--", "true"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "--agent-check 'unix:/tmp/x' must be HOST:PORT" in r.stderr, r.stderr


def test_front_stops_gracefully_finishing_requests_in_flight(tmp_path):
    a = node(tmp_path, 1)
    front = Front(tmp_path, [a])
    try:
        front.wait_state(a, "UP")
        result = {}
        t = threading.Thread(target=lambda: result.update(r=front.get("/slow?ms=1500")))
        t.start()
        a.log.wait_for(r"slow request started")
        front.proc.send_signal(signal.SIGTERM)
        t.join(timeout=30 * SLOW)
        assert result["r"] == (200, "slept 1500 ms\n")
        assert front.proc.wait(timeout=30 * SLOW) == 0
        try:
            front.get("/")
            assert False, "the front still accepts after it stopped"
        except ConnectionRefusedError:
            pass
    finally:
        front.stop()
        a.stop()


def make_certificate(tmp, with_key=True):
    """A self-signed certificate for localhost, made by openssl, and the PEM the front takes."""
    key, cert, pem = tmp / "front.key", tmp / "front.crt", tmp / ("front.pem" if with_key else "front-no-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60 * SLOW)
    pem.write_text(cert.read_text() + (key.read_text() if with_key else ""))
    return pem


def test_front_with_tls_cert_serves_http2_to_curl_and_http11_to_the_node(tmp_path):
    a = node(tmp_path, 1)
    front = Front(tmp_path, [a], extra=["--tls-cert", str(make_certificate(tmp_path))])
    try:
        front.wait_state(a, "UP")
        url = f"https://127.0.0.1:{front.port}/pid"
        r = subprocess.run(["curl", "-sS", "-k", "--http2", "-o", "-", "-w", "\n%{http_version}", url],
                           capture_output=True, text=True, timeout=30 * SLOW)
        assert r.returncode == 0, r.stderr
        body, version = r.stdout.rsplit("\n", 1)
        assert version == "2", r.stdout  # negotiated by ALPN
        assert body == str(a.worker_pids()[0]), r.stdout  # the node's own answer
        print(f"curl --http2 through the TLS front: HTTP/{version}, the node's worker pid {body}")
        # The node saw HTTP/1.1 (its server speaks nothing else), and a client without ALPN h2 works too.
        r = subprocess.run(["curl", "-sS", "-k", "--http1.1", "-o", "/dev/null", "-w", "%{http_version}", url],
                           capture_output=True, text=True, timeout=30 * SLOW)
        assert (r.returncode, r.stdout) == (0, "1.1"), (r.stdout, r.stderr)
        # Plain HTTP on the TLS port is refused, not served.
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{front.port}/"],
                           capture_output=True, text=True, timeout=30 * SLOW)
        assert r.stdout != "200", r.stdout
    finally:
        front.stop()
        a.stop()


def test_front_tls_cert_missing_or_without_a_key_is_one_line_before_haproxy(tmp_path):
    def front(cert):
        return subprocess.run([binary("loopfleet"), "front", "--state-dir", str(tmp_path), "--listen",
                               f"127.0.0.1:{free_port()}", "--server", "127.0.0.1:2@3", "--tls-cert", str(cert)],
                              capture_output=True, text=True, timeout=30 * SLOW)
    r = front(tmp_path / "absent.pem")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"--tls-cert {tmp_path / 'absent.pem'} cannot be opened (No such file or directory)" in r.stderr, r.stderr
    r = front(make_certificate(tmp_path, with_key=False))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no private key in it" in r.stderr and "cat cert.pem key.pem" in r.stderr, r.stderr
    assert "haproxy" not in r.stderr, r.stderr  # ours, before haproxy was asked


# --- the front follows the cluster (--nats) ---

class Fleet:
    """Nodes of one cluster on loopback, each `loopfleet run --cluster --agent-check` with its own
    nats-server: node i has fixed client, route, HTTP and agent ports, so a restart comes back on
    the same addresses."""

    def __init__(self, tmp, size=3):
        self.tmp = tmp
        self.ports = [dict(client=lasting_port(), route=lasting_port(), http=lasting_port(), agent=lasting_port())
                      for _ in range(size)]
        self.nodes = [None] * size

    def url(self, i):
        return f"nats://127.0.0.1:{self.ports[i]['client']}"

    def start(self, i, join, replicas=2, wait=True):
        """Starts node i with routes to the nodes in `join`; with `wait`, until it has joined
        (JetStream needs `replicas` servers for that, so the first ones are started together)."""
        p = self.ports[i]
        peers = ",".join(f"127.0.0.1:{self.ports[j]['route']}" for j in join)
        n = Supervisor(1, ["--agent-check", f"127.0.0.1:{p['agent']}", "--front-drain", "1s", "--node", f"n{i + 1}",
                           "--nats-listen", f"127.0.0.1:{p['client']}", "--cluster-listen", f"127.0.0.1:{p['route']}",
                           "--join", peers, "--replicas", str(replicas), "--data-dir", str(self.tmp / f"n{i + 1}")],
                       tmp=str(self.tmp), port=p["http"])
        n.agent_port = p["agent"]
        self.nodes[i] = n
        if wait:
            self.joined(i)
        return n

    def start_first_two(self, spare=()):
        """Nodes 0 and 1, started together: JetStream needs both before either has joined.
        `spare`: nodes that will join later, already in their routes."""
        a = self.start(0, join=[1, *spare], wait=False)
        b = self.start(1, join=[0, *spare])
        self.joined(0)
        return a, b

    def joined(self, i):
        n = self.nodes[i]
        line = n.log.wait_for(rf"cluster: node n{i + 1} joined", timeout=60)[0]
        n.joined_at = utc_log_time(line)  # its first heartbeat is put right after this line

    def stop(self):
        for i, n in enumerate(self.nodes):
            if n:
                n.stop()
                (self.tmp / f"n{i + 1}.log").write_text(n.log.text())


def utc_log_time(line):
    """A log line's timestamp (UTC) as time.time() counts it."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z", line)
    stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


def served(n):
    """Requests node `n` has served, from its own counters."""
    return sum(s.get("requests_total", 0) for s in n.status()["slots"])


def kill_node_whole(n):
    """A lost machine: the supervisor, its workers and its nats-server, all SIGKILLed."""
    nats = n.status()["cluster"]["nats_pid"]
    kill_whole(n)
    try:
        os.kill(nats, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def following(tmp_path, nats, servers=(), extra=()):
    """A front with --nats (and the static `servers`); its log is kept beside the nodes'."""
    front = Front(tmp_path, servers, ["--nats", nats, *extra])
    try:
        yield front
    finally:
        front.stop()
        (tmp_path / "front.log").write_text(front.log.text())


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    yield f
    f.stop()


# Release build only: 40 to 100 s under ASan; the front's own code (its configuration, the
# follower) runs under ASan in this file's shorter tests.
@pytest.mark.soak
def test_front_following_the_cluster_takes_a_joining_node_and_drops_it_stopped_or_killed(fleet, tmp_path):
    fleet.start_first_two(spare=[2])
    with following(tmp_path, f"{fleet.url(0)},{fleet.url(1)}", extra=["--forget-after", "5s"]) as front:
        haproxy = front.haproxy_processes()
        for i in (0, 1):
            front.wait_slot_state(front.slot_of(fleet.nodes[i]), "UP")
        load = Wrk(front.port, duration=int(30 * SLOW), connections=8, threads=1)
        began = time.monotonic()

        # A third node joins: requests reach it within 3 s of its first heartbeat.
        third = fleet.start(2, join=[0, 1])
        first = wait_until(lambda: served(third) > 0 and time.time(), timeout=30, what="the third node's first request")
        join_to_request = first - third.joined_at
        assert join_to_request < 3.0 * SLOW, f"its first request came {join_to_request:.2f} s after it joined"
        slot = front.slot_of(third)

        # Stopped gracefully: drained by its agent, then its slot is emptied.
        third.proc.send_signal(signal.SIGTERM)
        front.wait_slot_state(slot, "DRAIN")
        assert third.proc.wait(timeout=30 * SLOW) == 0
        front.log.wait_for(rf"slot {slot} emptied: stopped gracefully", timeout=30)
        assert front.states().get(slot) == "MAINT"

        # Back: put in again; then SIGKILLed whole, it is marked down by the checks.
        third = fleet.start(2, join=[0, 1])
        again = front.slot_of(third, count=2)
        wait_until(lambda: served(third) > 0, timeout=30, what="the restarted node serving")
        kill_node_whole(third)
        killed_at = time.monotonic() - began
        front.wait_slot_state(again, "DOWN")
        front.log.wait_for(rf"slot {again} emptied: no heartbeat", timeout=30)
        r = load.result()
        assert killed_at < 30 * SLOW - 3, f"the kill came {killed_at:.1f} s into a {30 * SLOW} s load: too late"
        assert r["requests"] > 1000, r["text"]
        assert r["failed"] == 0, r["text"]
        assert front.haproxy_processes() == haproxy, "haproxy was restarted or reloaded"
        assert "haproxy refused" not in front.log.text(), front.log.text()
        print(f"front --nats: {r['requests']} requests, 0 failed; join -> first request {join_to_request:.2f} s; "
              f"the node stopped, came back, was killed at {killed_at:.1f} s; haproxy {haproxy} throughout")


def test_front_keeps_its_nodes_while_nats_is_unreachable_and_skips_a_malformed_heartbeat(fleet, tmp_path):
    a, b = fleet.start_first_two()
    with following(tmp_path, fleet.url(0)) as front:
        for n in (a, b):
            front.wait_slot_state(front.slot_of(n), "UP")
        # A heartbeat with an address HAProxy cannot take: one line, and nothing else changes.
        bad = {"node": "bogus", "http": "not-an-address", "ts_ms": int(time.time() * 1000)}
        subprocess.run([binary("nats_probe"), "put", fleet.url(1), "loopfleet_nodes", "bogus", json.dumps(bad)],
                       check=True, timeout=30)
        front.log.wait_for(r"node bogus advertises http \"not-an-address\", not IP:PORT: skipped")

        nats = a.status()["cluster"]["nats_pid"]
        os.kill(nats, signal.SIGSTOP)  # the only NATS server the front knows stops answering
        try:
            front.log.wait_for(r"cannot read the cluster's membership from NATS .*: keeping the 2 node\(s\) it knew",
                               timeout=30)
            pids = {front.get("/pid")[1] for _ in range(40)}
            assert pids == {str(a.worker_pids()[0]), str(b.worker_pids()[0])}, pids  # both still serve
        finally:
            os.kill(nats, signal.SIGCONT)
        front.log.wait_for(r"following the cluster's membership", count=2, timeout=60)
        text = front.log.text()
        assert text.count("cannot read the cluster's membership") == 1, text
        assert text.count("node bogus advertises") == 1, text
        assert len(re.findall(r"emptied", text)) == 0, text
        assert {front.get("/pid")[1] for _ in range(40)} == {str(a.worker_pids()[0]), str(b.worker_pids()[0])}


def test_front_reload_keeps_the_cluster_slots_beside_a_static_server(fleet, tmp_path):
    a, b = fleet.start_first_two()
    static = node(tmp_path, 1)  # no cluster: given with --server, beside the ones --nats finds
    try:
        with following(tmp_path, fleet.url(0), [static]) as front:
            slots = [front.slot_of(a), front.slot_of(b)]
            for s in slots:
                front.wait_slot_state(s, "UP")
            front.wait_state(static, "UP")
            everyone = {str(n.worker_pids()[0]) for n in (a, b, static)}
            assert {front.get("/pid")[1] for _ in range(60)} == everyone
            load = Wrk(front.port, duration=int(6 * SLOW), connections=8, threads=1)
            front.proc.send_signal(signal.SIGHUP)
            front.log.wait_for(r"New worker \(\d+\) forked", count=2, timeout=30)
            front.log.wait_for(r"Loading success", count=2, timeout=30)
            # The new haproxy read the slots from the state file: serving at once, not filled again.
            assert all(front.states().get(s) == "UP" for s in slots), front.states()
            assert {front.get("/pid")[1] for _ in range(60)} == everyone
            r = load.result()
            # The old haproxy worker closes its idle keep-alive connections at once (docs/front.md):
            # a request racing that close may fail, at most one per connection.
            assert r["requests"] > 500 and r["failed"] <= 8, r["text"]
            print(f"front reload under load: {r['requests']} requests, {r['failed']} failed")
            assert len(re.findall(r": in slot", front.log.text())) == 2, front.log.text()
    finally:
        static.stop()


def test_front_with_nats_never_reachable_says_so_once_and_serves_its_static_nodes(tmp_path):
    static = node(tmp_path, 1)
    nowhere = f"nats://127.0.0.1:{lasting_port()}"  # nothing listens there
    try:
        with following(tmp_path, nowhere, [static]) as front:
            front.log.wait_for(r"cannot read the cluster's membership from NATS at " + re.escape(nowhere) +
                               r" \(.*\): keeping the 0 node\(s\) it knew; retrying")
            front.wait_state(static, "UP")
            assert {front.get("/pid")[1] for _ in range(10)} == {str(static.worker_pids()[0])}
            # The front retries four times a second; still one line after a few of them.
            front.log.wait_for(r"Loading success")
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                assert front.get("/")[0] == 200
            assert front.log.text().count("cannot read the cluster's membership") == 1, front.log.text()
    finally:
        static.stop()
