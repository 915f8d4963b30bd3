"""Recipe: "Install Istio", then read back the cluster ID istiod really uses.

istiod's CA rejects a VM that claims any other cluster ("client claims to be in cluster ..."), so
every later step passes exactly this value (docs/facts.md section 1).

The image hub is pinned (`--set hub=`, docs/facts.md section 6: 1.30's charts name a registry that
goes away) and every Istio image that runs is checked against it: the control plane and gateways
here, the injected proxies after BookInfo (`hub_problems`).
"""

from __future__ import annotations

import json
from pathlib import Path

from meshvm import manifests, revisions
from meshvm.deadlines import Deadline
from meshvm.recipe import waits
from meshvm.seams import Istioctl, Kube

# The recipe's two settings: on by default since 1.10, kept because the recipe sets them.
PILOT_SETTINGS = ("values.pilot.env.PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION=true",
                  "values.pilot.env.PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS=true")
DEFAULT_CLUSTER_ID = "Kubernetes"
INJECTED = "auto"  # a Deployment's proxy image the injection webhook replaces (injected-deployment.yaml)


class HubMismatch(Exception):
    """An Istio image runs from another hub than the one the run pinned."""


def install_istio(istioctl: Istioctl, kube: Kube, source_ranges: list[str], hub: str, workdir: Path,
                  deadline: Deadline, revision: str = "") -> str:
    """Install Istio: `istioctl install` with the recipe's settings and the pinned hub (a canary upgrade:
    as `revision`, beside the running one); returns istiod's cluster ID."""
    overlay = workdir / "ingress-source-ranges.yaml"
    overlay.write_text(manifests.text("ingress-source-ranges", SOURCE_RANGES=list(source_ranges)))
    args = ["install", "-y", "--set", f"hub={hub}", *(a for s in PILOT_SETTINGS for a in ("--set", s)),
            "-f", str(overlay), *(["--revision", revision] if revision else [])]
    istioctl.run(args, step="istio: install", timeout=deadline.cap(900))
    istiod = revisions.istiod(revision)
    require_hub(kube, hub, "istio-system", deployments=(istiod, "istio-ingressgateway"))
    waits.rollout(kube, "istio-system", istiod, deadline)
    waits.rollout(kube, "istio-system", "istio-ingressgateway", deadline)
    return cluster_id(kube, revision)



def hub_problems(kube: Kube, hub: str, namespace: str, deployments: tuple[str, ...] = (),
                 pods: str | None = None) -> list[str]:
    """Istio images in `namespace` not from `hub`: every container of the named Deployments (but image
    `auto`: a gateway rendered for injection, whose image the webhook sets in each pod, docs/facts.md
    section 6), and the `istio-proxy` container (or native-sidecar init container) of every pod, or of the
    pods the label selector `pods` selects (pods being deleted are not counted)."""
    seen = []
    for name in deployments:
        spec = ((kube.get("apps/v1", "Deployment", name, namespace) or {}).get("spec") or {}).get("template") or {}
        seen += [(f"Deployment {namespace}/{name}", c) for c in (spec.get("spec") or {}).get("containers") or []
                 if c.get("image") != INJECTED]
    if pods is not None or not deployments:
        for pod in kube.list("v1", "Pod", namespace, label_selector=pods):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            spec = pod.get("spec") or {}
            seen += [(f"pod {namespace}/{pod['metadata']['name']}", c)
                     for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                     if c.get("name") == "istio-proxy"]
    return [f"{where} runs {c.get('image')}, not from --istio-hub {hub}" for where, c in seen
            if not str(c.get("image") or "").startswith(hub.rstrip("/") + "/")]


def require_hub(kube: Kube, hub: str, namespace: str, deployments: tuple[str, ...] = (),
                pods: str | None = None) -> None:
    if problems := hub_problems(kube, hub, namespace, deployments, pods):
        raise HubMismatch("; ".join(problems))


def istiod_image(kube: Kube) -> str:
    istiod = kube.get("apps/v1", "Deployment", "istiod", "istio-system") or {}
    containers = istiod.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return str(containers[0].get("image", "")) if containers else ""


def cluster_id(kube: Kube, revision: str = "") -> str:
    """istiod's CLUSTER_ID env; else the injector's global.multiCluster.clusterName; else Kubernetes."""
    istiod = kube.get("apps/v1", "Deployment", revisions.istiod(revision), "istio-system") or {}
    for container in istiod.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        for env in container.get("env", []):
            if env.get("name") == "CLUSTER_ID" and env.get("value"):
                return str(env["value"])
    injector = kube.get("v1", "ConfigMap", revisions.injector(revision), "istio-system") or {}
    values = json.loads((injector.get("data") or {}).get("values") or "{}")
    name = values.get("global", {}).get("multiCluster", {}).get("clusterName")
    return str(name) if name else DEFAULT_CLUSTER_ID
