"""The front: `loopfleet front` runs a real HAProxy in front of real `loopfleet run` nodes, each
answering HAProxy's agent check. A node stopped gracefully, or SIGKILLed whole, under load
costs no request; bad input gets one line and exit 2; the front itself stops gracefully."""
import http.client
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request

from conftest import SLOW, Lines, Supervisor, Wrk, binary, free_port, stop_process, wait_until

CHECK = "250ms"  # check and agent interval: a node's state is known within a second


class Front:
    def __init__(self, tmp, nodes, extra=()):
        self.port, self.stats = free_port(), free_port()
        self.name = f"front{os.getpid()}{time.monotonic_ns() % 100000}"
        cmd = [binary("loopfleet"), "front", "--name", self.name, "--state-dir", str(tmp), "--listen",
               f"127.0.0.1:{self.port}", "--stats", f"127.0.0.1:{self.stats}", "--check-interval", CHECK]
        for n in nodes:
            cmd += ["--server", f"127.0.0.1:{n.port}@{n.agent_port}"]
        self.proc = subprocess.Popen(cmd + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = Lines(self.proc.stdout)
        self.log = Lines(self.proc.stderr)
        self.log.wait_for(r"Loading success", timeout=30)

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


def kill_whole(n):
    """SIGKILL a node: its supervisor and its workers, as a lost machine would."""
    pids = n.worker_pids()
    n.proc.kill()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    n.proc.wait()


def test_front_spreads_requests_and_reads_each_nodes_agent(tmp_path):
    a, b = node(tmp_path, 1, extra=["--watchdog", "60s"]), node(tmp_path, 1)
    front = Front(tmp_path, [a, b])
    try:
        front.wait_state(a, "UP")
        front.wait_state(b, "UP")
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
        front.stop()
        a.stop()
        b.stop()


def test_a_node_stopped_then_another_killed_under_load_fails_no_request(tmp_path):
    a, b = node(tmp_path), node(tmp_path)
    front = Front(tmp_path, [a, b])
    try:
        front.wait_state(a, "UP")
        front.wait_state(b, "UP")
        load = Wrk(front.port, duration=int(14 * SLOW), connections=32)
        began = time.monotonic()
        time.sleep(1.5)  # load is flowing through both nodes
        a.proc.send_signal(signal.SIGTERM)  # graceful: the agent says drain, then the workers stop
        front.wait_state(a, "DRAIN")
        assert a.proc.wait(timeout=30 * SLOW) == 0
        a = node(tmp_path, port=a.port, agent_port=a.agent_port)  # back on the same addresses
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
    finally:
        front.stop()
        a.stop()
        b.stop()


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
