"""What the gateways' xDS model (envoy/gateway.py) reads from Istio's networking objects: label
selectors, host patterns, a VirtualService's gateway references, and a Service's load-balancer
addresses. Semantics as Istio documents them for Gateway and
VirtualService (istio.io/latest/docs/reference/config/networking/gateway/ and .../virtual-service/:
`hosts`, `gateways`, `selector`); a lab model of them, not Istio's code.
"""

from __future__ import annotations


def selects(selector: dict, labels: dict) -> bool:
    """Every key of `selector` has its value in `labels` (an empty selector selects everything)."""
    return all(labels.get(k) == v for k, v in selector.items())


def host_matches(pattern: str, host: str) -> bool:
    """A Gateway server's or VirtualService's host against a request's host (or a TLS SNI): "*", a
    "*.suffix" wildcard, or the exact name."""
    pattern = pattern.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def names_gateway(ref: str, vs_namespace: str, gateway: dict) -> bool:
    """Does a VirtualService's `gateways` entry (`name` in its own namespace, or `ns/name`) name it?"""
    ref_ns, _, ref_name = ref.rpartition("/")
    meta = gateway["metadata"]
    return (ref_ns or vs_namespace, ref_name) == (meta.get("namespace", "default"), meta["name"])


def lb_ips(service: dict) -> list[str]:
    """A LoadBalancer Service's addresses, from its status."""
    return [i.get("ip") for i in ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
