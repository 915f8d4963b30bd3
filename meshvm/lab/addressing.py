"""Per-run address block and names.

Each run claims one free /22 of LAB_RANGE (64 of them). A block is free when no address or route
of this host overlaps it and no live run holds its claim file (/run/meshvm-lab/claims/<block>,
created with O_EXCL under a lock; a claim whose process is gone is stale and is taken over).

Layout of a block B (four /24s):
  B+0/24  VM subnet (like a GCE subnet; .1 is the gateway = the lab router)
  B+1/24  pod range (the cluster's pod CIDR, routed to the node host that owns it)
  B+2/24  service range (the cluster's service CIDR)
  B+3/24  router links (the host machine's uplink to the router: .1 router, .2 host machine)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from meshvm.lab.netsafety import CLAIMS_DIR, LAB_PREFIX, LAB_RANGE, run_ip

log = logging.getLogger(__name__)

BLOCK_PREFIX = 22
_MAX_NAME = 15  # IFNAMSIZ - 1; also used for netns names so they read alike


@dataclass(frozen=True)
class LabAddresses:
    """One run's block, its carve-up and the names derived from the run's tag."""

    run_id: str
    tag: str
    block: IPv4Network
    claim_path: str

    @property
    def vm_subnet(self) -> IPv4Network:
        return self._quarter(0)

    @property
    def pod_range(self) -> IPv4Network:
        return self._quarter(1)

    @property
    def service_range(self) -> IPv4Network:
        return self._quarter(2)

    @property
    def link_range(self) -> IPv4Network:
        return self._quarter(3)

    @property
    def gateway(self) -> IPv4Address:
        """The VM subnet's gateway (.1): the router's address on every host link."""
        return self.vm_subnet.network_address + 1

    def vm_ip(self, n: int) -> IPv4Address:
        """The n-th host address of the VM subnet (n >= 2; .1 is the gateway)."""
        if not 2 <= n <= 254:
            raise ValueError(f"host number {n} outside 2..254")
        return self.vm_subnet.network_address + n

    @property
    def router_netns(self) -> str:
        return f"{self.tag}-rt"

    @property
    def uplink_host_dev(self) -> str:
        """Host machine's end of its link to the router (root namespace)."""
        return f"{self.tag}-lab"

    @property
    def uplink_router_dev(self) -> str:
        return f"{self.tag}-wan"

    def host_netns(self, index: int, name: str) -> str:
        """Netns of the index-th attached host: tag, index (unique), then as much name as fits."""
        slug = re.sub(r"[^a-z0-9]", "", name.lower())
        return f"{self.tag}-{index}{slug}"[:_MAX_NAME]

    def router_dev(self, index: int) -> str:
        return f"{self.tag}v{index}"

    def _quarter(self, i: int) -> IPv4Network:
        return list(self.block.subnets(new_prefix=24))[i]

    def release(self) -> None:
        """Drop this run's claim (idempotent)."""
        try:
            os.unlink(self.claim_path)
            log.info("released lab block %s (run %s)", self.block, self.run_id)
        except FileNotFoundError:
            pass


def new_tag() -> str:
    """LAB_PREFIX + 6 random hex chars, not used by any existing netns or link."""
    taken = _existing_names()
    while True:
        tag = LAB_PREFIX + secrets.token_hex(3)
        if not any(n.startswith(tag) for n in taken):
            return tag


def allocate(run_id: str, tag: str | None = None) -> LabAddresses:
    """Claim the first free /22 block of LAB_RANGE for this run."""
    tag = tag or new_tag()
    with allocation_lock():  # serialise scans; O_EXCL below is the claim itself
        used = _host_networks()
        for block in IPv4Network(LAB_RANGE).subnets(new_prefix=BLOCK_PREFIX):
            if any(block.overlaps(n) for n in used):
                continue
            path = os.path.join(CLAIMS_DIR, str(block).replace("/", "_"))
            if _try_claim(path, run_id, tag):
                log.info("claimed lab block %s for run %s (tag %s)", block, run_id, tag)
                return LabAddresses(run_id=run_id, tag=tag, block=block, claim_path=path)
    raise RuntimeError(f"no free /{BLOCK_PREFIX} block left in {LAB_RANGE}")


@contextlib.contextmanager
def allocation_lock() -> Iterator[None]:
    """Held while a run claims a block, and while the janitor judges and sweeps claims."""
    os.makedirs(CLAIMS_DIR, mode=0o755, exist_ok=True)
    with open(os.path.join(os.path.dirname(CLAIMS_DIR), "alloc.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _try_claim(path: str, run_id: str, tag: str) -> bool:
    if os.path.exists(path) and claim_is_stale(path):
        log.warning("taking over stale lab claim %s", path)
        os.unlink(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    pid = os.getpid()
    with os.fdopen(fd, "w") as f:
        json.dump({"run_id": run_id, "tag": tag, "pid": pid, "start": _start_time(pid)}, f)
    return True


def claim_is_stale(path: str) -> bool:
    try:
        with open(path) as f:
            claim = json.load(f)
        pid, start = int(claim["pid"]), claim.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        return True  # unreadable or half-written by a killed run
    # pid reuse: same pid but another process start time is a different process
    return _start_time(pid) is None or (start is not None and _start_time(pid) != start)


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _host_networks() -> list[IPv4Network]:
    """Addresses and routes of the host namespace, except the shared lab blackhole."""
    nets: list[IPv4Network] = []
    for line in run_ip("-4", "-o", "addr", "show").stdout.splitlines():
        nets.append(IPv4Network(line.split()[3], strict=False))
    for route in json.loads(run_ip("-4", "-j", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("", "default") or (dst == LAB_RANGE and route.get("type") == "blackhole"):
            continue
        try:
            nets.append(IPv4Network(dst, strict=False))
        except ValueError:
            continue
    return [n for n in nets if isinstance(n, IPv4Network)]


def _existing_names() -> set[str]:
    links = {line.split(":")[1].strip().split("@")[0] for line in run_ip("-o", "link").stdout.splitlines()}
    netns = {line.split()[0] for line in run_ip("netns", "list").stdout.splitlines() if line.strip()}
    return links | netns
