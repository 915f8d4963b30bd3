"""A run killed with SIGKILL leaves its lab behind; the janitor lists it, then removes all of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshvm import janitor
from meshvm.lab.leaks import find_leftovers
from meshvm.lab.netsafety import run_ip
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


@pytest.fixture
def lookalikes(request):  # noqa: ANN001, ANN201
    """Things named like a run's but not its own, made by the test: each must survive the janitor."""
    made: dict[str, object] = {}

    def make(tag: str) -> dict[str, object]:
        made["netns"] = f"{tag}-admin"  # the run's tag, but no shape of the run's names
        run_ip("netns", "add", str(made["netns"]))
        made["link"] = f"{tag}adm"
        run_ip("link", "add", str(made["link"]), "type", "veth", "peer", "name", f"{tag}adp")
        made["mv1"] = "mv1"  # an admin's macvlan-style device (test_netsafety makes an `mv0`, maybe meanwhile)
        run_ip("link", "add", "mv1", "type", "veth", "peer", "name", "mv1peer")
        # an admin's capture naming the run's uplink in its argv
        made["proc"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "tcpdump", "-i",
                                         f"{tag}-lab"])
        return made

    yield make
    if isinstance(made.get("proc"), subprocess.Popen):
        made["proc"].kill()  # type: ignore[union-attr]
        made["proc"].wait(5)  # type: ignore[union-attr]
    for key in ("link", "mv1"):
        if key in made:
            run_ip("link", "del", str(made[key]), check=False)
    if "netns" in made:
        run_ip("netns", "del", str(made["netns"]), check=False)


def test_janitor_removes_what_a_killed_run_left_and_nothing_else(tmp_path, capsys, lab_router: Router,
                                                                 lookalikes):  # noqa: ANN001
    run_id = f"killed-{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, run_id, str(tmp_path / "vm")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        tag = proc.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert tag, "the run never came up"
    others = lookalikes(tag)
    left = find_leftovers(tag)
    assert any(x.startswith("netns") for x in left) and any(x.startswith("process") for x in left)
    assert not [x for x in left if "admin" in x or "adm" in x.split()[-1] or "mv1" in x or "tcpdump" in x], left

    assert janitor.main(["--run-id", run_id]) == 1  # dry run: lists, deletes nothing
    assert f"run {run_id} (tag {tag})" in capsys.readouterr().out and find_leftovers(tag)

    assert janitor.main(["--run-id", run_id, "--yes"]) == 0  # scoped to the test's own run
    assert find_leftovers(tag) == []
    links = {link["ifname"] for link in json.loads(run_ip("-j", "link").stdout)}
    assert {others["link"], "mv1"} <= links, links
    assert str(others["netns"]) in run_ip("netns", "list").stdout
    assert others["proc"].poll() is None, "the admin's process was killed"  # type: ignore[union-attr]

    assert janitor.main(["--run-id", lab_router.addrs.run_id, "--yes"]) == 0  # a live run: never touched
    assert f"run {lab_router.addrs.run_id} (tag {lab_router.addrs.tag}) is still running" in capsys.readouterr().out


def test_gcp_janitor_is_refused_clearly():
    assert janitor.main(["--platform", "gcp"]) == 2
