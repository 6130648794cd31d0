#!/usr/bin/env python3
"""What the admin endpoint costs the workers: hello-world throughput of a supervised instance
(2 workers, wrk -c64) with /metrics scraped every second (what Prometheus does) against no
scraping, in alternating rounds so a loaded machine's drift falls on both sides alike. Also
prints the time one scrape takes and the supervisor's CPU per second either way.

    bench/admin.py [--rounds 4] [--duration 5] [--bin build/bin] [--scrape-interval 1]
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from loadkit import Wrk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    """CPU seconds of every thread of a process, in nanoseconds' precision (schedstat): the
    supervisor uses a few milliseconds a second, below /proc/PID/stat's 10 ms ticks."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


class Scraper(threading.Thread):
    """GET /metrics every `interval` s; keeps each scrape's duration."""

    def __init__(self, url, interval):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.stop = threading.Event()
        self.took = []

    def run(self):
        while not self.stop.is_set():
            began = time.monotonic()
            with urllib.request.urlopen(self.url, timeout=5) as r:
                r.read()
            self.took.append(time.monotonic() - began)
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - began)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="rounds of each kind, alternating")
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk per round")
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    args = ap.parse_args()

    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "supervisor.log")
        log = open(log_path, "w")
        sup = subprocess.Popen(
            [os.path.join(args.bin, "loopfleet"), "run", "--name", f"bench-admin-{os.getpid()}", "--control",
             os.path.join(tmp, "c.sock"), "--workers", "2", "--listen", f"127.0.0.1:{port}", "--admin", str(admin),
             "--", os.path.join(args.bin, "hello")],
            stdout=subprocess.DEVNULL, stderr=log)
        seen = 0
        try:
            url = f"http://127.0.0.1:{admin}/metrics"
            deadline = time.monotonic() + 30
            while True:
                try:
                    text = urllib.request.urlopen(url, timeout=2).read().decode()
                    if text.count("loopfleet_worker_ready{") == 2 and text.count("} 1\n") >= 2:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("bench/admin.py: the instance did not come up")
                time.sleep(0.1)
            Wrk(port, duration=2, connections=64).result()  # warm up
            results = {"scraped": [], "not scraped": []}
            scrapes = []
            sup_cpu_per_s = {"scraped": [], "not scraped": []}
            for i in range(2 * args.rounds):
                kind = "scraped" if i % 2 == 0 else "not scraped"
                scraper = Scraper(url, args.scrape_interval) if kind == "scraped" else None
                sup_cpu, began = cpu_s(sup.pid), time.monotonic()
                if scraper:
                    scraper.start()
                r = Wrk(port, duration=args.duration, connections=64).result()
                if scraper:
                    scraper.stop.set()
                    scraper.join()
                    scrapes += scraper.took
                sup_cpu_per_s[kind].append((cpu_s(sup.pid) - sup_cpu) / (time.monotonic() - began))
                results[kind].append(r["rps"])
                print(f"round {i + 1}: {kind:12} {r['rps']:9.0f} requests/s, {r['failed']} failed", flush=True)
                # Failed requests come with a worker's death (on a loaded machine, the watchdog
                # replacing a loop that stalled for a second): say which.
                with open(log_path) as f:
                    lines = f.read().splitlines()
                for line in lines[seen:]:
                    if "exited" in line or "stall" in line or "  #" in line or "blocked in" in line:
                        print("  supervisor:", line.split("] ", 1)[-1], flush=True)
                seen = len(lines)
        finally:
            sup.terminate()
            sup.wait(timeout=60)
            log.close()

    with_s = statistics.median(results["scraped"])
    without = statistics.median(results["not scraped"])
    print()
    print(f"median requests/s, /metrics every {args.scrape_interval:g} s: {with_s:9.0f}")
    print(f"median requests/s, not scraped:        {without:9.0f}")
    print(f"ratio scraped / not scraped:           {with_s / without:9.3f}")
    if scrapes:
        print(f"one scrape: median {statistics.median(scrapes) * 1000:.1f} ms, max {max(scrapes) * 1000:.1f} ms "
              f"({len(scrapes)} scrapes, under load)")
    print("supervisor CPU, ms per second: scraped {:.2f}, not scraped {:.2f} (its 25 ms checks included)".format(
        *(statistics.median(sup_cpu_per_s[k]) * 1000 for k in ("scraped", "not scraped"))))


if __name__ == "__main__":
    main()
