"""Requests that fail below HTTP or with a 5xx: a create that may have been accepted is in the ledger
before anything else happens, read-only calls and waits ride such errors out, and a cluster delete
waits for its node pools' operations too."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import requests
from google.cloud import compute_v1

from meshvm.gcp.errors import CloudError
from meshvm.lab.gcloud.faults import Fault
from tests.contract.gcp_fixtures import *  # noqa: F403
from tests.contract.gcp_fixtures import PROJECT, deadline


def cut(monkeypatch, verb, path, *, times=1, reached=True, exc=requests.ConnectionError):
    """The next `times` requests `verb` to a path matching `path` fail with `exc`; with `reached` the
    server got (and acted on) each of them first: only the response is lost."""
    real, left = requests.adapters.HTTPAdapter.send, [times]

    def send(self, request, *args, **kwargs):  # noqa: ANN001, ANN202
        if left[0] > 0 and request.method == verb and re.search(path, urlsplit(request.url).path):
            left[0] -= 1
            if reached:
                real(self, request, *args, **kwargs)
            raise exc(f"injected: {verb} {path} cut")
        return real(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)


@pytest.mark.parametrize("exc", [requests.ConnectionError, requests.ReadTimeout])
def test_an_insert_whose_response_is_lost_is_recorded_and_its_retry_409_is_ours(
        cloud, standin, cfg, monkeypatch, exc):
    cut(monkeypatch, "POST", r"/global/networks$", exc=exc)
    with pytest.raises(CloudError, match="first attempt .* went through; recorded as this run's") as e:
        cloud.create_network(deadline())
    assert e.value.kind == "conflict"
    assert [x.key for x in cloud.ledger.entries()] == [f"network/{PROJECT}/{cfg.names.network}"]
    assert len(standin.calls("compute.networks.insert")) == 2
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
    assert standin.world.objects == {}


def test_a_cluster_insert_whose_response_is_lost_is_recorded(cloud, standin, cfg, monkeypatch):
    net = cloud.create_network(deadline())
    cut(monkeypatch, "POST", r"/clusters$")
    with pytest.raises(CloudError, match="recorded as this run's"):
        cloud.create_cluster(net, deadline())
    assert "cluster" in [x.kind for x in cloud.ledger.entries()]
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
    assert standin.gke.clusters == {} and standin.world.objects == {}


def test_an_insert_that_never_reached_the_server_is_retried(cloud, standin, cfg, monkeypatch):
    cut(monkeypatch, "POST", r"/global/networks$", reached=False)
    cloud.create_network(deadline())
    assert len(standin.calls("compute.networks.insert")) == 1
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []


def test_an_interrupt_during_an_insert_leaves_it_recorded(cloud, standin, cfg, monkeypatch):
    cut(monkeypatch, "POST", r"/global/networks$", exc=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        cloud.create_network(deadline())
    assert [x.kind for x in cloud.ledger.entries()] == ["network"]
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
    assert standin.world.objects == {}


def test_a_409_on_the_first_attempt_is_not_owned(cloud, standin, cfg):
    c = cloud.clients
    theirs = compute_v1.Network(name=cfg.names.network, auto_create_subnetworks=False)
    c.call("someone else's", c.compute(compute_v1.NetworksClient).insert, deadline(), project=c.project,
           network_resource=theirs)
    with pytest.raises(CloudError, match=r"already exists or conflicts \(409\)"):
        cloud.create_network(deadline())
    assert cloud.ledger.entries() == []


@pytest.mark.parametrize("status", [500, 502, 504])
def test_5xx_on_reads_waits_and_polls_are_retried(cloud, standin, cfg, status):
    fault = Fault(status, "backendError", "Internal error. Please try again.")
    for method in ("compute.zones.get", "compute.globalOperations.wait", "container.operations.get",
                   "container.operations.list", "compute.networks.get"):
        standin.faults.inject(method, fault, times=2)
    cloud.preflight(deadline())
    net = cloud.create_network(deadline())
    cloud.create_cluster(net, deadline())
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
    assert [p.times for pending in standin.faults._pending.values() for p in pending] == [0] * 5  # all served


def test_transport_errors_on_reads_waits_and_polls_are_retried(cloud, standin, cfg, monkeypatch):
    cut(monkeypatch, "GET", r"/zones/[^/]+$", reached=False, times=2)
    cloud.preflight(deadline())
    cut(monkeypatch, "POST", r"/operations/[^/]+/wait$", exc=requests.ReadTimeout)
    net = cloud.create_network(deadline())
    cut(monkeypatch, "GET", r"/locations/[^/]+/operations/[^/]+$")
    cloud.create_cluster(net, deadline())
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []


def test_cluster_delete_waits_for_a_node_pool_operation(cloud, standin, cfg, monkeypatch):
    net = cloud.create_network(deadline())
    cl = cloud.create_cluster(net, deadline())
    link = f"{standin.url}/v1/projects/{PROJECT}/locations/{cl.zone}"
    op = standin.ops.start("gke", {"zone": cl.zone, "location": cl.zone, "operationType": 4,  # UPGRADE_NODES
                                   "targetLink": f"{link}/clusters/{cl.name}/nodePools/default-pool",
                                   "selfLink": f"{link}/operations"}, lambda: None, delay=2.0)
    seen, real_delete = [], standin.gke.delete

    def delete(**kw):  # GKE refuses a cluster delete while a node pool is being worked on
        seen.append(op.state)
        return real_delete(**kw)

    monkeypatch.setattr(standin.gke, "delete", delete)
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
    assert seen == ["DONE"]
