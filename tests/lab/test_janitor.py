"""A run killed with SIGKILL leaves its lab behind; the janitor lists it, then removes all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshvm import janitor
from meshvm.lab.leaks import find_leftovers
from meshvm.lab.router import Router

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]

KILLED_RUN = """
import sys, threading, time
from meshvm.lab import addressing
from meshvm.lab.router import Router
from meshvm.lab.vmhost import VmHost
addrs = addressing.allocate(sys.argv[1])
router = Router(addrs)
router.up()
vm = VmHost(router, "doomed", str(addrs.vm_ip(10)), sys.argv[2], agent_delay=0, dpkg_lock_hold=0)
vm.boot(time.monotonic() + 20)
print(addrs.tag, flush=True)
threading.Event().wait(120)
"""


def test_janitor_removes_what_a_killed_run_left(tmp_path, capsys, lab_router: Router):
    run_id = f"killed-{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, run_id, str(tmp_path / "vm")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        tag = proc.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert tag, "the run never came up"
    left = find_leftovers(tag)
    assert any(x.startswith("netns") for x in left) and any(x.startswith("process") for x in left)

    assert janitor.main(["--run-id", run_id]) == 1  # dry run: lists, deletes nothing
    assert f"run {run_id} (tag {tag})" in capsys.readouterr().out and find_leftovers(tag)

    assert janitor.main(["--yes"]) == 0  # every dead run; the live session run is skipped
    out = capsys.readouterr().out
    assert f"run {lab_router.addrs.run_id} (tag {lab_router.addrs.tag}) is still running" in out
    assert find_leftovers(tag) == []


def test_gcp_janitor_is_refused_clearly():
    assert janitor.main(["--platform", "gcp"]) == 2
