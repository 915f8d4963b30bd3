"""Safety net for lab traffic: lab addresses must never leave this machine.

Every lab address comes from LAB_RANGE. A blackhole route for the whole range (shared by all runs,
never deleted) catches any lab address that no live run routes locally, and `assert_local_route`
is called before every connection the lab makes: the address must be routed over the uplink of the
run whose claim (the runs' own record, CLAIMS_DIR) holds it, and over no other device, whatever its
name. Names: a run's tag is LAB_PREFIX + 6 hex characters ("mv" alone is macvlan's default, so an
admin's `mv0` would pass for the lab's); each of its devices, namespaces and cgroups has one of the
exact shapes `run_names` lists, and nothing else is ever taken for the run's.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import subprocess

log = logging.getLogger(__name__)

LAB_RANGE = "172.29.0.0/16"  # NOT 10.240/12: this machine's resolver lives at 10.255.255.53
# Every run's tag (addressing.new_tag): its interface, netns and cgroup names derive from it.
LAB_PREFIX = "mvlab"
TAG_PATTERN = LAB_PREFIX + "[0-9a-f]{6}"
CLAIMS_DIR = "/run/meshvm-lab/claims"  # one file per claimed block: {"run_id", "tag", "pid", "start"}
_IP_TIMEOUT = 10.0


class LabSafetyError(RuntimeError):
    """A lab connection would not stay on this machine."""


def run_ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip` (in `netns` if given); errors carry ip's own message."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (rc={proc.returncode}): {proc.stderr.strip()}")
    return proc


def run_names(tag: str) -> re.Pattern[str]:
    """The exact names a run's things take (addressing.LabAddresses, pods.py): router and host netns,
    the uplink's two ends, the router's and the node's veths, the pods' netns."""
    if not re.fullmatch(TAG_PATTERN, tag):
        raise ValueError(f"{tag!r} is not a lab run tag ({TAG_PATTERN})")
    return re.compile(rf"{tag}(?:-rt|-lab|-wan|-\d+[a-z0-9]*|[pqv]\d+)")


def read_claims() -> list[dict[str, object]]:
    """Every claim file's content (plus its path), live or stale."""
    out: list[dict[str, object]] = []
    for entry in sorted(os.listdir(CLAIMS_DIR)) if os.path.isdir(CLAIMS_DIR) else []:
        path = os.path.join(CLAIMS_DIR, entry)
        try:
            with open(path) as f:
                out.append({**json.load(f), "path": path})
        except (OSError, ValueError):
            out.append({"path": path})
    return out


def claimed_uplinks() -> dict[str, ipaddress.IPv4Network]:
    """Every claimed block's uplink device on this host, `<tag>-lab`, with the block it routes."""
    out = {}
    for claim in read_claims():
        tag = str(claim.get("tag", ""))
        if re.fullmatch(TAG_PATTERN, tag):
            out[f"{tag}-lab"] = ipaddress.IPv4Network(os.path.basename(str(claim["path"])).replace("_", "/"))
    return out


def ensure_blackhole() -> None:
    """Blackhole LAB_RANGE in the host namespace. Never deleted: other runs rely on it."""
    shown = run_ip("-j", "route", "show", "type", "blackhole", "exact", LAB_RANGE).stdout.strip()
    if shown and json.loads(shown):
        return
    if clash := range_in_use():
        raise LabSafetyError(f"the lab range {LAB_RANGE} holds {clash}, which this machine needs: "
                             "refusing to blackhole it")
    run_ip("route", "replace", "blackhole", LAB_RANGE)
    log.info("added blackhole route for %s (shared, kept after the run)", LAB_RANGE)


def range_in_use(resolv_conf: str = "/etc/resolv.conf") -> str | None:
    """Something of this machine's own network inside LAB_RANGE (a blackhole would cut it off)."""
    try:
        lines = open(resolv_conf).read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and in_lab_range(parts[1]):
            return f"the nameserver {parts[1]}"
    own = claimed_uplinks()
    for route in json.loads(run_ip("-j", "route", "show").stdout or "[]"):
        dst, dev = str(route.get("dst", "")), str(route.get("dev", ""))
        via = str(route.get("gateway", ""))
        if dev in own or route.get("type") == "blackhole":
            continue
        if in_lab_range(via) or (dst not in ("", "default") and _overlaps(dst)):
            return f"the route {dst or 'default'} via {via or dev}"
    return None


def _overlaps(dst: str) -> bool:
    try:
        return ipaddress.ip_network(dst, strict=False).overlaps(ipaddress.ip_network(LAB_RANGE))
    except ValueError:
        return False


def in_lab_range(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(LAB_RANGE)
    except ValueError:
        return False


def assert_local_route(ip: str) -> None:
    """Raise LabSafetyError unless `ip` is a lab address routed via a lab interface of this host."""
    if not in_lab_range(ip):
        raise LabSafetyError(f"refusing to contact {ip}: not inside the lab range {LAB_RANGE}")
    proc = run_ip("-j", "route", "get", ip, check=False)
    if proc.returncode != 0:
        raise LabSafetyError(f"refusing to contact {ip}: no route ({proc.stderr.strip()})")
    routes = json.loads(proc.stdout or "[]")
    route = routes[0] if routes else {}
    dev = str(route.get("dev", ""))
    kind = str(route.get("type", "unicast"))
    address = ipaddress.ip_address(ip)
    uplink = next((d for d, block in claimed_uplinks().items() if address in block), None)
    if kind != "unicast" or uplink is None or dev != uplink:
        raise LabSafetyError(
            f"refusing to contact {ip}: route is {kind} via dev {dev or '-'} "
            f"(expected the uplink of the run that claimed it: {uplink or 'no claim holds it'}): {route}"
        )
