"""The access log (`loopfleet run --access-log PATH|-`): every request a line, written by the
worker that answered it; workers sharing a file under wrk load never interleave within a line;
a file moved away (logrotate) is reopened; `-` is the supervisor's stdout; bad paths are one
line at start-up."""
import calendar
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time

from conftest import SLOW, Wrk, binary, free_port, wait_until

FIELDS = {"time", "slot", "remote", "method", "target", "status", "bytes", "duration_ms"}


def lines_of(*paths):
    out = []
    for p in paths:
        if os.path.exists(p):
            with open(p, "rb") as f:
                out += f.read().decode().splitlines()
    return out


def get(port, target, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
    c.request("GET", target, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def test_every_request_is_one_json_line_from_its_worker_and_a_moved_file_is_reopened(supervise, tmp_path):
    log = tmp_path / "access.log"
    sup = supervise(2, ["--access-log", str(log), "--watchdog", "10s"])
    load = Wrk(sup.port, duration=int(3 * SLOW), connections=16, path="/pid")
    r = load.result()
    assert r["failed"] == 0 and r["requests"] > 1000, r["text"]
    # wrk does not count the requests still in flight when it stops; the workers answered them.
    wait_until(lambda: len(lines_of(log)) >= r["requests"], timeout=10, what="a line per request")
    time.sleep(0.5)  # one more tick: nothing else is still buffered
    lines = lines_of(log)
    assert r["requests"] <= len(lines) <= r["requests"] + 16, (len(lines), r["requests"])
    entries = [json.loads(line) for line in lines]  # two workers, one file: every line whole
    assert all(set(e) == FIELDS for e in entries), entries[0]
    assert {e["slot"] for e in entries} == {0, 1}, "both workers wrote"
    assert all(e["method"] == "GET" and e["target"] == "/pid" and e["status"] == 200 for e in entries)
    assert all(e["remote"] == "127.0.0.1" and e["duration_ms"] >= 0 for e in entries)
    now = time.time()
    stamp = calendar.timegm(time.strptime(entries[-1]["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert now - 60 * SLOW < stamp <= now + 1, entries[-1]
    pids = {str(p) for p in sup.worker_pids()}
    assert {e["bytes"] for e in entries} <= {len(p) for p in pids}  # the body the worker sent

    # An error the server answers itself, and a client's quote in the target.
    assert get(sup.port, '/nothing"here')[0] == 404
    with socket.create_connection(("127.0.0.1", sup.port), timeout=10 * SLOW) as s:
        s.sendall(b"NOT HTTP\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    wait_until(lambda: len(lines_of(log)) >= len(lines) + 2, timeout=5, what="the 404 and the 400")
    tail = [json.loads(line) for line in lines_of(log)[len(lines):]]
    assert {(e["status"], e["target"]) for e in tail} == {(404, '/nothing"here'), (400, "")}, tail

    # logrotate's default: rename, then the workers reopen the path within a second.
    os.rename(log, tmp_path / "access.log.1")
    sup.proc.send_signal(signal.SIGUSR1)  # nginx's habit: harmless here
    sup.log.wait_for(r"SIGUSR1: nothing to do")
    sent = 0

    def reopened():
        nonlocal sent
        get(sup.port, "/pid")
        sent += 1
        return log.exists() and len(lines_of(log)) > 0
    wait_until(reopened, timeout=10, what="a new access.log after the rename")
    wait_until(lambda: len(lines_of(log, tmp_path / "access.log.1")) == len(lines) + 2 + sent, timeout=5,
               what="every request after the rename in one of the two files")
    assert sup.proc.poll() is None


def test_access_log_dash_is_the_supervisors_stdout_in_the_combined_format(supervise):
    sup = supervise(1, ["--access-log", "-", "--access-log-format", "combined"])
    assert get(sup.port, "/pid", {"User-Agent": 'probe "7"', "Referer": "http://r/"})[0] == 200
    (line,) = sup.out.wait_for(r'"GET /pid HTTP/1\.1"', timeout=5)
    assert re.fullmatch(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /pid HTTP/1\.1" 200 \d+ '
                        r'"http://r/" "probe \\x227\\x22" slot=0 duration_ms=\d+\.\d{3}', line), line
    assert not any("GET /pid" in x for x in sup.log.lines), "in stdout only, not in the supervisor's log"


def test_an_access_log_nobody_can_create_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([binary("loopfleet"), "run", "--listen", f"127.0.0.1:{free_port()}", "--control",
                        str(tmp_path / "c.sock"), "--access-log", str(tmp_path / "missing" / "access.log"), "--",
                        binary("loopfleet-testapp")], capture_output=True, text=True, timeout=30 * SLOW)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"--access-log {tmp_path}/missing/access.log: cannot open it (No such file or directory)" in lines[0]
    r = subprocess.run([binary("loopfleet"), "run", "--access-log-format", "apache", "--", "true"],
                       capture_output=True, text=True, timeout=30 * SLOW)
    assert r.returncode == 2 and "is not json or combined" in r.stderr, r.stderr
