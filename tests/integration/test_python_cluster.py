"""The cluster from Python (python/loopfleet/cluster.py over the C++ client): Python job
handlers on three nodes through a whole-node kill, Python and C++ workers calling each other
and taking each other's jobs, a drain that acks every job, the time limit reaching a Python
task, and the API's errors."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, ROOT, SLOW, binary, wait_until
from test_cluster import JOBS, Cluster, finish_and_count, submit_in_background, tree

# Under the sanitizer build the extension is instrumented too: Debian's python3 can load it only
# with the ASan runtime first in its library list.
SANITIZED = ["env", "LD_PRELOAD=" + subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                                                    text=True).stdout.strip(), "ASAN_OPTIONS=detect_leaks=0"] \
    if "asan" in BIN else []
PYTHON_APP = SANITIZED + ["/usr/bin/python3", "-m", "loopfleet", "aiohttp", "cluster_app:app", "--app-dir",
                          os.path.join(ROOT, "examples", "python")]
PACKAGE = os.path.join(os.path.dirname(BIN), "lib", "loopfleet", "python")


def get(node, path, timeout=30):
    r = subprocess.run(["curl", "-s", "-w", " %{http_code}", f"http://127.0.0.1:{node.port}{path}"],
                       capture_output=True, text=True, timeout=timeout * SLOW)
    return r.stdout


@pytest.mark.soak  # the extension under ASan: the tests below; the node kill: test_cluster.py's, and here in release
def test_python_jobs_survive_a_killed_node(tmp_path):
    c = Cluster(tmp_path, commands=[PYTHON_APP] * 3)
    try:
        submitter = submit_in_background(c, JOBS, "job:200")
        wait_until(lambda: len(c.done()) >= 2000, timeout=60, what="2000 jobs done")
        wait_until(lambda: sum(1 for l in c.nodes[2].log.lines if "job-done" in l) >= 20, timeout=30,
                   what="n3 running jobs")
        killed_at = time.time()
        for pid in tree(c.nodes[2].proc.pid):  # the whole node: supervisor, Python workers, nats-server
            os.kill(pid, signal.SIGKILL)
        duplicates, rerun_after = finish_and_count(c, submitter, killed_at, "job:200")
        per_node = {f"n{i + 1}": sum(1 for l in n.log.lines if "job-done" in l) for i, n in enumerate(c.nodes)}
        print(f"Python handlers, node kill: {JOBS} jobs all done; per node {per_node}; duplicates {duplicates}; "
              + (f"the dead node's jobs ran again {rerun_after:.1f} s after the kill" if rerun_after is not None
                 else "no job needed a rerun"))
        assert all(per_node.values()), per_node
    finally:
        c.stop()


def test_python_and_cpp_workers_call_each_other_and_share_jobs(tmp_path):
    # n1 runs the C++ example, n2 and n3 its Python twin: same call and job names.
    c = Cluster(tmp_path, commands=[[binary("cluster-example")], PYTHON_APP, PYTHON_APP])
    cpp, py = c.nodes[0], c.nodes[1]
    try:
        def answers(node, path, n=40):
            return {get(node, path).split()[0] for _ in range(n)}
        # C++ -> Python and Python -> C++: "whoami" is served by every worker of every node.
        assert {"node=n2", "node=n3"} <= answers(cpp, "/call"), "the C++ node never reached a Python worker"
        assert "node=n1" in answers(py, "/call"), "a Python node never reached the C++ worker"
        # Python -> a C++ coroutine handler, which itself calls "whoami" before it answers.
        out = get(py, "/relay")
        assert out.endswith(" 200") and re.match(r"relay node=n1 pid=\d+ -> node=n\d pid=\d+", out), out
        # A Python submit_and_wait: the result set by whichever worker ran it.
        out = get(py, "/run?payload=hello")
        assert out.endswith(" 200") and re.search(r"done hello on node=n\d", out), out
        began = time.monotonic()
        out = get(py, "/call-nobody")
        assert out.endswith(" 503") and "no worker serves call 'nobody-serves-this'" in out, out
        assert time.monotonic() - began < 1.0 * SLOW  # at once, not after the 2 s timeout

        # Jobs submitted from Python, run by C++ and Python workers; a Python node reloads
        # meanwhile: its draining workers finish and ack theirs, so none runs twice.
        out = get(py, "/submit?n=1500&ms=200&key=shared")
        assert "submitted 1500" in out, out
        wait_until(lambda: sum(1 for l in py.log.lines if "job-done" in l) >= 50, timeout=60, what="n2 running jobs")
        pids_before = set(py.worker_pids())
        assert py.cli("reload").returncode == 0
        wait_until(lambda: len({p for p, _, _ in c.done() if p.startswith("job-")}) >= 1500, timeout=120,
                   what="1500 jobs done")
        done = [d for d in c.done() if d[0].startswith("job-")]
        per_node = {f"n{i + 1}": sum(1 for l in n.log.lines if "job-done job-" in l) for i, n in enumerate(c.nodes)}
        print(f"mixed cluster: 1500 jobs; per node {per_node}; {len(done) - len({p for p, _, _ in done})} ran twice")
        assert {p for p, _, _ in done} == {f"job-{i}:200" for i in range(1500)}
        assert len(done) == 1500, "a job acked by a draining Python worker ran again"
        assert all(per_node.values()), per_node
        assert not pids_before & set(py.worker_pids())
        py.log.wait_for(r"cluster: jobs in flight finished; leaving", count=2)

        # A Python handler that raises: retried up to its attempts, then a dead letter with its error.
        lf = ["--nats", c.url(1)]
        r = subprocess.run([binary("loopfleet"), "job", "submit", "work", "fail-please", *lf], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        wait_until(lambda: any("moved to loopfleet.dead.work" in l for n in c.nodes for l in n.log.lines),
                   timeout=60, what="the failing job's dead letter")
        assert any("RuntimeError: asked to fail" in l for n in c.nodes[1:] for l in n.log.lines) or \
            any("asked to fail" in l for l in cpp.log.lines)

        # Past its time limit a Python job's task is cancelled, and the job tried again, then
        # moved to the dead letters: two attempts, both run and cancelled (none of them lost to
        # a draining worker's last fetch, which runs what it brings instead of handing it back).
        r = subprocess.run([binary("loopfleet"), "job", "submit", "sleepy", "60000", "--time-limit", "500ms",
                            "--max-attempts", "2", *lf], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        wait_until(lambda: any(re.search(r"job sleepy #\d+ failed attempt 2 of 2 \(ran past its time limit of 500 ms\); "
                                         r"moved to loopfleet.dead.sleepy", l) for n in c.nodes[1:] for l in n.log.lines),
                   timeout=60, what="the sleepy job's dead letter")
        cancelled = {m.group(1) for n in c.nodes[1:] for l in n.log.lines
                     for m in [re.search(r"sleepy \d+ cancelled at attempt (\d+)", l)] if m}
        assert cancelled == {"1", "2"}, cancelled
        assert not any("woke" in l for n in c.nodes for l in n.log.lines)
    finally:
        c.stop()


def python(code, env=None):
    return subprocess.run(SANITIZED + ["/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=PACKAGE, **(env or {})))


def test_python_api_errors_name_the_problem():
    out = python("""
import asyncio, loopfleet.cluster as c
async def main():
    try:
        await c.call("x")
    except c.NotConfigured as e:
        print("not configured:", e)
    for bad in (lambda: c.submit("x", 42), lambda: c.submit("x", max_attempts=0), lambda: c.call("x", timeout=-1)):
        try:
            await bad()
        except (TypeError, ValueError, c.NotConfigured) as e:
            print(type(e).__name__ + ":", e)
    try:
        c.serve("bad name")(lambda p: p)
    except ValueError as e:
        print("ValueError:", e)
asyncio.run(main())
""", env={"LOOPFLEET_NATS_URL": ""})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("not configured: this worker is not in a cluster: run it under loopfleet run --cluster")
    assert any("must be bytes or str, not int" in l for l in lines), lines
    assert any("max_attempts must be an integer >= 1" in l for l in lines), lines
    assert any("timeout must be a number of seconds >= 0" in l for l in lines), lines
    assert lines[-1].startswith("ValueError: call name 'bad name' must be a non-empty string"), lines

    # Registering after the client started is refused, naming the rule.
    out = python("""
import asyncio, loopfleet.cluster as c
async def main():
    c.start()
    try:
        c.handle_jobs("late")(lambda j: None)
    except RuntimeError as e:
        print(e)
    c.stop()
asyncio.run(main())
""", env={"LOOPFLEET_NATS_URL": "nats://127.0.0.1:1"})
    assert out.returncode == 0, out.stderr
    assert "cannot add job handler 'late': the cluster client has started; register handlers at import time" \
        in out.stdout, out.stdout
