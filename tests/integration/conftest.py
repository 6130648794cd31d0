"""Real processes on loopback: start a worker, wait for its READY over a notify socket that
the test owns (as systemd or `loopfleet run` would), talk raw HTTP to it, signal it."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "bench"))
from loadkit import Knocker, Lines, Wrk, established, pid_alive  # noqa: E402  (shared with bench/)

BIN = os.environ.get("LOOPFLEET_BIN") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build", "bin")

# Sanitizer builds are slower; every wait scales with this.
SLOW = 3.0 if "asan" in BIN else 1.0
Lines.slow = SLOW


def binary(name):
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build first (scripts/build.sh)")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotifySocket:
    """The supervisor's end of the notify protocol: an abstract datagram socket."""

    def __init__(self):
        self.name = f"@loopfleet-test-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.seen = []

    def wait_for(self, key, timeout=10.0, proc=None):
        """Returns the first datagram containing `key`, reading (and keeping) all before it.
        Fails at once if `proc` exits meanwhile."""
        for msg in self.seen:
            if key in msg:
                return msg
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key!r} on the notify socket within {timeout} s; got {self.seen}")
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode} before {key!r}")
            self.sock.settimeout(min(left, 0.1))
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.seen.append(msg)
            if key in msg:
                return msg

    def close(self):
        self.sock.close()


class Worker:
    def __init__(self, args, name="loopfleet-testapp", env=None, listen=True, wrapper=(), fd3=None,
                 wait_ready=True):
        self.port = free_port()
        self.notify = NotifySocket()
        e = dict(os.environ)
        e.pop("LISTEN_FDS", None)
        e.pop("LISTEN_PID", None)
        e["NOTIFY_SOCKET"] = self.notify.name
        e.update(env or {})
        cmd = list(wrapper) + [binary(name)] + (["--listen", f"127.0.0.1:{self.port}"] if listen else []) + list(args)
        # fd3: a socket to hand over as fd 3, where LISTEN_FDS says the first one is.
        move = (lambda: os.dup2(fd3, 3)) if fd3 is not None else None
        self.proc = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     pass_fds=(3,) if fd3 is not None else (), preexec_fn=move)
        self.stdout = Lines(self.proc.stdout)
        self.stderr = Lines(self.proc.stderr)
        if wait_ready:
            try:
                self.ready = self.notify.wait_for("READY=1", proc=self.proc)
            except AssertionError as e:
                time.sleep(0.2)  # let the pipe readers drain what it printed
                raise AssertionError(f"{e}; stderr: {self.stderr.text()}")

    def connect(self, timeout=10.0):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout * SLOW)
        return s

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30.0):
        return self.proc.wait(timeout=timeout * SLOW)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()


def _workers(extra=()):
    workers = []

    def _start(args=(), **kw):
        w = Worker([*args, *extra], **kw)
        workers.append(w)
        return w

    yield _start
    for w in workers:
        w.stop()


@pytest.fixture
def start():
    """start(args, **kw) -> a READY worker; every worker is killed at the end of the test."""
    yield from _workers()


@pytest.fixture(params=["io_uring", "epoll"])
def http_start(request):
    """start() for the HTTP server's tests, run once with each way of reading and writing
    connections (--io). A module takes it as its `start` (test_http.py)."""
    yield from _workers(["--io", request.param])


def rss_kib(pid):
    """A process's resident memory, KiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


# --- a small HTTP/1.1 client that shows what a real client would see ---

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return self.headers.get(name.lower())


def read_response(f, head=False):
    """Reads one response from a socket's binary file; None at a clean EOF."""
    line = f.readline()
    if not line:
        return None
    parts = line.decode().split(" ", 2)
    status = int(parts[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, v = h.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = 0 if head or status in (100, 204, 304) else int(headers.get("content-length", "0"))
    body = f.read(n) if n else b""
    return Response(status, headers, body)


def exchange(sock, data, count=1, head=False):
    """Sends raw bytes, reads `count` responses (skipping 100 Continue)."""
    sock.sendall(data)
    f = sock.makefile("rb")
    out = []
    while len(out) < count:
        r = read_response(f, head=head)
        if r is None:
            break
        if r.status != 100:
            out.append(r)
    return out


def get(worker, path="/", extra=b""):
    with worker.connect() as s:
        req = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"Connection: close\r\n\r\n"
        (r,) = exchange(s, req)
        return r


def peer_closed(sock, timeout):
    """True if the peer closes (EOF or reset) within `timeout` s, reading and dropping data."""
    sock.settimeout(timeout * SLOW)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# --- the supervisor ---

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON_APP = os.path.join(ROOT, "examples", "python", "app.py")


class Supervisor:
    """`loopfleet run` on a free port with its own control socket; its log is collected.
    `wrapper` goes before it (systemd-socket-activate); listen=False leaves --listen out."""

    def __init__(self, workers=2, args=(), command=None, tmp=None, wait_ready=True, port=None, env=None, wrapper=(),
                 listen=True):
        self.port = port or free_port()
        self.name = f"t{os.getpid()}-{time.monotonic_ns()}"
        self.control = os.path.join(tmp or "/tmp", f"{self.name}.sock")
        self.workers = workers
        cmd = [binary("loopfleet"), "run", "--name", self.name, "--control", self.control, "--workers", str(workers)]
        cmd += ["--listen", f"127.0.0.1:{self.port}"] if listen else []
        cmd += list(args)
        if command is None:
            command = [binary("loopfleet-testapp")]
        if command:  # [] = the command comes from the config file
            cmd += ["--"] + list(command)
        self.cmd, self.env = cmd, env
        self.start(list(wrapper) + cmd, wait_ready)

    def start(self, cmd, wait_ready=True):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, **self.env) if self.env else None)
        self.out = Lines(self.proc.stdout)
        self.log = Lines(self.proc.stderr)
        if wait_ready:
            self.log.wait_for(r"ready in \d+ ms", count=self.workers)

    def restart(self, wait_ready=True):
        """The same `loopfleet run` again (as systemd's Restart= would), after this one died."""
        assert self.proc.poll() is not None, "restart() is for a supervisor that has exited"
        self.start(self.cmd, wait_ready)

    def cli(self, *args, timeout=60):
        return subprocess.run([binary("loopfleet"), *args, "--control", self.control],
                              capture_output=True, text=True, timeout=timeout * SLOW)

    def status(self):
        r = self.cli("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def worker_pids(self):
        return [s["pid"] for s in self.status()["slots"]]

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=10 * SLOW)

    def keeper_pids(self):
        """The socket keeper of this instance, by its command line (it outlives a killed supervisor)."""
        return keeper_pids(self.control)

    def stop(self):
        stop_process(self.proc)
        for pid in self.keeper_pids():  # left by a supervisor the test killed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def keeper_pids(control):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv[:3] == [b"loopfleet", b"keeper", (control + ".keeper").encode()] and pid_alive(int(entry)):
                found.append(int(entry))
    return found


def stop_process(proc):
    """A fast stop (SIGQUIT: at once, still reaping children), then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def supervise(tmp_path):
    """supervise(workers, args, command) -> a Supervisor whose workers are all READY."""
    started = []

    def _start(workers=2, args=(), command=None, **kw):
        s = Supervisor(workers, args, command, tmp=str(tmp_path), **kw)
        started.append(s)
        return s

    yield _start
    for s in started:
        s.stop()


def established_connections(pid, port):
    """TCP connections of process `pid` in state ESTABLISHED on local port `port`."""
    return established([pid], port)


def wait_until(predicate, timeout=10.0, what="condition"):
    """Polls `predicate` (a state with no event to wait on, such as a kernel socket table)."""
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def log_time(line):
    """The timestamp of a log line, in seconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z", line)
    import datetime
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def pytest_configure(config):
    # Long soaks and long scenarios of code the other tests already drive: scripts/test.sh runs
    # them on the release build only (under ASan they would repeat the same paths three times
    # slower, and keep CI within its 30 minutes).
    config.addinivalue_line("markers", "soak: release build only (a long soak, or timing the sanitizer build breaks)")


def jobs_done(journal):
    """(payload, attempt) of every job the cluster example's workers finished, from the file
    they append to (JOBS_DONE_FILE): a job-done line still in the pipe to a supervisor that is
    SIGKILLed is lost with it, though the job ran and was acknowledged."""
    try:
        with open(journal, errors="replace") as f:
            return [(m.group(1), int(m.group(2))) for line in f
                    for m in [re.match(r"job-done (\S+) \d+ node=\S+ pid=\d+ attempt=(\d+)", line)] if m]
    except FileNotFoundError:
        return []
