#!/usr/bin/python3
"""Durable jobs end to end: loopfleet's cluster layer against Celery with a Redis broker, in one run.

  jobs/s    submit N trivial jobs, then wait until every one was handled and acknowledged:
            loopfleet on 1 node and on 3 nodes (2 workers each, `loopfleet job submit --count`),
            C++ workers (examples/cluster) and Python ones (examples/python/cluster_app.py, the
            cluster from Python), Celery 5 with 2 prefork workers (`noop.delay` in a loop);
  call      sequential round trips: a loopfleet cluster call (NATS request/reply to a worker)
            against Celery `echo.delay(x).get()` through its Redis result backend, p50/p99;
            and calls made by a worker (`GET /call-rtt`): C++ to C++, Python to Python;
  kill      2000 jobs of 20 ms each, SIGKILL one worker (and its children) mid-run, restart it,
            count the jobs that never ran (Celery with its default settings acks on receipt).

Runs with Debian's python3 (Celery comes from python3-celery).
    bench/jobs.py [--jobs 20000] [--lf-jobs 50000] [--bin build/bin]
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
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from supervise import PEERS, ROOT, free_port, tree, wait_for  # noqa: E402


def completed(lf, url):
    out = subprocess.run([lf, "job", "stats", "--nats", url], capture_output=True, text=True).stdout
    m = re.search(r"completed (\d+)", out)
    return int(m.group(1)) if m else 0


class Nodes:
    """n loopfleet nodes on this machine, each with its nats-server and 2 workers (of the
    cluster example, its Python twin, or `worker`)."""

    def __init__(self, args, n, workdir, python=False, worker=None):
        self.lf = os.path.join(args.bin, "loopfleet")
        if worker is None:
            worker = ["/usr/bin/python3", "-m", "loopfleet", "aiohttp", "cluster_app:app", "--app-dir",
                      os.path.join(ROOT, "examples", "python")] if python else [os.path.join(args.bin, "cluster-example")]
        self.http_ports = [free_port() for _ in range(n)]
        clients = [free_port() for _ in range(n)]
        routes = [free_port() for _ in range(n)]
        self.url = f"nats://127.0.0.1:{clients[0]}"
        self.procs, self.logs = [], []
        for i in range(n):
            cmd = [self.lf, "run", "--workers", "2", "--listen", f"127.0.0.1:{self.http_ports[i]}", "--control",
                   os.path.join(workdir, f"n{i}-{clients[i]}.sock"), "--node", f"n{i + 1}", "--nats-listen",
                   f"127.0.0.1:{clients[i]}", "--data-dir", os.path.join(workdir, f"data-{clients[i]}")]
            if n > 1:
                cmd += ["--cluster-listen", f"127.0.0.1:{routes[i]}", "--join",
                        ",".join(f"127.0.0.1:{p}" for j, p in enumerate(routes) if j != i)]
            else:
                cmd += ["--cluster"]
            log = os.path.join(workdir, f"n{i}-{clients[i]}.log")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(cmd + ["--", *worker],
                                               stdout=subprocess.DEVNULL, stderr=open(log, "w")))
        wait_for(lambda: all(open(l).read().count("cluster: connected") >= 2 and "joined" in open(l).read()
                             for l in self.logs), 90, "the nodes to join")
        if n > 1:  # the streams start with the replicas up and grow to 3; measure once they have
            wait_for(lambda: any(re.search(r"stream LOOPFLEET_JOBS (now has|with) 3 replicas", open(l).read())
                                 for l in self.logs), 90, "the jobs stream to have 3 replicas")

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def worker_calls(nodes):
    """p50/p99 of 3000 sequential calls made by a worker of node 1 to "whoami" (any worker)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{nodes.http_ports[0]}/call-rtt?n=3000", timeout=120) as r:
        return json.loads(r.read())


def job_rate(nodes, count):
    """One run: `count` noop jobs submitted with `job submit --count`, until all are completed; jobs/s."""
    before = completed(nodes.lf, nodes.url)
    began = time.monotonic()
    subprocess.run([nodes.lf, "job", "submit", "noop", "x", "--count", str(count), "--nats", nodes.url],
                   check=True, capture_output=True, timeout=300)
    # Each look is a `loopfleet job stats` process, whose CPU the jobs then lack: look again
    # after half the time the rest should take at the rate so far (at most 0.5 s, at least
    # 50 ms), so the looks are few and the end is seen late by 50 ms or so.
    deadline = time.monotonic() + 300
    while (done := completed(nodes.lf, nodes.url) - before) < count:
        now = time.monotonic()
        if now > deadline:
            sys.exit("bench: timed out waiting for jobs to complete")
        rest = (count - done) / max(done / (now - began), 1.0)
        time.sleep(min(0.5, max(0.05, rest / 2)))
    return count / (time.monotonic() - began)


def loopfleet_jobs(args, n, workdir, python=False):
    """The median of 3 runs of args.lf_jobs jobs (one run lasts a second or two: one would be noisy)."""
    nodes = Nodes(args, n, workdir, python)
    try:
        rate = sorted(job_rate(nodes, args.lf_jobs) for _ in range(3))[1]
        rtt = json.loads(subprocess.run([os.path.join(args.bin, "bench-call-rtt"), nodes.url, "3000"],
                                        capture_output=True, text=True, check=True).stdout)
        return rate, rtt, worker_calls(nodes)
    finally:
        nodes.stop()


def loopfleet_kill(args, workdir):
    nodes = Nodes(args, 1, workdir)
    try:
        subprocess.run([nodes.lf, "job", "submit", "work", "job:20", "--count", "2000", "--nats", nodes.url],
                       check=True, capture_output=True, timeout=300)
        wait_for(lambda: completed(nodes.lf, nodes.url) >= 300, 60, "300 jobs")
        status = json.loads(subprocess.run([nodes.lf, "status", "--json", "--control",
                                            nodes.procs[0].args[nodes.procs[0].args.index("--control") + 1]],
                                           capture_output=True, text=True).stdout)
        os.kill(status["slots"][0]["pid"], signal.SIGKILL)  # the supervisor restarts it
        wait_for(lambda: completed(nodes.lf, nodes.url) >= 2000, 120, "2000 jobs")
        log = open(nodes.logs[0]).read()
        ran = {m for m in re.findall(r"job-done (\S+) ", log)}
        return 2000 - len(ran), len(re.findall(r"job-done ", log)) - len(ran)
    finally:
        nodes.stop()


class Celery:
    def __init__(self, workdir):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                                       "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self._pingable(), 10, "redis")
        os.environ["BENCH_REDIS"] = self.url
        sys.path.insert(0, PEERS)
        import celery_app
        self.app = celery_app
        self.worker = None
        self.start_worker()

    def _pingable(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def start_worker(self):
        self.worker = subprocess.Popen(["/usr/bin/python3", "-m", "celery", "-A", "celery_app", "worker", "-c", "2",
                                        "--loglevel", "warning", "--without-gossip", "--without-mingle"], cwd=PEERS,
                                       env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        wait_for(lambda: self.app.app.control.ping(timeout=0.5), 60, "the celery worker")

    def done(self):
        return self.app.done.scard("done")

    def stop(self):
        for p in (self.worker, self.redis):
            try:
                os.killpg(p.pid, signal.SIGKILL) if p is self.worker else p.kill()
            except ProcessLookupError:
                pass
            p.wait()


def celery_all(args, workdir):
    c = Celery(workdir)
    try:
        c.app.done.delete("done")
        began = time.monotonic()
        for i in range(args.jobs):
            c.app.noop.delay(i)
        wait_for(lambda: c.done() >= args.jobs, 600, "celery jobs")
        rate = args.jobs / (time.monotonic() - began)
        times = []
        for i in range(500):
            t0 = time.perf_counter()
            c.app.echo.delay(i).get(timeout=5)
            times.append((time.perf_counter() - t0) * 1e6)
        times.sort()
        rtt = {"p50_us": times[len(times) // 2], "p99_us": times[len(times) * 99 // 100]}
        # Kill: the worker's main process and its pool, mid-run; then a new worker.
        c.app.done.delete("done")
        for i in range(2000):
            c.app.slow.delay(i)
        wait_for(lambda: c.done() >= 300, 120, "300 celery jobs")
        os.killpg(c.worker.pid, signal.SIGKILL)
        c.worker.wait()
        c.start_worker()
        last, still = -1, 0
        while still < 30:  # until nothing more completes for 3 s
            now = c.done()
            still = still + 1 if now == last else 0
            last = now
            time.sleep(0.1)
        return rate, rtt, 2000 - c.done()
    finally:
        c.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=20000, help="jobs for Celery")
    ap.add_argument("--lf-jobs", type=int, default=50000, help="jobs per loopfleet run (3 runs, median)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="loopfleet-jobs-")
    try:
        one, rtt, from_cpp = loopfleet_jobs(args, 1, workdir)
        three, rtt3, _ = loopfleet_jobs(args, 3, workdir)
        py_one, py_rtt, from_py = loopfleet_jobs(args, 1, workdir, python=True)
        py_three, py_rtt3, _ = loopfleet_jobs(args, 3, workdir, python=True)
        lf_lost, lf_dupes = loopfleet_kill(args, workdir)
        celery_rate, celery_rtt, celery_lost = celery_all(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"trivial jobs end to end (submit -> handled -> acked): loopfleet median of 3 runs of {args.lf_jobs}, "
          f"Celery {args.jobs}; 2 workers per node; one 2-core machine")
    print(f"{'system':<28} {'jobs/s':>9} {'call p50 us':>12} {'call p99 us':>12} {'kill: lost of 2000':>19}")
    print(f"{'loopfleet, 1 node':<28} {one:>9.0f} {rtt['p50_us']:>12.0f} {rtt['p99_us']:>12.0f} "
          f"{str(lf_lost) + ' (dupes ' + str(lf_dupes) + ')':>19}")
    print(f"{'loopfleet, 3 nodes':<28} {three:>9.0f} {rtt3['p50_us']:>12.0f} {rtt3['p99_us']:>12.0f} {'':>19}")
    print(f"{'loopfleet Python, 1 node':<28} {py_one:>9.0f} {py_rtt['p50_us']:>12.0f} {py_rtt['p99_us']:>12.0f} "
          f"{'':>19}")
    print(f"{'loopfleet Python, 3 nodes':<28} {py_three:>9.0f} {py_rtt3['p50_us']:>12.0f} {py_rtt3['p99_us']:>12.0f} "
          f"{'':>19}")
    print(f"{'Celery 5.2 + Redis':<28} {celery_rate:>9.0f} {celery_rtt['p50_us']:>12.0f} "
          f"{celery_rtt['p99_us']:>12.0f} {celery_lost:>19}")
    print(f"ratio jobs/s loopfleet/Celery: 1 node {one / celery_rate:.1f}, 3 nodes {three / celery_rate:.1f}; "
          f"Python handlers 1 node {py_one / celery_rate:.1f}, 3 nodes {py_three / celery_rate:.1f}")
    print("calls made by a worker (GET /call-rtt, 3000 sequential, 1 node), p50/p99 us: "
          f"C++ -> C++ {from_cpp['p50_us']:.0f}/{from_cpp['p99_us']:.0f}, "
          f"Python -> Python {from_py['p50_us']:.0f}/{from_py['p99_us']:.0f}")
    sys.stdout.flush()
    os._exit(0)  # at a normal exit Celery's leftover result objects try to reach the stopped Redis


if __name__ == "__main__":
    main()
