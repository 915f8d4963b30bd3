"""What stands behind the stand-in's API objects.

ComputeBacking: instances are real lab VMs (VmHost on the server's Router); the VPC firewall is the
router's firewall, re-derived from every GCP rule on each change. Source TAGS become the /32s of
the lab VMs carrying them at that moment (re-applied when a VM boots or goes).

Addresses: a VM's internal IP comes from the lab's VM subnet (the requested subnetwork range is
recorded but not used: lab traffic must stay inside the lab range). Its "external" IP is the SAME
address: the host machine reaches lab VMs through the router's uplink, where the firewall sees it
as an outside source, which is what an external IP means to a firewall rule.

ClusterBackend: a cluster's API server (the Kubernetes API stand-in, or a test stub).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from meshvm.lab import addressing
from meshvm.lab.router import FirewallRule, Router
from meshvm.lab.vmhost import VmHost

log = logging.getLogger(__name__)
BOOT_SECONDS = 60.0


class ComputeBacking(Protocol):
    def boot(self, name: str, tags: Sequence[str], metadata: Mapping[str, str]) -> tuple[str, str]:
        """Start a VM; returns (internal IP, external IP) once it answers SSH."""
        ...

    def host_keys(self, name: str) -> dict[str, str] | None:
        """{key type: base64} once the guest agent has published them, else None."""
        ...

    def halt(self, name: str) -> None:
        ...

    def set_firewall(self, rules: Sequence[Mapping]) -> None:
        """The network's whole set of firewall rules (GCP JSON bodies), applied."""
        ...

    def close(self) -> None:
        ...


class ClusterBackend(Protocol):
    """One cluster's Kubernetes API server, started when GKE's create operation runs."""

    def start(self, name: str) -> tuple[str, str]:
        """Start serving; returns (endpoint host[:port], CA certificate PEM)."""
        ...

    def stop(self) -> None:
        ...

    def token_ok(self, token: str) -> bool:
        """Whether the API server accepts this bearer token (the run's Google access token)."""
        ...


class LabBacking:
    """Instances as lab VMs on `router`; state (overlay upper dirs, consoles) under `state_dir`."""

    def __init__(self, router: Router, state_dir: str, *, hostkey_delay: float = 1.0,
                 agent_delay: float = 1.0, dpkg_lock_hold: float = 0.0) -> None:
        self.router, self.state_dir = router, state_dir
        self.hostkey_delay, self.agent_delay, self.dpkg_lock_hold = hostkey_delay, agent_delay, dpkg_lock_hold
        self._vms: dict[str, VmHost] = {}
        self._booted: dict[str, float] = {}
        self._rules: list[Mapping] = []
        self._numbers = itertools.count(10)
        self._lock = threading.RLock()
        self._owns_router = False

    @classmethod
    def up(cls, run_id: str, state_dir: str, **kwargs: float) -> LabBacking:
        """A backing that owns its router: claims a lab block, brings the router up; close() undoes both."""
        addrs = addressing.allocate(run_id)
        router = Router(addrs)
        try:
            router.up()
        except BaseException:
            router.down()
            addrs.release()
            raise
        backing = cls(router, state_dir, **kwargs)
        backing._owns_router = True
        return backing

    def boot(self, name: str, tags: Sequence[str], metadata: Mapping[str, str]) -> tuple[str, str]:
        ip = str(self.router.addrs.vm_ip(next(self._numbers)))
        vm = VmHost(self.router, name, ip, os.path.join(self.state_dir, name), metadata=dict(metadata),
                    tags=tuple(tags), agent_delay=self.agent_delay, dpkg_lock_hold=self.dpkg_lock_hold)
        with self._lock:
            self._vms[name] = vm  # recorded before boot: halt() must find a half-booted VM
        vm.boot(time.monotonic() + BOOT_SECONDS)
        with self._lock:
            self._booted[name] = time.monotonic()
            self._apply()  # source-tag rules now include this VM
        return ip, ip

    def vms(self) -> list[tuple[str, VmHost]]:
        with self._lock:
            return sorted(self._vms.items())

    def host_keys(self, name: str) -> dict[str, str] | None:
        booted = self._booted.get(name)
        if booted is None or time.monotonic() - booted < self.hostkey_delay:
            return None  # the guest agent has not published them yet
        return self._vms[name].host_keys()

    def halt(self, name: str) -> None:
        with self._lock:
            vm = self._vms.pop(name, None)
            self._booted.pop(name, None)
        if vm is not None:
            vm.halt()
            with self._lock:
                self._apply()

    def set_firewall(self, rules: Sequence[Mapping]) -> None:
        with self._lock:
            self._rules = list(rules)
            self._apply()

    def close(self) -> None:
        try:
            for name in list(self._vms):
                self.halt(name)
        finally:
            if self._owns_router:
                self.router.down()
                self.router.addrs.release()

    def _apply(self) -> None:
        wanted = {r.name: r for r in (self._lab_rule(g) for g in self._rules) if r is not None}
        for rule in self.router.rules():
            if wanted.get(rule.name) != rule:
                self.router.delete_rule(rule.name)
        have = {r.name for r in self.router.rules()}
        for name, rule in wanted.items():
            if name not in have:
                self.router.add_rule(rule)

    def _lab_rule(self, g: Mapping) -> FirewallRule | None:
        if g.get("direction", "INGRESS") != "INGRESS" or g.get("disabled"):
            return None
        sources = list(g.get("sourceRanges", []))
        tags = set(g.get("sourceTags", []))
        sources += [f"{vm.ip}/32" for n, vm in sorted(self._vms.items())
                    if n in self._booted and tags & set(vm.tags)]
        sources = [s for s in sources if isinstance(ipaddress.ip_network(s, strict=False), ipaddress.IPv4Network)]
        if not sources:
            return None  # a tag-only rule with no such VM admits nothing
        allowed = tuple((a.get("IPProtocol", "all"), tuple(a.get("ports", []))) for a in g.get("allowed", []))
        return FirewallRule(g["name"], tuple(sources), tuple(g.get("targetTags", [])), allowed or (("all", ()),))
