#!/usr/bin/python3
"""A chaos soak: three cluster nodes behind `loopfleet front`, wrk through the front and a job
submitter, and one random fault after another until the time is up:

  worker-kill   SIGKILL one worker of a node
  loop-block    SIGSTOP one worker: its loop stops; the watchdog must find and replace it
  reload        `loopfleet reload` of a node
  scale         `loopfleet scale 3`, then back to 2
  node-restart  SIGKILL a whole node (supervisor, workers, nats-server), then start it again
  nats-kill     SIGKILL a node's nats-server (its supervisor restarts it)

Each fault gets its own wrk window, so the requests that failed are the fault's; the bound
printed beside them is what the fault may cost: the requests in flight on what died (one per
connection the dead process held), 0 for reloads and scaling. Jobs are submitted in batches
with idempotency keys (a batch whose submitter lost its node is sent again elsewhere, and
JetStream drops the copies); at the end every stored job must have run. Then it checks that
no process outlived the run and that the long-lived processes' descriptors and memory did
not grow. Exit code 1 if anything is out of bounds.

    bench/chaos.py [--minutes N] [--seed S] [--bin build/bin]
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadkit import Wrk, established, lasting_port  # noqa: E402
from supervise import ROOT, free_port, kill_tree, tree  # noqa: E402

WORKERS = 2
CONNECTIONS = 32
WINDOW = 4.0     # seconds of wrk per fault
BATCH = 100      # jobs per submit
FAULTS = ["worker-kill", "loop-block", "reload", "scale", "node-restart", "nats-kill"]


def wait(predicate, timeout, what, why=None):
    """Polls a state that has no event to wait on (process tables, status replies); why() says
    what was still missing when it timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"chaos: timed out waiting for {what}" + (f": {why()}" if why else ""))


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    except (FileNotFoundError, AttributeError):
        return 0


class Node:
    def __init__(self, soak, i):
        self.soak, self.i = soak, i
        self.name = f"{soak.tag}n{i}"
        # Restarted nodes take the same ports again: out of the ephemeral range.
        self.port, self.agent, self.client, self.route = (lasting_port() for _ in range(4))
        self.control = os.path.join(soak.dir, f"{self.name}.sock")
        self.log_path = os.path.join(soak.dir, f"{self.name}.log")
        self.proc = None

    def args(self):
        peers = ",".join(f"127.0.0.1:{n.route}" for n in self.soak.nodes if n is not self)
        return [os.path.join(self.soak.bin, "loopfleet"), "run", "--workers", str(WORKERS), "--listen",
                f"127.0.0.1:{self.port}", "--agent-check", f"127.0.0.1:{self.agent}", "--name", self.name,
                "--control", self.control, "--node", self.name, "--nats-listen", f"127.0.0.1:{self.client}",
                "--cluster-listen", f"127.0.0.1:{self.route}", "--join", peers, "--data-dir",
                os.path.join(self.soak.dir, self.name), "--front-drain", "0.5", "--",
                os.path.join(self.soak.bin, "cluster-example")]

    def start(self):
        log = open(self.log_path, "ab")
        env = dict(os.environ, JOBS_DONE_FILE=self.soak.journal)
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=log, env=env)
        log.close()
        self.started = time.monotonic()

    def url(self):
        return f"nats://127.0.0.1:{self.client}"

    def status(self):
        r = subprocess.run([os.path.join(self.soak.bin, "loopfleet"), "status", "--json", "--control", self.control],
                           capture_output=True, text=True, timeout=30)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def settled(self):
        """Every slot ready, nothing draining, the node in the cluster: the next fault may come.
        What is still missing is kept in self.unsettled, for the message if it never comes."""
        s = self.status()
        self.unsettled = self.why_unsettled(s)
        return not self.unsettled

    @staticmethod
    def why_unsettled(s):
        if not s:
            return "no status answer"
        if s.get("reloading") or s["draining"]:
            return f"reloading {s.get('reloading')}, draining {s['draining']}"
        if len(s["slots"]) != WORKERS or not all(slot["state"] == "ready" for slot in s["slots"]):
            return "slots " + ", ".join(str(slot["state"]) for slot in s["slots"])
        c = s.get("cluster", {})
        if not c.get("nats_ready") or not c.get("streams"):
            return f"nats ready {c.get('nats_ready')}, streams {c.get('streams')}"
        short = [d for d in c["streams"] if not d["quorum"]]
        return "no quorum: " + json.dumps(short) if short else ""

    def workers(self):
        s = self.status()
        return [slot["pid"] for slot in s["slots"] if slot.get("pid")] if s else []

    def kill(self):
        kill_tree(self.proc)

    def cli(self, *args):
        return subprocess.run([os.path.join(self.soak.bin, "loopfleet"), *args, "--control", self.control],
                              capture_output=True, text=True, timeout=120)


class Soak:
    def __init__(self, args):
        self.bin = args.bin
        self.rng = random.Random(args.seed)
        self.seed = args.seed
        self.dir = tempfile.mkdtemp(prefix="loopfleet-chaos-")
        self.tag = f"cz{os.getpid()}"
        # Workers append each job they finished here too: a job-done line still in a pipe
        # dies with a killed supervisor, the file does not.
        self.journal = os.path.join(self.dir, "jobs-done")
        self.nodes = []
        self.nodes = [Node(self, i) for i in (1, 2, 3)]
        self.front = None
        self.results = {k: {"count": 0, "requests": 0, "failed": 0, "allowed": 0, "over": 0} for k in FAULTS}
        self.stop_submitting = threading.Event()
        self.batches = []      # batch ids fully stored
        self.submit_errors = 0

    # --- set-up ---
    def start(self):
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            wait(n.settled, 120, f"{n.name} ready with its streams replicated", lambda: n.unsettled)
        self.front_port = free_port()
        cmd = [os.path.join(self.bin, "loopfleet"), "front", "--listen", f"127.0.0.1:{self.front_port}",
               "--state-dir", self.dir, "--name", f"{self.tag}front"]
        for n in self.nodes:
            cmd += ["--server", f"127.0.0.1:{n.port}@{n.agent}"]
        self.front = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "front.log"), "ab"))
        # Every node serves through the front (its own counters move) before the soak begins.
        def every_node_reached():
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{self.front_port}/"],
                           capture_output=True, timeout=10)
            return all(sum(slot.get("requests", 0) for slot in (n.status() or {"slots": []})["slots"]) > 0
                       for n in self.nodes)
        wait(every_node_reached, 60, "every node serving through the front")

    def long_lived(self):
        """Processes that must not grow: the original supervisors and nats-servers, the front
        and its haproxy. Restarted ones leave the set."""
        out = {}
        for n in self.nodes:
            out[f"{n.name} supervisor"] = n.proc.pid
            s = n.status()
            if s and s.get("cluster", {}).get("nats_pid"):
                out[f"{n.name} nats-server"] = s["cluster"]["nats_pid"]
        out["front"] = self.front.pid
        for c in tree(self.front.pid)[1:]:
            out[f"front child {c}"] = c
        return out

    # --- jobs ---
    def submitter(self):
        batch = 0
        while not self.stop_submitting.is_set():
            key = f"{self.tag}-b{batch}"
            for attempt in range(20):
                node = self.nodes[(batch + attempt) % 3]
                r = subprocess.run([os.path.join(self.bin, "loopfleet"), "job", "submit", "work", f"{key}:20",
                                    "--count", str(BATCH), "--key", key, "--retry-for", "20s", "--nats", node.url()],
                                   capture_output=True, text=True, timeout=120)
                if r.returncode == 0:
                    self.batches.append(batch)
                    break
                self.submit_errors += 1  # its node went away mid-batch: the same keys, elsewhere
            batch += 1
            self.stop_submitting.wait(0.2)

    def done_jobs(self):
        """Every job any worker finished, from the workers' own journal: payload -> times run."""
        runs = {}
        try:
            with open(self.journal, errors="replace") as f:
                for line in f:
                    m = re.match(r"job-done (\S+) ", line)
                    if m and m.group(1).startswith(self.tag):
                        runs[m.group(1)] = runs.get(m.group(1), 0) + 1
        except FileNotFoundError:
            pass
        return runs

    def expected_jobs(self):
        return {f"{self.tag}-b{b}:20-{i}" for b in self.batches for i in range(BATCH)}

    # --- faults ---
    def fault(self, kind):
        """Applies one fault; returns the requests it may make fail."""
        node = self.rng.choice(self.nodes)
        if kind in ("worker-kill", "loop-block"):
            pid = self.rng.choice(node.workers())
            held = established([pid], node.port)
            os.kill(pid, signal.SIGKILL if kind == "worker-kill" else signal.SIGSTOP)
            return held
        if kind == "reload":
            r = node.cli("reload")
            if r.returncode != 0:
                raise RuntimeError(f"chaos: reload of {node.name} failed: {r.stderr.strip()}")
            return 0
        if kind == "scale":
            for n in (WORKERS + 1, WORKERS):
                r = node.cli("scale", str(n))
                if r.returncode != 0:
                    raise RuntimeError(f"chaos: scale of {node.name} failed: {r.stderr.strip()}")
                time.sleep(0.5)  # the pacing of the fault itself
            return 0
        if kind == "node-restart":
            node.kill()
            self.restarted.add(node.name)
            time.sleep(1.0)  # down for a moment, as a machine would be
            node.start()
            # Each of wrk's connections may have had one request in flight to the dead node.
            return CONNECTIONS
        if kind == "nats-kill":
            s = node.status()
            os.kill(s["cluster"]["nats_pid"], signal.SIGKILL)
            self.restarted.add(f"{node.name} nats")
            return 0
        raise ValueError(kind)

    def run(self, minutes):
        self.restarted = set()
        self.start()
        watched = self.long_lived()
        snapshots = []  # at each settled point: {name: (fds, rss)}
        submitting = threading.Thread(target=self.submitter, daemon=True)
        submitting.start()
        end = time.monotonic() + minutes * 60
        faults = 0
        while time.monotonic() < end:
            kind = self.rng.choice(FAULTS)
            load = Wrk(self.front_port, duration=int(WINDOW), connections=CONNECTIONS, threads=1)
            time.sleep(1.0)  # the fault lands mid-window
            allowed = self.fault(kind)
            r = load.result()
            res = self.results[kind]
            res["count"] += 1
            res["requests"] += r["requests"]
            res["failed"] += r["failed"]
            res["allowed"] += allowed
            if r["failed"] > allowed:
                res["over"] += 1
                print(f"chaos: {kind} cost {r['failed']} requests, allowed {allowed}:\n{r['text']}", flush=True)
            faults += 1
            for n in self.nodes:
                wait(n.settled, 120, f"{n.name} settled after {kind}", lambda: n.unsettled)
            snapshots.append({name: (fds(pid), rss_kib(pid)) for name, pid in watched.items()
                              if alive(pid) and not any(name.startswith(r) for r in self.restarted)})
        self.stop_submitting.set()
        submitting.join(timeout=180)
        expected = self.expected_jobs()
        try:
            wait(lambda: expected <= self.done_jobs().keys(), 180, "every stored job done")
        except RuntimeError:
            pass  # counted as lost below
        runs = self.done_jobs()
        lost = len(expected - runs.keys())
        # Jobs that ran but stayed in the work queue, neither pending nor awaiting an ack: the
        # JetStream consumer lost track of them (seen with nats-server 2.9.10 after node
        # kills). Had they not run, they would be stuck; reported, not yet repaired (issue 10).
        stats = subprocess.run([os.path.join(self.bin, "loopfleet"), "job", "stats", "--nats", self.nodes[0].url()],
                               capture_output=True, text=True, timeout=60)
        m = re.search(r"waiting (\d+) \(in flight (\d+)\)", stats.stdout)
        stranded = int(m.group(1)) if m else -1
        duplicated = sum(c - 1 for p, c in runs.items() if p in expected and c > 1)
        growth, after = self.growth(snapshots)
        leaked = self.stop_all()
        return {"faults": faults, "expected": len(expected), "done": len(expected & runs.keys()), "lost": lost,
                "duplicated": duplicated, "submit_retries": self.submit_errors, "growth": growth, "leaked": leaked,
                "stranded": stranded,
                "long_lived": len(after)}

    @staticmethod
    def growth(snapshots):
        """What grew. A leak keeps growing; a warm-up (pools filling, caches) stops: the last
        settled point is compared with the highest of the first half of the run, with 16
        descriptors (haproxy's pool of idle connections to the nodes varies by that much) and a
        tenth of the memory (plus 2 MiB) of slack for our processes, half (plus 8 MiB) for
        nats-server and haproxy."""
        if len(snapshots) < 2:
            return [], {}
        last = snapshots[-1]
        first_half = snapshots[:max(1, len(snapshots) // 2)]
        growth = []
        for name, (f1, r1) in last.items():
            early = [s[name] for s in first_half if name in s]
            if not early:
                continue
            f0, r0 = max(f for f, _ in early), max(r for _, r in early)
            # nats-server's and haproxy's caches warm for longer than a one-minute run (seen:
            # nats-server 23.7 -> 28.5 MiB); ours must not grow at all beyond noise.
            third_party = "nats-server" in name or name.startswith("front child")
            if f1 > f0 + 16 or r1 > (r0 * 1.5 + 8192 if third_party else r0 * 1.1 + 2048):
                growth.append(f"{name}: fds {f0} -> {f1}, RSS {r0} -> {r1} KiB")
        return growth, last

    def stop_all(self):
        """Stops everything; returns the processes of this run still alive afterwards."""
        if self.front and self.front.poll() is None:
            self.front.send_signal(signal.SIGQUIT)
            self.front.wait(timeout=30)
        for n in self.nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            if n.proc:
                try:
                    n.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    n.kill()
        leaked = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or not alive(int(pid)):
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read()
            except (FileNotFoundError, PermissionError, ProcessLookupError):
                continue
            if self.dir in cmd or f"LOOPFLEET_NODE={self.tag}".encode() in env:
                leaked.append(f"{pid} {cmd[:120]}")
        return leaked


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--keep", action="store_true", help="keep the run's directory (logs, data)")
    args = ap.parse_args()
    soak = Soak(args)
    began = time.monotonic()
    try:
        out = soak.run(args.minutes)
    except BaseException:
        print(f"chaos: the run stopped early; logs in {soak.dir}", flush=True)
        soak.stop_all()
        raise
    print(f"chaos soak: {args.minutes:g} min (seed {args.seed}), 3 nodes x {WORKERS} cluster-example workers "
          f"behind loopfleet front, wrk -c{CONNECTIONS} through the front, jobs in batches of {BATCH}; "
          f"{out['faults']} faults in {time.monotonic() - began:.0f} s")
    print(f"{'fault':<14} {'times':>5} {'requests':>10} {'failed':>7} {'allowed':>8}")
    ok = True
    for kind, r in soak.results.items():
        print(f"{kind:<14} {r['count']:>5} {r['requests']:>10} {r['failed']:>7} {r['allowed']:>8}"
              + ("  OVER" if r["over"] else ""))
        ok &= r["over"] == 0
    print(f"jobs: submitted {out['expected']}, done {out['done']}, lost {out['lost']}, duplicated "
          f"{out['duplicated']} (batches sent again after losing their node: {out['submit_retries']}); "
          f"left in the work queue after every job ran: {out['stranded']}")
    print(f"long-lived processes checked: {out['long_lived']}; grew: {out['growth'] or 'none'}; "
          f"left running after the stop: {out['leaked'] or 'none'}")
    ok &= out["lost"] == 0 and not out["growth"] and not out["leaked"]
    if ok and not args.keep:
        shutil.rmtree(soak.dir, ignore_errors=True)
    else:
        print(f"logs and data: {soak.dir}")
    print("chaos: PASS" if ok else "chaos: FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
