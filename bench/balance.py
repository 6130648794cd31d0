#!/usr/bin/env python3
"""How 64 keep-alive connections spread over 2 loopfleet workers, per distribution mode.

Each trial opens 64 wrk connections (1 s of load) and counts the ESTABLISHED connections each
worker holds; the figure is the largest share one worker got. A shared socket lets whichever
worker wakes first accept a burst; reuseport gives each slot its own queue.

    bench/balance.py [--trials 10] [--workers 2] [--bin build/bin]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from supervise import ROOT, Loopfleet, LoopfleetShared, Wrk, established, tree, wait_for  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="loopfleet-balance-")
    print(f"{args.trials} trials of 64 keep-alive connections on {args.workers} workers")
    for cls in (Loopfleet, LoopfleetShared):
        s = cls(args, args.workers, workdir)
        shares = []
        try:
            for _ in range(args.trials):
                load = Wrk(s.port, 1)
                wait_for(lambda: established(tree(s.proc.pid), s.port) == 64, 10, "64 connections")
                counts = [established([w], s.port) for w in s.worker_pids()]
                shares.append(max(counts) / 64)
                load.result()
                # Let the closed connections leave the table before the next trial.
                wait_for(lambda: established(tree(s.proc.pid), s.port) == 0, 10, "connections to close")
        finally:
            s.stop()
        over = sum(1 for x in shares if x > 0.65)
        print(f"{cls.distribution:<10} largest share per trial: {' '.join(f'{x:.0%}' for x in shares)}")
        print(f"{'':<10} median {statistics.median(shares):.0%}, worst {max(shares):.0%}, "
              f"trials over 65%: {over}/{len(shares)}")


if __name__ == "__main__":
    main()
