"""Create -> ready -> delete of each GCP resource through the real clients against the local
stand-in, and what the requests carried (the server records every body)."""

from __future__ import annotations

import base64
import json

import pytest

from meshvm.gcp import cluster, firewall, instance, network
from meshvm.gcp.cloud import GcpCloud
from meshvm.ledger import Ledger
from tests.contract.gcp_fixtures import *  # noqa: F403
from tests.contract.gcp_fixtures import deadline, make_cfg

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx5Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo tester"


def _only(standin, method):
    calls = standin.calls(method)
    assert len(calls) == 1, [c.path for c in calls]
    return calls[0].body


def test_network_and_subnetwork_carry_the_ranges_and_labels(cloud, standin, cfg):
    net = cloud.create_network(deadline())
    body = _only(standin, "compute.networks.insert")
    assert body["name"] == cfg.names.network and body["autoCreateSubnetworks"] is False
    assert f"e2e-run={cfg.run_id}" in body["description"]
    sub = _only(standin, "compute.subnetworks.insert")
    assert sub["ipCidrRange"] == cfg.subnet_range and sub["region"] == cfg.region
    assert {(r["rangeName"], r["ipCidrRange"]) for r in sub["secondaryIpRanges"]} == {
        ("pods", cfg.pod_range), ("services", cfg.service_range)}
    assert net.subnetwork.endswith(f"/subnetworks/{cfg.names.subnetwork}")
    assert [e.kind for e in cloud.ledger.entries()] == ["network", "subnetwork"]
    summary = cloud.teardown(cfg.artifacts_dir / "cleanup.json")
    assert summary["remaining"] == [] and summary["leftovers"] == []
    assert json.loads((cfg.artifacts_dir / "cleanup.json").read_text())["created"] == 2


def test_firewall_rules_as_documented(cloud, standin, cfg):
    net = cloud.create_network(deadline())
    names = cloud.create_firewall_rules(net, deadline())
    bodies = {c.body["name"]: c.body for c in standin.calls("compute.firewalls.insert")}
    assert set(names) == set(bodies) and all(n.startswith(cfg.names.firewall_prefix) for n in names)
    ssh, pods = bodies[cfg.names.firewall("ssh")], bodies[cfg.names.firewall("pods-to-vm")]
    assert ssh["sourceRanges"] == list(cfg.ssh_source_ranges) and ssh["targetTags"] == [cfg.names.vm_tag]
    assert ssh["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert pods["sourceRanges"] == [cfg.pod_range] and pods["allowed"][0]["ports"] == ["9080"]
    east = bodies[cfg.names.firewall("vm-to-eastwest")]
    assert east["sourceTags"] == [cfg.names.vm_tag] and east["targetTags"] == [firewall.node_tag(cfg)]
    assert east["allowed"][0]["ports"] == ["15012", "15017", "15443", "15021"]
    for b in bodies.values():
        assert b["direction"] == "INGRESS" and f"e2e-expires={cfg.labels['e2e-expires']}" in b["description"]
    assert {r["name"] for r in standin.backing.rules} == set(names)  # reached the lab's firewall
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
    assert standin.backing.rules == []


def test_cluster_request_and_description(cloud, standin, cfg):
    net = cloud.create_network(deadline())
    info = cloud.create_cluster(net, deadline())
    body = _only(standin, "container.clusters.create")["cluster"]
    ip = body["ipAllocationPolicy"]
    assert ip["useIpAliases"] and ip["clusterSecondaryRangeName"] == "pods"
    assert ip["servicesSecondaryRangeName"] == "services"
    assert body["resourceLabels"] == dict(cfg.labels) and body["network"] == cfg.names.network
    assert "initialNodeCount" not in body and "nodeConfig" not in body  # node_pools, not top-level fields
    pool = body["nodePools"][0]
    assert pool["initialNodeCount"] == cfg.node_count
    assert pool["config"]["machineType"] == cfg.cluster_machine_type
    assert int(pool["config"]["diskSizeGb"]) == cfg.node_disk_gb
    assert pool["config"]["oauthScopes"] == list(cluster.NODE_SCOPES)
    assert pool["config"]["tags"] == [firewall.node_tag(cfg)]
    assert body["releaseChannel"]["channel"] in (2, "REGULAR")
    assert info.pod_range == cfg.pod_range and info.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert info.endpoint.startswith("127.0.0.1:")
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
    assert standin.gke.clusters == {}


def test_vm_request_fields_and_host_keys(cloud, standin, cfg):
    net = cloud.create_network(deadline())
    vm = cloud.create_vm(net, "tester", PUB, deadline())
    body = _only(standin, "compute.instances.insert")
    assert body["machineType"] == f"zones/{cfg.zones[0]}/machineTypes/{cfg.vm_machine_type}"
    params = body["disks"][0]["initializeParams"]
    assert params["sourceImage"] == f"projects/ubuntu-os-cloud/global/images/family/{cfg.vm_image_family}"
    assert body["tags"]["items"] == [cfg.names.vm_tag] and body["labels"] == dict(cfg.labels)
    assert body["networkInterfaces"][0]["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"
    meta = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    assert meta == {"ssh-keys": f"tester:{PUB}", "block-project-ssh-keys": "TRUE", "enable-oslogin": "FALSE",
                    "enable-guest-attributes": "TRUE"}
    assert not body.get("serviceAccounts")
    assert standin.calls("compute.zoneOperations.wait")  # our own wait loop, not ExtendedOperation.result()
    assert len(standin.calls("compute.instances.getGuestAttributes")) >= 2  # 404 until published
    assert vm.internal_ip and vm.external_ip
    assert base64.b64decode(vm.host_keys["ssh-ed25519"])  # pinnable
    summary = cloud.teardown(cfg.artifacts_dir / "cleanup.json")
    assert summary["remaining"] == [] and standin.backing.vms == {}


def test_bodies_build_offline(cfg):
    """The request bodies are plain functions of the config (no API call needed to inspect them)."""
    net = network.NetworkInfo("projects/p/global/networks/n", "projects/p/regions/r/subnetworks/s", "r", True)
    assert instance.body(cfg, net, "us-central1-b", "u", PUB).machine_type.startswith("zones/us-central1-b/")
    existing = cluster.body(cfg, net)  # no secondary range names: GKE makes ranges from the CIDRs
    assert existing.ip_allocation_policy.cluster_ipv4_cidr_block == cfg.pod_range


def test_the_cluster_answers_only_the_runner_and_is_not_upgraded_mid_run(cfg):
    net = network.NetworkInfo("projects/p/global/networks/n", "projects/p/regions/r/subnetworks/s", "r", True)
    got = cluster.body(cfg, net)
    man = got.master_authorized_networks_config
    assert man.enabled and [b.cidr_block for b in man.cidr_blocks] == list(cfg.ssh_source_ranges) == ["203.0.113.7/32"]
    (name, window), = got.maintenance_policy.window.maintenance_exclusions.items()
    assert name == f"meshvm-{cfg.run_id}"[:40]
    assert window.maintenance_exclusion_options.scope.name == "NO_UPGRADES"
    assert window.end_time.strftime("%Y%m%dt%H%Mz") == cfg.labels["e2e-expires"] and window.start_time < window.end_time


def test_existing_network_is_read_only_and_its_reaching_rules_are_logged(standin, tmp_path, token_file, caplog):
    from google.cloud import compute_v1

    from meshvm.gcp.cloud import GcpCloud
    from meshvm.ledger import Ledger

    setup = make_cfg(standin, tmp_path / "setup", token_file)
    c = GcpCloud(setup, Ledger(setup.artifacts_dir / "ledger.json"))
    net = c.create_network(deadline())  # plays the user's own network
    rule = compute_v1.Firewall(name="default-allow-ssh", network=net.network, source_ranges=["0.0.0.0/0"],
                               allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["22"])])
    c.clients.call("rule", c.clients.firewalls.insert, deadline(), project="meshvm-lab", firewall_resource=rule)
    cfg = make_cfg(standin, tmp_path, token_file, network=setup.names.network, subnetwork=setup.names.subnetwork)
    cloud = GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json"))
    before = set(standin.world.objects)
    with caplog.at_level("WARNING"):
        info = cloud.create_network(deadline())
    assert not info.created and set(standin.world.objects) == before and cloud.ledger.entries() == []
    assert "ingress rule default-allow-ssh reaches the VM: from 0.0.0.0/0 allow tcp:22" in caplog.text


@pytest.mark.parametrize(("channel", "sent", "enrolled"), [("none", {}, {}), ("rapid", {"channel": 1}, {"channel": 1})])
def test_release_channel_none_creates_a_cluster_without_a_channel(standin, tmp_path, token_file, channel, sent,
                                                                  enrolled):
    """--release-channel none: the request carries `releaseChannel` with channel UNSPECIFIED (proto3 JSON
    omits the default enum, leaving the message present and empty, as gcloud's --release-channel=None
    sends), which GKE reads as no channel; without the message GKE would enrol the cluster in Regular."""
    cfg = make_cfg(standin, tmp_path, token_file, release_channel=channel,
                   cluster_version="1.35" if channel == "none" else "1.36")
    cloud = GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json"))
    cloud.create_cluster(cloud.create_network(deadline()), deadline())
    body = _only(standin, "container.clusters.create")["cluster"]
    assert body["releaseChannel"] in (sent, {"channel": "RAPID"} if sent else {"channel": "UNSPECIFIED"})
    got = next(iter(standin.gke.clusters.values()))
    assert got["releaseChannel"] == enrolled and got["currentMasterVersion"].startswith(cfg.cluster_version + ".")
    assert cloud.teardown(cfg.artifacts_dir / "cleanup.json")["remaining"] == []
