"""lab STAND-IN for what an Istio proxy reports about its traffic (not Istio). Standard library only:
it is shipped inside the stand-in sidecar package beside meshwire.py.

Modelled, each from Istio's source at 1.30.3 (docs/facts.md section 6):
- the bootstrap's stats matcher (`pkg/bootstrap/config.go` getStatsOptions and
  `tools/packaging/common/envoy_bootstrap.json`): an Envoy stat exists only when a default inclusion
  or ProxyConfig `proxyStatsMatcher` includes it; `cluster.outbound|...` stats do not by default;
- Istio's standard metric `istio_requests_total` (istio/proxy
  `source/extensions/filters/http/istio_stats/istio_stats.cc`), a subset of its labels: only the
  destination reporter sets `connection_security_policy` (`mutual_tls` when both sides have a
  certificate, else `none`); the source reporter leaves it `unknown`; an absent peer identity is
  `unknown`;
- SPIFFE identities `spiffe://<trust domain>/ns/<ns>/sa/<sa>` (`pkg/spiffe/spiffe.go`), trust
  domain `cluster.local` (MeshConfig's default, `pkg/config/mesh/mesh.go`).

What stands in for mutual TLS until the lab's data plane speaks it: a caller's sidecar that sends to
an endpoint of TLS mode `istio` opens the connection with one line, `PEER_MAGIC` + JSON (its
principal, workload, namespace and the Service it meant), as the TLS handshake's peer certificate and
Istio's metadata exchange would tell the server. A server that gets no such line saw plaintext.
"""

from __future__ import annotations

import json
import re
import socket
import threading

TRUST_DOMAIN = "cluster.local"
PEER_MAGIC = b"LAB-STANDIN-MTLS "
PEER_WAIT_S = 2.0  # HTTP clients speak first; a silent one is plaintext

DEFAULT_PREFIXES = ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm",
                    "reporter=", "component", "istio")
DEFAULT_SUFFIXES = ("rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied")
DEFAULT_REGEXPS = (r"vhost\..*\.route\..*",)

LABELS = ("reporter", "source_workload", "source_workload_namespace", "source_principal",
          "destination_workload", "destination_workload_namespace", "destination_principal",
          "destination_service", "destination_service_name", "destination_service_namespace",
          "request_protocol", "response_code", "connection_security_policy")
UNKNOWN = "unknown"


def spiffe(namespace: str, service_account: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


class StatsMatcher:
    """Which Envoy stats a proxy creates: ProxyConfig's inclusions, then the required defaults."""

    def __init__(self, proxy_config: dict | None = None) -> None:
        m = (proxy_config or {}).get("proxyStatsMatcher") or {}
        self.prefixes = tuple(m.get("inclusionPrefixes") or ()) + DEFAULT_PREFIXES
        self.suffixes = tuple(m.get("inclusionSuffixes") or ()) + DEFAULT_SUFFIXES
        self.regexps = tuple(re.compile(r) for r in (*(m.get("inclusionRegexps") or ()), *DEFAULT_REGEXPS))

    def keeps(self, name: str) -> bool:
        return (name.startswith(self.prefixes) or name.endswith(self.suffixes)
                or any(r.fullmatch(name) for r in self.regexps))


class RequestMetrics:
    """`istio_requests_total` series, one per distinct label set; a connection counts as one request."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def record(self, **labels: str) -> None:
        key = tuple(str(labels.get(name) or UNKNOWN) for name in LABELS)
        with self._lock:
            self._series[key] = self._series.get(key, 0) + 1

    def prometheus(self) -> str:
        """Prometheus' text format, as the merged `:15020/stats/prometheus` shows Istio's metrics."""
        with self._lock:
            items = sorted(self._series.items())
        lines = ["# TYPE istio_requests_total counter"]
        for key, value in items:
            labels = ",".join(f'{n}="{v}"' for n, v in zip(LABELS, key, strict=True))
            lines.append(f"istio_requests_total{{{labels}}} {value}")
        return "\n".join(lines) + "\n"


def peer_hello(principal: str, workload: str, namespace: str, service: str) -> bytes:
    doc = {"principal": principal, "workload": workload, "namespace": namespace, "service": service}
    return PEER_MAGIC + json.dumps(doc).encode() + b"\n"


def read_peer(conn: socket.socket) -> dict | None:
    """The caller's identity line when it sent one (consumed), else None (the bytes stay unread)."""
    conn.settimeout(PEER_WAIT_S)
    try:
        head = conn.recv(len(PEER_MAGIC), socket.MSG_PEEK | socket.MSG_WAITALL)
    except (TimeoutError, OSError):
        return None
    finally:
        conn.settimeout(None)
    if head != PEER_MAGIC:
        return None
    line = b""
    while not line.endswith(b"\n") and len(line) < 4096:
        chunk = conn.recv(1)
        if not chunk:
            break
        line += chunk
    try:
        doc = json.loads(line[len(PEER_MAGIC):])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def response_code(head: bytes) -> str:
    """The status of an HTTP/1 response's first line; "0" when nothing (or no HTTP) came back."""
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    return m.group(1).decode() if m else "0"


def request_host(head: bytes) -> str:
    """An HTTP/1 request's Host header (without the port), else unknown."""
    m = re.search(rb"\r\nhost:\s*([^\r\n:]+)", head, re.IGNORECASE)
    return m.group(1).decode(errors="replace").strip() if m else UNKNOWN
