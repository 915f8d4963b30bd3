"""What a run left behind on this machine, found by its tag (for teardown verification and tests).

Only what is provably the run's: namespaces, links and cgroups whose names have one of the exact
shapes derived from its tag (netsafety.run_names), routes over its links or into its claimed block,
mounts under its namespaces' names, and processes inside its cgroups or its network namespaces. A
process is never picked by its command line (an admin's `tcpdump -i <tag>-lab` is not the run's).
Shared, deliberately permanent things are not leftovers: the LAB_RANGE blackhole route, SOCKETS, the
claims directory and its lock file, and the `meshvm-lab` cgroup parent.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os

from meshvm.lab.hostsys import LAB_CGROUP, cgroup2_root
from meshvm.lab.netsafety import LAB_RANGE, read_claims, run_ip, run_names

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
        + [f"xds socket folder {d}" for d in run_socket_dirs(tag)]
        + [f"claim {c['path']} (run {c.get('run_id')})" for c in read_claims() if c.get("tag") == tag]
    )
    if found:
        log.warning("run %s left %d thing(s) behind: %s", tag, len(found), found)
    return found


SOCKETS = "/run/meshvm-lab"  # the lab Envoys' xDS sockets: <SOCKETS>/<tag>-<gateway>/XDS (a short path)


def socket_dir(tag: str, name: str) -> str:
    return os.path.join(SOCKETS, f"{tag}-{name}")


def run_socket_dirs(tag: str) -> list[str]:
    run_names(tag)  # validates the tag
    names = os.listdir(SOCKETS) if os.path.isdir(SOCKETS) else []
    return [os.path.join(SOCKETS, n) for n in sorted(names) if n.startswith(f"{tag}-")]


def run_netns(tag: str) -> list[str]:
    names = [line.split()[0] for line in run_ip("netns", "list").stdout.splitlines() if line.strip()]
    return [n for n in names if run_names(tag).fullmatch(n)]


def run_links(tag: str) -> list[str]:
    links = json.loads(run_ip("-j", "link", "show").stdout or "[]")
    return [str(link["ifname"]) for link in links if run_names(tag).fullmatch(str(link.get("ifname", "")))]


def run_cgroups(tag: str) -> list[str]:
    try:
        parent = os.path.join(cgroup2_root(), LAB_CGROUP)
    except RuntimeError:
        return []
    names = os.listdir(parent) if os.path.isdir(parent) else []
    return [os.path.join(parent, n) for n in names if run_names(tag).fullmatch(n)]


def run_processes(tag: str) -> list[tuple[int, str]]:
    """(pid, command line) of processes in the run's VM cgroups or its network namespaces."""
    cgroups = {f"/{LAB_CGROUP}/{os.path.basename(c)}" for c in run_cgroups(tag)}
    netns = set()
    for name in run_netns(tag):
        try:
            netns.add(os.stat(f"/run/netns/{name}").st_ino)
        except OSError:
            continue
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/cgroup") as f:
                cgroup = f.read()
            ns = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue  # exited while we looked
        if int(pid) == os.getpid() or _zombie(pid):
            continue  # a killed process whose parent died waits for the host's PID 1 to reap it
        if ns in netns or any(c in cgroup for c in cgroups):
            out.append((int(pid), cmdline))
    return out


def _netns(tag: str) -> list[str]:
    return [f"netns {n}" for n in run_netns(tag)]


def _links(tag: str) -> list[str]:
    return [f"link {n}" for n in run_links(tag)]


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
        if run_names(tag).fullmatch(dev) or in_block:
            out.append(f"route {dst} dev {dev or '-'} type {route.get('type', 'unicast')}")
    return out


def _mounts(tag: str) -> list[str]:
    """Mounts of the run's namespaces (/run/netns/<name>) and of its VMs' roots (paths naming them)."""
    names = run_names(tag)
    with open("/proc/self/mountinfo") as f:
        return [f"mount {line.split()[4]}" for line in f
                if any(names.fullmatch(part) for part in line.split()[4].split("/"))]


def _cgroups(tag: str) -> list[str]:
    return [f"cgroup {c}" for c in run_cgroups(tag)]


def _processes(tag: str) -> list[str]:
    return [f"process {pid}: {cmdline[:120]}" for pid, cmdline in run_processes(tag)]


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
