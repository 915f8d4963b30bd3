"""Recipe: "Install east-west gateway and expose Istiod"."""

from __future__ import annotations

from pathlib import Path

from meshvm import manifests
from meshvm.deadlines import Deadline
from meshvm.recipe import istio, waits
from meshvm.seams import Istioctl, Kube

SERVICE = "istio-eastwestgateway"


def operator(lb_mode: str, vm_external_ip: str | None = None) -> str:
    """gen-eastwest-gateway.sh --single-cluster, plus the suite's one load-balancer overlay."""
    (base,) = manifests.docs("eastwest-gateway")
    values = {"VM_EXTERNAL_IP": vm_external_ip} if lb_mode == "external" else {}
    overlay = manifests.docs(f"eastwest-lb-{lb_mode}", **values)[0]
    return manifests.dump(manifests.merge(base, {"spec": overlay}))


def install_eastwest(istioctl: Istioctl, kube: Kube, lb_mode: str, vm_external_ip: str | None, hub: str,
                     workdir: Path, deadline: Deadline, revision: str = "") -> str:
    """Install the east-west gateway (image from the pinned hub; a canary upgrade: of `revision`, as
    `gen-eastwest-gateway.sh --revision` makes it), expose istiod through it; returns the gateway's address."""
    iop = workdir / "eastwest.yaml"
    iop.write_text(operator(lb_mode, vm_external_ip))
    args = ["install", "-y", "--set", f"hub={hub}", "-f", str(iop), *(["--revision", revision] if revision else [])]
    istioctl.run(args, step="east-west: install", timeout=deadline.cap(900))
    kube.apply(manifests.text("expose-istiod"), namespace="istio-system")
    waits.rollout(kube, "istio-system", SERVICE, deadline)
    # Its Deployment's image is `auto` (the gateway injection template): the pods' injected image counts
    istio.require_hub(kube, hub, "istio-system", deployments=(SERVICE,), pods=f"app={SERVICE}")
    return waits.lb_address(kube, "istio-system", SERVICE, deadline)
