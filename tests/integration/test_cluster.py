"""Three nodes on one machine, each with its own nats-server (JetStream, routes to the other
two), supervisor and workers: durable jobs and calls shared across nodes, a whole node or a
worker killed mid-run, and every job still done."""
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import SLOW, Supervisor, binary, free_port, jobs_done, log_time, wait_until

JOBS = 10000


def tree(pid):
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for c in f.read().split():
                    out += tree(int(c))
    except FileNotFoundError:
        pass
    return out


class Cluster:
    """`commands`: each node's worker command (default: every node runs the C++ example);
    `env` and `args`: more for every node's environment and `loopfleet run`."""

    def __init__(self, tmp, nodes=3, workers=2, commands=None, env=None, args=()):
        commands = commands or [[binary("cluster-example")]] * nodes
        self.tmp = tmp
        self.journal = tmp / "jobs-done"
        self.client_ports = [free_port() for _ in range(nodes)]
        self.route_ports = [free_port() for _ in range(nodes)]
        self.nodes = []
        extra = list(args)
        for i in range(nodes):
            peers = ",".join(f"127.0.0.1:{p}" for j, p in enumerate(self.route_ports) if j != i)
            args = ["--node", f"n{i + 1}", "--nats-listen", f"127.0.0.1:{self.client_ports[i]}", "--cluster-listen",
                    f"127.0.0.1:{self.route_ports[i]}", "--join", peers, "--data-dir", str(tmp / f"n{i + 1}"),
                    *extra]
            self.nodes.append(Supervisor(workers, args, commands[i], tmp=str(tmp),
                                         env={"JOBS_DONE_FILE": str(self.journal), **(env or {})}))
        for n in self.nodes:  # JetStream elected its leaders and the streams exist
            n.log.wait_for(r"cluster: node n\d joined", timeout=60)

    def url(self, i=0):
        return f"nats://127.0.0.1:{self.client_ports[i]}"

    def cli(self, *args, timeout=120):
        return subprocess.run([binary("loopfleet"), *args, "--nats", self.url()], capture_output=True, text=True,
                              timeout=timeout * SLOW)

    def done(self):
        """Every job run on any node: (payload, attempt, log time). From the workers' journal,
        which survives a killed node; the time from the node's log where its line got there
        (None where it died with the node), for how soon a dead node's jobs ran again."""
        seen = {}
        for n in self.nodes:
            for line in n.log.lines[:]:
                m = re.search(r"job-done (\S+) \d+ node=\S+ pid=\d+ attempt=(\d+)", line)
                if m:
                    seen[(m.group(1), int(m.group(2)))] = log_time(line)
        return [(p, a, seen.get((p, a))) for p, a in jobs_done(self.journal)]

    def stop(self):
        for i, n in enumerate(self.nodes):
            n.stop()
            # Kept beside the nodes' data dirs (pytest keeps the last runs' tmp dirs): a failure
            # is read from the logs and the streams' state on disk.
            (self.tmp / f"n{i + 1}.log").write_text(n.log.text())


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop()


def submit_in_background(c, count, payload):
    return subprocess.Popen([binary("loopfleet"), "job", "submit", "work", payload, "--count", str(count), "--nats",
                             c.url()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_and_count(c, submitter, killed_at, payload):
    out, err = submitter.communicate(timeout=300 * SLOW)
    assert submitter.returncode == 0, err
    wait_until(lambda: len({p for p, _, _ in c.done()}) >= JOBS, timeout=120, what=f"{JOBS} jobs done")
    done = c.done()
    unique = {p for p, _, _ in done}
    assert unique == {f"{payload}-{i}" for i in range(JOBS)}
    again = [t for _, attempt, t in done if attempt > 1 and t is not None and t >= killed_at]
    rerun_after = (min(again) - killed_at) if again else None
    duplicates = len(done) - len(unique)
    return duplicates, rerun_after


def test_jobs_and_calls_survive_a_killed_node(cluster):
    # Calls are load-balanced over every node's workers.
    seen = set()
    for _ in range(30):
        r = subprocess.run(["curl", "-s", f"http://127.0.0.1:{cluster.nodes[0].port}/call"], capture_output=True,
                           text=True, timeout=10)
        seen.add(r.stdout.split()[0])
    assert seen == {"node=n1", "node=n2", "node=n3"}, seen

    # Jobs of 200 ms: about 5 s of work for the 3 nodes, so the kill lands mid-run, once the
    # victim has jobs of its own.
    submitter = submit_in_background(cluster, JOBS, "job:200")
    wait_until(lambda: len(cluster.done()) >= 2000, timeout=60, what="2000 jobs done")
    wait_until(lambda: sum(1 for l in cluster.nodes[2].log.lines if "job-done" in l) >= 20, timeout=30,
               what="n3 running jobs")
    # One client calling back to back through node 1 during the kill: a call can fail only if
    # it was in flight on the dead node, so this client loses at most one.
    calls = {"ok": 0, "failed": 0}
    stop_calling = threading.Event()

    def caller():
        while not stop_calling.is_set():
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://127.0.0.1:{cluster.nodes[0].port}/call"], capture_output=True, text=True,
                               timeout=30)
            calls["ok" if r.stdout == "200" else "failed"] += 1
    calling = threading.Thread(target=caller, daemon=True)
    calling.start()
    victim = cluster.nodes[2]
    pids = tree(victim.proc.pid)
    killed_at = time.time()
    for pid in pids:  # the whole node: supervisor, workers, nats-server
        os.kill(pid, signal.SIGKILL)
    duplicates, rerun_after = finish_and_count(cluster, submitter, killed_at, "job:200")
    stop_calling.set()
    calling.join(timeout=30)
    print(f"calls through the kill: {calls['ok']} answered, {calls['failed']} failed")
    assert calls["ok"] > 0 and calls["failed"] <= 1, calls
    per_node = {n: sum(1 for line in cluster.nodes[i].log.lines if "job-done" in line) for i, n in
                enumerate(["n1", "n2", "n3"])}
    print(f"node kill: {JOBS} jobs all done; per node {per_node}; duplicates {duplicates}; "
          f"the dead node's jobs ran again {rerun_after:.1f} s after the kill" if rerun_after is not None else
          f"node kill: {JOBS} jobs all done; per node {per_node}; duplicates {duplicates}; no job needed a rerun")

    # The dead node is shown down; the others up.
    last = {}

    def n3_down():
        # The survivors' heartbeats may pause while JetStream elects new leaders: wait for the
        # settled picture, n3 down and the others up.
        r = cluster.cli("cluster", "status", "--json")
        last["out"] = r.stdout + r.stderr
        nodes = {n["node"]: n["state"] for n in json.loads(r.stdout)["nodes"]} if r.returncode == 0 else {}
        settled = nodes.get("n3") == "down" and nodes.get("n1") == "up" and nodes.get("n2") == "up"
        return nodes if settled else None
    try:
        states = wait_until(n3_down, timeout=30, what="n3 shown down")
    except AssertionError:
        raise AssertionError(f"n3 not shown down; last status: {last.get('out')}")
    assert states["n1"] == "up" and states["n2"] == "up"
    # Right after the kill JetStream may still be electing leaders; then the counts are exact.
    stats = wait_until(lambda: (lambda r: r if r.returncode == 0 else None)(cluster.cli("job", "stats")), timeout=30,
                       what="job stats")
    assert f"completed {JOBS}" in stats.stdout and "waiting 0" in stats.stdout, stats.stdout


def test_jobs_survive_a_killed_worker(cluster):
    submitter = submit_in_background(cluster, JOBS, "job:200")
    wait_until(lambda: len(cluster.done()) >= 2000, timeout=60, what="2000 jobs done")
    victim = cluster.nodes[1].worker_pids()[0]
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    duplicates, rerun_after = finish_and_count(cluster, submitter, killed_at, "job:200")
    print(f"worker kill: {JOBS} jobs all done; duplicates {duplicates}; rerun "
          f"{'%.1f s after the kill' % rerun_after if rerun_after is not None else 'not needed'}")


def test_bad_join_address_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([binary("loopfleet"), "run", "--join", "nowhere", "--control", str(tmp_path / "c.sock"), "--",
                        binary("cluster-example")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "--join 'nowhere'" in r.stderr, r.stderr


def test_a_node_joins_mid_run_and_another_leaves_gracefully(tmp_path):
    ports = {n: (free_port(), free_port()) for n in ("n1", "n2", "n3")}

    def start(name, peers):
        client, route = ports[name]
        join = ",".join(f"127.0.0.1:{ports[p][1]}" for p in peers)
        return Supervisor(2, ["--node", name, "--nats-listen", f"127.0.0.1:{client}", "--cluster-listen",
                              f"127.0.0.1:{route}", "--join", join, "--data-dir", str(tmp_path / name)],
                          [binary("cluster-example")], tmp=str(tmp_path),
                          env={"JOBS_DONE_FILE": str(tmp_path / "jobs-done")})

    nodes = {"n1": start("n1", ["n2"]), "n2": start("n2", ["n1"])}
    try:
        for n in nodes.values():
            n.log.wait_for(r"cluster: node n\d joined", timeout=60)
        c = Cluster.__new__(Cluster)  # reuse its helpers over these nodes
        c.client_ports = [ports["n1"][0]]
        c.nodes = list(nodes.values())
        c.journal = tmp_path / "jobs-done"
        # Jobs of a second each: n2 has a hundred or so running when it is told to leave.
        submitter = submit_in_background(c, 4000, "job:1000")
        wait_until(lambda: len(c.done()) >= 500, timeout=60, what="500 jobs done")

        nodes["n3"] = start("n3", ["n1", "n2"])
        c.nodes.append(nodes["n3"])
        nodes["n3"].log.wait_for(r"job-done", timeout=30)  # the newcomer takes a share
        # Once the streams are on three nodes, n2 may leave without taking the jobs with it.
        wait_until(lambda: any("LOOPFLEET_JOBS now has 3 replicas" in l for n in c.nodes for l in n.log.lines),
                   timeout=30, what="streams on 3 nodes")
        done_before = len(c.done())
        stop_index = len(nodes["n2"].log.lines)
        left = nodes["n2"].cli("stop")
        assert left.returncode == 0
        assert nodes["n2"].proc.wait(timeout=60 * SLOW) == 0
        nodes["n2"].log.wait_for(r"jobs in flight finished; leaving")

        out, err = submitter.communicate(timeout=300 * SLOW)
        assert submitter.returncode == 0, err
        wait_until(lambda: len({p for p, _, _ in c.done()}) >= 4000, timeout=120, what="4000 jobs done")
        done = c.done()
        per_node = {name: sum(1 for l in n.log.lines if "job-done" in l) for name, n in nodes.items()}
        print(f"join and leave: per node {per_node}; {len(done) - len({p for p, _, _ in done})} duplicates; "
              f"{done_before} done when n2 left")
        assert per_node["n3"] > 0
        assert done_before < 4000, "n2 left after the work was over: nothing was tested"
        assert len({p for p, _, _ in done}) == 4000
        # The jobs n2 finished while leaving were acknowledged for good: none ran again elsewhere.
        finished_leaving = {m.group(1) for l in nodes["n2"].log.lines[stop_index:]
                            for m in [re.search(r"job-done (\S+) ", l)] if m}
        elsewhere = {m.group(1) for name in ("n1", "n3") for l in nodes[name].log.lines
                     for m in [re.search(r"job-done (\S+) ", l)] if m}
        print(f"n2 finished {len(finished_leaving)} jobs while leaving; "
              f"{len(finished_leaving & elsewhere)} of them ran again elsewhere")
        assert finished_leaving and not (finished_leaving & elsewhere)
    finally:
        for n in nodes.values():
            n.stop()


def test_one_node_results_no_responders_idempotency_and_dead_letters(tmp_path):
    port = free_port()
    node = Supervisor(2, ["--cluster", "--node", "solo", "--nats-listen", f"127.0.0.1:{port}", "--data-dir",
                          str(tmp_path / "solo")], [binary("cluster-example")], tmp=str(tmp_path))
    try:
        node.log.wait_for(r"cluster: node solo joined", timeout=60)
        url = f"nats://127.0.0.1:{port}"

        def get(path):
            r = subprocess.run(["curl", "-s", "-w", " %{http_code}", f"http://127.0.0.1:{node.port}{path}"],
                               capture_output=True, text=True, timeout=30)
            return r.stdout

        began = time.monotonic()
        out = get("/call-nobody")
        assert out.endswith(" 503") and "no worker serves" in out, out
        assert time.monotonic() - began < 1.0  # at once, not after the 2 s timeout
        out = wait_until(lambda: (lambda o: o if o.endswith(" 200") else None)(get("/run?payload=hello")), timeout=30,
                         what="a job result")
        assert "done hello on node=solo" in out, out

        def lf(*args):
            return subprocess.run([binary("loopfleet"), *args, "--nats", url], capture_output=True, text=True, timeout=60)
        first = lf("job", "submit", "work", "once:1", "--key", "order-42")
        again = lf("job", "submit", "work", "once:1", "--key", "order-42")
        assert "stored 1" in first.stdout and "1 duplicate(s) dropped" in again.stdout, (first.stdout, again.stdout)
        node.log.wait_for(r"job-done once:1 ")
        assert sum(1 for l in node.log.lines if "job-done once:1 " in l) == 1

        assert lf("job", "submit", "work", "fail-me").returncode == 0
        node.log.wait_for(r"moved to loopfleet.dead.work", timeout=30)
        stats = wait_until(lambda: (lambda r: r if "dead 1" in r.stdout else None)(lf("job", "stats")), timeout=30,
                           what="the dead letter counted")
        assert "failed attempt 5 of 5" in node.log.text(), stats.stdout
        # One server: everything on its one replica, as promised.
        for what in ("stream LOOPFLEET_JOBS", "stream LOOPFLEET_DEAD", "bucket KV_loopfleet_nodes",
                     "consumer loopfleet_work"):
            assert f"{what}: 1 of 1 replicas, 1 in sync, quorum" in stats.stdout, stats.stdout
    finally:
        node.stop()


def test_nats_unreachable_at_start_is_retried_until_it_comes(tmp_path):
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    node = Supervisor(1, ["--nats", url, "--node", "late"], [binary("cluster-example")], tmp=str(tmp_path))
    server = None
    try:
        node.log.wait_for(re.escape(f"cannot reach NATS at {url}") + r".*retrying")
        assert node.proc.poll() is None and node.status()["slots"][0]["state"] == "ready"  # HTTP serves meanwhile
        server = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd",
                                   str(tmp_path / "js"), "-n", "late-server"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        node.log.wait_for(r"cluster: node late joined", timeout=30)
        submitted = wait_until(lambda: (lambda r: r if r.returncode == 0 else None)(subprocess.run(
            [binary("loopfleet"), "job", "submit", "work", "late-job", "--nats", url], capture_output=True, text=True,
            timeout=30)), timeout=30, what="a job stored")
        assert "stored 1" in submitted.stdout
        node.log.wait_for(r"job-done late-job ", timeout=30)
    finally:
        node.stop()
        if server:
            server.kill()
            server.wait()


def test_storage_full_is_retried_with_backoff_and_loses_nothing(tmp_path):
    """A 1 MiB JetStream store holds about 50 jobs of 20 KB. Submitting hundreds faster than the
    worker runs them fills it: the worker's submit and the CLI both retry with backoff, and every
    job runs exactly once. With nobody to run them the submit gives up with an error that names
    the fix, and exactly the jobs it reported stored are kept."""
    port = free_port()
    node = Supervisor(1, ["--cluster", "--node", "small", "--nats-listen", f"127.0.0.1:{port}", "--max-store", "1",
                          "--data-dir", str(tmp_path / "small")], [binary("cluster-example")], tmp=str(tmp_path))
    url = f"nats://127.0.0.1:{port}"

    def get(path):
        r = subprocess.run(["curl", "-s", "-w", " %{http_code}", f"http://127.0.0.1:{node.port}{path}"],
                           capture_output=True, text=True, timeout=120 * SLOW)
        return r.stdout

    def lf(*args):
        return subprocess.run([binary("loopfleet"), *args, "--nats", url], capture_output=True, text=True,
                              timeout=120 * SLOW)
    try:
        node.log.wait_for(r"cluster: node small joined", timeout=60)
        big = "x" * 20000
        # From a worker: 150 jobs of 20 KB taking 200 ms each, submitted back to back.
        out = get("/submit?n=150&size=20000&ms=200&retry_ms=30000")
        assert out.endswith(" 200") and "submitted 150" in out, out
        node.log.wait_for(r"loopfleet\.job\.work not stored yet: JetStream storage is full .*retrying with backoff")
        # From the CLI: 300 more.
        r = lf("job", "submit", "work", big + ":200", "--count", "300", "--retry-for", "30s")
        assert r.returncode == 0, r.stderr
        assert "JetStream storage is full" in r.stderr and "retrying with backoff" in r.stderr, r.stderr
        assert re.search(r"stored 300 job\(s\) 'work' \(\d+ sent again", r.stdout), r.stdout

        def done():
            return [m.group(1) for line in node.log.lines[:] for m in [re.search(r"job-done (\S+) ", line)] if m]
        wait_until(lambda: len(set(done())) >= 450, timeout=120, what="all 450 jobs done")
        expected = {f"{'x' * 16}...{('x' * 32 + f'job-{i}:200')[-32:]}" for i in range(150)} | \
                   {f"{'x' * 16}...{(big + f':200-{i}')[-32:]}" for i in range(300)}
        ran = done()
        assert set(ran) == expected
        assert len(ran) == 450, f"{len(ran) - 450} jobs ran twice"

        # Nobody runs "parked": the store stays full and the submit gives up, saying why and what to do.
        r = lf("job", "submit", "parked", big, "--count", "80", "--retry-for", "1s")
        assert r.returncode == 1
        error = r.stderr.strip().splitlines()[-1]
        m = re.search(r"(\d+) of 80 jobs not stored: JetStream storage is full .*raise --max-store", error)
        assert m, error
        kept = 80 - int(m.group(1))
        assert 0 < kept < 80
        stats = lf("job", "stats")
        assert f"waiting {kept} " in stats.stdout, stats.stdout  # no accepted job lost, no refused one kept
        # A worker's submit gives up the same way, after its retry_for.
        out = get("/submit?n=1&size=20000&retry_ms=500")
        assert out.endswith(" 503") and "job 'work' not stored: JetStream storage is full" in out, out
        assert "gave up after" in out, out
        # Heartbeats live in memory: a full disk store does not take the node out of the cluster.
        status = lf("cluster", "status", "--json")
        assert json.loads(status.stdout)["nodes"][0]["state"] == "up", status.stdout
    finally:
        node.stop()
