"""The image check against --istio-hub (meshvm.recipe.istio.hub_problems): a gateway rendered for
injection has image `auto` in its Deployment (Istio's injected-deployment.yaml at 1.30.3), so its pods'
injected proxy is what counts; and the pod-level injection rules the lab models for such a gateway."""

from __future__ import annotations

import pytest

from meshvm.lab import injection
from meshvm.recipe import istio

HUB = "docker.io/istio"
EW = "istio-eastwestgateway"


def deployment(image: str) -> dict:
    return {"spec": {"template": {"spec": {"containers": [{"name": "istio-proxy", "image": image}]}}}}


def pod(name: str, image: str, app: str = EW, deleting: bool = False) -> dict:
    meta = {"name": name, "labels": {"app": app}, **({"deletionTimestamp": "2026-12-07T00:00:00Z"} if deleting else {})}
    return {"metadata": meta, "spec": {"containers": [{"name": "istio-proxy", "image": image}]}}


class Kube:
    def __init__(self, deployment: dict, pods: list[dict]):
        self.deployment, self.pods = deployment, pods

    def get(self, api_version, kind, name, namespace=None):  # noqa: ANN001, ANN201
        return self.deployment

    def list(self, api_version, kind, namespace=None, label_selector=None):  # noqa: ANN001, ANN201
        key, _, value = (label_selector or "=").partition("=")
        return [p for p in self.pods if not key or p["metadata"]["labels"].get(key) == value]


def problems(kube: Kube) -> list[str]:
    return istio.hub_problems(kube, HUB, "istio-system", deployments=(EW,), pods=f"app={EW}")


def test_an_injected_gateway_is_judged_by_its_pods_not_its_deployments_auto():
    assert problems(Kube(deployment("auto"), [pod("ew-1", f"{HUB}/proxyv2:1.30.3")])) == []


def test_a_pod_of_the_gateway_from_another_hub_is_named():
    found = problems(Kube(deployment("auto"), [pod("ew-1", "registry.istio.io/release/proxyv2:1.30.3"),
                                               pod("other", "registry.istio.io/release/proxyv2:1.30.3", app="x")]))
    assert found == ["pod istio-system/ew-1 runs registry.istio.io/release/proxyv2:1.30.3, not from --istio-hub "
                     "docker.io/istio"]


def test_a_pod_being_deleted_is_not_counted_and_a_real_deployment_image_still_is():
    kube = Kube(deployment("registry.istio.io/release/proxyv2:1.30.3"),
                [pod("old", "registry.istio.io/release/proxyv2:1.30.3", deleting=True), pod("new", f"{HUB}/proxyv2:1.31.1")])
    assert [p.split(" runs ")[0] for p in problems(kube)] == [f"Deployment istio-system/{EW}"]


@pytest.mark.parametrize(("ns", "pod_labels", "revision"), [
    ({}, {"sidecar.istio.io/inject": "true"}, "default"),                      # object.sidecar-injector
    ({}, {"sidecar.istio.io/inject": "true", "istio.io/rev": "1-31-1"}, "1-31-1"),  # rev.object
    ({}, {"istio.io/rev": "1-31-1"}, "1-31-1"),
    ({}, {"sidecar.istio.io/inject": "false", "istio.io/rev": "default"}, None),  # deployment.yaml's gateway
    ({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "false"}, None),
    ({"istio.io/rev": "1-31-1"}, {"istio.io/rev": "default"}, "1-31-1"),        # the namespace's label wins
    ({"istio-injection": "disabled"}, {"sidecar.istio.io/inject": "true"}, None),
    ({}, {}, None),
])
def test_the_lab_injects_a_pod_that_asks_as_istios_object_selectors_do(ns, pod_labels, revision):
    assert injection.revision(ns, pod_labels) == revision
