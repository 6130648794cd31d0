"""`--workers auto` inside a CPU quota: a container's cgroup limit, not the host's cores in the
affinity mask, decides how many loops can run."""
import os
import subprocess
import time

import pytest

from conftest import Lines, binary, free_port, stop_process

CPU_V1 = "/sys/fs/cgroup/cpu"


@pytest.fixture
def one_cpu_cgroup():
    """A v1 cpu cgroup limited to 1 CPU (quota 100000 of period 100000); removed after."""
    path = os.path.join(CPU_V1, f"loopfleet-test-{os.getpid()}")
    try:
        os.mkdir(path)
    except OSError as e:
        pytest.skip(f"cannot create a cgroup v1 cpu group at {path}: {e.strerror}")
    try:
        with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
            f.write("100000")
        with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
            f.write("100000")
    except OSError as e:
        os.rmdir(path)
        pytest.skip(f"cannot set a CPU quota on {path}: {e.strerror}")
    yield path
    # The group can go once its processes have; they are gone when the supervisor has.
    deadline = time.monotonic() + 10
    while True:
        try:
            os.rmdir(path)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_workers_auto_follows_the_cpu_quota_and_status_says_so(one_cpu_cgroup, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 or more CPUs in the affinity mask, to see the quota lower the count")
    procs = os.path.join(one_cpu_cgroup, "cgroup.procs")

    def enter_cgroup():  # in the child before exec: the supervisor starts inside the group
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    control = str(tmp_path / "q.sock")
    cmd = [binary("loopfleet"), "run", "--name", f"q{os.getpid()}", "--control", control, "--listen",
           f"127.0.0.1:{free_port()}", "--workers", "auto", "--", binary("loopfleet-testapp")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=enter_cgroup)
    log = Lines(proc.stderr)
    try:
        log.wait_for(r"ready in \d+ ms")
        assert "with 1 workers" in log.text(), log.text()
        status = subprocess.run([binary("loopfleet"), "status", "--control", control], capture_output=True, text=True,
                                timeout=30)
        assert status.returncode == 0, status.stderr
        print(status.stdout)
        group = "/" + os.path.basename(one_cpu_cgroup)
        assert f"workers 1 (auto: CPU quota 1.0 of cgroup {group} (v1), below the " in status.stdout, status.stdout
        slots = [l for l in status.stdout.splitlines() if l.strip().split(" ")[0].isdigit()]
        assert len(slots) == 1, status.stdout
    finally:
        stop_process(proc)
