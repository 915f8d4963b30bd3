"""Errors as one clear line, what is retried, zone fallback on stock-out, and that a failure injected
at any create leaves nothing behind once the ledger is torn down."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from meshvm.gcp import errors
from meshvm.gcp.errors import CloudError
from tests.contract.gcp_fixtures import *  # noqa: F403
from tests.contract.gcp_fixtures import deadline

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx5Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo tester"


@pytest.mark.parametrize(("kind", "expected"), [
    ("quota", "quota exceeded; raise it"),
    ("bad-request", "rejected as invalid (400)"),
    ("org-policy", "refused by an organization policy (412)"),
    ("disabled", "the Compute Engine API is disabled on the project; enable it: "
                 "gcloud services enable compute.googleapis.com --project meshvm-lab"),
])
def test_errors_read_as_one_clear_line(cloud, standin, kind, expected):
    standin.faults.inject("compute.networks.insert", kind)
    with pytest.raises(CloudError) as e:
        cloud.create_network(deadline())
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(f"creating network {cloud.cfg.names.network}: ")
    assert "http://" not in str(e.value)  # the request line is noise: dropped


def test_disabled_gke_api_names_the_container_service(cloud, standin):
    net = cloud.create_network(deadline())
    standin.faults.inject("container.clusters.create", "disabled")
    with pytest.raises(CloudError, match="Kubernetes Engine API is disabled.*gcloud services enable "
                                         "container.googleapis.com --project meshvm-lab"):
        cloud.create_cluster(net, deadline())


@pytest.mark.parametrize("kind", ["rate-limit", "unavailable"])
def test_rate_limits_and_503_are_retried(cloud, standin, kind):
    standin.faults.inject("compute.networks.insert", kind, times=2)
    cloud.create_network(deadline())
    assert len(standin.calls("compute.networks.insert")) == 3


def test_stockout_in_zone_1_falls_back_to_zone_2(cloud, standin, cfg):
    net = cloud.create_network(deadline())
    standin.faults.inject("compute.instances.insert", "stockout", in_operation=True)  # found after acceptance
    standin.faults.inject("container.clusters.create", "stockout")  # refused at once
    vm = cloud.create_vm(net, "tester", PUB, deadline())
    cl = cloud.create_cluster(net, deadline())
    assert vm.zone == cl.zone == cfg.zones[1]
    assert [c.path.split("/zones/")[1].split("/")[0] for c in standin.calls("compute.instances.insert")] == list(cfg.zones)
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []


def test_stockout_everywhere_says_so(cloud, standin):
    net = cloud.create_network(deadline())
    standin.faults.inject("compute.instances.insert", "stockout", times=5)
    with pytest.raises(CloudError, match="every zone is out of resources .*add zones with --zone") as e:
        cloud.create_vm(net, "tester", PUB, deadline())
    assert e.value.kind == "stockout"


def test_gke_stockout_in_the_operation_falls_back(cloud, standin, cfg):
    net = cloud.create_network(deadline())
    standin.faults.inject("container.clusters.create", "stockout", in_operation=True)
    assert cloud.create_cluster(net, deadline()).zone == cfg.zones[1]
    kinds = [(e.kind, e.where) for e in cloud.ledger.entries() if e.kind == "cluster"]
    assert len(kinds) == 2  # the ERROR cluster of zone 1 is recorded the moment it may exist
    # ... and deleted before zone 2 is tried: it holds quota until it goes
    calls = [(r.method, r.path) for r in standin.recorded
             if r.method in ("container.clusters.create", "container.clusters.delete")]
    assert [(m, f"/locations/{z}/" in p) for (m, p), z in zip(calls, (cfg.zones[0], cfg.zones[0], cfg.zones[1]),
                                                             strict=True)] == [
        ("container.clusters.create", True), ("container.clusters.delete", True), ("container.clusters.create", True)]
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
    assert standin.gke.clusters == {}


def test_delete_waits_for_an_operation_in_progress(cloud, standin, cfg):
    net = cloud.create_network(deadline())
    cloud.create_cluster(net, deadline())
    standin.faults.inject("container.clusters.delete", "in-progress")
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
    assert len(standin.calls("container.clusters.delete")) == 2


def _everything(cloud):
    net = cloud.create_network(deadline())
    cloud.create_firewall_rules(net, deadline())
    cloud.create_cluster(net, deadline())
    cloud.create_vm(net, "tester", PUB, deadline())


@pytest.mark.parametrize("in_operation", [False, True], ids=["refused", "operation-failed"])
@pytest.mark.parametrize("method", ["compute.networks.insert", "compute.subnetworks.insert",
                                    "compute.firewalls.insert", "container.clusters.create",
                                    "compute.instances.insert"])
def test_a_failed_create_leaves_nothing_behind(cloud, standin, cfg, method, in_operation):
    standin.faults.inject(method, "quota", in_operation=in_operation)
    with pytest.raises(CloudError, match="quota exceeded"):
        _everything(cloud)
    summary = cloud.teardown(cfg.artifacts_dir / "cleanup.json")
    assert summary["remaining"] == [] and summary["leftovers"] == []
    assert standin.world.objects == {} and standin.gke.clusters == {}


def test_transient_predicate():
    def err(status, reason="", message="m"):
        return gexc.from_http_status(status, message, errors=[{"reason": reason}] if reason else [])

    assert errors.transient(err(503, "ZONE_RESOURCE_POOL_EXHAUSTED"))
    assert errors.transient(err(429)) and errors.transient(err(503))
    assert errors.transient(err(400, message="Operation operation-1 is currently upgrading cluster c."))
    for final in (err(403, "QUOTA_EXCEEDED"), err(400), err(412), err(404), err(403, "accessNotConfigured"),
                  ValueError("x")):
        assert not errors.transient(final)
    assert errors.kind(err(403, message="Quota 'CPUS' exceeded")) == "quota"
    assert errors.is_stockout(err(400, message="The zone 'z' does not have enough resources available"))
