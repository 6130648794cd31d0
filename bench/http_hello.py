#!/usr/bin/env python3
"""Hello-world HTTP on one worker: loopfleet against nginx, side by side in one run.

Both servers run at once on loopback, pinned to CPU 0; wrk runs pinned to CPU 1 and the two
servers take turns (the order alternates each round). The figure that matters on a shared,
virtual 2-core machine is requests per server CPU-second: it divides out CPU steal and the
noise of the client sharing the box. Server CPU time comes from /proc/PID/schedstat (ns).

    bench/http_hello.py [--rounds 3] [--duration 5] [--connections 64] [--bin build/bin]
    bench/http_hello.py --access-log json|combined [...]

Prints one row per server per round, then the totals and the ratio loopfleet / nginx. With
--access-log the peer is hello itself: hello with its access log on (a file, every request a
line) against hello with it off, in the same alternating rounds; the ratio is on / off.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = "Hello, World!"


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


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def start_nginx(port, workdir):
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
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


def start_loopfleet(port, bindir, env=None):
    exe = os.path.join(bindir, "hello")
    if not os.access(exe, os.X_OK):
        sys.exit(f"bench: {exe} not found; build first (scripts/build.sh)")
    # The access log's variables are what `loopfleet run --access-log` sets for its workers.
    proc = subprocess.Popen(["taskset", "-c", "0", exe, "--listen", f"127.0.0.1:{port}"],
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    wait_serving(port, proc, "loopfleet hello")
    return proc, proc.pid


def run_wrk(port, duration, connections):
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_us = float(p99.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[p99.group(2)]
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return total, rps, p99_us, (errors.group(1) if errors else ""), int(non2xx.group(1)) if non2xx else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk per server per round")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--access-log", choices=["json", "combined"],
                    help="compare hello with its access log on (to a file) against hello with it off")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found; run scripts/install-deps.sh")

    workdir = tempfile.mkdtemp(prefix="loopfleet-bench-")
    procs = []
    try:
        lf_port, ng_port = free_port(), free_port()
        log_file = os.path.join(workdir, "access.log")
        if args.access_log:
            subject, peer = "log on", "log off"
            on_proc, on_pid = start_loopfleet(lf_port, args.bin, {"LOOPFLEET_ACCESS_LOG": log_file,
                                                                  "LOOPFLEET_ACCESS_LOG_FORMAT": args.access_log})
            procs.append(on_proc)
            off_proc, off_pid = start_loopfleet(ng_port, args.bin)
            procs.append(off_proc)
            servers = {subject: (lf_port, on_pid), peer: (ng_port, off_pid)}
        else:
            subject, peer = "loopfleet", "nginx"
            lf_proc, lf_pid = start_loopfleet(lf_port, args.bin)
            procs.append(lf_proc)
            ng_proc, ng_pid = start_nginx(ng_port, workdir)
            procs.append(ng_proc)
            servers = {subject: (lf_port, lf_pid), peer: (ng_port, ng_pid)}
        totals = {name: [0, 0.0, []] for name in servers}  # requests, cpu seconds, p99s

        print(f"wrk -t1 -c{args.connections} -d{args.duration}s, keep-alive, {args.rounds} rounds; "
              f"servers on CPU 0, wrk on CPU 1")
        print(f"{'round':>5} {'server':<10} {'req/s':>10} {'p99 us':>8} {'CPU s':>6} {'req/CPU-s':>10} {'errors':>8}")
        for rnd in range(1, args.rounds + 1):
            order = list(servers) if rnd % 2 else list(reversed(servers))
            for name in order:
                port, pid = servers[name]
                before = cpu_ns(pid)
                total, rps, p99, errors, non2xx = run_wrk(port, args.duration, args.connections)
                cpu = (cpu_ns(pid) - before) / 1e9
                totals[name][0] += total
                totals[name][1] += cpu
                totals[name][2].append(p99)
                bad = errors or (f"{non2xx} non-2xx" if non2xx else "0")
                print(f"{rnd:>5} {name:<10} {rps:>10.0f} {p99:>8.0f} {cpu:>6.2f} {total / cpu:>10.0f} {bad:>8}")

        print()
        print(f"{'server':<10} {'req/CPU-s':>10} {'median p99 us':>14} {'peak RSS MiB':>13}")
        eff = {}
        for name, (port, pid) in servers.items():
            req, cpu, p99s = totals[name]
            eff[name] = req / cpu
            rss = peak_rss_kib(pid) / 1024
            print(f"{name:<10} {eff[name]:>10.0f} {sorted(p99s)[len(p99s) // 2]:>14.0f} {rss:>13.1f}")
        print(f"\nratio {subject}/{peer}, requests per server CPU-second: {eff[subject] / eff[peer]:.2f}")
        if args.access_log:
            time.sleep(0.5)  # the last tick's lines
            with open(log_file, "rb") as f:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
            print(f"access log ({args.access_log}): {lines} lines, {os.path.getsize(log_file) / 1e6:.0f} MB for "
                  f"{totals[subject][0]} requests counted by wrk (plus the readiness probe)")
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
