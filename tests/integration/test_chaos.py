"""A minute of bench/chaos.py: three nodes behind the front under wrk and a job submitter,
with a random fault every few seconds (worker killed, loop blocked, reload, scale, whole node
killed and restarted, nats-server killed). It fails if a fault cost more requests than were
in flight on what it killed, if a stored job never ran, or if a process leaked or grew."""
import os
import subprocess
import sys

import pytest

from conftest import BIN, ROOT, SLOW


@pytest.mark.soak
def test_a_minute_of_chaos_loses_no_job_and_fails_no_request_beyond_its_bound():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "chaos.py"), "--minutes", "1", "--bin", BIN],
                       capture_output=True, text=True, timeout=(600 * SLOW))
    print(r.stdout[-4000:], r.stderr[-4000:])
    assert r.returncode == 0 and "chaos: PASS" in r.stdout, r.stdout[-4000:] + r.stderr[-4000:]
