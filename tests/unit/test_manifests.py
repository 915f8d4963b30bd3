"""Every manifest the recipe applies is valid, and an invalid edit to any of them is caught."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from meshvm import manifests
from meshvm.lab.kubeapi import schema

# The oldest Kubernetes the default Istio (1.30) supports (docs/facts.md section 1: 1.32-1.36).
OLDEST_K8S = "1.32"
VALUES = {"IMAGE_PREFIX": "docker.io/istio/examples-bookinfo", "IMAGE_TAG": "1.20.3",
          "SOURCE_RANGES": ["203.0.113.7/32"], "VM_EXTERNAL_IP": "203.0.113.9"}
CORE = ["bookinfo-reviews", "bookinfo-rest", "default-injection", "ratings-namespace", "bookinfo-ratings",
        "curl-client"]


def core_docs() -> list[tuple[str, int, dict]]:
    return [(name, i, d) for name in CORE for i, d in enumerate(manifests.docs(name, **VALUES))]


@pytest.mark.parametrize(("name", "index", "doc"), core_docs(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_core_kinds_validate_strictly(name, index, doc):
    kubernetes_validate.validate(doc, OLDEST_K8S, strict=True)


@pytest.mark.parametrize(("name", "index", "doc"), core_docs(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_an_invalid_edit_is_caught(name, index, doc):
    broken = copy.deepcopy(doc)
    (broken.get("spec") or broken["metadata"])["replicaz"] = 1  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, OLDEST_K8S, strict=True)


def test_no_ratings_workload_outside_the_ratings_namespace():
    for name in CORE:
        for doc in manifests.docs(name, **VALUES):
            if doc["metadata"]["name"] == "ratings" or doc["metadata"]["name"].startswith("ratings-"):
                assert doc["metadata"].get("namespace") == "ratings" or doc["kind"] == "Namespace", (name, doc)


def test_reviews_v2_and_v3_call_ratings_in_its_namespace():
    deployments = {d["metadata"]["name"]: d for d in manifests.docs("bookinfo-reviews", **VALUES)
                   if d["kind"] == "Deployment"}
    for version in ("v2", "v3"):
        env = deployments[f"reviews-{version}"]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "SERVICES_DOMAIN", "value": "ratings"} in env
    image = deployments["reviews-v2"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "docker.io/istio/examples-bookinfo-reviews-v2:1.20.3"


def test_an_unrendered_placeholder_is_an_error():
    with pytest.raises(ValueError, match=r"unrendered \$\{IMAGE_PREFIX\}, \$\{IMAGE_TAG\}"):
        manifests.text("bookinfo-rest")


def test_eastwest_operator_matches_gen_eastwest_gateway_single_cluster():
    """docs/facts.md section 1, field by field, before the suite's overlay."""
    (iop,) = manifests.docs("eastwest-gateway")
    assert iop["apiVersion"] == "install.istio.io/v1alpha1" and iop["kind"] == "IstioOperator"
    assert iop["metadata"] == {"name": "eastwest"}
    spec = iop["spec"]
    assert spec["revision"] == "" and spec["profile"] == "empty"
    assert spec["values"] == {"gateways": {"istio-ingressgateway": {"injectionTemplate": "gateway"}}}
    (gw,) = spec["components"]["ingressGateways"]
    assert gw["name"] == "istio-eastwestgateway" and gw["enabled"] is True
    assert gw["label"] == {"istio": "eastwestgateway", "app": "istio-eastwestgateway"}
    assert gw["k8s"] == {"service": {"ports": [
        {"name": "status-port", "port": 15021, "targetPort": 15021},
        {"name": "tls", "port": 15443, "targetPort": 15443},
        {"name": "tls-istiod", "port": 15012, "targetPort": 15012},
        {"name": "tls-webhook", "port": 15017, "targetPort": 15017}]}}
    assert "env" not in str(iop) and "network" not in str(iop)


def test_internal_overlay_adds_only_the_annotation():
    (iop,) = manifests.docs("eastwest-gateway")
    merged = manifests.merge(iop, {"spec": manifests.docs("eastwest-lb-internal")[0]})
    gw = merged["spec"]["components"]["ingressGateways"][0]
    assert gw["k8s"]["serviceAnnotations"] == {"networking.gke.io/load-balancer-type": "Internal"}
    gw["k8s"].pop("serviceAnnotations")
    assert merged == iop


def test_expose_istiod_matches_facts():
    gateway, vs = manifests.docs("expose-istiod")
    assert (gateway["apiVersion"], gateway["kind"], gateway["metadata"]["name"]) == \
        ("networking.istio.io/v1", "Gateway", "istiod-gateway")
    assert gateway["spec"]["selector"] == {"istio": "eastwestgateway"}
    assert [(s["port"]["number"], s["port"]["name"], s["port"]["protocol"], s["tls"]["mode"], s["hosts"])
            for s in gateway["spec"]["servers"]] == [
        (15012, "tls-istiod", "tls", "PASSTHROUGH", ["*"]), (15017, "tls-istiodwebhook", "tls", "PASSTHROUGH", ["*"])]
    assert (vs["kind"], vs["metadata"]["name"], vs["spec"]["hosts"], vs["spec"]["gateways"]) == \
        ("VirtualService", "istiod-vs", ["*"], ["istiod-gateway"])
    routes = [(r["match"][0]["port"], r["match"][0]["sniHosts"], r["route"][0]["destination"]["host"],
               r["route"][0]["destination"]["port"]["number"]) for r in vs["spec"]["tls"]]
    assert routes == [(15012, ["*"], "istiod.istio-system.svc.cluster.local", 15012),
                      (15017, ["*"], "istiod.istio-system.svc.cluster.local", 443)]


def istio_docs() -> list[tuple[str, dict]]:
    group = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "WorkloadGroup",
             "metadata": {"name": "ratings", "namespace": "ratings"},
             "spec": {"metadata": {"labels": {"app": "ratings"}}, "template": {"serviceAccount": "bookinfo-ratings"}}}
    docs = [(name, d) for name in ("expose-istiod", "bookinfo-gateway") for d in manifests.docs(name)]
    return [*docs, ("workloadgroup+probe", manifests.merge(group, manifests.docs("workloadgroup-probe")[0]))]


@pytest.mark.parametrize(("name", "doc"), istio_docs(), ids=lambda x: x if isinstance(x, str) else "")
def test_istio_kinds_validate_against_their_schemas(name, doc):
    """The schemas are the Kubernetes API stand-in's (written from Istio's API reference)."""
    assert schema.validate(doc["kind"], doc, prune=False) == ([], [])


@pytest.mark.parametrize(("name", "doc"), istio_docs(), ids=lambda x: x if isinstance(x, str) else "")
def test_an_invalid_istio_edit_is_caught(name, doc):
    broken = copy.deepcopy(doc)
    broken["spec"]["selectr"] = {"istio": "x"}
    assert schema.validate(broken["kind"], broken, prune=False)[1] == ["spec.selectr"]
