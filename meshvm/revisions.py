"""Istio revisions' names, as Istio's charts and istioctl derive them (docs/facts.md section 6, "Canary"):
a revisionless install is revision `default` and names its objects without a suffix; revision `<rev>` adds
`-<rev>` to istiod's Deployment, Service and ConfigMaps, and to the host its proxies dial. Plain names: the
recipe, the suite's checks and the lab's stand-ins share them."""

from __future__ import annotations

LABEL = "istio.io/rev"  # on a revision's objects and pods; the injector writes it as a pod annotation
DEFAULT = "default"  # the revision of a revisionless install
NAMESPACE = "istio-system"


def suffix(revision: str) -> str:
    """`-<rev>`, or "" for no revision (`""` or `default`)."""
    return "" if revision in ("", DEFAULT) else f"-{revision}"


def istiod(revision: str) -> str:
    """istiod's Deployment and Service."""
    return f"istiod{suffix(revision)}"


def injector(revision: str) -> str:
    """The injector's ConfigMap (its values: the injected proxy's hub and tag, the cluster name)."""
    return f"istio-sidecar-injector{suffix(revision)}"


def istiod_host(revision: str) -> str:
    """The host a proxy of the revision dials (discoveryAddress, CA_ADDR, the VM's hosts line, its SNI)."""
    return f"{istiod(revision)}.{NAMESPACE}.svc"


def istiod_pods(revision: str) -> str:
    """The label selector of the revision's istiod pods (the chart labels them `istio.io/rev`)."""
    return f"app=istiod,{LABEL}={revision or DEFAULT}"
