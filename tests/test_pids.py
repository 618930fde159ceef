"""harness/process/pids.py: a pid is the process we knew only while that process lives."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from harness.process.pids import same_process, started_at


def test_this_process_is_itself_since_it_started():
    assert same_process(os.getpid())
    assert same_process(os.getpid(), started_at(os.getpid()))
    assert same_process(os.getpid(), time.time())


def test_a_process_started_after_the_recorded_time_is_another_given_the_same_pid():
    assert not same_process(os.getpid(), started_at(os.getpid()) - 60)


def test_an_ended_process_is_gone_even_before_it_is_reaped():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while same_process(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # a zombie until wait() below: still gone
    assert not same_process(child.pid)
    child.wait()
    assert not same_process(child.pid) and started_at(child.pid) is None
