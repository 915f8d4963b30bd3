"""The lab's mesh registry: which WorkloadEntries a caller's proxy gets, and how (TLS mode, health),
as Istio 1.30 and 1.31 each send them (docs/facts.md section 6)."""

from __future__ import annotations

import threading

import pytest

from meshvm.lab.mesh_registry import MeshRegistry

SERVICE = {"metadata": {"name": "ratings", "namespace": "ratings"},
           "spec": {"selector": {"app": "ratings"}, "ports": [{"name": "http", "port": 9080}]}}


def entry(ip: str, healthy: bool, labels: dict | None = None, sa: str = "bookinfo-ratings") -> dict:
    return {"metadata": {"name": f"ratings-{ip}", "namespace": "ratings",
                         "annotations": {"proxy.istio.io/health-checks-enabled": "true"}},
            "spec": {"address": ip, "labels": {"app": "ratings", **(labels or {})}, "serviceAccount": sa},
            "status": {"conditions": [{"type": "Healthy", "status": "True" if healthy else "False"}]}}


def registry(entries: list[dict], image: str, env: dict | None = None) -> MeshRegistry:
    r = MeshRegistry.__new__(MeshRegistry)  # no API: its two reads are given below
    r.cache_s, r._vips, r._cache = 0, {}, {}
    r._lock, r._building = threading.Lock(), threading.Lock()
    r._free = iter([f"10.20.0.{i}" for i in range(10, 50)])
    objects = {"Pod": [], "WorkloadEntry": entries, "Service": [SERVICE]}
    r._list = lambda api_version, kind: objects[kind]  # type: ignore[method-assign]
    container = {"image": image, "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
    r._sends_unhealthy = lambda: MeshRegistry._sends_unhealthy_of(container)  # type: ignore[method-assign]
    return r


def port(r: MeshRegistry) -> dict:
    return r.table()["services"][0]["ports"][0]


@pytest.mark.parametrize(("image", "env", "kept"), [
    ("docker.io/istio/pilot:1.30.5", {}, False),
    ("docker.io/istio/pilot:1.31.1", {}, True),
    ("docker.io/istio/pilot:1.31.1", {"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "false"}, False),
    ("docker.io/istio/pilot:1.30.5", {"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "true"}, True)])
def test_an_unhealthy_entry_leaves_eds_on_1_30_and_stays_marked_on_1_31(image: str, env: dict, kept: bool):
    p = port(registry([entry("10.10.0.5", True), entry("10.10.0.6", False)], image, env))
    assert p["endpoints"] == ["10.10.0.5:9080"]  # never routed to
    assert ("unhealthy" in p) is kept and p.get("unhealthy", ["10.10.0.6:9080"]) == ["10.10.0.6:9080"]


def test_tls_mode_from_the_label_else_the_service_account():
    p = port(registry([entry("10.10.0.5", True), entry("10.10.0.6", True, {"security.istio.io/tlsMode": "disabled"}),
                       entry("10.10.0.7", True, sa="")], "docker.io/istio/pilot:1.31.1"))
    assert p["mtls"] == ["10.10.0.5:9080"]
    assert p["endpoints"] == ["10.10.0.5:9080", "10.10.0.6:9080", "10.10.0.7:9080"]
