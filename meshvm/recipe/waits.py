"""Waits on real cluster conditions, over the Kube seam (each through the one retry policy, which waits out a
5xx or a dropped connection, a GKE control plane resizing itself: the seam's TransientError)."""

from __future__ import annotations

from typing import cast

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.seams import Kube


def rollout(kube: Kube, namespace: str, name: str, deadline: Deadline) -> dict:
    """A Deployment is rolled out when it has observed its generation and all replicas are available."""
    def seen() -> dict | None:
        return kube.get("apps/v1", "Deployment", name, namespace)

    def done(d: dict | None) -> bool:
        if not d:
            return False
        status, spec = d.get("status") or {}, d.get("spec") or {}
        replicas = spec.get("replicas", 1)
        return (status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
                and status.get("updatedReplicas", 0) == replicas and status.get("availableReplicas", 0) == replicas
                and not status.get("unavailableReplicas"))

    # Looked at every second at most: a rollout ends when its pods are Ready, seconds after they start; a
    # longer backoff only adds its overshoot to every stage and phase that waits for one.
    return cast(dict, retry.until(f"Deployment {namespace}/{name} rolled out", seen, deadline, accept=done, ceiling=1))


def lb_address(kube: Kube, namespace: str, name: str, deadline: Deadline) -> str:
    """A LoadBalancer Service's address (on GKE it arrives asynchronously, after minutes at worst)."""
    def seen() -> str | None:
        svc = kube.get("v1", "Service", name, namespace) or {}
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [{}]
        return ingress[0].get("ip") or ingress[0].get("hostname")

    return retry.until(f"an address for Service {namespace}/{name}", seen, deadline, ceiling=15)  # type: ignore[return-value]


def present(kube: Kube, api_version: str, kind: str, namespace: str, name: str, deadline: Deadline) -> dict:
    return cast(dict, retry.until(f"{kind} {namespace}/{name} to exist",
                                  lambda: kube.get(api_version, kind, name, namespace), deadline))


def gone(kube: Kube, api_version: str, kind: str, namespace: str, name: str, deadline: Deadline) -> None:
    """The object no longer exists (a foreground deletion ends once its dependents are gone)."""
    retry.until(f"{kind} {namespace}/{name} gone", lambda: kube.get(api_version, kind, name, namespace), deadline,
                accept=lambda found: found is None, ceiling=2)


def pods_gone(kube: Kube, namespace: str, selector: str, deadline: Deadline) -> None:
    """No pod of `selector` left (one going away still counts: its process may still serve)."""
    retry.until(f"no pod {selector} in {namespace}", lambda: kube.list("v1", "Pod", namespace, label_selector=selector),
                deadline, accept=lambda pods: not pods, ceiling=2)
