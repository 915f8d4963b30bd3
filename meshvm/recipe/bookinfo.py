"""Recipe: "Deploy BookInfo (sans ratings)", and the cluster-side pieces of the exercises."""

from __future__ import annotations

from meshvm import manifests
from meshvm.deadlines import Deadline
from meshvm.recipe import istio, waits
from meshvm.seams import Kube

DEPLOYMENTS = ("details-v1", "productpage-v1", "reviews-v1", "reviews-v2", "reviews-v3")


def deploy_bookinfo(kube: Kube, image_prefix: str, image_tag: str, hub: str, deadline: Deadline) -> None:
    """Deploy BookInfo (sans ratings): injection on `default`, reviews, then the rest; rolled out,
    each pod's injected proxy from the pinned hub."""
    images = {"IMAGE_PREFIX": image_prefix, "IMAGE_TAG": image_tag}
    kube.apply(manifests.text("default-injection"))
    kube.apply(manifests.text("bookinfo-reviews", **images), namespace="default")
    kube.apply(manifests.text("bookinfo-rest", **images), namespace="default")
    for name in DEPLOYMENTS:
        waits.rollout(kube, "default", name, deadline)
    istio.require_hub(kube, hub, "default")


def expose_ratings(kube: Kube) -> None:
    """Exercise 3: the ClusterIP Service `ratings` in `ratings`, selecting the VM's WorkloadEntry."""
    kube.apply(manifests.text("bookinfo-ratings"), namespace="ratings")


def deploy_client(kube: Kube, deadline: Deadline) -> str:
    """Exercise 3: the mesh-injected curl client in `default`; returns its pod's name."""
    kube.apply(manifests.text("curl-client"), namespace="default")
    waits.rollout(kube, "default", "curl", deadline)
    return client_pod_name(kube)


def client_pod_name(kube: Kube) -> str:
    """The client's newest Running pod (a restart makes a new one; the old may linger a moment)."""
    pods = kube.list("v1", "Pod", "default", label_selector="app=curl")
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
               and not p["metadata"].get("deletionTimestamp")]
    if not running:
        raise RuntimeError(f"client pod: Deployment curl is available but no pod is Running: {pods!r:.300}")
    newest = max(running, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    return str(newest["metadata"]["name"])


def expose_bookinfo(kube: Kube, deadline: Deadline) -> str:
    """Put it all together: the BookInfo Gateway and VirtualService; returns the ingress address."""
    kube.apply(manifests.text("bookinfo-gateway"), namespace="default")
    return waits.lb_address(kube, "istio-system", "istio-ingressgateway", deadline)
