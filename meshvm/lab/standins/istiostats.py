"""lab STAND-IN for what an Istio proxy reports about its traffic (not Istio). Standard library only:
it is shipped inside the stand-in sidecar package beside agentplane.py and envoyboot.py.

Modelled, each from Istio's source at 1.30.3 (docs/facts.md section 6):
- the bootstrap stats matcher's default inclusions (`pkg/bootstrap/config.go` getStatsOptions and
  `tools/packaging/common/envoy_bootstrap.json`; envoyboot.py writes them): an Envoy stat exists only
  when a default inclusion or ProxyConfig `proxyStatsMatcher` includes it; `cluster.outbound|...` stats
  do not by default;
- Istio's standard metric `istio_requests_total` (istio/proxy
  `source/extensions/filters/http/istio_stats/istio_stats.cc`), a subset of its labels: only the
  destination reporter sets `connection_security_policy` (`mutual_tls` when both sides have a
  certificate, else `none`); the source reporter leaves it `unknown`; an absent peer identity is
  `unknown`;
- SPIFFE identities `spiffe://<trust domain>/ns/<ns>/sa/<sa>` (`pkg/spiffe/spiffe.go`), trust
  domain `cluster.local` (MeshConfig's default, `pkg/config/mesh/mesh.go`).
"""

from __future__ import annotations

import threading

TRUST_DOMAIN = "cluster.local"

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


class RequestMetrics:
    """`istio_requests_total` series, one per distinct label set (agentplane.RequestCounter records)."""

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
