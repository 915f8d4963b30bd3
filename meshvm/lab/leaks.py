"""What a run left behind on this machine, found by its tag (for teardown verification and tests).

Shared, deliberately permanent things are not leftovers: the LAB_RANGE blackhole route, the
claims directory and its lock file, and the `meshvm-lab` cgroup parent.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os

from meshvm.lab.addressing import read_claims
from meshvm.lab.hostsys import LAB_CGROUP, cgroup2_root
from meshvm.lab.netsafety import LAB_RANGE, run_ip

log = logging.getLogger(__name__)


def find_leftovers(tag: str) -> list[str]:
    """One line per netns, link, route, mount, cgroup, process or claim still carrying `tag`."""
    blocks = _claimed_blocks(tag)
    found = (
        _netns(tag)
        + _links(tag)
        + _routes(tag, blocks)
        + _mounts(tag)
        + _cgroups(tag)
        + _processes(tag)
        + [f"claim {c['path']} (run {c.get('run_id')})" for c in read_claims() if c.get("tag") == tag]
    )
    if found:
        log.warning("run %s left %d thing(s) behind: %s", tag, len(found), found)
    return found


def _netns(tag: str) -> list[str]:
    names = [line.split()[0] for line in run_ip("netns", "list").stdout.splitlines() if line.strip()]
    return [f"netns {n}" for n in names if n.startswith(tag)]


def _links(tag: str) -> list[str]:
    links = json.loads(run_ip("-j", "link", "show").stdout or "[]")
    return [f"link {link['ifname']}" for link in links if str(link.get("ifname", "")).startswith(tag)]


def _routes(tag: str, blocks: list[ipaddress.IPv4Network]) -> list[str]:
    out = []
    for route in json.loads(run_ip("-4", "-j", "route", "show", "table", "all").stdout or "[]"):
        dst, dev = str(route.get("dst", "")), str(route.get("dev", ""))
        if dst == LAB_RANGE and route.get("type") == "blackhole":
            continue  # shared and permanent
        in_block = False
        try:
            in_block = any(ipaddress.ip_network(dst, strict=False).overlaps(b) for b in blocks)
        except ValueError:
            pass
        if dev.startswith(tag) or in_block:
            out.append(f"route {dst} dev {dev or '-'} type {route.get('type', 'unicast')}")
    return out


def _mounts(tag: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [f"mount {line.split()[4]}" for line in f if tag in line.split(" - ")[0]]


def _cgroups(tag: str) -> list[str]:
    try:
        parent = os.path.join(cgroup2_root(), LAB_CGROUP)
    except RuntimeError:
        return []
    names = os.listdir(parent) if os.path.isdir(parent) else []
    return [f"cgroup {os.path.join(parent, n)}" for n in names if n.startswith(tag)]


def _processes(tag: str) -> list[str]:
    """Processes naming the tag (launchers) or living in one of the run's VM cgroups."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/cgroup") as f:
                cgroups = f.read()
        except OSError:
            continue  # exited while we looked
        if int(pid) == os.getpid() or _zombie(pid):
            continue  # a killed process whose parent died waits for the host's PID 1 to reap it
        if tag in cmdline or f"/{LAB_CGROUP}/{tag}" in cgroups:
            out.append(f"process {pid}: {cmdline[:120]}")
    return out


def _zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone meanwhile


def _claimed_blocks(tag: str) -> list[ipaddress.IPv4Network]:
    blocks = []
    for claim in read_claims():
        name = os.path.basename(str(claim["path"])).replace("_", "/")
        if claim.get("tag") == tag:
            blocks.append(ipaddress.IPv4Network(name))
    return blocks
