"""`loopfleet upgrade` (and SIGUSR2): the supervisor replaced by a new binary under keep-alive
load, every socket handed over, no request lost; a successor that fails is rolled back."""
import os
import shutil
import signal
import stat
import subprocess

import pytest

from conftest import SLOW, Supervisor, Wrk, binary, established_connections, free_port, jobs_done, pid_alive, wait_until


def stop_successor(sup, pid):
    """The new supervisor is not our child: stop it over the (same) control socket."""
    if pid_alive(pid):
        sup.cli("stop")
        wait_until(lambda: not pid_alive(pid), timeout=60, what=f"supervisor {pid} stopped")


def upgrade_under_load(sup, trigger):
    before = sup.status()
    workers = sup.worker_pids()
    load = Wrk(sup.port, duration=5, connections=64)
    wait_until(lambda: sum(established_connections(p, sup.port) for p in workers) == 64, what="64 connections")
    trigger()
    # The old supervisor leaves once its workers drained: with exit code 0.
    assert sup.proc.wait(timeout=60 * SLOW) == 0, sup.log.text()
    r = load.result()
    after = sup.status()
    return before, workers, r, after


@pytest.mark.parametrize("mode", ["reuseport", "shared"])
def test_upgrade_under_load_fails_no_request_and_replaces_every_pid(supervise, tmp_path, mode):
    new = tmp_path / "loopfleet-new"  # a copy: what a package upgrade puts on disk
    shutil.copy2(binary("loopfleet"), new)
    sup = supervise(2, ["--distribution", mode])
    replies = []
    before, workers, r, after = upgrade_under_load(
        sup, lambda: replies.append(sup.cli("upgrade", "--binary", str(new), timeout=120)))
    try:
        (done,) = replies
        assert done.returncode == 0, done.stderr
        assert f"upgraded: supervisor pid {after['pid']} ({new})" in done.stdout, done.stdout
        print(f"upgrade ({mode}): wrk {r['requests']} requests, failed {r['failed']} (connect {r['connect']}, "
              f"read {r['read']}, write {r['write']}, timeout {r['timeout']}), non-2xx {r['non2xx']}")
        assert r["requests"] > 0, r["text"]
        assert r["failed"] == 0, r["text"]
        assert after["pid"] != before["pid"]
        assert after["generation"] == before["generation"] + 1
        assert all(s["state"] == "ready" and s["generation"] == after["generation"] for s in after["slots"])
        assert not set(workers) & set(s["pid"] for s in after["slots"])
        assert not any(pid_alive(p) for p in workers + [before["pid"]])
        # The successor took the control socket as it was, and serves on its own.
        assert Wrk(sup.port, duration=1, connections=8).result()["failed"] == 0
    finally:
        stop_successor(sup, after["pid"])


def test_sigusr2_upgrades_to_the_binary_on_disk(supervise):
    sup = supervise(2)
    before, workers, r, after = upgrade_under_load(sup, lambda: os.kill(sup.proc.pid, signal.SIGUSR2))
    try:
        sup.log.wait_for(r"SIGUSR2: upgrading")
        assert r["failed"] == 0, r["text"]
        assert after["pid"] != before["pid"] and not set(workers) & set(s["pid"] for s in after["slots"])
    finally:
        stop_successor(sup, after["pid"])


def test_an_upgrade_to_a_binary_that_fails_is_rolled_back(supervise, tmp_path):
    broken = tmp_path / "broken-loopfleet"
    broken.write_text("#!/bin/sh\necho 'loopfleet: error: this build is broken' >&2\nexit 3\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    sup = supervise(2)
    before = sup.status()
    load = Wrk(sup.port, duration=3, connections=32)
    done = sup.cli("upgrade", "--binary", str(broken))
    assert done.returncode == 1, done
    assert "rolled back" in done.stderr and "exit code 3" in done.stderr, done.stderr
    sup.log.wait_for(r"this build is broken")  # its stderr is ours: the reason is in our log
    r = load.result()
    assert r["failed"] == 0, r["text"]
    after = sup.status()
    assert after["pid"] == before["pid"] and after["generation"] == before["generation"]
    assert [s["pid"] for s in after["slots"]] == [s["pid"] for s in before["slots"]]
    assert sup.proc.poll() is None

    # Nothing executable there: refused at once, with the fix named.
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    text.chmod(0o644)
    refused = sup.cli("upgrade", "--binary", str(text))
    assert refused.returncode == 1 and "is not an executable loopfleet (give --binary PATH)" in refused.stderr
    missing = sup.cli("upgrade", "--binary", str(tmp_path / "nothing-here"))
    assert missing.returncode == 2 and "nothing-here" in missing.stderr


def test_a_cluster_node_upgraded_during_a_stream_of_jobs_loses_none(tmp_path):
    """One node with its own nats-server: the old supervisor's server serves until its workers
    drained, then the successor's starts on the same ports and store. Jobs submitted before,
    during and after, and those running at the switch, all complete."""
    port = free_port()
    journal = tmp_path / "jobs-done"
    node = Supervisor(2, ["--cluster", "--node", "solo", "--nats-listen", f"127.0.0.1:{port}", "--data-dir",
                          str(tmp_path / "solo")], [binary("cluster-example")], tmp=str(tmp_path),
                      env={"JOBS_DONE_FILE": str(journal)})
    successor = None
    try:
        node.log.wait_for(r"cluster: node solo joined", timeout=60)
        before = node.status()
        # 1500 jobs of 300 ms, two workers with 64 at once each: seconds of work, across the upgrade.
        submitter = subprocess.Popen([binary("loopfleet"), "job", "submit", "work", "up:300", "--count", "1500",
                                      "--retry-for", "60s", "--nats", f"nats://127.0.0.1:{port}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: len(jobs_done(journal)) >= 50, timeout=60, what="50 jobs done")
        done = node.cli("upgrade", timeout=120)
        assert done.returncode == 0, done.stderr
        after = node.status()
        successor = after["pid"]
        assert successor != before["pid"]
        out, err = submitter.communicate(timeout=180 * SLOW)
        assert submitter.returncode == 0, err
        assert "stored 1500 job(s)" in out, out
        assert node.proc.wait(timeout=60 * SLOW) == 0
        node.log.wait_for(r"cluster: the previous nats-server \(pid \d+\) has exited; starting ours", timeout=60)
        wait_until(lambda: len({p for p, _ in jobs_done(journal)}) >= 1500, timeout=180, what="1500 jobs done")
        assert {p for p, _ in jobs_done(journal)} == {f"up:300-{i}" for i in range(1500)}
        status = node.status()
        assert status["cluster"]["nats_pid"] and status["cluster"]["nats_ready"], status["cluster"]
        # Both generations ran jobs: the stream did span the switch.
        by_pid = {}
        for line in journal.read_text().splitlines():
            pid = int(line.split(" pid=")[1].split()[0])
            by_pid[pid] = by_pid.get(pid, 0) + 1
        old = sum(n for p, n in by_pid.items() if p in {s["pid"] for s in before["slots"]})
        new = sum(n for p, n in by_pid.items() if p in {s["pid"] for s in after["slots"]})
        print(f"cluster upgrade: 1500 jobs, {old} by the old workers, {new} by the new, "
              f"{len(jobs_done(journal)) - 1500} run twice (redelivered after the switch)")
        assert old > 0 and new > 0, by_pid
    finally:
        if successor:
            stop_successor(node, successor)
        node.stop()


def test_under_a_notify_parent_it_says_ready_and_names_its_successor_mainpid(tmp_path):
    """What systemd (Type=notify) reads on NOTIFY_SOCKET: READY=1 once every slot serves, and
    MAINPID= of the successor when an upgrade hands over, so the unit follows the new pid.
    (No systemd runs here: the socket is read the way systemd reads it.)"""
    import socket as so
    path = str(tmp_path / "notify.sock")
    server = so.socket(so.AF_UNIX, so.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(30 * SLOW)
    sup = Supervisor(2, [], None, tmp=str(tmp_path), env={"NOTIFY_SOCKET": path})
    successor = None
    try:
        first = server.recv(4096).decode()
        assert "READY=1" in first and "2 workers serving" in first, first
        done = sup.cli("upgrade", timeout=120)
        assert done.returncode == 0, done.stderr
        successor = sup.status()["pid"]
        said = server.recv(4096).decode()
        assert said == f"MAINPID={successor}", said
        assert sup.proc.wait(timeout=60 * SLOW) == 0
        # The successor keeps systemd's socket: its own upgrade names the next one.
        again = sup.cli("upgrade", timeout=120)
        assert again.returncode == 0, again.stderr
        third = sup.status()["pid"]
        assert server.recv(4096).decode() == f"MAINPID={third}"
        wait_until(lambda: not pid_alive(successor), timeout=60, what="the second supervisor gone")
        successor = third
    finally:
        if successor:
            stop_successor(sup, successor)
        sup.stop()
        server.close()
