"""Durable workflows (include/loopfleet/workflow.hpp) on real nodes, each with its own
nats-server: a whole node killed mid-run, a durable sleep whose node dies, an executor frozen
past its ack wait and woken again (fenced), signals, failures and bad input. The worker is
examples/workflow (build/bin/workflow-example); its steps record each execution in STEPS_FILE."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import SLOW, Supervisor, binary, free_port, log_time, wait_until
from test_cluster import Cluster, tree

WORKFLOWS = 200
STEPS = 5
STEP_MS = 100
SUM = sum(i * i for i in range(1, STEPS + 1))


def steps_recorded(path):
    """(kind, id, n, node, pid) of every wf-begin / wf-step line the workers wrote."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [(m.group(1), m.group(2), int(m.group(3)), m.group(4), int(m.group(5)))
            for m in re.finditer(r"wf-(begin|step) (\S+) (\d+) node=(\S+) pid=(\d+)\n", text)]


def curl(port, path, timeout=30):
    r = subprocess.run(["curl", "-s", "-m", str(timeout * SLOW), f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, text=True, timeout=timeout * SLOW + 10)
    return r.stdout


def show(c, wid):
    r = c.cli("workflow", "show", wid, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def ready_for_workflows(cli):
    """Workers register their workflows once the cluster's streams exist (their task consumers
    appear within a second of it); until then a start is refused as unknown."""
    wait_until(lambda: cli("workflow", "start", "steps", "1:0", "--id", "warm-up").returncode == 0, timeout=60,
               what="the workflows registered")


def consuming(node, workflow="steps"):
    """The pids of the node's workers that take the workflow's tasks (each says so once its
    pull subscription is bound)."""
    return {m.group(1) for line in node.log.lines[:]
            if (m := re.search(rf"\[(\d+)\] cluster: consuming jobs 'workflow {workflow}'", line))}


def warnings(c):
    """The workers' warnings on every node, numbers folded, most frequent first: what a failed
    assertion shows of why."""
    seen = {}
    for node in c.nodes:
        for line in node.log.lines[:]:
            if " warn " in line:
                key = re.sub(r"\d+", "N", line.split(" warn ", 1)[1])[:160]
                seen[key] = seen.get(key, 0) + 1
    return "\n".join(f"{n:5} {k}" for k, n in sorted(seen.items(), key=lambda kv: -kv[1])[:15])


@pytest.fixture
def wf_cluster(tmp_path):
    c = Cluster(tmp_path, commands=[[binary("workflow-example")]] * 3,
                env={"STEPS_FILE": str(tmp_path / "steps"), "ORDER_SLEEP_MS": "200"})
    c.steps = tmp_path / "steps"
    ready_for_workflows(c.cli)
    # Every node's workers take tasks (one consumer registered is enough for a start).
    try:
        wait_until(lambda: all(len(consuming(n)) >= 2 for n in c.nodes), timeout=60,
                   what="every node's workers consuming workflow tasks")
    except AssertionError as e:
        raise AssertionError(f"{e}: {[sorted(consuming(n)) for n in c.nodes]}; warnings:\n{warnings(c)}") from None
    every_worker_runs_tasks(c)
    yield c
    c.stop()


def every_worker_runs_tasks(c, workers=2):
    """A worker bound to the task consumer is not yet served: its fetch sent before JetStream
    elected the consumer's leader is lost, and it asks again only when that fetch expires (0.5 s).
    A burst of starts in that window all went to the workers whose fetch had arrived (each then
    runs its workflows to the end): CI saw one node take all 200. So warm up until every worker
    has run a workflow; JetStream hands each task to the next waiting fetch in turn."""
    def served():  # per node, how many of its consuming workers have run a warm-up
        ran = {str(rec[4]) for rec in steps_recorded(c.steps) if rec[1].startswith("warm-")}
        return [len(consuming(n) & ran) for n in c.nodes]
    for i in range(200):
        r = c.cli("workflow", "start", "steps", "1:0", "--id", f"warm-{i}")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: any(rec[1] == f"warm-{i}" for rec in steps_recorded(c.steps)), timeout=30,
                   what=f"warm-up workflow {i} begun")
        if all(n >= workers for n in served()):
            return
    raise AssertionError(f"after 200 warm-up workflows, workers per node that ran one: {served()}; "
                         f"warnings:\n{warnings(c)}")


def test_workflows_survive_a_killed_node(wf_cluster):
    c = wf_cluster
    out = curl(c.nodes[0].port, f"/start-many?workflow=steps&prefix=w&n={WORKFLOWS}&input={STEPS}:{STEP_MS}"
                                     "&parallel=1")  # one after another: every node's workers get some
    assert out.startswith(f"started {WORKFLOWS}"), out
    victim = c.nodes[2]
    # Mid-run, once the victim has begun steps of its own (on a loaded machine the other nodes'
    # workers may take most of the workflows: a few are enough for the kill to interrupt).
    def per_node():
        begun = [r[3] for r in steps_recorded(c.steps) if r[0] == "begin" and re.fullmatch(r"w\d+", r[1])]
        return {n: begun.count(n) for n in ("n1", "n2", "n3")}
    try:
        wait_until(lambda: per_node()["n3"] >= 5, timeout=60, what="n3 running workflow steps")
    except AssertionError as e:
        raise AssertionError(f"{e}; steps begun per node: {per_node()}; warnings:\n{warnings(c)}") from None
    killed_at = time.time()
    for pid in tree(victim.proc.pid):  # the whole node: supervisor, workers, nats-server
        os.kill(pid, signal.SIGKILL)
    # On n1, which waits for each result in turn.
    out = curl(c.nodes[0].port, f"/results?prefix=w&n={WORKFLOWS}", timeout=300)
    results = dict(line.split(" ", 1) for line in out.splitlines())
    assert len(results) == WORKFLOWS, out[-2000:]
    wrong = {k: v for k, v in results.items() if v != f"sum={SUM}"}
    assert not wrong, wrong

    # Each journaled step ran once, except steps the kill interrupted (ran, or begun, on n3).
    recorded = [r for r in steps_recorded(c.steps) if re.fullmatch(r"w\d+", r[1])]  # not the warm-up
    runs = {}
    for kind, wid, n, node, pid in recorded:
        if kind == "step":
            runs.setdefault((wid, n), []).append(node)
    assert set(runs) == {(f"w{i}", n) for i in range(WORKFLOWS) for n in range(1, STEPS + 1)}
    again = {k: v for k, v in runs.items() if len(v) > 1}
    # Or whose executor gave the workflow back: its journal write failed for 30 s (the
    # elections after the kill, on a very busy machine).
    handed_back = {m.group(1) for node in c.nodes for line in node.log.lines[:]
                   if (m := re.search(r"workflow (\S+): handed back", line))}
    began_on_n3 = {(wid, n) for kind, wid, n, node, _ in recorded if kind == "begin" and node == "n3"}
    unexplained = {k: v for k, v in again.items() if k not in began_on_n3 and k[0] not in handed_back}
    assert not unexplained, f"{unexplained}; warnings:\n{warnings(c)}"
    # The journal agrees: five steps for each, from whichever executor wrote first.
    sample = show(c, "w0")
    assert sample["status"] == "completed" and sample["result"] == f"sum={SUM}"
    assert [s["name"] for s in sample["steps"]] == [f"step-{n}" for n in range(1, STEPS + 1)]

    # When the dead node's workflows went on elsewhere: the first step begun on n1 or n2 after
    # the kill by a workflow that had begun a step on n3.
    on_n3 = {wid for kind, wid, _, node, _ in recorded if node == "n3"}
    resumed = []
    for node in c.nodes[:2]:
        for line in node.log.lines[:]:
            m = re.search(r"wf-begin (\S+) \d+ node=", line)
            if m and m.group(1) in on_n3 and log_time(line) >= killed_at:
                resumed.append(log_time(line))
                break
    per_node = {n: sum(1 for r in recorded if r[0] == "step" and r[3] == n) for n in ("n1", "n2", "n3")}
    took = f"{min(resumed) - killed_at:.1f} s" if resumed else "n/a (none was running there)"
    print(f"node kill: {WORKFLOWS} workflows of {STEPS} steps all completed; step runs per node {per_node}; "
          f"{len(again)} step(s) ran again (interrupted on n3 before their result was journaled); "
          f"the dead node's workflows resumed {took} after the kill")


def test_a_sleeping_workflow_wakes_on_another_node(wf_cluster):
    c = wf_cluster
    r = c.cli("workflow", "start", "nap", "3000", "--id", "nap-1")
    assert r.returncode == 0, r.stderr
    def napping_on():  # the nap's line may come from any node
        for i, n in enumerate(c.nodes):
            for l in n.log.lines[:]:
                m = re.search(r"wf-nap nap-1 node=(\S+)", l)
                if m:
                    return i, log_time(l)
        return None
    index, began = wait_until(napping_on, timeout=30, what="the nap begun")
    victim = c.nodes[index]
    for pid in tree(victim.proc.pid):
        os.kill(pid, signal.SIGKILL)
    survivor = c.nodes[(index + 1) % 3]
    out = curl(survivor.port, "/result?id=nap-1", timeout=120)
    assert out.startswith("woke on node="), out
    woke_on = out.split("node=")[1].split()[0]
    assert woke_on != f"n{index + 1}", out
    j = show(_live_cli(c, index), "nap-1")
    assert j["status"] == "completed"
    timer = [s for s in j["steps"] if s["kind"] == "timer"][0]
    woke = [s for s in j["steps"] if s["name"] == "woke"][0]
    stamp = lambda t: time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone  # noqa: E731
    late = stamp(woke["at"]) - stamp(timer["due"])
    # Its task waits in JetStream, not on a worker: it comes back at the deadline, or (when the
    # consumer's leader died with the node) after the ack wait and a leader election.
    print(f"a 3 s sleep begun on n{index + 1}, which was then killed, woke on {woke_on} "
          f"{late:.0f} s after its deadline (timer due {timer['due']}, woke at {woke['at']}; whole seconds)")
    assert late <= 30 * SLOW, (timer, woke)


def _live_cli(c, dead):
    """Something with the cluster's cli, talking to a node other than `dead`."""
    class Other:
        def cli(self, *args):
            return subprocess.run([binary("loopfleet"), *args, "--nats", c.url((dead + 1) % 3)], capture_output=True,
                                  text=True, timeout=60 * SLOW)
    return Other()


def test_signals_failures_and_bad_input(wf_cluster):
    c = wf_cluster
    # A workflow that waits for a signal holds no worker; the signal wakes it on any node.
    assert c.cli("workflow", "start", "approval", "alice", "--id", "ap-1").returncode == 0
    wait_until(lambda: show(c, "ap-1")["status"] == "waiting", timeout=30, what="ap-1 waiting")
    r = c.cli("workflow", "signal", "ap-1", "approve", "yes")
    assert r.returncode == 0, r.stderr
    r = c.cli("workflow", "start", "approval", "alice", "--id", "ap-1", "--wait", "30s")
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "approved alice: yes", r.stdout + r.stderr
    # A signal sent before the wait is kept for it.
    assert c.cli("workflow", "start", "order", "book", "--id", "o-1", "--wait", "30s").returncode == 0
    j = show(c, "o-1")
    assert j["status"] == "completed" and [s["name"] for s in j["steps"]] == ["reserve", "charge", "sleep", "ship"]
    assert all(s["node"] in ("n1", "n2", "n3") for s in j["steps"])
    # A step that keeps failing fails the workflow, with its error.
    r = c.cli("workflow", "start", "doomed", "x", "--id", "d-1", "--wait", "30s")
    assert r.returncode == 1 and "the warehouse is on fire" in r.stderr, r.stderr
    j = show(c, "d-1")
    assert j["status"] == "failed" and j["steps"][0]["attempts"] == 3

    def one_line_error(r, *words):
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        for w in words:
            assert w in r.stderr, r.stderr

    one_line_error(c.cli("workflow", "start", "nosuch", "x", "--id", "n-1"), "no worker has registered workflow 'nosuch'")
    one_line_error(c.cli("workflow", "show", "n-1"), "no workflow has id n-1")  # nothing stored
    one_line_error(c.cli("workflow", "start", "approval", "bob", "--id", "ap-1"), "another input")
    one_line_error(c.cli("workflow", "start", "order", "alice", "--id", "ap-1"), "taken by a run of workflow 'approval'")
    one_line_error(c.cli("workflow", "signal", "ap-1", "approve", "again"), "has completed", "no more signals")
    one_line_error(c.cli("workflow", "start", "steps", "1:1", "--id", "a.b"), "workflow id 'a.b'")
    one_line_error(c.cli("workflow", "show", "a b"), "workflow id 'a b'")


def test_a_stale_executor_is_fenced(tmp_path):
    """One node, two workers, the watchdog off so a frozen worker is not replaced: the worker
    running a workflow is stopped mid-step past its ack wait; the other takes the workflow
    over; the first is woken and must write nothing more."""
    steps = tmp_path / "steps"
    port, route = free_port(), free_port()
    node = Supervisor(2, ["--cluster", "--node", "solo", "--nats-listen", f"127.0.0.1:{port}", "--data-dir",
                          str(tmp_path / "solo"), "--watchdog", "0"], [binary("workflow-example")], tmp=str(tmp_path),
                      env={"STEPS_FILE": str(steps)})
    url = f"nats://127.0.0.1:{port}"
    cli = lambda *a, timeout=60: subprocess.run([binary("loopfleet"), *a, "--nats", url], capture_output=True,  # noqa
                                                text=True, timeout=timeout * SLOW)
    stopped = None
    try:
        node.log.wait_for(r"cluster: node solo joined", timeout=60)
        ready_for_workflows(cli)
        r = cli("workflow", "start", "steps", "3:2000", "--id", "fence-1")
        assert r.returncode == 0, r.stderr
        first = wait_until(lambda: next((p for k, w, n, _, p in steps_recorded(steps) if k == "begin" and n == 2), None),
                           timeout=60, what="step 2 begun")
        os.kill(first, signal.SIGSTOP)
        stopped = first
        # Past the ack wait (4 s) the other worker gets the task again and takes over.
        second = wait_until(lambda: next((p for k, w, n, _, p in steps_recorded(steps)
                                          if k == "begin" and n == 2 and p != first), None), timeout=60,
                            what="step 2 begun by the other worker")
        os.kill(first, signal.SIGCONT)
        stopped = None
        r = cli("workflow", "start", "steps", "3:2000", "--id", "fence-1", "--wait", "60s", timeout=90)
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == "sum=14", r.stdout + r.stderr
        node.log.wait_for(r"workflow fence-1: .*this executor stops and writes nothing more", timeout=30)
        j = json.loads(cli("workflow", "show", "fence-1", "--json").stdout)
        claims = {c["pid"]: c["seq"] for c in j["claims"]}
        assert first in claims and second in claims, (claims, first, second)
        stale, fresh = claims[first], claims[second]
        assert stale < fresh
        # Nothing from the stale executor after the takeover; its step 2 never got in.
        late = [e for e in j["journal"] if e["claim"] == stale and e["seq"] > fresh]
        assert not late, late
        assert [s["claim"] for s in j["steps"]] == [stale, fresh, fresh], j["steps"]
        print(f"fenced: claims {claims}; journal {[(e['seq'], e['kind'], e['n'], e['claim']) for e in j['journal']]}")
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
        node.stop()
