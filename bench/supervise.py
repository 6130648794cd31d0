#!/usr/bin/env python3
"""Supervised hello world with N workers: loopfleet against nginx, gunicorn (aiohttp on uvloop
workers) and Node's cluster module, side by side in one run.

For each server, in turn:
  load     wrk -c64 for --duration s: requests/s, requests per server CPU-second (master and
           workers, from /proc/PID/schedstat), total RSS of the process tree, and how the 64
           keep-alive connections spread over the workers;
  kill     wrk -c64, SIGKILL one worker once all 64 connections are up: failed requests, and
           how many connections the victim held (the most a kill should cost);
  reload   wrk -c64, then the server's own reload (loopfleet reload, nginx -s reload / SIGHUP,
           gunicorn SIGHUP, a rolling cluster restart on SIGHUP): failed requests;
  only     one worker only, SIGKILL it under wrk -c64: connections refused and failed requests.

    bench/supervise.py [--workers 2] [--duration 5] [--bin build/bin] [--only loopfleet,nginx]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from loadkit import Wrk, established

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "bench", "peers")
BODY = b"Hello, World!"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    try:
        out = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        return out
    except FileNotFoundError:
        return []


def tree(pid):
    out = [pid]
    for c in children(pid):
        out += tree(c)
    return out


def kill_tree(proc):
    """SIGKILLs a process and everything under it at once (a machine lost whole), then reaps it."""
    for pid in tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def cpu_ns(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(r"VmRSS:\s+(\d+)", f.read())
                total += int(m.group(1)) if m else 0
        except FileNotFoundError:
            pass
    return total


def serving(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return BODY in data
    except OSError:
        return False


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    sys.exit(f"bench: timed out waiting for {what}")


class Server:
    """Start, find workers, reload; subclasses say how for each peer."""
    name = "?"

    def __init__(self, args, workers, workdir):
        self.args, self.workers, self.workdir = args, workers, workdir
        self.port = free_port()
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.cwd(), start_new_session=True)
        wait_for(lambda: serving(self.port) and len(self.worker_pids()) == workers, 20, f"{self.name} to serve")

    def cwd(self):
        return ROOT

    def worker_pids(self):
        return children(self.proc.pid)

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


class Loopfleet(Server):
    name = "loopfleet"
    distribution = "reuseport"

    def command(self):
        self.control = os.path.join(self.workdir, f"lf-{self.port}.sock")
        return [os.path.join(self.args.bin, "loopfleet"), "run", "--workers", str(self.workers), "--listen",
                f"127.0.0.1:{self.port}", "--control", self.control, "--name", f"bench-{self.port}",
                "--distribution", self.distribution, "--",
                os.path.join(self.args.bin, "hello")]

    def worker_pids(self):
        r = subprocess.run([os.path.join(self.args.bin, "loopfleet"), "status", "--json", "--control", self.control],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return []
        return [s["pid"] for s in json.loads(r.stdout)["slots"] if s["state"] == "ready"]

    def reload(self):
        subprocess.run([os.path.join(self.args.bin, "loopfleet"), "reload", "--control", self.control],
                       capture_output=True, check=True, timeout=60)


class LoopfleetShared(Loopfleet):
    name = "loopfleet-shared"
    distribution = "shared"


class Nginx(Server):
    name = "nginx"

    def command(self):
        conf = os.path.join(self.workdir, f"nginx-{self.port}.conf")
        w = self.workdir
        with open(conf, "w") as f:
            f.write(f"""worker_processes {self.workers};
daemon off;
pid {w}/nginx-{self.port}.pid;
error_log stderr error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  default_type text/plain;
  client_body_temp_path {w}/body; proxy_temp_path {w}/proxy; fastcgi_temp_path {w}/fcgi;
  uwsgi_temp_path {w}/uwsgi; scgi_temp_path {w}/scgi;
  server {{ listen 127.0.0.1:{self.port}; location / {{ return 200 "Hello, World!"; }} }}
}}
""")
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", w, "-c", conf, "-e", "stderr"]


class Gunicorn(Server):
    name = "gunicorn"

    def cwd(self):
        return PEERS

    def command(self):
        return ["/usr/bin/python3", "-m", "gunicorn", "-w", str(self.workers), "-k",
                "aiohttp.GunicornUVLoopWebWorker", "--bind", f"127.0.0.1:{self.port}", "--log-level", "error",
                "aiohttp_app:app"]


class NodeCluster(Server):
    name = "node-cluster"

    def command(self):
        return ["node", os.path.join(PEERS, "node_cluster.js"), str(self.port), str(self.workers)]


def run_load(cls, args, workdir):
    s = cls(args, args.workers, workdir)
    try:
        pids = tree(s.proc.pid)
        before = cpu_ns(pids)
        load = Wrk(s.port, args.duration)
        wait_for(lambda: established(tree(s.proc.pid), s.port) == 64, 10, "64 connections")
        rss = rss_kib(tree(s.proc.pid))
        spread = sorted((established([w], s.port) for w in s.worker_pids()), reverse=True)
        r = load.result()
        cpu = (cpu_ns(pids) - before) / 1e9
        return {"rps": r["rps"], "per_cpu": r["requests"] / cpu if cpu else 0, "rss_mib": rss / 1024,
                "failed": r["failed"], "spread": spread}
    finally:
        s.stop()


def run_kill(cls, args, workdir, workers):
    s = cls(args, workers, workdir)
    try:
        load = Wrk(s.port, 4)
        wait_for(lambda: established(tree(s.proc.pid), s.port) == 64, 10, "64 connections")
        victim = s.worker_pids()[-1]
        held = established([victim], s.port)
        os.kill(victim, signal.SIGKILL)
        r = load.result()
        return {"held": held, "failed": r["failed"], "refused": r["connect"]}
    finally:
        s.stop()


def run_reload(cls, args, workdir):
    s = cls(args, args.workers, workdir)
    try:
        load = Wrk(s.port, 5)
        wait_for(lambda: established(tree(s.proc.pid), s.port) == 64, 10, "64 connections")
        s.reload()
        r = load.result()
        return {"failed": r["failed"]}
    finally:
        s.stop()


def run_each(servers, only, prefix, measure):
    """measure(cls, workdir) for each server class named in `only` (comma-separated; empty:
    all), in a scratch directory removed afterwards; [(name, result)], each also on stderr."""
    if only:
        servers = [c for c in servers if c.name in only.split(",")]
    workdir = tempfile.mkdtemp(prefix=prefix)
    rows = []
    try:
        for cls in servers:
            r = measure(cls, workdir)
            rows.append((cls.name, r))
            print(f"{cls.name}: {r}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--only", default="",
                    help="comma-separated subset: loopfleet,loopfleet-shared,nginx,gunicorn,node-cluster")
    args = ap.parse_args()
    def measure(cls, workdir):
        return (run_load(cls, args, workdir), run_kill(cls, args, workdir, args.workers),
                run_reload(cls, args, workdir), run_kill(cls, args, workdir, 1))
    rows = [(name, *r) for name, r in run_each([Loopfleet, LoopfleetShared, Nginx, Gunicorn, NodeCluster], args.only,
                                               "loopfleet-supervise-", measure)]

    print(f"{args.workers} workers, wrk -t2 -c64 keep-alive, {args.duration} s load; client and servers share 2 cores")
    print(f"{'server':<17} {'req/s':>9} {'req/CPU-s':>10} {'RSS MiB':>8} {'conns/worker':>13} {'kill: failed/held':>18} "
          f"{'reload: failed':>15} {'only worker killed: refused/failed':>35}")
    for name, load, kill, reload, only in rows:
        spread = "/".join(str(n) for n in load["spread"])
        print(f"{name:<17} {load['rps']:>9.0f} {load['per_cpu']:>10.0f} {load['rss_mib']:>8.1f} {spread:>13} "
              f"{str(kill['failed']) + '/' + str(kill['held']):>18} {reload['failed']:>15} "
              f"{str(only['refused']) + '/' + str(only['failed']):>35}")
    base = {name: load["per_cpu"] for name, load, *_ in rows}
    if "loopfleet" in base:
        for name, v in base.items():
            if name != "loopfleet" and v:
                print(f"ratio loopfleet/{name}, requests per server CPU-second: {base['loopfleet'] / v:.2f}")


if __name__ == "__main__":
    main()
