"""Load and socket accounting shared by bench/ and the integration tests: wrk in the
background with its summary parsed, a process's output line by line, and the ESTABLISHED
connections a process holds."""
import os
import random
import re
import socket
import subprocess
import threading
import time


class Wrk:
    """wrk in the background for a bounded time; result() parses its summary."""

    def __init__(self, port, duration=4, connections=64, path="/", threads=2, script=None):
        self.proc = subprocess.Popen(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"] +
            (["-s", script] if script else []) + [f"http://127.0.0.1:{port}{path}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.duration = duration

    def result(self):
        out, _ = self.proc.communicate(timeout=self.duration + 60)
        r = {"text": out, "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
        m = re.search(r"(\d+) requests in", out)
        r["requests"] = int(m.group(1)) if m else 0
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        r["rps"] = float(m.group(1)) if m else 0.0
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if m:
            r.update(connect=int(m.group(1)), read=int(m.group(2)), write=int(m.group(3)), timeout=int(m.group(4)))
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if m:
            r["non2xx"] = int(m.group(1))
        r["failed"] = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["non2xx"]
        return r


class Knocker:
    """New connections one after another on a thread, each with one request (`Connection:
    close`), until stop() (at most `limit`): every refused or failed one is counted, and when
    each answered one was opened and answered (monotonic), for what happened during a gap."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    def __init__(self, port, limit=500000, timeout=20.0):
        self.port, self.limit, self.timeout = port, limit, timeout
        self.refused, self.failed = 0, []
        self.began = []   # when each connection was opened
        self.served = []  # (opened, answered) of each one answered with a 200
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def answered(self):
        return len(self.served)

    def _run(self):
        for _ in range(self.limit):
            if self.stopping.is_set():
                return
            began = time.monotonic()
            self.began.append(began)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as s:
                    s.sendall(self.request)
                    data = b""
                    while chunk := s.recv(4096):
                        data += chunk
                if data.startswith(b"HTTP/1.1 200"):
                    self.served.append((began, time.monotonic()))
                else:
                    self.failed.append(data[:60])
            except ConnectionRefusedError:
                self.refused += 1
                time.sleep(0.001)  # a refused connect returns at once: do not spin
            except OSError as e:
                self.failed.append(repr(e))

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=60)
        return self


class Lines:
    """Collects a pipe's lines on a thread so tests (and benches) can wait for one."""
    slow = 1.0  # every wait is scaled by this: the tests raise it for sanitizer builds

    def __init__(self, pipe):
        self.lines = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.thread.start()

    def _pump(self, pipe):
        for raw in iter(pipe.readline, b""):
            with self.changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.changed.notify_all()
        pipe.close()

    def wait_for(self, pattern, count=1, timeout=10.0):
        """The first `count` lines matching `pattern`, waiting for them to be printed."""
        deadline = time.monotonic() + timeout * self.slow
        with self.changed:
            while True:
                found = [l for l in self.lines if re.search(pattern, l)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{count}x {pattern!r} not seen within {timeout} s; lines: {self.lines}")
                self.changed.wait(left)

    def text(self):
        with self.changed:
            return "\n".join(self.lines)


def pid_alive(pid):
    """Running (a zombie counts as gone: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def established(pids, port):
    """TCP connections held by any of `pids` in state ESTABLISHED on local port `port`."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except FileNotFoundError:
            pass
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for row in f:
                cols = row.split()
                if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                    count += 1
    return count


def lasting_port():
    """A free loopback port outside the kernel's ephemeral range, for a server that starts (or
    restarts) long after its port was chosen: a port from bind(0) is an ephemeral one, and an
    outgoing connection may take it meanwhile ("address already in use" at the late start)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for _ in range(1000):
        port = random.randrange(10000, max(10001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
