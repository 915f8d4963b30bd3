"""Waits on real conditions through the suite's one retry policy (any Kube seam implementation)."""

from __future__ import annotations

from dataclasses import dataclass

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.kube_errors import TransientKubeError
from meshvm.seams import Kube


@dataclass(frozen=True)
class _Seen:
    done: bool
    summary: str
    obj: dict | None

    def __repr__(self) -> str:  # what a failed wait reports as last seen
        return self.summary


def _until(what: str, check: object, deadline: Deadline) -> dict:
    seen = retry.until(what, check, deadline, transient=(TransientKubeError,),  # type: ignore[arg-type]
                       accept=lambda s: s.done)
    assert seen.obj is not None
    return seen.obj


def rollout(kube: Kube, namespace: str, name: str, deadline: Deadline) -> dict:
    """A Deployment rolled out: observedGeneration >= generation and availableReplicas == replicas."""
    def check() -> _Seen:
        d = kube.get("apps/v1", "Deployment", name, namespace)
        if d is None:
            return _Seen(False, "no such Deployment", None)
        gen, st = d["metadata"].get("generation", 0), d.get("status") or {}
        want, have = d.get("spec", {}).get("replicas", 1), st.get("availableReplicas", 0) or 0
        observed = st.get("observedGeneration", 0) or 0
        return _Seen(observed >= gen and have == want,
                     f"generation {gen}, observed {observed}, available {have}/{want}", d)
    return _until(f"Deployment {namespace}/{name} rolled out", check, deadline)


def load_balancer_address(kube: Kube, namespace: str, name: str, deadline: Deadline) -> str:
    """A LoadBalancer Service's external address: status.loadBalancer.ingress[0] ip (or hostname)."""
    def check() -> _Seen:
        svc = kube.get("v1", "Service", name, namespace)
        ingress = ((svc or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        addr = (ingress[0].get("ip") or ingress[0].get("hostname")) if ingress else None
        summary = "no such Service" if svc is None else f"ingress {ingress or 'not yet assigned'}"
        return _Seen(bool(addr), summary, {"address": addr} if addr else None)
    return str(_until(f"Service {namespace}/{name} load balancer address", check, deadline)["address"])


def present(kube: Kube, api_version: str, kind: str, name: str, namespace: str | None,
            deadline: Deadline) -> dict:
    """An object exists (e.g. the ConfigMap istio-ca-root-cert that istiod creates in a namespace)."""
    def check() -> _Seen:
        obj = kube.get(api_version, kind, name, namespace)
        return _Seen(obj is not None, "absent" if obj is None else "present", obj)
    return _until(f"{kind} {namespace + '/' if namespace else ''}{name} present", check, deadline)
