#!/usr/bin/env python3
"""Hello-world HTTP on one worker: loopfleet against nginx, side by side in one run.

Both servers run at once on loopback, pinned to CPU 0; wrk runs pinned to CPU 1 and the two
servers take turns (the order alternates each round). The figure that matters on a shared,
virtual 2-core machine is requests per server CPU-second: it divides out CPU steal and the
noise of the client sharing the box. Server CPU time comes from /proc/PID/schedstat (ns).

    bench/http_hello.py [--rounds 3] [--duration 5] [--connections 64] [--path /] [--bin build/bin]
    bench/http_hello.py --access-log json|combined [...]
    bench/http_hello.py --sweep [--rounds 1] [--duration 5]
    bench/http_hello.py --idle 5000
    bench/http_hello.py --syscalls [--duration 5]
    bench/http_hello.py --tail --connections 10000 [--rounds 3] [--duration 10]

Prints one row per server per round, then the totals and the ratio loopfleet / nginx. With
--access-log the peer is hello itself: hello with its access log on (a file, every request a
line) against hello with it off, in the same alternating rounds; the ratio is on / off.

--sweep runs the same comparison at 64, 256, 1,000, 4,000 and 10,000 connections, for `/`
and for `/json` (hello's Boost.JSON endpoint; nginx returns the same bytes as a constant), and
prints one line per concurrency and path. --idle N opens N keep-alive connections to each
server, each sends one request and reads its answer, then stays open: the server's RSS grown
per connection is what an idle keep-alive connection costs it. --syscalls counts each server's
system calls per request (perf's syscall tracepoints, which unlike strace do not slow the
server down) at 64, 1,000 and 10,000 connections; it needs perf (linux-perf) and root. --io
picks how loopfleet's hello reads and writes its connections (io_uring, its default where the
kernel gives it, or epoll).

--tail prints each run's latency out to the slowest request (p50, p90, p99, p99.9, max) for
loopfleet on its --io, loopfleet on epoll and nginx, in alternating rounds: where a server
leaves a few connections waiting, the median and even p99 do not show it.

The descriptor limit is raised to its hard limit for this process, wrk and both servers, and
nginx's worker_connections follows it, so 10,000 connections fit everywhere.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = "Hello, World!"
JSON_BODY = '{"message":"Hello, World!"}'
SWEEP = (64, 256, 1000, 4000, 10000)


def raise_fd_limit():
    """Soft descriptor limit up to the hard one; children (servers, wrk) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(port, proc, name, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: {name} exited with code {proc.returncode} before serving")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if BODY.encode() in s.recv(4096):
                    return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: {name} did not serve on 127.0.0.1:{port} within {timeout} s")


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def start_nginx(port, workdir, fds, conns):
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log stderr warn;
worker_rlimit_nofile {fds};
events {{ worker_connections {conns}; }}
http {{
  access_log off;
  default_type text/plain;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "{BODY}"; }}
    location = /json {{ default_type application/json; return 200 '{JSON_BODY}'; }}
  }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(["taskset", "-c", "0", nginx, "-p", workdir, "-c", conf, "-e", "stderr"])
    wait_serving(port, proc, "nginx")
    workers = children(proc.pid)
    if len(workers) != 1:
        sys.exit(f"bench: expected one nginx worker, found {workers}")
    return proc, workers[0]


def start_loopfleet(port, bindir, conns, env=None, args=()):
    exe = os.path.join(bindir, "hello")
    if not os.access(exe, os.X_OK):
        sys.exit(f"bench: {exe} not found; build first (scripts/build.sh)")
    # The access log's variables are what `loopfleet run --access-log` sets for its workers.
    proc = subprocess.Popen(["taskset", "-c", "0", exe, "--listen", f"127.0.0.1:{port}",
                             "--max-connections", str(max(10000, conns)), *args],
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    wait_serving(port, proc, "loopfleet hello")
    return proc, proc.pid


def run_wrk(port, duration, connections, path="/"):
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_us = float(p99.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[p99.group(2)]
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return total, rps, p99_us, (errors.group(1) if errors else ""), int(non2xx.group(1)) if non2xx else 0


TAIL_LUA = """done = function(summary, latency, requests)
  io.write(string.format("TAIL %.0f %.0f %.0f %.0f %.0f %.0f\\n", summary.requests, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def tail_latency(servers, connections, rounds, duration, workdir):
    """Latency percentiles out to the slowest request, per server and round (wrk's Lua hook)."""
    script = os.path.join(workdir, "tail.lua")
    with open(script, "w") as f:
        f.write(TAIL_LUA)
    print(f"wrk -t1 -c{connections} -d{duration}s /, keep-alive, {rounds} rounds; servers on CPU 0, wrk on CPU 1; "
          "latency in ms")
    print(f"{'round':>5} {'server':<18} {'requests':>9} {'p50':>6} {'p90':>6} {'p99':>6} {'p99.9':>6} {'max':>6}")
    names = list(servers)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            port, _ = servers[name]
            out = subprocess.run(
                ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
                 "-s", script, f"http://127.0.0.1:{port}/"],
                capture_output=True, text=True, timeout=duration + 30, check=True).stdout
            n, *us = (float(x) for x in re.search(r"TAIL (.*)", out).group(1).split())
            print(f"{r + 1:>5} {name:<18} {n:>9.0f} " + " ".join(f"{u / 1000:>6.0f}" for u in us), flush=True)


SYSCALLS = ("recvfrom", "read", "sendto", "writev", "write", "epoll_wait", "epoll_ctl", "accept", "accept4",
            "ioctl", "setsockopt", "close", "io_uring_enter")


def syscalls_per_request(servers, duration):
    print(f"system calls per request, wrk -t1 -cN -d{duration}s /, perf's syscall tracepoints on the server")
    print(f"{'conns':>6} {'server':<10} " + " ".join(f"{n:>10}" for n in SYSCALLS))
    events = ",".join(f"syscalls:sys_enter_{n}" for n in SYSCALLS)
    for c in (64, 1000, 10000):
        for name, (port, pid) in servers.items():
            out = os.path.join(tempfile.gettempdir(), f"loopfleet-perf-{pid}.csv")
            perf = subprocess.Popen(["perf", "stat", "-x,", "-e", events, "-p", str(pid), "-o", out])
            time.sleep(0.3)  # perf attached
            total, *_ = run_wrk(port, duration, c)
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=30)
            counts = {}
            with open(out) as f:
                for row in f:
                    cols = row.strip().split(",")
                    if len(cols) > 2 and cols[2].startswith("syscalls:sys_enter_") and cols[0].isdigit():
                        counts[cols[2][len("syscalls:sys_enter_"):]] = int(cols[0])
            os.unlink(out)
            print(f"{c:>6} {name:<10} " + " ".join(f"{counts.get(n, 0) / total:>10.3f}" for n in SYSCALLS), flush=True)


def compare(servers, subject, peer, connections, path, rounds, duration, rows=True):
    """Alternating wrk rounds against each server; returns per server (req/CPU-s, median p99 us,
    failures, requests)."""
    totals = {name: [0, 0.0, [], 0] for name in servers}  # requests, cpu seconds, p99s, failures
    if rows:
        print(f"wrk -t1 -c{connections} -d{duration}s {path}, keep-alive, {rounds} rounds; "
              f"servers on CPU 0, wrk on CPU 1")
        print(f"{'round':>5} {'server':<10} {'req/s':>10} {'p99 us':>8} {'CPU s':>6} {'req/CPU-s':>10} {'errors':>8}")
    for rnd in range(1, rounds + 1):
        order = list(servers) if rnd % 2 else list(reversed(servers))
        for name in order:
            port, pid = servers[name]
            before = cpu_ns(pid)
            total, rps, p99, errors, non2xx = run_wrk(port, duration, connections, path)
            cpu = (cpu_ns(pid) - before) / 1e9
            totals[name][0] += total
            totals[name][1] += cpu
            totals[name][2].append(p99)
            failed = sum(int(n) for n in re.findall(r"\d+", errors)) + non2xx
            totals[name][3] += failed
            if rows:
                bad = errors or (f"{non2xx} non-2xx" if non2xx else "0")
                print(f"{rnd:>5} {name:<10} {rps:>10.0f} {p99:>8.0f} {cpu:>6.2f} {total / cpu:>10.0f} {bad:>8}")
    return {name: (req / cpu, sorted(p99s)[len(p99s) // 2], failed, req)
            for name, (req, cpu, p99s, failed) in totals.items()}


def hold_idle(port, n):
    """n connections that each sent one keep-alive request and read its answer."""
    held = []
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(request)
        got = b""
        while BODY.encode() not in got:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit(f"bench: the server on port {port} closed an idle-mode connection")
            got += chunk
        held.append(s)
    return held


def idle(servers, n):
    print(f"{n} idle keep-alive connections per server (each sent one request and read its answer)")
    print(f"{'server':<10} {'RSS before KiB':>15} {'RSS after KiB':>14} {'bytes per connection':>21}")
    for name, (port, pid) in servers.items():
        before = rss_kib(pid)
        held = hold_idle(port, n)
        time.sleep(0.5)  # the last connections' answers were read; let the server finish its step
        after = rss_kib(pid)
        print(f"{name:<10} {before:>15} {after:>14} {(after - before) * 1024 / n:>21.0f}")
        for s in held:
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk per server per round")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--path", default="/", choices=["/", "/json"])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--access-log", choices=["json", "combined"],
                    help="compare hello with its access log on (to a file) against hello with it off")
    ap.add_argument("--sweep", action="store_true",
                    help=f"connections {', '.join(map(str, SWEEP))}, paths / and /json: one line each")
    ap.add_argument("--idle", type=int, metavar="N", help="RSS per idle keep-alive connection, N connections")
    ap.add_argument("--syscalls", action="store_true", help="system calls per request (perf), 64 to 10,000 connections")
    ap.add_argument("--tail", action="store_true",
                    help="latency out to the slowest request: loopfleet (--io), loopfleet on epoll, nginx")
    ap.add_argument("--io", choices=["epoll", "io_uring"], default="io_uring", help="loopfleet's --io")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found; run scripts/install-deps.sh")
    fds = raise_fd_limit()
    need = max(SWEEP) if args.sweep or args.syscalls else (args.idle or args.connections)
    if fds < need + 64:
        sys.exit(f"bench: the descriptor limit is {fds} (hard); {need + 64} are needed")
    conns = max(1024, need + need // 10 + 128)  # nginx's worker_connections (it allocates them at start) and our limit

    workdir = tempfile.mkdtemp(prefix="loopfleet-bench-")
    procs = []
    try:
        lf_port, ng_port = free_port(), free_port()
        log_file = os.path.join(workdir, "access.log")
        if args.access_log:
            subject, peer = "log on", "log off"
            on_proc, on_pid = start_loopfleet(lf_port, args.bin, conns, {"LOOPFLEET_ACCESS_LOG": log_file,
                                                                       "LOOPFLEET_ACCESS_LOG_FORMAT": args.access_log})
            procs.append(on_proc)
            off_proc, off_pid = start_loopfleet(ng_port, args.bin, conns)
            procs.append(off_proc)
            servers = {subject: (lf_port, on_pid), peer: (ng_port, off_pid)}
        else:
            subject, peer = "loopfleet", "nginx"
            lf_proc, lf_pid = start_loopfleet(lf_port, args.bin, conns, args=["--io", args.io])
            procs.append(lf_proc)
            ng_proc, ng_pid = start_nginx(ng_port, workdir, fds, conns)
            procs.append(ng_proc)
            servers = {subject: (lf_port, lf_pid), peer: (ng_port, ng_pid)}

        if args.idle:
            idle(servers, args.idle)
            return
        if args.tail:
            ep_port = free_port()
            ep_proc, ep_pid = start_loopfleet(ep_port, args.bin, conns, args=["--io", "epoll"])
            procs.append(ep_proc)
            tail_latency({f"loopfleet {args.io}": servers[subject], "loopfleet epoll": (ep_port, ep_pid),
                          "nginx": servers[peer]}, args.connections, args.rounds, args.duration, workdir)
            return
        if args.syscalls:
            syscalls_per_request(servers, args.duration)
            return
        if args.sweep:
            print(f"wrk -t1 -dN keep-alive, {args.rounds} round(s) of {args.duration} s per server and line; "
                  f"servers on CPU 0, wrk on CPU 1; req/CPU-s = requests per server CPU-second")
            print(f"{'conns':>6} {'path':<6} {'loopfleet':>10} {'nginx':>10} {'ratio':>6} "
                  f"{'p99 lf us':>10} {'p99 ng us':>10} {'lf RSS MiB':>11} {'failed':>7}")
            hello = {}
            for c in SWEEP:
                for path in ("/", "/json"):
                    r = compare(servers, subject, peer, c, path, args.rounds, args.duration, rows=False)
                    (lf, lf99, lf_bad, _), (ng, ng99, ng_bad, _) = r[subject], r[peer]
                    if path == "/":
                        hello[c] = lf
                    rss = rss_kib(servers[subject][1]) / 1024
                    note = f"  (json/hello {lf / hello[c]:.2f})" if path == "/json" else ""
                    print(f"{c:>6} {path:<6} {lf:>10.0f} {ng:>10.0f} {lf / ng:>6.2f} {lf99:>10.0f} {ng99:>10.0f} "
                          f"{rss:>11.1f} {lf_bad + ng_bad:>7}{note}", flush=True)
            print(f"\npeak RSS MiB: loopfleet {peak_rss_kib(servers[subject][1]) / 1024:.1f}, "
                  f"nginx {peak_rss_kib(servers[peer][1]) / 1024:.1f}")
            return

        result = compare(servers, subject, peer, args.connections, args.path, args.rounds, args.duration)
        print()
        print(f"{'server':<10} {'req/CPU-s':>10} {'median p99 us':>14} {'peak RSS MiB':>13}")
        for name, (port, pid) in servers.items():
            eff, p99, _, _ = result[name]
            rss = peak_rss_kib(pid) / 1024
            print(f"{name:<10} {eff:>10.0f} {p99:>14.0f} {rss:>13.1f}")
        print(f"\nratio {subject}/{peer}, requests per server CPU-second: {result[subject][0] / result[peer][0]:.2f}")
        if args.access_log:
            time.sleep(0.5)  # the last tick's lines
            with open(log_file, "rb") as f:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
            print(f"access log ({args.access_log}): {lines} lines, {os.path.getsize(log_file) / 1e6:.0f} MB for "
                  f"{result[subject][3]} requests counted by wrk (plus the readiness probe)")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
