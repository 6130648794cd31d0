#!/usr/bin/python3
"""Durable workflows and the jobs engine, each against its peer, in one run.

  steps/s      W workflows of 5 steps that do nothing (examples/workflow "steps", input 5:0),
               started on node 1 and awaited there: loopfleet on 1 node and 3 nodes (2 workers
               each), against W Celery chains of the same 5 steps (Celery 5 + Redis, 2 prefork
               workers): each step a task that gets the previous one's result;
  per step     one workflow of 500 empty steps, each timed inside the coroutine (a step is one
               journal append, replicated on 3 nodes); Celery: a chain of 500 tasks, the gap
               between consecutive tasks' start times;
  jobs/s       N trivial jobs submitted and acknowledged (as bench/jobs.py), against the engine
               underneath with nothing of loopfleet: bench-jetstream-raw publishes N messages
               to a work-queue stream and two consumers fetch and ack them, on the same
               nats-servers.

Runs with Debian's python3 (Celery comes from python3-celery).
    bench/workflows.py [--workflows 10000] [--chains 500] [--jobs 50000] [--nodes 1,3] [--no-jobs]
                       [--bin build/bin]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jobs import Celery, Nodes, job_rate  # noqa: E402
from supervise import ROOT, wait_for  # noqa: E402

STEPS = 5


def get(port, path, timeout=300):
    """The body, also of an error status (the example answers 503 with the reason)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        return e.read().decode()


def median(xs):
    return sorted(xs)[len(xs) // 2]


def loopfleet_workflows(args, n, workdir):
    nodes = Nodes(args, n, workdir, worker=[os.path.join(args.bin, "workflow-example")])
    try:
        port = nodes.http_ports[0]
        # The workers create their task consumers as they start: until then a start is refused.
        wait_for(lambda: get(port, "/start-many?workflow=steps&prefix=warm&n=1&input=1:0").startswith("started"), 60,
                 "the workflow consumers")
        get(port, "/results?prefix=warm&n=1")
        rates = []
        for r in range(3):
            began = time.monotonic()
            out = get(port, f"/start-many?workflow=steps&prefix=r{r}-&n={args.workflows}&input={STEPS}:0")
            assert out.startswith("started"), out
            results = get(port, f"/results?prefix=r{r}-&n={args.workflows}")
            took = time.monotonic() - began
            bad = [line for line in results.splitlines() if not line.endswith("sum=55")]
            assert not bad and len(results.splitlines()) == args.workflows, bad[:3]
            rates.append(args.workflows * STEPS / took)
        get(port, "/start-many?workflow=latency&prefix=lat&n=1&input=500")
        lat = get(port, "/results?prefix=lat&n=1").split()
        p50, p99 = (float(x.split("=")[1]) for x in lat[1:3])
        return median(rates), p50, p99
    finally:
        nodes.stop()


def loopfleet_and_raw_jobs(args, n, workdir):
    nodes = Nodes(args, n, workdir)
    try:
        lf, raw = [], []
        for _ in range(3):
            lf.append(job_rate(nodes, args.jobs))
            out = subprocess.run([os.path.join(args.bin, "bench-jetstream-raw"), nodes.url, str(args.jobs),
                                  str(min(n, 3))], capture_output=True, text=True, timeout=300, check=True).stdout
            raw.append(json.loads(out)["jobs_per_s"])
        return median(lf), median(raw)
    finally:
        nodes.stop()


def celery_chains(args, workdir):
    from celery import chain
    c = Celery(workdir)
    try:
        app = c.app
        app.done.delete("chains")
        began = time.monotonic()
        for w in range(args.chains):
            chain(app.step.s(0, 1), *[app.step.s(i) for i in range(2, STEPS)], app.step.s(STEPS, w)).delay()
        wait_for(lambda: app.done.scard("chains") >= args.chains, 600, "celery chains")
        rate = args.chains * STEPS / (time.monotonic() - began)
        app.done.delete("ticks")
        chain(app.tick.s(0, 0), *[app.tick.s(i) for i in range(1, 500)]).delay()
        wait_for(lambda: app.done.llen("ticks") >= 500, 600, "the 500-task chain")
        ticks = [float(t) for t in app.done.lrange("ticks", 0, -1)]
        gaps = sorted((b - a) * 1e6 for a, b in zip(ticks, ticks[1:]))
        return rate, gaps[len(gaps) // 2], gaps[len(gaps) * 99 // 100]
    finally:
        c.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workflows", type=int, default=10000)
    p.add_argument("--chains", type=int, default=500)
    p.add_argument("--jobs", type=int, default=50000)
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    p.add_argument("--nodes", default="1,3", help="node counts to measure loopfleet on (default 1,3)")
    p.add_argument("--no-jobs", action="store_true", help="leave out jobs/s against raw JetStream")
    args = p.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]
    workdir = tempfile.mkdtemp(prefix="loopfleet-bench-wf-")
    wf = {n: loopfleet_workflows(args, n, workdir) for n in counts}
    jobs = {} if args.no_jobs else {n: loopfleet_and_raw_jobs(args, n, workdir) for n in counts}
    celery_rate, celery_p50, celery_p99 = celery_chains(args, workdir)
    print(f"{'':<34} {'steps/s':>9} {'step p50 us':>12} {'step p99 us':>12}")
    for n in counts:
        rate, p50, p99 = wf[n]
        print(f"{'loopfleet workflows, ' + str(n) + ' node(s)':<34} {rate:>9.0f} {p50:>12.0f} {p99:>12.0f}")
    print(f"{'Celery 5.2 chains + Redis':<34} {celery_rate:>9.0f} {celery_p50:>12.0f} {celery_p99:>12.0f}")
    print("ratio steps/s loopfleet/Celery: " + ", ".join(f"{n} node(s) {wf[n][0] / celery_rate:.1f}" for n in counts))
    if jobs:
        print(f"{'':<34} {'jobs/s':>9} {'raw JetStream':>14} {'share':>6}")
    for n, (lf, raw) in jobs.items():
        print(f"{'loopfleet jobs, ' + str(n) + ' node(s)':<34} {lf:>9.0f} {raw:>14.0f} {lf / raw:>6.0%}")


if __name__ == "__main__":
    main()
