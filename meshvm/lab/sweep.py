"""Remove what a killed lab run left behind, found by its tag (the janitor's lab half): only what
leaks.py proves is the run's (exact names from its tag, its cgroups, its network namespaces).

Order matters: processes first (a VM's systemd holds its netns and mounts), then the host-side
links (before their netns: netns deletion is asynchronous), then netns, cgroups and the claim.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import time

from meshvm.lab.hostsys import remove_cgroup
from meshvm.lab.leaks import find_leftovers, run_cgroups, run_links, run_netns, run_processes, run_socket_dirs
from meshvm.lab.netsafety import TAG_PATTERN, read_claims, run_ip

log = logging.getLogger(__name__)
_GRACE_S = 10.0


def sweep(tag: str) -> list[str]:
    """Delete every lab thing carrying `tag`; return what still remains (empty when clean)."""
    if not re.fullmatch(TAG_PATTERN, tag):
        raise ValueError(f"refusing to sweep {tag!r}: not a run tag")
    _kill_processes(tag)
    for link in run_links(tag):
        run_ip("link", "del", link, check=False)
    for netns in run_netns(tag):
        run_ip("netns", "del", netns, check=False)
    for cgroup in run_cgroups(tag):
        remove_cgroup(cgroup, time.monotonic() + _GRACE_S)
    for folder in run_socket_dirs(tag):
        shutil.rmtree(folder, ignore_errors=True)
    for claim in read_claims():
        if claim.get("tag") == tag:
            os.unlink(str(claim["path"]))
    return find_leftovers(tag)


def drop_claim(path: str) -> list[str]:
    """A claim too broken to name its tag (killed while writing it): only the file itself."""
    os.unlink(path)
    return []


def _kill_processes(tag: str) -> None:
    """SIGKILL every process of the run's VM cgroups (cgroup.kill takes the whole tree at once)."""
    for cgroup in run_cgroups(tag):
        kill = os.path.join(cgroup, "cgroup.kill")
        if os.path.exists(kill):
            with open(kill, "w") as f:
                f.write("1")
        else:  # kernels before 5.14
            with open(os.path.join(cgroup, "cgroup.procs")) as f:
                for number in f.read().split():
                    _kill(int(number))
    for pid, _ in run_processes(tag):
        _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
