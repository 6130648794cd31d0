"""Schedules with no single point of failure: every node runs the scheduler, there is no
leader, and each tick is stored once across the cluster while nodes die and come back.

The cluster example's "work" handler appends `job-done PAYLOAD ID node=.. pid=.. attempt=N
key=schedule:NAME@TICK_MS` to a journal that survives a killed node, so every tick that became
a job, its job id (the stream sequence: one per enqueue) and every run of it are counted."""
import json
import re
import subprocess
import time

import pytest

from conftest import SLOW, Supervisor, binary, free_port, log_time, wait_until
from test_durability import Nodes

LINE = re.compile(r"job-done (\S+) (\d+) node=\S+ pid=\d+ attempt=(\d+) key=schedule:([\w-]+)@(\d+)")


def runs(journal, name):
    """Every run of schedule `name`'s jobs: (tick ms, job id, attempt)."""
    try:
        with open(journal, errors="replace") as f:
            return [(int(m.group(5)), int(m.group(2)), int(m.group(3))) for line in f
                    for m in [LINE.match(line)] if m and m.group(4) == name]
    except FileNotFoundError:
        return []


def ok(r):
    return r if r.returncode == 0 else None


def schedules(lf):
    r = wait_until(lambda: ok(lf("job", "schedules", "--json")), timeout=30, what="job schedules")
    return {s["name"]: s for s in json.loads(r.stdout)["schedules"]}


def one_line_error(r, *words):
    err = r.stderr.strip()
    assert r.returncode == 2 and err.count("\n") == 0, (r.returncode, r.stderr)
    for w in words:
        assert w in err, err


# Release build only: 46 s under ASan; the scheduler runs under ASan in this file's shorter test.
@pytest.mark.soak
def test_every_second_for_30_s_fires_each_tick_once_while_a_node_restarts_and_another_is_killed(tmp_path):
    nodes = Nodes(tmp_path)
    journal = tmp_path / "jobs-done"
    try:
        for name in ("n1", "n2", "n3"):
            nodes.start(name)
        for n in nodes.nodes.values():
            n.log.wait_for(r"cluster: node n\d joined", timeout=60)
        # The bucket exists once the agents made it with its three replicas.
        r = wait_until(lambda: ok(nodes.lf("job", "schedule", "tick", "tick", "--every", "1s", "--job", "work")),
                       timeout=60, what="the schedule stored")
        assert "scheduled 'tick': every 1s, job 'work'" in r.stdout, r.stdout
        created = schedules(nodes.lf)["tick"]["created_ms"] / 1000  # ticks after it fire
        wait_until(lambda: runs(journal, "tick"), timeout=30, what="the first tick")

        # A graceful restart of n2 (its nats-server too), then, once it is back, n3 killed whole:
        # JetStream keeps its quorum throughout (two of three), and no node is special.
        time.sleep(max(0.0, created + 8 - time.time()))
        nodes.nodes["n2"].stop()
        (tmp_path / "n2-first.log").write_text(nodes.nodes["n2"].log.text())
        restarted = nodes.start("n2")
        restarted.log.wait_for(r"cluster: node n2 joined", timeout=60)
        time.sleep(max(0.0, created + 18 - time.time()))
        killed_at = time.time()
        nodes.kill("n3")

        time.sleep(max(0.0, created + 30 - time.time()))
        removed = time.time()  # every tick up to here was due while the schedule was there
        r = nodes.lf("job", "unschedule", "tick")
        assert r.returncode == 0 and "unscheduled 'tick'" in r.stdout, r.stderr
        # Every tick due before the removal has become a job and run (a run the killed node
        # had in flight runs again elsewhere after the ack wait).
        expected = set(range((int(created) + 1) * 1000, int(removed) * 1000 + 1, 1000))
        wait_until(lambda: expected <= {t for t, _, _ in runs(journal, "tick")}, timeout=60,
                   what=f"the {len(expected)} ticks due before the removal run")
        # Removal: every node stops within a tick or two. Whatever it has stored already still
        # becomes a job; after that nothing comes.
        for name in ("n1", "n2"):
            nodes.nodes[name].log.wait_for(r"scheduler: no longer firing 'tick'", timeout=30)
        settled = len(runs(journal, "tick"))
        time.sleep(3 * SLOW)  # an absence: nothing to await but time
        all_runs = runs(journal, "tick")
        assert len(all_runs) == settled, "ticks kept firing after every node dropped the schedule"

        ticks = {t for t, _, _ in all_runs}
        ids = {}
        for t, job_id, attempt in all_runs:
            ids.setdefault(t, set()).add(job_id)
        twice = {t: i for t, i in ids.items() if len(i) > 1}
        assert not twice, f"ticks enqueued twice: {twice}"
        first_runs = [t for t, _, attempt in all_runs if attempt == 1]
        assert len(first_runs) == len(set(first_runs)), "a tick's job ran twice as a first attempt"
        seconds = int(removed) - int(created)
        fired_before = {t for t in ticks if t <= removed * 1000}
        after = sorted(t for t in ticks if t > removed * 1000)
        assert abs(len(fired_before) - seconds) <= 1, (len(fired_before), seconds)
        assert fired_before == expected, sorted(expected - fired_before)
        assert all(t <= removed * 1000 + 2000 for t in after), after
        assert min(ticks) - created * 1000 <= 1000 + 1, "the first tick is the first second after the schedule"

        # How late each tick ran: its log line's time against the tick (lines the killed node
        # took with it are left out).
        late = sorted(log_time(line) - int(m.group(5)) / 1000 for n in nodes.nodes.values()
                      for line in n.log.lines[:] for m in [LINE.search(line)] if m and m.group(4) == "tick")
        reruns = len(all_runs) - len(ticks)
        print(f"schedule every 1 s for {seconds} s, n2 restarted, n3 killed at +{killed_at - created:.0f} s: "
              f"{len(fired_before)} ticks fired for {seconds} seconds, {len(after)} in flight at the removal, "
              f"none enqueued twice, {reruns} runs again (at least once); lateness p50 "
              f"{late[len(late) // 2] * 1000:.0f} ms, p99 {late[len(late) * 99 // 100] * 1000:.0f} ms, "
              f"max {late[-1] * 1000:.0f} ms")
    finally:
        nodes.stop()


def test_a_one_shot_a_removal_a_fixed_schedule_and_bad_input_on_one_node(tmp_path):
    journal = tmp_path / "jobs-done"
    client = free_port()
    node = Supervisor(1, ["--cluster", "--node", "s1", "--nats-listen", f"127.0.0.1:{client}", "--cluster-listen",
                          f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "s1"),
                          "--schedule", "work every 1s fromconfig"],
                      [binary("cluster-example")], tmp=str(tmp_path), env={"JOBS_DONE_FILE": str(journal)})
    url = f"nats://127.0.0.1:{client}"

    def lf(*args):
        return subprocess.run([binary("loopfleet"), *args, "--nats", url], capture_output=True, text=True,
                              timeout=60 * SLOW)
    try:
        node.log.wait_for(r"cluster: node s1 joined", timeout=60)
        # The run config's schedule is stored by the node and fires.
        wait_until(lambda: len(runs(journal, "work")) >= 2, timeout=30, what="the config's schedule firing")
        listed = schedules(lf)
        assert listed["work"]["source"] == "config s1" and listed["work"]["spec"] == "every 1s", listed

        # Bad input: one line, exit 2, nothing stored.
        one_line_error(lf("job", "schedule", "bad", "x", "--every", "5x"), "--every '5x' is not a duration")
        one_line_error(lf("job", "schedule", "bad", "x", "--every", "100ms"), "shorter than the shortest period")
        one_line_error(lf("job", "schedule", "bad", "x", "--at", "tomorrow"), "--at 'tomorrow' is not a time")
        one_line_error(lf("job", "schedule", "bad", "x"), "--every DURATION or --at TIME")
        one_line_error(lf("job", "schedule", "bad.x", "x", "--every", "1s"), "'bad.x' may use letters")
        assert "bad" not in schedules(lf)

        # --at +2s fires once.
        r = lf("job", "schedule", "later", "once", "--at", "+2s", "--job", "work")
        assert r.returncode == 0 and "scheduled 'later': at " in r.stdout, r.stderr
        wait_until(lambda: runs(journal, "later"), timeout=30, what="the one-shot's job")
        wait_until(lambda: schedules(lf)["later"]["next_ms"] is None, timeout=30, what="the one-shot shown fired")
        time.sleep(2 * SLOW)  # an absence: it does not fire again
        (tick, _, _), = runs(journal, "later")
        assert schedules(lf)["later"]["last_fired_ms"] == tick

        # Every second, then removed: it stops within a tick or two.
        r = lf("job", "schedule", "sec", "s", "--every", "1s", "--job", "work")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: len(runs(journal, "sec")) >= 3, timeout=30, what="three ticks")
        r = lf("job", "unschedule", "sec")
        removed = time.time()
        assert r.returncode == 0, r.stderr
        node.log.wait_for(r"scheduler: no longer firing 'sec'", timeout=30)
        settled = len(runs(journal, "sec"))
        time.sleep(3 * SLOW)
        after = runs(journal, "sec")
        assert len(after) == settled
        assert all(t <= removed * 1000 + 2000 for t, _, _ in after), (removed, after)
        assert "sec" not in schedules(lf)
        r = lf("job", "unschedule", "sec")
        assert r.returncode == 1 and "no schedule 'sec'" in r.stderr, r.stderr
    finally:
        node.stop()


def test_a_bad_fixed_schedule_is_one_line_and_exit_2(tmp_path):
    def run(*args):
        return subprocess.run([binary("loopfleet"), "run", *args, "--control", str(tmp_path / "c.sock"), "--",
                               binary("cluster-example")], capture_output=True, text=True, timeout=30)
    one_line_error(run("--cluster", "--schedule", "tick every 5x hello"),
                   "--schedule 'tick every 5x hello': '5x' is not a duration")
    one_line_error(run("--schedule", "tick every 1s"), "needs the cluster layer")
