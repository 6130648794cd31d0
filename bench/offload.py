#!/usr/bin/env python3
"""Per-call overhead of offloading a trivial task: loopfleet's thread and process pools against
Python's loop.run_in_executor with ThreadPoolExecutor and ProcessPoolExecutor, in one run.

Each side awaits the trivial task sequentially, one pool worker each, after a warm-up, and
reports microseconds per call; the ratio is Python's per-call time over loopfleet's.

    bench/offload.py [--calls 20000] [--bin build/bin]
"""
import argparse
import asyncio
import concurrent.futures
import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trivial(x):
    return x


async def python_per_call_us(executor, calls):
    loop = asyncio.get_running_loop()
    for _ in range(min(1000, calls)):
        await loop.run_in_executor(executor, trivial, 1)
    began = time.perf_counter()
    for _ in range(calls):
        await loop.run_in_executor(executor, trivial, 1)
    return (time.perf_counter() - began) / calls * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    args = ap.parse_args()
    out = subprocess.run([os.path.join(args.bin, "bench-offload"), str(args.calls)], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    ours = json.loads(out)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as tp:
        py_thread = asyncio.run(python_per_call_us(tp, args.calls))
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pp:
        py_process = asyncio.run(python_per_call_us(pp, args.calls // 4))
    print(f"sequential awaits of a trivial task, one pool worker each ({args.calls} calls; Python processes "
          f"{args.calls // 4})")
    print(f"{'pool':<8} {'loopfleet us/call':>18} {'Python us/call':>15} {'ratio Python/loopfleet':>23}")
    for name, lf, py in (("thread", ours["thread_pool_us"], py_thread),
                         ("process", ours["process_pool_us"], py_process)):
        print(f"{name:<8} {lf:>18.2f} {py:>15.2f} {py / lf:>23.1f}")


if __name__ == "__main__":
    main()
