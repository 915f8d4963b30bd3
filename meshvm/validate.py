"""Checks of single values. Each returns None when the value is fine, else what is allowed (one line)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

LAB_RANGE = ipaddress.ip_network("172.29.0.0/16")  # the lab's addresses (meshvm.lab.netsafety)

RFC1035 = re.compile(r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$")
PROJECT = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*-[a-z0-9-]+$")
GKE_VERSION = re.compile(r"^1\.\d+(?:\.\d+(?:-gke\.\d+)?)?$")
ISTIO_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+)(?:-(?:alpha|beta|rc)\.\d+)?)?$")
IMAGE_PREFIX = re.compile(r"^[a-z0-9.-]+(?::\d+)?(?:/[a-z0-9._-]+)+$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
SA_EMAIL = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]@[-a-z0-9.]+\.gserviceaccount\.com$")
# Kubernetes minors each supported Istio minor supports (docs/facts.md section 6; istio.io's release
# announcements: 1.29 supports Kubernetes 1.31-1.35, 1.30 and 1.31 support 1.32-1.36).
ISTIO_KUBERNETES = {(1, 29): (31, 35), (1, 30): (32, 36), (1, 31): (32, 36)}
NEWEST_MINOR = max(ISTIO_KUBERNETES)
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
# Auto-registration and WorkloadEntry health checks are on by default from 1.10 (docs/facts.md section 1).
MIN_ISTIO = (1, 10)


def rfc1035(value: str, limit: int = 63) -> str | None:
    if len(value) > limit:
        return f"is {len(value)} characters; at most {limit} allowed"
    if not RFC1035.match(value):
        return "must be lowercase letters, digits and '-', start with a letter, not end with '-'"
    return None


def label_value(value: str) -> str | None:
    if not LABEL_VALUE.match(value):
        return "label values allow only lowercase letters, digits, '_' and '-', at most 63"
    return None


def matches(pattern: re.Pattern[str], value: str, what: str) -> str | None:
    return None if pattern.match(value) else f"is not {what}"


def istio_version(value: str) -> str | None:
    m = ISTIO_VERSION.match(value)
    if not m:
        return "is not an Istio release: X.Y.Z, a pre-release such as 1.31.0-rc.0, or a minor such as 1.30"
    if (int(m[1]), int(m[2])) < MIN_ISTIO:
        return f"is older than {MIN_ISTIO[0]}.{MIN_ISTIO[1]}, the first release with auto-registration on"
    return None


def release_key(value: str) -> tuple[int, int, int, int, int]:
    """An X.Y.Z[-pre.N] release as a sortable key: a pre-release sorts before its release."""
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.(\d+))?$", value)
    if not m:
        raise ValueError(f"not a resolved Istio release: {value!r}")
    pre = {"alpha": 0, "beta": 1, "rc": 2}.get(m[4] or "", 3)
    return int(m[1]), int(m[2]), int(m[3]), pre, int(m[5] or 0)


def is_minor(value: str) -> bool:
    """A minor alone (X.Y): resolved to its newest patch when the run starts."""
    m = ISTIO_VERSION.match(value)
    return m is not None and m[3] is None


def istio_minor(value: str) -> tuple[int, int]:
    m = ISTIO_VERSION.match(value)
    assert m, value
    return int(m[1]), int(m[2])


def cidr(value: str, private: bool = False) -> str | None:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        return f"is not a CIDR range ({e})"
    if private and (not isinstance(net, ipaddress.IPv4Network) or not any(net.subnet_of(r) for r in _RFC1918)):  # type: ignore[arg-type]
        return "must be an RFC 1918 IPv4 range (10/8, 172.16/12, 192.168/16)"
    return None


_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def prefix_len(value: str) -> int:
    return ipaddress.ip_network(value, strict=False).prefixlen


def overlap(a: str, b: str) -> bool:
    return ipaddress.ip_network(a).overlaps(ipaddress.ip_network(b))


def is_local_or_lab(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or (ip.version == 4 and ip in LAB_RANGE)


def url(value: str) -> str | None:
    """https anywhere; plain http only to loopback or lab addresses (nothing else may see a token)."""
    try:
        parts = urlsplit(value)
    except ValueError as e:
        return f"is not a URL ({e})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an https:// URL"
    if parts.scheme == "http" and not is_local_or_lab(parts.hostname):
        return "plain http:// is accepted only for loopback or lab addresses; use https://"
    return None


def integer(value: str, low: int, high: int) -> tuple[int | None, str | None]:
    try:
        n = int(value)
    except ValueError:
        return None, "is not a whole number"
    if not low <= n <= high:
        return None, f"must be between {low} and {high}"
    return n, None
