#!/usr/bin/env python3
"""One FastAPI app on uvicorn, 2 workers, side by side in one run: loopfleet's launcher
(`loopfleet run -- python3 -m loopfleet uvicorn`) against gunicorn with uvicorn's worker
class (uvicorn.workers.UvicornWorker), the usual way to run FastAPI on several cores.

For each server, in turn (the same scenarios as bench/supervise.py and bench/watchdog.py):
  load     wrk -c64 for --duration s: requests/s, requests per server CPU-second (master and
           workers), total RSS;
  kill     SIGKILL one worker under wrk -c64: failed requests, connections the victim held;
  reload   `loopfleet reload` / gunicorn SIGHUP under wrk -c64 keep-alive: failed requests;
  block    one handler blocks its loop for --block s while 16 keep-alive clients send requests:
           when the blocked worker was killed (loopfleet --watchdog 1, gunicorn --timeout 1),
           failed requests, requests delayed beyond 1 s.

    bench/python.py [--duration 5] [--block 5] [--bin build/bin]
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from supervise import ROOT, Gunicorn, Loopfleet, free_port, run_kill, run_load, run_reload  # noqa: E402
from watchdog import block_scenario  # noqa: E402

EXAMPLES = os.path.join(ROOT, "examples", "python")
APP = "fastapi_app:app"


class LoopfleetUvicorn(Loopfleet):
    name = "loopfleet + uvicorn"

    def command(self):
        cmd = super().command()
        return cmd[:cmd.index("--") + 1] + ["/usr/bin/python3", "-m", "loopfleet", "uvicorn", APP,
                                             "--app-dir", EXAMPLES, "--no-access-log"]


class GunicornUvicorn(Gunicorn):
    name = "gunicorn + UvicornWorker"

    def cwd(self):
        return EXAMPLES

    def command(self):
        return ["/usr/bin/python3", "-m", "gunicorn", "-w", str(self.workers), "-k", "uvicorn.workers.UvicornWorker",
                "--bind", f"127.0.0.1:{self.port}", "--log-level", "error", APP]


def blocked(args, workdir):
    port = free_port()
    lf = [os.path.join(args.bin, "loopfleet"), "run", "--workers", "2", "--listen", f"127.0.0.1:{port}",
          "--control", os.path.join(workdir, "block.sock"), "--watchdog", "1", "--",
          "/usr/bin/python3", "-m", "loopfleet", "uvicorn", APP, "--app-dir", EXAMPLES, "--no-access-log"]
    rows = [block_scenario("loopfleet --watchdog 1", lf, port, args.block)]
    port = free_port()
    gunicorn = ["/usr/bin/python3", "-m", "gunicorn", "-w", "2", "-k", "uvicorn.workers.UvicornWorker", "--bind",
                f"127.0.0.1:{port}", "--log-level", "error", "--timeout", "1", APP]
    rows.append(block_scenario("gunicorn --timeout 1", gunicorn, port, args.block, cwd=EXAMPLES))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk for the load figures")
    ap.add_argument("--block", type=float, default=5.0, help="seconds the loop is blocked")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    args = ap.parse_args()
    args.workers = 2
    workdir = tempfile.mkdtemp(prefix="loopfleet-python-")
    rows = []
    try:
        for cls in (LoopfleetUvicorn, GunicornUvicorn):
            load = run_load(cls, args, workdir)
            kill = run_kill(cls, args, workdir, args.workers)
            reload = run_reload(cls, args, workdir)
            rows.append((cls.name, load, kill, reload))
            print(f"{cls.name}: {load} kill={kill} reload={reload}", file=sys.stderr)
        stalls = blocked(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"FastAPI hello ({APP}), 2 workers, wrk -t2 -c64 keep-alive, {args.duration} s load; "
          "client and servers share 2 cores")
    print(f"{'server':<26} {'req/s':>8} {'req/CPU-s':>10} {'RSS MiB':>8} {'kill: failed/held':>18} "
          f"{'reload: failed':>15}")
    for name, load, kill, reload in rows:
        print(f"{name:<26} {load['rps']:>8.0f} {load['per_cpu']:>10.0f} {load['rss_mib']:>8.1f} "
              f"{str(kill['failed']) + '/' + str(kill['held']):>18} {reload['failed']:>15}")
    print(f"ratio, requests per server CPU-second: {rows[0][1]['per_cpu'] / rows[1][1]['per_cpu']:.2f}")
    print(f"\nhandler blocks the loop for {args.block:.0f} s on one of 2 workers; 16 keep-alive clients")
    print(f"{'server':<26} {'blocked worker killed after':>28} {'requests':>9} {'failed':>7} {'delayed > 1 s':>14}")
    for r in stalls:
        killed = f"{r['killed_after_s']:.2f} s" if r["killed_after_s"] is not None else "never"
        print(f"{r['server']:<26} {killed:>28} {r['requests']:>9} {r['failed']:>7} {r['delayed_1s']:>14}")


if __name__ == "__main__":
    main()
