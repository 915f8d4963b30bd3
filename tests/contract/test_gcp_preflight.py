"""Preflight: read-only, before anything is created; every problem one line, all reported together."""

from __future__ import annotations

import re

import pytest

from meshvm.gcp.cloud import GcpCloud
from meshvm.gcp.preflight import PreflightFailed
from meshvm.lab.gcloud import gke
from meshvm.ledger import Ledger
from tests.contract.gcp_fixtures import *  # noqa: F403
from tests.contract.gcp_fixtures import deadline, make_cfg

READS = {"compute.projects.get", "compute.zones.get", "compute.machineTypes.get", "compute.images.getFromFamily",
         "compute.regions.get", "container.clusters.list",
         "container.projects.locations.getServerConfig",  # the channel default, checked against Istio's range
         "cloudresourcemanager.projects.getEffectiveOrgPolicy"}  # the organisation policies that would block the run
SERVER_CONFIG = "container.projects.locations.getServerConfig"


def serve_server_config(standin):
    """The stand-in's getServerConfig (meshvm.lab.gcloud.gke.server_config), routed here until its
    server routes it itself (then this adds nothing)."""
    if not any(method == SERVER_CONFIG for _, _, method, _ in standin.routes):
        standin.routes.append(("GET", re.compile(r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
                                                 r"/serverConfig"), SERVER_CONFIG,
                               lambda m, qs, b: gke.server_config(standin.gke, **m)))


def test_preflight_passes_and_only_reads(cloud, standin):
    cloud.preflight(deadline())
    assert {r.method for r in standin.recorded} == READS
    assert standin.world.objects == {}


def test_preflight_reports_every_problem(standin, tmp_path, token_file):
    standin.world.quotas["CPUS"] = (8.0, 4.0)
    cfg = make_cfg(standin, tmp_path, token_file, vm_machine_type="n9-huge-2", vm_image_family="ubuntu-2110",
                   zone=["us-central1-a", "us-central1-z"])
    with pytest.raises(PreflightFailed) as e:
        GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json")).preflight(deadline())
    text = "\n".join(e.value.problems)
    assert "zone us-central1-z: not found (404)" in text
    assert "VM machine type n9-huge-2 in us-central1-a: not found" in text
    assert "image family ubuntu-os-cloud/ubuntu-2110: not found" in text
    assert all("\n" not in p for p in e.value.problems) and len(e.value.problems) == 3


def test_preflight_project_quotas(standin, cloud):
    standin.world.project_quotas.update({"NETWORKS": (5.0, 5.0), "FIREWALLS": (100.0, 95.0),
                                         "CPUS_ALL_REGIONS": (32.0, 30.0)})
    with pytest.raises(PreflightFailed) as e:
        cloud.preflight(deadline())
    assert e.value.problems == [
        "quota NETWORKS in project meshvm-lab: the run needs 1, 0 free (limit 5, in use 5); raise it or delete "
        "unused networks (or pass --network)",
        "quota FIREWALLS in project meshvm-lab: the run needs 12, 5 free (limit 100, in use 95); raise it or delete "
        "unused firewall rules",
        "quota CPUS_ALL_REGIONS in project meshvm-lab: the run needs 10, 2 free (limit 32, in use 30); raise it or "
        "use smaller machines / fewer nodes"]
    assert standin.world.objects == {}


def test_preflight_quota(standin, cloud):
    standin.world.quotas["CPUS"] = (8.0, 4.0)  # the run needs 2 + 2 x 4
    standin.world.quotas["IN_USE_ADDRESSES"] = (8.0, 6.0)
    with pytest.raises(PreflightFailed) as e:
        cloud.preflight(deadline())
    assert e.value.problems == [
        "quota CPUS in us-central1: the run needs 10, 4 free (limit 8, in use 4); raise it or use smaller "
        "machines / fewer nodes",
        "quota IN_USE_ADDRESSES in us-central1: the run needs 5, 2 free (limit 8, in use 6); raise it or use "
        "smaller machines / fewer nodes"]


def test_preflight_unreachable_project_stops_at_once(standin, cloud):
    standin.faults.inject("compute.projects.get", "disabled")
    with pytest.raises(PreflightFailed, match="gcloud services enable compute.googleapis.com") as e:
        cloud.preflight(deadline())
    assert len(e.value.problems) == 1


def test_preflight_disabled_gke_api_is_one_line_before_anything_is_created(standin, cloud):
    standin.faults.inject("container.clusters.list", "disabled")
    with pytest.raises(PreflightFailed) as e:
        cloud.preflight(deadline())
    assert e.value.problems == [
        "Kubernetes Engine API in us-central1-a: the Kubernetes Engine API is disabled on the project; enable it: "
        "gcloud services enable container.googleapis.com --project meshvm-lab: Kubernetes Engine API has not "
        "been used in project 123 before or it is disabled."]
    assert standin.world.objects == {} and standin.gke.clusters == {}


@pytest.mark.parametrize(("channel", "version"), [("regular", "1.34"), ("stable", "1.33.9-gke.1100000"),
                                                  ("rapid", "1.36"), ("none", "1.35.4-gke.1100000")])
def test_preflight_accepts_a_cluster_version_the_channel_offers(standin, tmp_path, token_file, channel, version):
    serve_server_config(standin)
    cfg = make_cfg(standin, tmp_path, token_file, release_channel=channel, cluster_version=version)
    GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json")).preflight(deadline())
    assert len(standin.calls(SERVER_CONFIG)) == 2  # every zone the cluster may fall back to


def test_preflight_refuses_a_cluster_version_not_in_the_channel(standin, tmp_path, token_file):
    serve_server_config(standin)
    cfg = make_cfg(standin, tmp_path, token_file, release_channel="stable", cluster_version="1.36",
                   zone=["us-central1-a"])
    with pytest.raises(PreflightFailed) as e:
        GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json")).preflight(deadline())
    assert e.value.problems == [
        "--cluster-version 1.36: not offered by the stable release channel in us-central1-a (offered: "
        "1.34.5-gke.1000000, 1.33.9-gke.1100000); pick one of those, or another --release-channel"]
    assert standin.world.objects == {} and standin.gke.clusters == {}


def test_preflight_refuses_a_channel_default_outside_the_istio_releases_kubernetes_range(standin, tmp_path,
                                                                                         token_file):
    """Rapid's default is Kubernetes 1.37 (late 2026): outside Istio 1.31's 1.32-1.36. One line, nothing made."""
    serve_server_config(standin)
    cfg = make_cfg(standin, tmp_path, token_file, release_channel="rapid", istio_version="1.31.1",
                   zone=["us-central1-a"])
    with pytest.raises(PreflightFailed) as e:
        GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json")).preflight(deadline())
    assert e.value.problems == [
        "--release-channel rapid: its default GKE version in us-central1-a is 1.37.1-gke.1000000, outside the "
        "Kubernetes versions Istio 1.31.1 supports (1.32-1.36); pass --cluster-version 1.36 (or another in that "
        "range) or another --release-channel"]
    assert standin.world.objects == {} and standin.gke.clusters == {}
    cfg = make_cfg(standin, tmp_path, token_file, release_channel="regular", istio_version="1.31.1")
    GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json")).preflight(deadline())  # 1.35: in range


SA = "meshvm-nodes@meshvm-lab.iam.gserviceaccount.com"


@pytest.mark.parametrize(("setup", "line"), [
    (lambda w: w.sa_permissions.update({SA: []}),
     f"--node-service-account {SA}: the run's credentials lack iam.serviceAccounts.actAs on it; grant them "
     "roles/iam.serviceAccountUser on that service account"),
    (lambda w: w.org_policies.update({"constraints/compute.vmExternalIpAccess": {"listPolicy": {"allValues": "DENY"}}}),
     "organisation policy constraints/compute.vmExternalIpAccess on project meshvm-lab forbids the VM's external IP "
     "(the runner reaches it over SSH); allow projects/meshvm-lab/zones/us-central1-a/instances/"),
    (lambda w: w.org_policies.update({"constraints/compute.requireOsLogin": {"booleanPolicy": {"enforced": True}}}),
     "organisation policy constraints/compute.requireOsLogin on project meshvm-lab is enforced: the VM would ignore "
     "the metadata SSH key the run uses; run in a project where it is not enforced"),
], ids=["actAs", "external-ip", "os-login"])
def test_preflight_refuses_what_iam_or_the_organisation_would_refuse_later(standin, tmp_path, token_file, setup,
                                                                           line):
    setup(standin.world)
    cfg = make_cfg(standin, tmp_path, token_file, node_service_account=SA)
    with pytest.raises(PreflightFailed) as e:
        GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json")).preflight(deadline())
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(line), e.value.problems
    assert standin.world.objects == {}


def test_preflight_allows_what_is_allowed_and_warns_on_a_policy_it_cannot_read(standin, tmp_path, token_file,
                                                                               caplog):
    standin.world.org_policies["constraints/compute.vmExternalIpAccess"] = {"listPolicy": {"allowedValues": [
        "projects/meshvm-lab/zones/us-central1-a/instances/mvm-pf-allowed-vm"]}}
    cfg = make_cfg(standin, tmp_path, token_file, node_service_account=SA, run_id="pf-allowed")
    GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json")).preflight(deadline())  # the VM is allowed
    from meshvm.lab.gcloud.faults import Fault

    standin.faults.inject("cloudresourcemanager.projects.getEffectiveOrgPolicy",
                          Fault(403, "forbidden", "The caller does not have permission"), times=2)
    with caplog.at_level("WARNING"):
        GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json")).preflight(deadline())
    assert "could not read organisation policy" in caplog.text
