"""The GCP janitor deletes the suite's resources of expired runs (LB leftovers included) and never
touches an unexpired run or anything that is not the suite's."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from google.cloud import compute_v1

from meshvm import janitor
from meshvm.gcp import firewall
from meshvm.gcp.cloud import GcpCloud
from meshvm.ledger import Entry, Ledger
from tests.contract.gcp_fixtures import *  # noqa: F403
from tests.contract.gcp_fixtures import deadline, make_cfg

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx5Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo tester"


def _run(standin, tmp_path, token_file, now, name, **options):
    cfg = make_cfg(standin, tmp_path / name, token_file, now=now, expires_hours="4", exercise_deadline="60", **options)
    cloud = GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json"))
    net = cloud.create_network(deadline())
    cloud.create_firewall_rules(net, deadline())
    return cloud, net


def _lb_leftovers(cloud, net, lb="a0123456789abcdef", cluster=None, network=None):
    """What a LoadBalancer Service leaves after its cluster is gone (no labels; docs/facts.md section 3)."""
    c, fr = cloud.clients, compute_v1.ForwardingRulesClient
    network = network or net.network
    rule = compute_v1.ForwardingRule(name=lb, network=network, region=net.region,
                                     description='{"kubernetes.io/service-name":"istio-system/istio-eastwestgateway"}')
    c.call("lb", c.compute(fr).insert, deadline(), project=c.project, region=net.region, forwarding_rule_resource=rule)
    fw = compute_v1.Firewall(name=f"k8s-fw-{lb}", network=network, source_ranges=["0.0.0.0/0"],
                             target_tags=[f"gke-{cluster or cloud.cfg.names.cluster}-1234abcd-node"],
                             allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["15443"])])
    c.call("k8s-fw", c.firewalls.insert, deadline(), project=c.project, firewall_resource=fw)


def _args(standin, token_file, *extra):
    return ["--platform", "gcp", "--gcp-project", "meshvm-lab", "--compute-endpoint", standin.url,
            "--container-endpoint", standin.url, "--gcp-access-token-file", str(token_file), *extra]


def test_janitor_deletes_only_expired_suite_resources(standin, tmp_path, token_file, capsys):
    old, old_net = _run(standin, tmp_path, token_file, datetime.now(UTC) - timedelta(hours=6), "old")
    old.create_cluster(old_net, deadline())
    old.create_vm(old_net, "tester", PUB, deadline())
    _lb_leftovers(old, old_net)
    fresh, _ = _run(standin, tmp_path, token_file, datetime.now(UTC), "fresh")
    before = set(standin.world.objects)
    foreign = [k for k in before if fresh.cfg.run_id in k]

    assert janitor.main(_args(standin, token_file)) == 1  # dry run: lists, deletes nothing
    out = capsys.readouterr().out
    assert f"run {old.cfg.run_id}" in out and fresh.cfg.run_id not in out
    assert "forwarding-rule/" in out and "k8s-fw-a0123456789abcdef" in out
    assert set(standin.world.objects) == before

    assert janitor.main(_args(standin, token_file, "--yes")) == 0
    assert sorted(standin.world.objects) == sorted(foreign)  # the unexpired run is intact
    assert standin.gke.clusters == {} and standin.backing.vms == {}
    assert fresh.teardown(fresh.cfg.artifacts_dir / "cleanup.json")["remaining"] == []


def test_janitor_by_run_id_deletes_that_run_even_unexpired(standin, tmp_path, token_file, capsys):
    """What a kept run's --keep message tells its user to run; another unexpired run stays."""
    kept, kept_net = _run(standin, tmp_path, token_file, datetime.now(UTC), "kept")
    kept.create_cluster(kept_net, deadline())
    other, other_net = _run(standin, tmp_path, token_file, datetime.now(UTC), "other")
    c = kept.clients  # a rule with the run's name prefix but without the suite's labels: not the suite's
    stray = compute_v1.Firewall(name=kept.cfg.names.firewall("stray"), network=other_net.network,
                                source_ranges=["10.0.0.0/8"], allowed=[compute_v1.Allowed(I_p_protocol="tcp")])
    c.call("stray", c.firewalls.insert, deadline(), project=c.project, firewall_resource=stray)
    others = sorted(k for k in standin.world.objects if other.cfg.run_id in k)
    assert others

    assert janitor.main(_args(standin, token_file, "--run-id", kept.cfg.run_id)) == 1  # dry run
    out = capsys.readouterr().out
    assert f"suite resource(s) of run {kept.cfg.run_id} (expired or not)" in out and "cluster/" in out
    assert janitor.main(_args(standin, token_file, "--run-id", kept.cfg.run_id, "--yes")) == 0
    assert standin.gke.clusters == {}
    assert sorted(k for k in standin.world.objects if k.endswith(f"/{stray.name}") or k in others) == sorted(
        standin.world.objects)  # only the other run and the unlabelled rule remain
    assert any(k.endswith(f"/{stray.name}") for k in standin.world.objects)
    firewall.delete(c, Entry("firewall", stray.name, c.project), deadline())
    assert other.teardown(other.cfg.artifacts_dir / "cleanup.json")["remaining"] == []


def test_janitor_without_run_id_never_touches_an_unexpired_run(standin, tmp_path, token_file, capsys):
    fresh, _ = _run(standin, tmp_path, token_file, datetime.now(UTC), "fresh")
    before = set(standin.world.objects)
    assert janitor.main(_args(standin, token_file, "--yes")) == 0
    assert "0 expired suite resource(s)" in capsys.readouterr().out
    assert set(standin.world.objects) == before
    fresh.teardown(fresh.cfg.artifacts_dir / "cleanup.json")


def test_run_ids_that_prefix_each_other_and_a_look_alike_load_balancer_are_never_picked(standin, tmp_path,
                                                                                        token_file, capsys):
    """An expired run `dev` and a live run `dev-2` (whose cluster name `mvm-...-dev-2` starts with
    `dev`'s), and a load balancer not of the suite whose names contain `dev`'s cluster name, in a
    network of its own: the janitor, with or without --run-id, picks only `dev`'s."""
    stamp = tmp_path.name[-6:].replace("_", "")
    dev, dev_net = _run(standin, tmp_path, token_file, datetime.now(UTC) - timedelta(hours=6), "dev",
                        run_id=f"dev{stamp}")
    live, live_net = _run(standin, tmp_path, token_file, datetime.now(UTC), "dev-2", run_id=f"dev{stamp}-2")
    assert live.cfg.names.cluster.startswith(dev.cfg.names.cluster)
    _lb_leftovers(dev, dev_net)
    _lb_leftovers(live, live_net, lb="a0123456789abcdee")
    c = dev.clients  # not the suite's: its own network, names that contain dev's cluster name
    shop = compute_v1.Network(name=f"shop-{dev.cfg.names.cluster}", auto_create_subnetworks=False)
    c.call("shop net", c.compute(compute_v1.NetworksClient).insert, deadline(), project=c.project,
           network_resource=shop)
    _lb_leftovers(dev, dev_net, lb=f"web{dev.cfg.names.cluster}-frontend", cluster=f"shop-{dev.cfg.names.cluster}",
                  network=f"projects/{c.project}/global/networks/{shop.name}")
    keep = sorted(k for k in standin.world.objects
                  if any(mark in k for mark in (live.cfg.run_id, "0123456789abcdee", "shop", "frontend")))

    for run_id in ([], ["--run-id", dev.cfg.run_id]):
        assert janitor.main(_args(standin, token_file, *run_id)) == 1
        out = capsys.readouterr().out
        assert "a0123456789abcdef" in out and "0123456789abcdee" not in out and "frontend" not in out, out
        assert live.cfg.names.network not in out, out
    assert janitor.main(_args(standin, token_file, "--run-id", dev.cfg.run_id, "--yes")) == 0
    assert sorted(standin.world.objects) == keep  # the live run's and the look-alike, untouched


def test_janitor_gcp_needs_a_project(capsys):
    assert janitor.main(["--platform", "gcp"]) == 2
    assert "--gcp-project: required" in capsys.readouterr().err
    assert janitor.main(["--platform", "gcp", "--gcp-project", "p", "--compute-endpoint", "http://example.com"]) == 2


def test_reuse_extends_the_expiry_of_what_it_adopts_and_the_janitor_spares_the_run(standin, tmp_path, token_file,
                                                                                     capsys):
    """A kept run whose labels expired an hour ago is reused: its VM, cluster and firewall rules carry the
    new run's expiry (the network and subnetwork cannot be relabelled); the janitor, which takes a run's
    expiry as the latest of its resources', spares all of it, then deletes it once named with --run-id."""
    kept_at = datetime.now(UTC) - timedelta(hours=5)
    kept, net = _run(standin, tmp_path, token_file, kept_at, "kept")
    kept.create_cluster(net, deadline())
    kept.create_vm(net, "tester", PUB, deadline())
    run_id = kept.cfg.run_id
    # as `--reuse` resolves (here without the secret dir that the VM's SSH key would come from)
    reuse = replace(make_cfg(standin, tmp_path / "reuse", token_file, run_id=run_id, expires_hours="4", exercise_deadline="60"), reuse=run_id)
    again = GcpCloud(reuse, Ledger(reuse.artifacts_dir / "ledger.json"))
    again.check_kept(deadline())
    net = again.create_network(deadline())
    again.create_firewall_rules(net, deadline())
    again.create_cluster(net, deadline())
    again.create_vm(net, "tester", PUB, deadline())
    new, old = reuse.labels["e2e-expires"], kept.cfg.labels["e2e-expires"]
    assert old < new
    objs = standin.world.objects
    assert objs[f"zones/{reuse.zones[0]}/instances/{reuse.names.vm}"]["labels"]["e2e-expires"] == new
    assert next(iter(standin.gke.clusters.values()))["resourceLabels"]["e2e-expires"] == new
    rules = [o for k, o in objs.items() if k.startswith("global/firewalls/")]
    assert rules and all(f"e2e-expires={new}" in o["description"] for o in rules)
    assert f"e2e-expires={old}" in objs[f"global/networks/{reuse.names.network}"]["description"]  # as it was

    assert janitor.main(_args(standin, token_file)) == 0  # no expired run: the old network is the live run's
    assert run_id not in capsys.readouterr().out
    assert janitor.main(_args(standin, token_file, "--run-id", run_id, "--yes")) == 0, capsys.readouterr().out
    assert standin.world.objects == {} and standin.gke.clusters == {}
