"""Load balancers of LoadBalancer Services (docs/facts.md section 3), through the real google clients against
the local Google Cloud whose clusters are Kubernetes API stand-ins with the controller stand-ins:
recorded once a Service has an address, released before the cluster goes, left behind (as on GKE)
when the cluster goes first and then deleted from the ledger, and found by the janitor."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from meshvm import janitor
from meshvm.config import Config
from meshvm.gcp import loadbalancers
from meshvm.gcp.cloud import GcpCloud
from meshvm.gcp.credentials import bearer_token
from meshvm.kube import KubeClient
from meshvm.kube_auth import Token
from meshvm.lab.cluster import KubeClusterBackend
from meshvm.lab.gcloud.server import GCloudStandIn
from meshvm.ledger import Ledger
from meshvm.recipe import waits
from meshvm.seams import NetworkInfo
from tests.contract.gcp_fixtures import *  # noqa: F403
from tests.contract.gcp_fixtures import PROJECT, PaperBacking, deadline, make_cfg

INGRESS, EASTWEST = ("istio-system", "istio-ingressgateway"), ("istio-system", "istio-eastwestgateway")
RUNNER = "203.0.113.7/32"
EXTERNAL_KINDS = {"forwarding-rule", "target-pool", "http-health-check", "firewall"}  # the ingress gateway's
INTERNAL_KINDS = {"forwarding-rule", "backend-service", "health-check", "firewall"}  # the east-west gateway's
LB_KINDS = EXTERNAL_KINDS | INTERNAL_KINDS
GROUP = {"1.35": "instance-group", "1.36": "network-endpoint-group"}  # an internal backend's, by GKE version
INTERNAL_LB = {"networking.gke.io/load-balancer-type": "Internal"}  # manifests/eastwest-lb-internal.yaml


@pytest.fixture(params=["1.35", "1.36"])
def gke(request) -> str:  # noqa: ANN001
    """The cluster's GKE minor: internal load balancers before 1.36 (instance groups) and from it (NEGs)."""
    return str(request.param)


@pytest.fixture
def cfg(standin, tmp_path, token_file, gke) -> Config:  # noqa: ANN001
    return versioned_cfg(standin, tmp_path, token_file, gke)


def versioned_cfg(standin: GCloudStandIn, tmp: Path, token_file: Path, gke: str, **kw: object) -> Config:
    return make_cfg(standin, tmp, token_file, cluster_version=gke, release_channel="rapid" if gke >= "1.36" else
                    "regular", **kw)


@pytest.fixture(params=["own pools"])
def standin(request, tmp_path: Path, token_file: Path) -> Iterator[GCloudStandIn]:  # noqa: ANN001
    """The local Google Cloud whose clusters run the API and controller stand-ins, each cluster with an
    address pool of its own, or (param "one pool") all from the same addresses, as two runs' networks
    with the same subnet range give their internal load balancers the same addresses."""
    tokens, pools = {token_file.read_text().strip()}, itertools.count(10)

    def cluster(name: str) -> KubeClusterBackend:
        block = next(pools) if request.param == "own pools" else 10
        pool = [f"198.18.{block}.{i}" for i in range(1, 5)]
        return KubeClusterBackend(tokens, "10.44.0.0/16", pool, tmp_path)  # type: ignore[arg-type]

    server = GCloudStandIn(PROJECT, PaperBacking(), cluster, op_delay=0.05, wait_cap=0.5, cluster_delay=0.3)
    with server:
        yield server


class Run:
    """One run: its network and cluster, its kube client, the two gateways' addresses."""

    def __init__(self, cfg: Config, tmp: Path):
        self.cfg, self.cloud = cfg, GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json"))
        self.net: NetworkInfo = self.cloud.create_network(deadline())
        self.cloud.create_firewall_rules(self.net, deadline())
        info = self.cloud.create_cluster(self.net, deadline())
        (tmp / "ca.crt").write_text(info.ca_pem)
        creds = self.cloud.clients.creds
        self.kube = KubeClient(f"https://{info.endpoint}", tmp / "ca.crt",
                               lambda: Token(bearer_token(creds), time.time() + 60), call_timeout=10)
        self.kube.ensure_namespace("istio-system")
        for (ns, name), extra, notes in ((INGRESS, {"loadBalancerSourceRanges": [RUNNER]}, {}),
                                         (EASTWEST, {}, INTERNAL_LB)):
            self.kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {
                "name": name, "namespace": ns, "annotations": notes}, "spec": {"type": "LoadBalancer", "ports": [
                    {"name": "tls", "port": 15443, "protocol": "TCP"}], **extra}}))
        self.ips = {svc: waits.lb_address(self.kube, *svc, deadline(20)) for svc in (INGRESS, EASTWEST)}

    def record(self) -> list:
        return [e for svc in (INGRESS, EASTWEST)
                for e in self.cloud.record_load_balancer(*svc, self.ips[svc], deadline())]

    def teardown(self) -> dict:
        self.kube.close()
        return self.cloud.teardown(self.cfg.artifacts_dir / "cleanup.json")


def _lb_objects(standin: GCloudStandIn) -> list[str]:
    return sorted(k for k in standin.world.objects if re.search(r"/(a[0-9a-f]{31}|k8s2?-[^/]*)$", k))


def test_recorded_once_the_service_has_an_address(standin, cfg, tmp_path, gke):
    run = Run(cfg, tmp_path)
    try:
        entries = run.record()
        assert {e.kind for e in entries} == LB_KINDS | {GROUP[gke]}
        ledger = {e.key for e in run.cloud.ledger.entries()}
        assert {e.key for e in entries} <= ledger
        _external_recorded(standin, cfg, run, entries, ledger)
        _internal_recorded(standin, cfg, run, entries, ledger, gke)
        assert {r["name"] for r in standin.backing.rules} >= {e.name for e in entries if e.kind == "firewall"
                                                               and e.name.startswith("k8s-fw-")}  # on the router
    finally:
        run.cloud.release_load_balancers(run.kube, deadline(20))
        run.teardown()


def _external_recorded(standin: GCloudStandIn, cfg: Config, run: Run, entries: list, ledger: set[str]) -> None:
    fr = [e for e in entries if e.kind == "forwarding-rule" and e.extra["service"] == "/".join(INGRESS)]
    assert len(fr) == 1 and re.fullmatch(r"a[0-9a-f]{31}", fr[0].name)
    body = standin.world.objects[f"regions/{cfg.region}/forwardingRules/{fr[0].name}"]
    assert body["IPAddress"] == run.ips[INGRESS]
    assert json.loads(body["description"]) == {"kubernetes.io/service-name": "/".join(INGRESS)}
    assert f"target-pool/{PROJECT}/{cfg.region}/{fr[0].name}" in ledger
    fw = standin.world.objects[f"global/firewalls/k8s-fw-{fr[0].name}"]
    assert fw["sourceRanges"] == [RUNNER] and fw["allowed"] == [{"IPProtocol": "tcp", "ports": ["15443"]}]
    assert f"firewall/{PROJECT}/k8s-fw-{fr[0].name}" in ledger
    assert [e.kind for e in run.cloud.ledger.entries()].count("http-health-check") == 1  # shared: recorded once


def _internal_recorded(standin: GCloudStandIn, cfg: Config, run: Run, entries: list, ledger: set[str],
                       gke: str) -> None:
    """Before 1.36: `a<hex>` with the instance group `k8s-ig--<uid>` and the rule `k8s-<uid>-node-hc`; from
    1.36: `k8s2-` names, the new description key, a GCE_VM_IP NEG and the shared health check's rule."""
    (fr,) = [e for e in entries if e.kind == "forwarding-rule" and e.extra["service"] == "/".join(EASTWEST)]
    body = standin.world.objects[f"regions/{cfg.region}/forwardingRules/{fr.name}"]
    assert body["IPAddress"] == run.ips[EASTWEST] and body["network"].endswith(f"/{cfg.names.network}")
    (backend,) = [e for e in entries if e.kind == "backend-service"]
    (group,) = [e for e in entries if e.kind == GROUP[gke]]
    (hc,) = [e for e in run.cloud.ledger.entries() if e.kind == "health-check"]
    assert group.where == f"{PROJECT}/{cfg.zones[0]}"
    if gke < "1.36":
        assert re.fullmatch(r"a[0-9a-f]{31}", fr.name) and backend.name == fr.name
        assert json.loads(body["description"]) == {"kubernetes.io/service-name": "/".join(EASTWEST)}
        assert re.fullmatch(r"k8s-ig--[0-9a-f]{16}", group.name)
        rules = {f"k8s-fw-{fr.name}", f"{hc.name}-hc"}
    else:
        assert fr.name == "k8s2-tcp-" + backend.name.removeprefix("k8s2-") and group.name == backend.name
        assert json.loads(body["description"]) == {"networking.gke.io/service-name": "/".join(EASTWEST)}
        neg = standin.world.objects[f"zones/{cfg.zones[0]}/networkEndpointGroups/{group.name}"]
        assert neg["networkEndpointType"] == "GCE_VM_IP"
        assert hc.name.endswith("-l4-shared-hc")
        rules = {backend.name, f"{hc.name}-fw"}
    assert {f"firewall/{PROJECT}/{r}" for r in rules} <= ledger


def test_only_this_clusters_load_balancers_are_recorded(standin, cfg, tmp_path, token_file, gke):
    mine = Run(cfg, tmp_path)
    other_cfg = versioned_cfg(standin, tmp_path / "other", token_file, gke)
    other = Run(other_cfg, tmp_path / "other")  # the same Service names in another run's cluster
    try:
        entries = mine.record()
        others = {e.key for e in other.record()}
        assert entries and not others & {e.key for e in entries if e.kind != "http-health-check"}
        # A Service name alone names a load balancer of every cluster: with no address to go by,
        # only the one whose k8s-fw rule targets this cluster's nodes is found.
        from meshvm.gcp import loadbalancers
        found = loadbalancers.find(mine.cloud.clients, cfg.region,
                                   loadbalancers.Service(*INGRESS, "", cfg.names.cluster, cfg.names.network),
                                   deadline())
        assert [e.name for e in found if e.kind == "forwarding-rule"] == [
            e.name for e in entries if e.kind == "forwarding-rule" and e.extra["service"] == "/".join(INGRESS)]
    finally:
        for run in (mine, other):
            run.cloud.release_load_balancers(run.kube, deadline(20))
            run.teardown()


@pytest.mark.parametrize("standin", ["one pool"], indirect=True)
def test_another_runs_load_balancer_at_the_same_address_is_never_ours(standin, cfg, tmp_path, token_file, gke):
    """Two runs, two networks, the same addresses: each records, and its teardown deletes, only its own."""
    mine = Run(cfg, tmp_path)
    other = Run(versioned_cfg(standin, tmp_path / "other", token_file, gke), tmp_path / "other")
    try:
        assert set(mine.ips.values()) == set(other.ips.values())  # the same addresses in both networks
        entries, others = mine.record(), other.record()
        assert {e.kind for e in entries} == LB_KINDS | {GROUP[gke]}
        shared = {e.key for e in entries} & {e.key for e in others}
        assert shared == set(), shared
        theirs = _lb_objects(standin)
        assert mine.cloud.release_load_balancers(mine.kube, deadline(20)) is True
        summary = mine.teardown()
        assert summary["remaining"] == [] and summary["leftovers"] == []
        assert not {e.key for e in summary_items(summary)} & {e.key for e in others}
        assert all(k in standin.world.objects for k in theirs if any(e.name in k for e in others))
    finally:
        other.cloud.release_load_balancers(other.kube, deadline(20))
        other.teardown()


def summary_items(summary: dict) -> list:
    from meshvm.ledger import Entry
    return [Entry(i["kind"], i["name"], i["where"]) for i in summary["items"]]


def test_release_waits_for_the_finalizer_then_teardown_leaves_nothing(standin, cfg, tmp_path):
    run = Run(cfg, tmp_path)
    run.record()
    assert _lb_objects(standin)
    assert run.cloud.release_load_balancers(run.kube, deadline(20)) is True
    assert run.kube.get("v1", "Service", INGRESS[1], INGRESS[0]) is None
    assert _lb_objects(standin) == []  # GKE's resources went (the NEGs after the finalizer cleared: waited for)
    assert not [r for r in standin.backing.rules if r["name"].startswith(("k8s-", "k8s2-"))]
    summary = run.teardown()
    assert summary["remaining"] == [] and summary["leftovers"] == []
    report = json.loads((cfg.artifacts_dir / "cleanup.json").read_text())
    assert report["remaining"] == [] and LB_KINDS <= {i["kind"] for i in report["items"]}
    assert standin.world.objects == {} and standin.gke.clusters == {}


def test_cluster_deleted_first_leaves_them_and_the_ledger_deletes_them(standin, cfg, tmp_path):
    run = Run(cfg, tmp_path)
    run.record()
    for backend in standin.gke.backends.values():
        backend.controllers.stop()  # GKE's controller never gets to it: the finalizer stays
    started = time.monotonic()
    assert run.cloud.release_load_balancers(run.kube, deadline(2)) is False
    assert time.monotonic() - started < 10
    cluster = next(e for e in run.cloud.ledger.entries() if e.kind == "cluster")
    run.cloud.deleters()["cluster"](cluster)
    assert standin.gke.clusters == {}
    left = _lb_objects(standin)  # as on GKE: deleting the cluster deletes none of them
    assert any("/forwardingRules/" in k for k in left) and any("/firewalls/k8s-fw-" in k for k in left)
    summary = run.teardown()
    assert summary["remaining"] == [] and summary["leftovers"] == []
    assert _lb_objects(standin) == [] and standin.world.objects == {}
    kinds = [i["kind"] for i in summary["items"]]
    assert kinds.index("cluster") < kinds.index("forwarding-rule")  # nothing recreates them after it


def test_janitor_finds_lb_leftovers_of_a_deleted_cluster_of_an_expired_run(standin, tmp_path, token_file, capsys,
                                                                          gke):
    cfg = versioned_cfg(standin, tmp_path / "old", token_file, gke, now=datetime.now(UTC) - timedelta(hours=6),
                        expires_hours="4", exercise_deadline="60")
    run = Run(cfg, tmp_path)
    run.kube.close()
    cluster = next(e for e in run.cloud.ledger.entries() if e.kind == "cluster")
    run.cloud.deleters()["cluster"](cluster)  # a killed run: its cluster went, its load balancers stayed
    left = _lb_objects(standin)
    assert len([k for k in left if "/forwardingRules/" in k]) == 2
    args = ["--platform", "gcp", "--gcp-project", PROJECT, "--compute-endpoint", standin.url,
            "--container-endpoint", standin.url, "--gcp-access-token-file", str(token_file)]

    assert janitor.main(args) == 1
    out = capsys.readouterr().out
    for kind in LB_KINDS | {GROUP[gke]}:
        assert f"{kind}/" in out, out
    assert all(k.rsplit("/", 1)[-1] in out for k in left), (left, out)

    assert janitor.main([*args, "--yes"]) == 0, capsys.readouterr().out
    assert _lb_objects(standin) == [] and standin.world.objects == {}


@pytest.mark.parametrize("gke", ["1.36"], indirect=True)
@pytest.mark.parametrize("wait", ["the NEG wait", "no NEG wait (mutated away)"])
def test_the_neg_wait_keeps_the_network_deletable(standin, cfg, tmp_path, monkeypatch, wait):
    """From 1.36 GKE deletes a Service's NEG on its own period, after the finalizer cleared. The NEG is
    not recorded here (as when a run stops before recording): with the wait, the cluster goes only once
    GKE deleted it and teardown leaves nothing; with the wait mutated away, the cluster is deleted first,
    the NEG stays, the network's deletion is blocked, and teardown reports both."""
    run = Run(cfg, tmp_path)
    if wait != "the NEG wait":
        monkeypatch.setattr(loadbalancers, "wait_negs_gone", lambda c, uid, d: True)
        for lbs in standin.gke.cluster_lbs.values():
            lbs.neg_gc_s = 120.0  # GKE's real period (docs/facts.md): no race with a slow machine's teardown
    assert run.cloud.release_load_balancers(run.kube, deadline(20)) is True
    negs = [k for k in standin.world.objects if "/networkEndpointGroups/" in k]
    summary = run.cloud.teardown(cfg.artifacts_dir / "cleanup.json", seconds=12)
    run.kube.close()
    if wait == "the NEG wait":
        assert negs == [] and summary["remaining"] == [] and summary["leftovers"] == []
        assert standin.world.objects == {}
        return
    (neg,) = negs
    assert [(i["kind"], i["name"]) for i in summary["remaining"]] == [
        ("subnetwork", cfg.names.subnetwork), ("network", cfg.names.network)]
    assert neg.rsplit("/", 1)[-1] in summary["remaining"][0]["error"]  # "already being used by" the NEG
    assert f"network-endpoint-group/{PROJECT}/{cfg.zones[0]}/{neg.rsplit('/', 1)[-1]}" in summary["leftovers"]
