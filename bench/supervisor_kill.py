#!/usr/bin/env python3
"""The supervisor (master process) killed outright under keep-alive load, then the same command
started again: loopfleet against nginx and gunicorn, side by side in one run.

For each server: wrk -c64 keep-alive for --duration s, and a client opening new connections one
after another (each one request, `Connection: close`). Once all 64 are up and a second has
passed: SIGKILL of the master alone (a segfault, an OOM kill), then --restart-delay s later the
very same command again, as systemd's Restart= would (its RestartSec= is 100 ms by default).
Reported: wrk's failed requests, new connections refused or failed, whether the restarted
master came up and how long after the kill it served with workers of its own, and whether the
dead master's workers were still running --linger s after that.

    bench/supervisor_kill.py [--workers 2] [--duration 6] [--restart-delay 0.5] [--bin build/bin]
                             [--only loopfleet,nginx]
"""
import argparse
import os
import signal
import subprocess
import time

from loadkit import Knocker, Wrk, established, pid_alive
from supervise import (ROOT, Gunicorn, Loopfleet, LoopfleetShared, Nginx, children, run_each, serving, tree,
                       wait_for)

def run_kill(cls, args, workdir):
    s = cls(args, args.workers, workdir)
    old_master = s.proc.pid
    old_workers = list(s.worker_pids())
    restarted = None
    try:
        load = Wrk(s.port, args.duration)
        wait_for(lambda: established(tree(old_master), s.port) == 64, 10, "64 connections")
        knock = Knocker(s.port, timeout=5)
        time.sleep(1.0)
        killed = time.monotonic()
        os.kill(old_master, signal.SIGKILL)
        s.proc.wait()
        time.sleep(args.restart_delay)
        restarted = subprocess.Popen(s.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=s.cwd(), start_new_session=True)
        # Up: the new master has workers of its own and the port answers; or it gave up.
        own = None
        deadline = time.monotonic() + args.duration + 10
        while time.monotonic() < deadline and restarted.poll() is None:
            if len(children(restarted.pid)) >= args.workers and serving(s.port):
                own = time.monotonic() - killed
                break
            time.sleep(0.02)
        r = load.result()
        knock.stop()
        time.sleep(args.linger)
        left = [p for p in old_workers if pid_alive(p)]
        return {"requests": r["requests"], "failed": r["failed"], "refused": knock.refused,
                "knock_failed": len(knock.failed), "answered": knock.answered,
                "restart": "up" if own is not None else f"exited {restarted.poll()}" if restarted.poll() is not None
                else "not up", "own_s": own, "left": len(left)}
    finally:
        # The restarted master stops as usual (loopfleet's takes its workers and keeper along);
        # then whatever the dead one left: nginx's orphans serve on forever.
        if restarted and restarted.poll() is None:
            try:
                os.killpg(restarted.pid, signal.SIGTERM)
                restarted.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        for group in [p.pid for p in (restarted, s.proc) if p]:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in old_workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if restarted:
            restarted.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--restart-delay", type=float, default=0.5)
    ap.add_argument("--linger", type=float, default=2.0,
                    help="seconds after the load to look for the dead master's workers")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--only", default="", help="comma-separated subset: loopfleet,loopfleet-shared,nginx,gunicorn")
    args = ap.parse_args()
    rows = run_each([Loopfleet, LoopfleetShared, Nginx, Gunicorn], args.only, "loopfleet-supkill-",
                    lambda cls, workdir: run_kill(cls, args, workdir))
    print(f"master SIGKILL under wrk -t2 -c64 keep-alive plus new connections one after another, {args.workers} "
          f"workers, {args.duration} s; the same command again {args.restart_delay} s later; client and servers "
          "share 2 cores")
    print(f"{'server':<17} {'requests':>9} {'failed':>7} {'new conns':>10} {'refused':>8} {'failed':>7} "
          f"{'restart':>10} {'own workers at s':>17} {'old workers left':>17}")
    for name, r in rows:
        own = f"{r['own_s']:.2f}" if r["own_s"] is not None else "-"
        print(f"{name:<17} {r['requests']:>9} {r['failed']:>7} {r['answered']:>10} {r['refused']:>8} "
              f"{r['knock_failed']:>7} {r['restart']:>10} {own:>17} {r['left']:>17}")


if __name__ == "__main__":
    main()
