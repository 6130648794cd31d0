"""How a worker reads and writes its connections (--io): io_uring where the kernel gives it,
and epoll, said once, where it is refused (Docker's default seccomp profile, a hardened
kernel's io_uring_disabled)."""
import os
import subprocess
import sys

import pytest

from conftest import binary, get

REFUSED = [sys.executable, os.path.join(os.path.dirname(__file__), "no_io_uring.py")]


def rings(pid):
    """The io_uring instances a process holds (descriptors on io_uring's anonymous inode)."""
    out = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[io_uring]"
        except FileNotFoundError:
            pass
    return out


def io_uring_disabled():
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip() != "0"
    except FileNotFoundError:  # before Linux 6.6: no such setting
        return False


@pytest.mark.skipif(io_uring_disabled(), reason="this kernel's io_uring_disabled refuses io_uring")
def test_connections_are_on_io_uring_by_default(start):
    w = start()
    assert get(w).status == 200
    assert rings(w.proc.pid) == 1
    assert "epoll" not in w.stderr.text()


def test_where_io_uring_is_refused_the_default_serves_on_epoll_and_says_why(start):
    w = start(wrapper=REFUSED)
    w.stderr.wait_for(r"info .*connections use epoll: io_uring is not available here "
                      r"\(io_uring_setup: Operation not permitted\)")
    assert all(get(w).status == 200 for _ in range(3))
    assert rings(w.proc.pid) == 0


def test_io_uring_asked_for_where_it_is_refused_is_a_warning_and_epoll_serves(start):
    w = start(["--io", "io_uring"], wrapper=REFUSED)
    w.stderr.wait_for(r"warn .*--io io_uring: not available here \(io_uring_setup: Operation not permitted\); "
                      r"connections use epoll")
    assert get(w).status == 200
    assert rings(w.proc.pid) == 0


def test_epoll_asked_for_makes_no_ring(start):
    w = start(["--io", "epoll"])
    assert get(w).status == 200
    assert rings(w.proc.pid) == 0
    assert "not available" not in w.stderr.text()


def test_an_unknown_io_is_a_one_line_error():
    r = subprocess.run([binary("loopfleet-testapp"), "--io", "kqueue"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--io" in lines[0] and "kqueue" in lines[0], r.stderr
