"""Stored jobs are on as many servers as the cluster promises (--replicas), and it says so.

A stream with fewer replicas than promised has no quorum as soon as one of its servers dies:
its jobs, though acknowledged as stored, neither run nor come back until that server does. That
is how a forming cluster (a node late to start on a busy machine) used to leave 10,000 stored
jobs stuck after a node was killed. These tests start clusters the way a loaded machine does
and kill nodes that hold replicas."""
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import SLOW, Lines, Supervisor, binary, free_port, jobs_done, wait_until
from loadkit import lasting_port
from test_cluster import tree


class Submitter:
    """`loopfleet job submit` in the background, its output collected as it comes."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def failed(self):
        """Raises if the submitter gave up: nothing more will be stored."""
        if self.proc.poll() not in (None, 0):
            self.err.thread.join(timeout=10)
            raise AssertionError(f"job submit failed: {self.err.text()}")
        return False

    def finish(self, timeout):
        rc = self.proc.wait(timeout=timeout * SLOW)
        self.out.thread.join(timeout=10)
        self.err.thread.join(timeout=10)
        assert rc == 0, self.err.text()
        return self.out.text()


class Nodes:
    """Up to three nodes that all --join each other, started one by one when the test says."""

    def __init__(self, tmp, args=()):
        self.tmp = tmp
        self.args = list(args)
        # A node may start long after its ports were chosen (and named in the others' --join).
        self.ports = {n: (lasting_port(), lasting_port()) for n in ("n1", "n2", "n3")}
        self.nodes = {}

    def start(self, name, wait_ready=True):
        client, route = self.ports[name]
        join = ",".join(f"127.0.0.1:{self.ports[p][1]}" for p in self.ports if p != name)
        self.nodes[name] = Supervisor(2, ["--node", name, "--nats-listen", f"127.0.0.1:{client}", "--cluster-listen",
                                          f"127.0.0.1:{route}", "--join", join, "--data-dir", str(self.tmp / name)]
                                      + self.args, [binary("cluster-example")], tmp=str(self.tmp),
                                      wait_ready=wait_ready, env={"JOBS_DONE_FILE": str(self.tmp / "jobs-done")})
        return self.nodes[name]

    def url(self, name="n1"):
        return f"nats://127.0.0.1:{self.ports[name][0]}"

    def lf(self, *args, via="n1", timeout=60):
        return subprocess.run([binary("loopfleet"), *args, "--nats", self.url(via)], capture_output=True, text=True,
                              timeout=timeout * SLOW)

    def submit(self, count, payload, via="n1"):
        return Submitter([binary("loopfleet"), "job", "submit", "work", payload, "--count", str(count),
                          "--retry-for", f"{int(180 * SLOW)}s", "--nats", self.url(via)])

    def done(self):
        """The payloads of every job run on any node (the workers' journal: it survives a
        killed node, whose last log lines may not)."""
        return {payload for payload, _ in jobs_done(self.tmp / "jobs-done")}

    def kill(self, name):
        for pid in tree(self.nodes[name].proc.pid):  # supervisor, workers, nats-server
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.nodes[name].proc.wait()

    def stop(self, tag=""):
        for name, n in self.nodes.items():
            n.stop()
            (self.tmp / f"{tag}{name}.log").write_text(n.log.text())


def standing(nodes, via="n1"):
    """`job stats` lines about replicas: {"stream LOOPFLEET_JOBS": "3 of 3 replicas, 3 in sync, quorum", ...}."""
    r = nodes.lf("job", "stats", via=via)
    return {m.group(1): m.group(2) for line in r.stdout.splitlines()
            for m in [re.match(r"((?:stream|bucket|consumer) \S+): (.*)", line)] if m}


def all_replicated(nodes, want=3, via="n1"):
    s = standing(nodes, via)
    full = f"{want} of {want} replicas, {want} in sync, quorum"
    keys = {"stream LOOPFLEET_JOBS", "stream LOOPFLEET_DEAD", "bucket KV_loopfleet_nodes", "consumer loopfleet_work",
            "stream LOOPFLEET_WF", "stream LOOPFLEET_WFT"}  # workflows: journals and tasks
    # "...; on n1 (leader), n2, n3": each replica on a server of its own, none behind.
    return s if keys <= s.keys() and all(s[k].split("; on ")[0] == full for k in keys) else None


def wait_replicated(nodes, timeout, what):
    """Waits for every object on 3 replicas; on timeout says what `job stats` and the logs last said."""
    try:
        return wait_until(lambda: all_replicated(nodes), timeout=timeout, what=what)
    except AssertionError as e:
        said = [f"{n}: {l}" for n, node in nodes.nodes.items() for l in node.log.lines[:] if "cluster:" in l]
        raise AssertionError(f"{e}; job stats: {standing(nodes)}; logs:\n" + "\n".join(said[-60:])) from None


def test_two_of_three_nodes_wait_for_the_third_before_storing_a_job(tmp_path):
    nodes = Nodes(tmp_path, ["--replicas-wait", "0"])  # wait as long as it takes
    try:
        nodes.start("n1", wait_ready=False)
        nodes.start("n2", wait_ready=False)
        for name in ("n1", "n2"):
            nodes.nodes[name].log.wait_for(r"cluster: waiting for 3 JetStream servers to create stream LOOPFLEET_JOBS "
                                           r"with 3 replicas \(--replicas\).*no job is stored until then", timeout=60)
        submitter = nodes.submit(200, "wait:10")
        # The submitter is refused (no stream takes the jobs) and keeps trying; nothing is stored.
        submitter.err.wait_for(r"retrying with backoff", timeout=30)
        stats = nodes.lf("job", "stats")
        assert stats.returncode != 0 and "cannot read stream LOOPFLEET_JOBS" in stats.stderr, stats
        assert submitter.proc.poll() is None

        nodes.start("n3")
        out = submitter.finish(timeout=120)
        assert "stored 200 job(s)" in out, out
        wait_until(lambda: len(nodes.done()) >= 200, timeout=60, what="200 jobs done")
        assert nodes.done() == {f"wait:10-{i}" for i in range(200)}
        state = wait_replicated(nodes, timeout=30, what="every object on 3 replicas")
        print(f"two of three: nothing stored until the third came; then {state}")
        # The promise is recorded and seen by every node's heartbeat too.
        beats = nodes.lf("cluster", "status")
        assert "stream LOOPFLEET_JOBS: 3 of 3 replicas, 3 in sync, quorum" in beats.stdout, beats.stdout
        assert not any("only 2 of 3 replicas" in l for n in nodes.nodes.values() for l in n.log.lines)
    finally:
        nodes.stop()


# Release build only: under ASan the third node came up within the 1 s wait (its route was
# there as the stream was made), so nothing started small and the premise did not hold.
@pytest.mark.soak
def test_streams_started_small_after_the_wait_grow_with_their_consumers_and_survive_a_kill(tmp_path):
    nodes = Nodes(tmp_path, ["--replicas-wait", "1s"])
    try:
        nodes.start("n1", wait_ready=False)
        nodes.start("n2")
        nodes.nodes["n1"].log.wait_for(r"ready in \d+ ms", count=2)
        created = wait_until(lambda: "|".join(l for n in nodes.nodes.values() for l in n.log.lines[:]
                                              if "cluster: created stream LOOPFLEET_JOBS with" in l), timeout=60,
                             what="the jobs stream created")  # by whichever node came first
        if "with only 2 of 3" in created:
            assert re.search(r"with only 2 of 3 replicas: not enough JetStream servers within --replicas-wait 1 s.*"
                             r"it grows as soon as they are there", created), created
            stats = nodes.lf("job", "stats")
            assert "stream LOOPFLEET_JOBS: 2 of 3 replicas" in stats.stdout and "fewer replicas than promised" in \
                stats.stdout, stats.stdout
            # The jobs' consumer is created now, by the workers, with the stream's two replicas.
            wait_until(lambda: "consumer loopfleet_work: 2 of 3" in nodes.lf("job", "stats").stdout, timeout=60,
                       what="the consumer on 2 replicas")
        else:
            # Seen on loaded machines: nats-server 2.9.10 accepted the 3 replicas asked for
            # first after the wait with only two servers up (configured 3, placed on 2; it
            # adds the third server itself when it joins, but not to the consumers made
            # meanwhile: the agent raises those). What matters below holds either way: every
            # object on 3 servers once n3 is there, and a kill.
            stats = nodes.lf("job", "stats").stdout
            print(f"nats-server placed 3 replicas with 2 servers up: {created}\n{stats}")
            on = re.search(r"stream LOOPFLEET_JOBS: .*; on (.*)", stats)
            held_by = {name.split(" ")[0] for name in on.group(1).split(", ")} if on else set()
            if held_by - {"n1", "n2"}:
                # Only a third JetStream server makes that placement possible: one this test
                # did not start (a stray of another test that found these ports) joined.
                pytest.skip(f"a nats-server this test did not start holds a replica: {stats}")

        nodes.start("n3")
        grown_at = time.monotonic()
        state = wait_replicated(nodes, timeout=60, what="streams and consumer raised to 3")
        print(f"raised to 3 replicas {time.monotonic() - grown_at:.1f} s after n3 was ready: {state}")

        # Now any one node may die: here n2, one of the two that held everything from the start.
        submitter = nodes.submit(1000, "grown:100")
        wait_until(lambda: len(nodes.done()) >= 100, timeout=60, what="100 jobs done")
        nodes.kill("n2")
        submitter.finish(timeout=120)
        wait_until(lambda: len(nodes.done()) >= 1000, timeout=120, what="1000 jobs done after the kill")
        assert nodes.done() == {f"grown:100-{i}" for i in range(1000)}
    finally:
        nodes.stop()


class Busy:
    """Both CPUs and the disk kept busy, as on a fresh machine still installing and building."""

    def __init__(self, tmp):
        self.stop = threading.Event()
        self.procs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
        self.disk = threading.Thread(target=self._disk, args=(tmp / "busy-disk",), daemon=True)
        self.disk.start()

    def _disk(self, path):
        block = b"\0" * (1 << 20)
        while not self.stop.is_set():
            with open(path, "wb") as f:
                for _ in range(64):  # 64 MiB written and synced, again and again
                    f.write(block)
                os.fsync(f.fileno())
        path.unlink(missing_ok=True)

    def end(self):
        self.stop.set()
        for p in self.procs:
            p.kill()
            p.wait()
        self.disk.join(timeout=60)


ROUNDS = 5
JOBS = 3000


@pytest.mark.soak
def test_jobs_submitted_while_a_busy_cluster_forms_survive_a_node_kill_five_times(tmp_path):
    busy = Busy(tmp_path)
    try:
        for round in range(ROUNDS):
            victim = ("n2", "n3")[round % 2]  # a replica, not the node the submitter talks to
            nodes = Nodes(tmp_path / f"round{round}")
            (tmp_path / f"round{round}").mkdir()
            try:
                began = time.monotonic()
                for name in ("n1", "n2", "n3"):  # all at once, and the jobs at once too
                    nodes.start(name, wait_ready=False)
                payload = f"r{round}:200"
                submitter = nodes.submit(JOBS, payload)
                try:
                    wait_until(lambda: submitter.failed() or len(nodes.done()) >= 500, timeout=180,
                               what="500 jobs done")
                except AssertionError:
                    stats = nodes.lf("job", "stats")
                    raise AssertionError(f"round {round}: {len(nodes.done())} jobs done; submitter says "
                                         f"{submitter.out.text()!r} {submitter.err.text()!r}; job stats: "
                                         f"{stats.stdout} {stats.stderr}")
                wait_until(lambda: sum(1 for l in nodes.nodes[victim].log.lines if "job-done" in l) >= 10, timeout=60,
                           what=f"{victim} running jobs")
                nodes.kill(victim)
                submitter.finish(timeout=300)
                wait_until(lambda: len(nodes.done()) >= JOBS, timeout=180, what=f"round {round}: {JOBS} jobs done")
                assert nodes.done() == {f"{payload}-{i}" for i in range(JOBS)}
                print(f"round {round}: {JOBS} jobs submitted while the cluster formed, {victim} killed, all done "
                      f"{time.monotonic() - began:.1f} s after the start")
            finally:
                nodes.stop(tag=f"round{round}-")
    finally:
        busy.end()


def test_a_job_its_consumer_lost_track_of_is_queued_again(tmp_path):
    """Stored, delivered, no longer awaited: nothing would run it. Made on purpose here (a
    consumer that delivers once and gives up after 1 s); nats-server can leave jobs so when
    nodes die. The node agent's sweeper queues such jobs again once no attempt can still be
    running, keeping a single copy."""
    port = free_port()
    node = Supervisor(1, ["--cluster", "--node", "solo", "--nats-listen", f"127.0.0.1:{port}", "--data-dir",
                          str(tmp_path / "solo")], [binary("cluster-example")], tmp=str(tmp_path))
    url = f"nats://127.0.0.1:{port}"

    def lf(*args):
        return subprocess.run([binary("loopfleet"), *args, "--nats", url], capture_output=True, text=True,
                              timeout=60 * SLOW)
    try:
        node.log.wait_for(r"cluster: node solo joined", timeout=60)
        r = lf("job", "submit", "orphan", "lost", "--count", "3", "--max-attempts", "1", "--time-limit", "1s")
        assert r.returncode == 0, r.stderr
        probe = subprocess.run([binary("nats_probe"), "strand", url, "orphan", "3"], capture_output=True, text=True,
                               timeout=60 * SLOW)
        assert probe.returncode == 0 and "stranded 3" in probe.stdout, probe.stdout + probe.stderr
        stats = lf("job", "stats")
        # Not pending, never to be delivered again (nats-server still counts them as in flight),
        # yet stored.
        assert re.search(r"orphan\s+0\s+\d+ ", stats.stdout), stats.stdout
        assert "waiting 3 " in stats.stdout, stats.stdout
        # One attempt of 1 s, the ack wait and the margins: about 20 s, then the next sweep.
        (line,) = node.log.wait_for(r"3 stored job\(s\) were delivered but JetStream no longer tracked them.*"
                                    r"queued again: orphan #", timeout=60)
        stats = lf("job", "stats")
        assert re.search(r"orphan\s+3\s+", stats.stdout), stats.stdout  # deliverable again
        assert "waiting 3 " in stats.stdout, stats.stdout                    # one copy each
        print(f"stranded jobs found and queued again: {line.split('cluster: ')[-1]}")
    finally:
        node.stop()
