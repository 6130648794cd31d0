"""`loopfleet upgrade` (and SIGUSR2): the supervisor replaced by a new binary under keep-alive
load, every socket handed over, no request lost; a successor that fails is rolled back."""
import os
import shutil
import signal
import stat

import pytest

from conftest import SLOW, Wrk, binary, established_connections, pid_alive, wait_until


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
