#!/usr/bin/python3
"""How soon a node that joins the cluster takes requests through a front that follows it
(`loopfleet front --nats`), with the front's defaults (checks every second, rise 2).

Two nodes form the cluster (`loopfleet run --cluster --agent-check`, one loopfleet-testapp
worker each) behind the front. A third node is then started with --join, --joins times: from
its "joined" log line (its first heartbeat is put right after it) to the first response from
its worker through the front, read by a client asking the front GET /pid back to back on new
connections. Between joins the node stops gracefully and the front empties its slot, so each
join fills a slot afresh. The peer: nginx or a static HAProxy cannot do this at all without an
edit of their configuration and a reload.

    bench/front_join.py [--bin build/bin] [--joins 10]
"""
import argparse
import datetime
import http.client
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadkit import Lines, lasting_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log_time(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z", line)
    stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


class Node:
    def __init__(self, args, workdir, i, ports):
        self.i, p = i, ports[i]
        peers = ",".join(f"127.0.0.1:{q['route']}" for j, q in enumerate(ports) if j != i)
        self.proc = subprocess.Popen(
            [os.path.join(args.bin, "loopfleet"), "run", "--workers", "1", "--listen", f"127.0.0.1:{p['http']}",
             "--agent-check", f"127.0.0.1:{p['agent']}", "--front-drain", "1s", "--name", f"join{i}", "--control",
             os.path.join(workdir, f"join{i}.sock"), "--node", f"n{i}", "--nats-listen", f"127.0.0.1:{p['client']}",
             "--cluster-listen", f"127.0.0.1:{p['route']}", "--join", peers, "--replicas", "2", "--data-dir",
             os.path.join(workdir, f"n{i}"), "--", os.path.join(args.bin, "loopfleet-testapp")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log = Lines(self.proc.stderr)

    def joined(self):
        """When it joined (its first heartbeat follows at once) and its worker's pid."""
        at = log_time(self.log.wait_for(rf"cluster: node n{self.i} joined", timeout=60)[0])
        pid = re.search(r"pid (\d+) ready", self.log.wait_for(r"slot 0: pid \d+ ready", timeout=60)[0]).group(1)
        return at, pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def answer(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/pid")
        body = c.getresponse().read().decode()
        c.close()
        return body
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--joins", type=int, default=10)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="loopfleet-join-")
    ports = [dict(client=lasting_port(), route=lasting_port(), http=lasting_port(), agent=lasting_port())
             for _ in range(3)]
    nodes = [Node(args, workdir, 0, ports), Node(args, workdir, 1, ports)]
    front_port = lasting_port()
    front = subprocess.Popen([os.path.join(args.bin, "loopfleet"), "front", "--listen", f"127.0.0.1:{front_port}",
                              "--state-dir", workdir, "--name", f"join{front_port}", "--nats",
                              ",".join(f"nats://127.0.0.1:{p['client']}" for p in ports[:2])],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    front_log = Lines(front.stderr)
    times = []
    try:
        for n in nodes:
            n.joined()
        front_log.wait_for(r"node n1 .*: in slot", timeout=30)
        front_log.wait_for(r"node n0 .*: in slot", timeout=30)
        for k in range(args.joins):
            # Each start right after the front emptied the slot would fall at the same point of
            # its 250 ms poll every time: a random pause spreads the joins over the cycle.
            time.sleep(random.uniform(0, 1))
            third = Node(args, workdir, 2, ports)
            joined_at, pid = third.joined()
            while answer(front_port) != pid:
                if time.time() - joined_at > 30:
                    sys.exit("bench: the joining node got no request through the front in 30 s")
            times.append(time.time() - joined_at)
            third.stop()
            front_log.wait_for(r"emptied: stopped gracefully", count=k + 1, timeout=60)
    finally:
        front.send_signal(signal.SIGQUIT)
        front.wait(timeout=30)
        for n in nodes:
            n.proc.send_signal(signal.SIGQUIT)
            n.proc.wait(timeout=30)
    print(f"--join to the first request through `loopfleet front --nats` (checks every 1 s), {len(times)} joins:")
    print(f"  median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s "
          f"(goal: under 3 s); each: {', '.join(f'{t:.2f}' for t in times)}")


if __name__ == "__main__":
    main()
