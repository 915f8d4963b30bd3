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


def registry(entries: list[dict]) -> MeshRegistry:
    r = MeshRegistry.__new__(MeshRegistry)  # no API: its two reads are given below
    r.cache_s, r._vips, r._cache = 0, {}, {}
    r._lock, r._building = threading.Lock(), threading.Lock()
    r._free = iter([f"10.20.0.{i}" for i in range(10, 50)])
    objects = {"Pod": [], "WorkloadEntry": entries, "Service": [SERVICE]}
    r._list = lambda api_version, kind: objects[kind]  # type: ignore[method-assign]
    return r


def port(r: MeshRegistry) -> dict:
    return r.table()["services"][0]["ports"][0]


def test_an_unhealthy_entry_is_in_no_eds_on_1_30_and_1_31_alike():
    """Not sent as UNHEALTHY on 1.31 either (PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS is about endpoints
    that exist): an unhealthy entry with health checks is no workload instance at all."""
    p = port(registry([entry("10.10.0.5", True), entry("10.10.0.6", False)]))
    assert p["endpoints"] == ["10.10.0.5:9080"] and list(p["principals"]) == ["10.10.0.5:9080"]
    assert "10.10.0.6" not in repr(p)


@pytest.mark.parametrize(("annotation", "listed"), [("true", False), ("True", False), ("1", False),
                                                    ("false", True), ("yes", True)])
def test_health_checks_are_on_when_the_annotation_parses_as_go_true(annotation: str, listed: bool):
    e = entry("10.10.0.6", False)
    e["metadata"]["annotations"]["proxy.istio.io/health-checks-enabled"] = annotation
    assert ("10.10.0.6:9080" in port(registry([e]))["endpoints"]) is listed


def test_tls_mode_from_the_label_else_the_service_account():
    p = port(registry([entry("10.10.0.5", True), entry("10.10.0.6", True, {"security.istio.io/tlsMode": "disabled"}),
                       entry("10.10.0.7", True, sa="")]))
    assert p["principals"] == {"10.10.0.5:9080": "spiffe://cluster.local/ns/ratings/sa/bookinfo-ratings"}
    assert p["endpoints"] == ["10.10.0.5:9080", "10.10.0.6:9080", "10.10.0.7:9080"]
