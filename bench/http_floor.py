#!/usr/bin/env python3
"""How close loopfleet's HTTP server is to the floor: the least a server can spend per request
on epoll, and on io_uring, measured beside nginx in the same run. loopfleet runs twice: on
with --io epoll and with --io io_uring (the default where the kernel gives it).

The floors are bench/floor/hello_epoll.c and hello_uring.c, compiled here with gcc (liburing
for the others; "uring recv" is the io_uring one sending with the send system call):
single-threaded servers that do nothing but answer each request wrk sends with
a fixed response. They are not servers anyone should run; they show what the kernel interface
costs when the server's own code costs nothing. Same method as bench/http_hello.py: everything
pinned to CPU 0, wrk -t1 on CPU 1, servers taking turns (the order reversed each round), the
figure requests per server CPU-second over all the rounds (http_hello.compare).

    bench/http_floor.py [--rounds 2] [--duration 4] [--connections 64,1000,10000] [--bin build/bin]
"""
import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import http_hello as hh

HERE = os.path.dirname(os.path.abspath(__file__))


def build_floors(out):
    """Compiles the floor servers into `out`; exits with the fix when a compiler or liburing is missing."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        sys.exit("bench: no C compiler: run scripts/install-deps.sh")
    if not os.path.exists("/usr/include/liburing.h"):
        sys.exit("bench: liburing's header is missing: run scripts/install-deps.sh (liburing-dev)")
    built = {}
    for name, source, flags in (("epoll", "epoll", []), ("uring", "uring", ["-luring"]),
                                ("uring recv", "uring", ["-DSEND_BY_SYSCALL", "-luring"])):
        exe = os.path.join(out, f"hello_{name.replace(' ', '_')}")
        subprocess.run([cc, "-O2", "-o", exe, os.path.join(HERE, "floor", f"hello_{source}.c"), *flags], check=True)
        built[name] = exe
    return built


def start_floor(exe, name):
    port = hh.free_port()
    proc = subprocess.Popen(["taskset", "-c", "0", exe, str(port)])
    hh.wait_serving(port, proc, name)
    return proc, port


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--connections", default="64,1000,10000")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(HERE), "build", "bin"))
    a = ap.parse_args()
    try:
        conns = [int(c) for c in a.connections.split(",")]
    except ValueError:
        sys.exit(f"bench: --connections takes numbers separated by commas, not {a.connections!r}")
    fds = hh.raise_fd_limit()
    if max(conns) + 100 > fds:
        sys.exit(f"bench: {max(conns)} connections need more descriptors than the limit allows ({fds})")
    work = tempfile.mkdtemp(prefix="loopfleet-floor-")
    floors = build_floors(work)
    procs, servers = [], {}
    try:
        port = hh.free_port()
        room = max(1024, max(conns) + max(conns) // 10 + 128)  # as http_hello.py sizes worker_connections
        proc, pid = hh.start_nginx(port, work, fds, room)
        procs.append(proc)
        servers["nginx"] = (port, pid)
        port = hh.free_port()
        proc, pid = hh.start_loopfleet(port, a.bin, room, args=["--io", "epoll"])
        procs.append(proc)
        servers["loopfleet"] = (port, pid)
        port = hh.free_port()
        proc, pid = hh.start_loopfleet(port, a.bin, room, args=["--io", "io_uring"])
        procs.append(proc)
        servers["loopfleet io_uring"] = (port, pid)
        for name, exe in floors.items():
            proc, port = start_floor(exe, f"the {name} floor")
            procs.append(proc)
            servers[f"{name} floor"] = (port, proc.pid)
        print(f"kernel {platform.release()}")  # it sets most of a request's cost: every run records it
        print(f"requests per server CPU-second, wrk -t1 -cN -d{a.duration}s /, over {a.rounds} rounds; "
              "ratio to nginx")
        print(f"{'conns':>6} " + " ".join(f"{n:>21}" for n in servers))
        for c in conns:
            got = hh.compare(servers, "loopfleet", "nginx", c, "/", a.rounds, a.duration, rows=False)
            if failed := {name: r[2] for name, r in got.items() if r[2]}:
                sys.exit(f"bench: failed requests at {c} connections: {failed}")
            base = got["nginx"][0]
            cells = [f"{rate:>9,.0f} x{rate / base:.2f} {p99 / 1000:5.1f}ms" for rate, p99, _, _ in got.values()]
            print(f"{c:>6} " + " ".join(f"{x:>21}" for x in cells), flush=True)
        print("each cell: req per CPU-s, ratio to nginx, median p99")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
