#!/usr/bin/env python3
"""A blocked event loop, side by side: loopfleet's watchdog against gunicorn's worker timeout.

Two workers serve hello world while 16 keep-alive clients send requests back to back. One
request makes a worker block its loop for --block s (a synchronous sleep). Reported per
server: how long until the blocked worker was killed (its pid gone; "never" if the block
ended first), requests that failed, and requests delayed beyond 1 s.

  loopfleet   --watchdog 1 (default), chaos example
  gunicorn    aiohttp worker, default --timeout (30 s), and --timeout 1

Then the cost of the heartbeat itself: one loopfleet worker, wrk, requests per worker
CPU-second with --watchdog 1 and --watchdog 0, alternating over --rounds.

    bench/watchdog.py [--block 5] [--rounds 3] [--bin build/bin]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadkit import Wrk  # noqa: E402
from supervise import PEERS, ROOT, free_port, serving, wait_for  # noqa: E402


def request(sock, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
    f = sock.makefile("rb")
    status = int(f.readline().split()[1])
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, f.read(length)


class Clients:
    """16 keep-alive clients, each sending requests back to back; reconnect after a failure."""

    def __init__(self, port, n=16):
        self.port, self.latencies, self.failed = port, [], 0
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def run(self):
        sock = None
        while not self.halt.is_set():
            began = time.monotonic()
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
                status, _ = request(sock, "/")
                ok = status == 200
            except (OSError, ValueError, IndexError):
                ok = False
                if sock:
                    sock.close()
                sock = None
            with self.lock:
                self.latencies.append(time.monotonic() - began)
                self.failed += 0 if ok else 1

    def stop(self):
        self.halt.set()
        for t in self.threads:
            t.join(timeout=70)


def block_scenario(name, command, port, block_s, cwd=ROOT):
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: serving(port), 20, name)
        time.sleep(1.0)  # let every worker come up (gunicorn reports no readiness)
        clients = Clients(port)
        time.sleep(1.0)  # steady state before the block
        blocker = socket.create_connection(("127.0.0.1", port), timeout=60)
        _, body = request(blocker, "/pid")
        victim = int(body)
        began = time.monotonic()
        blocker.sendall(b"GET /block?ms=%d HTTP/1.1\r\nHost: b\r\n\r\n" % int(block_s * 1000))
        killed = None
        while time.monotonic() - began < block_s + 2:
            if killed is None and not os.path.exists(f"/proc/{victim}"):
                killed = time.monotonic() - began
            time.sleep(0.005)
        clients.stop()
        blocker.close()
        delayed = sum(1 for x in clients.latencies if x > 1.0)
        return {"server": name, "killed_after_s": killed, "failed": clients.failed, "delayed_1s": delayed,
                "requests": len(clients.latencies)}
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def heartbeat_cost(args, rounds):
    """Requests per worker CPU-second for one loopfleet worker, watchdog on and off."""
    results = {"on": [0, 0.0], "off": [0, 0.0]}
    workdir = tempfile.mkdtemp(prefix="loopfleet-hb-")
    for rnd in range(rounds):
        for mode in (["on", "off"] if rnd % 2 == 0 else ["off", "on"]):
            port = free_port()
            control = os.path.join(workdir, f"{port}.sock")
            proc = subprocess.Popen(
                ["taskset", "-c", "0", os.path.join(args.bin, "loopfleet"), "run", "--workers", "1", "--listen",
                 f"127.0.0.1:{port}", "--control", control, "--watchdog", "1" if mode == "on" else "0", "--",
                 os.path.join(args.bin, "hello")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(lambda: serving(port), 10, "loopfleet")
                status = json.loads(subprocess.run([os.path.join(args.bin, "loopfleet"), "status", "--json",
                                                    "--control", control], capture_output=True, text=True).stdout)
                worker = status["slots"][0]["pid"]
                with open(f"/proc/{worker}/schedstat") as f:
                    before = int(f.read().split()[0])
                load = Wrk(port, duration=args.duration, connections=64, threads=1)
                r = load.result()
                with open(f"/proc/{worker}/schedstat") as f:
                    cpu = (int(f.read().split()[0]) - before) / 1e9
                results[mode][0] += r["requests"]
                results[mode][1] += cpu
            finally:
                proc.terminate()
                proc.wait()
    return {m: req / cpu for m, (req, cpu) in results.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--block", type=float, default=5.0, help="seconds the loop is blocked")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the heartbeat cost measurement")
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk per heartbeat round")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    args = ap.parse_args()

    rows = []
    workdir = tempfile.mkdtemp(prefix="loopfleet-watchdog-")
    port = free_port()
    rows.append(block_scenario("loopfleet --watchdog 1", [
        os.path.join(args.bin, "loopfleet"), "run", "--workers", "2", "--listen", f"127.0.0.1:{port}",
        "--control", os.path.join(workdir, "c.sock"), "--", os.path.join(args.bin, "chaos")], port, args.block))
    for timeout in (None, 1):
        port = free_port()
        cmd = ["/usr/bin/python3", "-m", "gunicorn", "-w", "2", "-k", "aiohttp.GunicornUVLoopWebWorker", "--bind",
               f"127.0.0.1:{port}", "aiohttp_app:app"] + (["--timeout", str(timeout)] if timeout else [])
        label = f"gunicorn --timeout {timeout}" if timeout else "gunicorn (timeout 30 s)"
        rows.append(block_scenario(label, cmd, port, args.block, cwd=PEERS))

    print(f"blocked loop for {args.block:.0f} s on one of 2 workers; 16 keep-alive clients sending back to back")
    print(f"{'server':<26} {'blocked worker killed after':>28} {'requests':>9} {'failed':>7} {'delayed > 1 s':>14}")
    for r in rows:
        killed = f"{r['killed_after_s']:.2f} s" if r["killed_after_s"] is not None else "never"
        print(f"{r['server']:<26} {killed:>28} {r['requests']:>9} {r['failed']:>7} {r['delayed_1s']:>14}")

    cost = heartbeat_cost(args, args.rounds)
    print(f"\nheartbeat cost, one worker on CPU 0, {args.rounds} rounds alternating: requests per worker CPU-second")
    print(f"  watchdog on  {cost['on']:.0f}\n  watchdog off {cost['off']:.0f}\n"
          f"  on/off ratio {cost['on'] / cost['off']:.3f}")


if __name__ == "__main__":
    main()
