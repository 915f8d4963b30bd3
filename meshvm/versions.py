"""The Istio version at every layer, as each layer runs it (an upgrade run checks them after each phase).

- istiod and the gateways: the image tag of the container each Running pod runs (not the Deployment's
  template, which a rollout changes before any pod runs it); in a canary upgrade `istiod` is the
  revisionless control plane's pods and `istiod_canary` the new revision's (`istio.io/rev` on the pods);
- BookInfo's proxies: the `istio-proxy` container (or native-sidecar init container) of each Running pod,
  as the injector of its creation time wrote it: a pod keeps it until it is recreated;
- the VM: the package (`dpkg-query`), the agent binary on disk (`pilot-agent version`) and the RUNNING
  proxy: the `ISTIO_VERSION` its agent wrote into the Envoy bootstrap's node metadata at start, read from
  Envoy's admin `/server_info` (`SetIstioVersion` in `pkg/bootstrap/config.go`, key `ISTIO_VERSION` in
  `pkg/model/proxy.go`, Istio 1.30.3). Only the last one changes on `systemctl restart istio`: a new
  package alone leaves the old agent and Envoy running (docs/facts.md section 6).
"""

from __future__ import annotations

import json

from meshvm import revisions, upgrade_phases
from meshvm.recipe import sidecar
from meshvm.seams import Kube, VmShell

VARIANTS = ("-distroless", "-debug")  # image tag suffixes of the same release
SERVER_INFO = "curl -sS -m 5 localhost:15000/server_info"
POD_LAYERS = {  # layer -> (namespace, label selector, container)
    "istiod": ("istio-system", "app=istiod", "discovery"),
    "ingress_gateway": ("istio-system", "app=istio-ingressgateway", "istio-proxy"),
    "eastwest_gateway": ("istio-system", "app=istio-eastwestgateway", "istio-proxy"),
    "bookinfo_proxies": ("default", "app in (details,productpage,reviews)", "istio-proxy"),
    "client_proxy": ("default", "app=curl", "istio-proxy"),  # the pod path's source (and the exercises' client)
}
VM_LAYERS = ("vm_package", "vm_agent", "vm_proxy")


def release(image: str) -> str:
    """The release an image runs: its tag without a variant suffix ("" without a tag)."""
    last = image.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    for variant in VARIANTS:
        tag = tag.removesuffix(variant)
    return tag


def pod_versions(kube: Kube, namespace: str, selector: str, container: str) -> dict[str, str]:
    """Running pod (not going away) -> the release of its `container`, "" where it has none."""
    found = {}
    for pod in kube.list("v1", "Pod", namespace, label_selector=selector):
        if (pod.get("status") or {}).get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
            continue
        spec = pod.get("spec") or {}
        images = [c.get("image") or "" for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                  if c.get("name") == container]
        found[pod["metadata"]["name"]] = release(images[0]) if images else ""
    return found


def running_proxy_version(vm: VmShell) -> str:
    r = vm.run(SERVER_INFO, step="versions: the VM's running Envoy (/server_info)", check=False, timeout=15)
    try:
        return str(((json.loads(r.stdout).get("node") or {}).get("metadata") or {}).get("ISTIO_VERSION") or "")
    except ValueError:
        return f"(no answer: curl exited {r.rc})"


def pod_layers(revision: str | None) -> dict[str, tuple[str, str, str]]:
    """The pod layers; with a canary `revision`, istiod is the revisionless control plane's pods (the chart
    labels them `istio.io/rev=default`) and `istiod_canary` the revision's."""
    if revision is None:
        return POD_LAYERS
    return {**POD_LAYERS, "istiod": ("istio-system", revisions.istiod_pods(revisions.DEFAULT), "discovery"),
            "istiod_canary": ("istio-system", revisions.istiod_pods(revision), "discovery")}


def layers(kube: Kube, vm: VmShell, revision: str | None = None) -> dict[str, dict[str, str]]:
    """Layer -> where -> release, for every layer."""
    seen = {layer: pod_versions(kube, *where) for layer, where in pod_layers(revision).items()}
    seen["vm_package"] = {"dpkg istio-sidecar": sidecar.package_release(vm)}
    seen["vm_agent"] = {"pilot-agent version": sidecar.proxy_version(vm)}
    seen["vm_proxy"] = {"Envoy node ISTIO_VERSION": running_proxy_version(vm)}
    return seen


def problems(seen: dict[str, dict[str, str]], expected: dict[str, str]) -> list[str]:
    """One line per layer not (entirely) on its expected release, or with nothing running."""
    lines = []
    for layer, want in expected.items():
        found = seen.get(layer) or {}
        if want == upgrade_phases.NONE:
            if found:
                lines.append(f"{layer}: expected none running, found {_on(found)}")
        elif not found:
            lines.append(f"{layer}: nothing running, expected {want}")
        elif wrong := {where: got for where, got in found.items() if got != want}:
            lines.append(f"{layer}: expected {want}, found {_on(wrong)}")
    return lines


def _on(found: dict[str, str]) -> str:
    return ", ".join(f"{where} on {got or '(no tag)'}" for where, got in sorted(found.items()))
