"""The lab router: one network namespace per run joining every lab host, with a VPC-like firewall.

Topology (names from the run's tag, addresses from its block, see addressing.py):
  host machine --<tag>-lab/<tag>-wan--> router netns <tag>-rt --<tag>v<i>/eth0--> host netns i

Each host gets its primary IP as a /32 on its `eth0`, an on-link route to the gateway (.1 of the
VM subnet, held by the router on every host link, as GCE does) and a route for the run's block via
that gateway: no default route anywhere in the lab. Alias ranges (a node's pod range) are routed by
the router to the owning host. The host machine reaches the lab through its uplink, with a route
for the run's block; to the firewall it is an external source like a user on the internet.

The router's FORWARD chain models GCP VPC firewall semantics: egress is allowed, replies of
established flows are allowed, and ingress to an attached host (primary IP and alias ranges) is
denied unless a FirewallRule admits it. The rules live in one chain, rebuilt atomically with
`iptables-restore --noflush` on every change.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

from meshvm.lab.addressing import LabAddresses
from meshvm.lab.netsafety import ensure_blackhole, run_ip

log = logging.getLogger(__name__)

FW_CHAIN = "LAB-VPC-FW"
HOST_DEV = "eth0"
_PROTOCOLS = ("tcp", "udp", "icmp", "all")
_RULE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # GCP resource name syntax
_PORTS = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")
_CMD_TIMEOUT = 10.0

Allowed = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class FirewallRule:
    """An ingress allow rule: `allowed` is ((protocol, ports), ...), e.g. (("tcp", ("9080",)),)."""

    name: str
    source_ranges: tuple[str, ...]
    target_tags: tuple[str, ...] = ()  # empty: every attached host
    allowed: tuple[Allowed, ...] = (("all", ()),)

    def __post_init__(self) -> None:
        if not _RULE_NAME.match(self.name):
            raise ValueError(f"firewall rule name {self.name!r} is not a valid GCP resource name")
        if not self.source_ranges:
            raise ValueError(f"firewall rule {self.name}: source_ranges is empty")
        for src in self.source_ranges:
            ipaddress.ip_network(src, strict=False)  # raises ValueError on garbage
        if not self.allowed:
            raise ValueError(f"firewall rule {self.name}: allowed is empty")
        for proto, ports in self.allowed:
            _check_allowed(self.name, proto, ports)


@dataclass(frozen=True)
class Attachment:
    """A host attached to the router (host side: `device` in `netns`)."""

    name: str
    netns: str
    ip: str
    gateway: str
    router_device: str
    tags: tuple[str, ...] = ()
    alias_ranges: tuple[str, ...] = ()
    device: str = HOST_DEV

    @property
    def destinations(self) -> tuple[str, ...]:
        return (f"{self.ip}/32", *self.alias_ranges)


class Router:
    """The run's router netns, its uplink from the host machine, its hosts and its firewall."""

    def __init__(self, addrs: LabAddresses) -> None:
        self.addrs = addrs
        self.netns = addrs.router_netns
        self._hosts: dict[str, Attachment] = {}
        self._rules: dict[str, FirewallRule] = {}
        self._next_index = 1
        self._lock = threading.Lock()

    @property
    def external_source(self) -> str:
        """The host machine's address as the lab sees it (a source for firewall rules)."""
        return str(self.addrs.link_range.network_address + 2)

    def up(self) -> None:
        ensure_blackhole()
        a = self.addrs
        run_ip("netns", "add", self.netns)
        _netns_exec(self.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")  # this netns only
        run_ip("link", "set", "lo", "up", netns=self.netns)
        wan = a.uplink_router_dev
        run_ip("link", "add", a.uplink_host_dev, "type", "veth", "peer", "name", wan, "netns", self.netns)
        router_side = a.link_range.network_address + 1
        run_ip("addr", "add", f"{router_side}/30", "dev", wan, netns=self.netns)
        run_ip("link", "set", wan, "up", netns=self.netns)
        run_ip("addr", "add", f"{self.external_source}/30", "dev", a.uplink_host_dev)
        run_ip("link", "set", a.uplink_host_dev, "up")
        run_ip("route", "add", str(a.block), "via", str(router_side), "dev", a.uplink_host_dev)
        self._iptables_restore(self._base_ruleset(), noflush=False)
        log.info("lab router %s up: block %s, uplink %s", self.netns, a.block, a.uplink_host_dev)

    def down(self) -> None:
        """Remove hosts still attached, the uplink and the router netns; tolerant of partial ups."""
        while self._hosts:
            _, att = self._hosts.popitem()
            _unwire(self.netns, att)  # no firewall rebuild: the router may be half made
        run_ip("link", "del", self.addrs.uplink_host_dev, check=False)  # its route goes with it
        run_ip("netns", "del", self.netns, check=False)
        log.info("lab router %s down", self.netns)

    def attach(
        self, name: str, ip: str, tags: tuple[str, ...] = (), alias_ranges: tuple[str, ...] = ()
    ) -> Attachment:
        """Create host netns for `name`, link it to the router, route its IP and alias ranges."""
        self._check_addresses(name, ip, alias_ranges)
        with self._lock:
            index, self._next_index = self._next_index, self._next_index + 1
        a = self.addrs
        att = Attachment(name, a.host_netns(index, name), ip, str(a.gateway), a.router_dev(index),
                         tuple(tags), tuple(str(ipaddress.ip_network(r)) for r in alias_ranges))
        run_ip("netns", "add", att.netns)
        self._hosts[name] = att  # recorded before wiring so detach() cleans a half-made host
        run_ip("link", "add", att.router_device, "netns", self.netns, "type", "veth",
               "peer", "name", HOST_DEV, "netns", att.netns)
        self._wire_host_side(att)
        self._wire_router_side(att)
        self._rebuild()
        log.info("attached %s (%s, tags %s, aliases %s) as %s", name, ip, att.tags, att.alias_ranges, att.netns)
        return att

    def detach(self, name: str) -> None:
        """Delete the host's link (both ends, synchronously) and then its netns."""
        att = self._hosts.pop(name, None)
        if att is None:
            return
        _unwire(self.netns, att)
        self._rebuild()

    def host(self, name: str) -> Attachment:
        return self._hosts[name]

    def hosts(self) -> tuple[Attachment, ...]:
        return tuple(self._hosts.values())

    def set_tags(self, name: str, tags: tuple[str, ...]) -> None:
        self._hosts[name] = replace(self._hosts[name], tags=tuple(tags))
        self._rebuild()

    def add_rule(self, rule: FirewallRule) -> None:
        if rule.name in self._rules:
            raise ValueError(f"firewall rule {rule.name} already exists")
        self._rules[rule.name] = rule
        self._rebuild()

    def delete_rule(self, name: str) -> None:
        if self._rules.pop(name, None) is None:
            raise KeyError(f"firewall rule {name} not found")
        self._rebuild()

    def rules(self) -> tuple[FirewallRule, ...]:
        return tuple(self._rules.values())

    @contextlib.contextmanager
    def dropping_idle_after(self, seconds: int) -> Iterator[None]:
        """While inside: the router forgets an established TCP connection idle for `seconds`, and the
        next packet of it is dropped silently (INVALID), as NAT gateways and CI networks do with idle
        flows (docs/facts.md section 6). Only this router's network namespace is changed."""
        def set_(timeout: int, loose: int) -> None:
            _netns_exec(self.netns, "sysctl", "-qw", f"net.netfilter.nf_conntrack_tcp_timeout_established={timeout}",
                        f"net.netfilter.nf_conntrack_tcp_loose={loose}")

        set_(seconds, 0)
        try:
            yield
        finally:
            set_(432000, 1)  # the kernel's defaults

    def firewall_dump(self) -> str:
        """The router's filter table as iptables-save prints it (for diagnostics)."""
        return _netns_exec(self.netns, "iptables-save", "-t", "filter").stdout

    def firewall_report(self) -> str:
        """For a failure dump: the run's firewall rules as the router applies them, the attached hosts
        with their tags, and the firewall chain with its packet counters (the last line counts the
        packets no rule admitted)."""
        lines = ["firewall rules:"]
        lines += [f"  rule {r.name}: sources {','.join(r.source_ranges)} -> targets "
                  f"({','.join(r.target_tags) or 'every host'}): {_allowed(r.allowed)}" for r in self.rules()]
        lines += ["hosts:"] + [f"  host {a.name} {a.ip} tags ({','.join(a.tags)})" for a in self.hosts()]
        chain = _netns_exec(self.netns, "iptables", "-w", "5", "-L", FW_CHAIN, "-v", "-n", "-x").stdout
        return "\n".join([*lines, f"{FW_CHAIN} chain, packets and bytes per rule:", chain])

    def _check_addresses(self, name: str, ip: str, alias_ranges: tuple[str, ...]) -> None:
        if name in self._hosts:
            raise ValueError(f"host {name} is already attached")
        block = self.addrs.block
        if ipaddress.ip_address(ip) not in self.addrs.vm_subnet or ip == str(self.addrs.gateway):
            raise ValueError(f"{name}: {ip} is not a host address of {self.addrs.vm_subnet}")
        for r in alias_ranges:
            if not ipaddress.ip_network(r).subnet_of(block):  # type: ignore[arg-type]
                raise ValueError(f"{name}: alias range {r} is outside the run's block {block}")

    def _wire_host_side(self, att: Attachment) -> None:
        ns = att.netns
        run_ip("link", "set", "lo", "up", netns=ns)
        run_ip("addr", "add", f"{att.ip}/32", "dev", HOST_DEV, netns=ns)
        run_ip("link", "set", HOST_DEV, "up", netns=ns)
        run_ip("route", "add", att.gateway, "dev", HOST_DEV, "scope", "link", netns=ns)
        run_ip("route", "add", str(self.addrs.block), "via", att.gateway, "dev", HOST_DEV, "src", att.ip,
               netns=ns)

    def _wire_router_side(self, att: Attachment) -> None:
        dev, ns = att.router_device, self.netns
        run_ip("addr", "add", f"{att.gateway}/32", "dev", dev, netns=ns)  # same .1 on every host link
        run_ip("link", "set", dev, "up", netns=ns)
        run_ip("route", "add", f"{att.ip}/32", "dev", dev, "scope", "link", netns=ns)
        for r in att.alias_ranges:
            run_ip("route", "add", r, "via", att.ip, "dev", dev, netns=ns)

    def _base_ruleset(self) -> str:
        return "\n".join([
            "*filter",
            ":INPUT ACCEPT [0:0]",
            ":FORWARD DROP [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            f":{FW_CHAIN} - [0:0]",
            "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A FORWARD -m conntrack --ctstate INVALID -j DROP",
            f"-A FORWARD -o {self.addrs.uplink_router_dev} -j ACCEPT",  # egress to the outside
            f"-A FORWARD -j {FW_CHAIN}",  # ingress to an attached host
            f"-A {FW_CHAIN} -j DROP",
            "COMMIT",
            "",
        ])

    def _rebuild(self) -> None:
        lines = ["*filter", f":{FW_CHAIN} - [0:0]"]
        for rule in self._rules.values():
            for att in self._hosts.values():
                if not rule.target_tags or set(rule.target_tags) & set(att.tags):
                    lines += _rule_lines(rule, att)
        lines += [f"-A {FW_CHAIN} -j DROP", "COMMIT", ""]
        self._iptables_restore("\n".join(lines), noflush=True)

    def _iptables_restore(self, ruleset: str, noflush: bool) -> None:
        args = ["iptables-restore", *(["--noflush"] if noflush else [])]
        _netns_exec(self.netns, *args, stdin=ruleset)


def _unwire(router_netns: str, att: Attachment) -> None:
    run_ip("link", "del", att.router_device, netns=router_netns, check=False)  # both ends, now
    run_ip("netns", "del", att.netns, check=False)


def _rule_lines(rule: FirewallRule, att: Attachment) -> list[str]:
    out = []
    for src in rule.source_ranges:
        src_net = ipaddress.ip_network(src, strict=False)
        for dst in att.destinations:
            for proto, ports in rule.allowed:
                for match in _matches(proto, ports):
                    out.append(f'-A {FW_CHAIN} -s {src_net} -d {dst} {match}'
                               f' -m comment --comment "{rule.name}" -j ACCEPT')
    return out


def _allowed(allowed: tuple[Allowed, ...]) -> str:
    return " ".join(f"{proto}:{','.join(ports) or 'all'}" for proto, ports in allowed)


def _matches(proto: str, ports: tuple[str, ...]) -> list[str]:
    if proto == "all":
        return [""]
    if not ports:
        return [f"-p {proto}"]
    return [f"-p {proto} -m {proto} --dport {p.replace('-', ':')}" for p in ports]


def _check_allowed(rule: str, proto: str, ports: tuple[str, ...]) -> None:
    if proto not in _PROTOCOLS:
        raise ValueError(f"firewall rule {rule}: protocol {proto!r} not one of {_PROTOCOLS}")
    if ports and proto not in ("tcp", "udp"):
        raise ValueError(f"firewall rule {rule}: ports are only valid for tcp and udp")
    for p in ports:
        m = _PORTS.match(p)
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
        if not (m and 1 <= lo <= hi <= 65535):
            raise ValueError(f"firewall rule {rule}: bad port spec {p!r} (want N or N-M, 1..65535)")


def _netns_exec(netns: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=_CMD_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc={proc.returncode}): {proc.stderr.strip()}")
    return proc

