"""Remove what a killed lab run left behind, found by its tag (the janitor's lab half).

Order matters: processes first (a VM's systemd holds its netns and mounts), then the host-side
links (before their netns: netns deletion is asynchronous), then netns, cgroups and the claim.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

from meshvm.lab.addressing import read_claims
from meshvm.lab.hostsys import LAB_CGROUP, cgroup2_root, remove_cgroup
from meshvm.lab.leaks import find_leftovers
from meshvm.lab.netsafety import LAB_PREFIX, run_ip

log = logging.getLogger(__name__)
_GRACE_S = 10.0


def sweep(tag: str) -> list[str]:
    """Delete every lab thing carrying `tag`; return what still remains (empty when clean)."""
    if not tag.startswith(LAB_PREFIX) or len(tag) < len(LAB_PREFIX) + 6:
        raise ValueError(f"refusing to sweep {tag!r}: not a run tag")
    _kill_processes(tag)
    for link in json.loads(run_ip("-j", "link", "show").stdout or "[]"):
        if str(link.get("ifname", "")).startswith(tag):
            run_ip("link", "del", link["ifname"], check=False)
    for line in run_ip("netns", "list").stdout.splitlines():
        if line.split() and line.split()[0].startswith(tag):
            run_ip("netns", "del", line.split()[0], check=False)
    for cgroup in _cgroups(tag):
        remove_cgroup(cgroup, time.monotonic() + _GRACE_S)
    for claim in read_claims():
        if claim.get("tag") == tag:
            os.unlink(str(claim["path"]))
    return find_leftovers(tag)


def drop_claim(path: str) -> list[str]:
    """A claim too broken to name its tag (killed while writing it): only the file itself."""
    os.unlink(path)
    return []


def _cgroups(tag: str) -> list[str]:
    parent = os.path.join(cgroup2_root(), LAB_CGROUP)
    names = os.listdir(parent) if os.path.isdir(parent) else []
    return [os.path.join(parent, n) for n in names if n.startswith(tag)]


def _kill_processes(tag: str) -> None:
    """SIGKILL every process of the run's VM cgroups (cgroup.kill takes the whole tree at once)."""
    for cgroup in _cgroups(tag):
        kill = os.path.join(cgroup, "cgroup.kill")
        if os.path.exists(kill):
            with open(kill, "w") as f:
                f.write("1")
        else:  # kernels before 5.14
            with open(os.path.join(cgroup, "cgroup.procs")) as f:
                for pid in f.read().split():
                    _kill(int(pid))
    for line in find_leftovers(tag):
        if line.startswith("process "):
            _kill(int(line.split()[1].rstrip(":")))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
