"""A pytest plugin that breaks ONE recipe step of a lab run (`--mutation NAME`), for `nox -s mutations`.

Each mutation models a mistake in the recipe and, where the suite's own stage checks would stop it
first (cluster.env checked at vm_files, hosts checked before install), also turns off that guard:
the point is to prove the matching EXERCISE catches the mistake, with a clear message.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from meshvm import exercises, manifests, mesh_security
from meshvm.gcp import firewall
from meshvm.lab.kubeapi import tokens
from meshvm.lab.meshca import MeshCa
from meshvm.recipe import canary, istio, ratings, sidecar, workload
from meshvm.recipe import upgrade as upgrade_steps

# (module, test name): the test expected to fail first
REGISTRATION = ("test_vm_registration", "test_workload_entry_appears_when_the_vm_agent_starts")
VM_TO_MESH = ("test_vm_to_mesh", "test_vm_reaches_details_through_its_sidecar")
POD_TO_VM = ("test_pod_to_vm", "test_pod_reaches_ratings_on_the_vm")
PRODUCTPAGE = ("test_productpage_ratings", "test_product_page_shows_the_vms_stars")
IDENTITY = ("test_mtls_identity", "test_the_vms_envoy_holds_its_service_accounts_certificate_from_the_mesh_root")
STRICT = ("test_peer_authentication", "test_strict_refuses_plaintext_and_keeps_the_mesh_path")
AUTHZ = ("test_authorization", "test_only_reviews_may_call_ratings_on_the_vm")
HEALTH = ("test_vm_health", "test_the_vm_turns_unhealthy_then_healthy_again")
ISTIOD_RESTART = ("test_istiod_restart", "test_the_vm_follows_istiod_through_a_rollout_restart")
REBOOT = ("test_vm_reboot", "test_the_vm_rejoins_the_mesh_after_a_reboot")
ISTIO_STAGE = ("test_stages", "test_stage[istio]")
UPGRADE_VM = ("test_upgrade", "test_the_vm_moves_to_the_next_release")
UPGRADE_TRAFFIC = ("test_upgrade", "test_the_traffic_held_through_every_phase")
CANARY_BOOKINFO = ("test_upgrade", "test_bookinfo_moves_to_the_canary_revision")
CANARY_VM = ("test_upgrade", "test_the_vm_moves_to_the_canary_revision")
OUTAGE_S = 10  # the VM's agent stopped this long mid-upgrade, outside any announced disruption
UPGRADE_FROM, UPGRADE_TO = "1.30.3", "1.31.1"
EXERCISE_MODULES = (REGISTRATION[0], IDENTITY[0], VM_TO_MESH[0], POD_TO_VM[0], PRODUCTPAGE[0], STRICT[0], AUTHZ[0],
                    HEALTH[0], "test_agent_restart", "test_agent_stopped", ISTIOD_RESTART[0], REBOOT[0])


def _rules_without_pods_to_vm(cfg: Any) -> tuple:
    return tuple(r for r in ORIGINAL["rules"](cfg) if r.purpose != "pods-to-vm")


def _rules_with_wrong_tag(cfg: Any) -> tuple:
    return tuple(replace(r, target_tags=("mesh-vm-typo",)) if r.purpose == "pods-to-vm" else r
                 for r in ORIGINAL["rules"](cfg))


def _reviews_without_ratings_host(name: str, **values: object) -> str:
    text = ORIGINAL["text"](name, **values)
    if name != "bookinfo-reviews":
        return text
    return "\n".join(line for line in text.splitlines() if "SERVICES_DOMAIN, value" not in line) + "\n"


class _But:
    """A seam (the Kube or the istioctl the recipe is handed) with some of its methods replaced."""

    def __init__(self, inner: Any, **methods: Callable[..., Any]) -> None:
        self._inner = inner
        self.__dict__.update(methods)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _group_not_applied(istioctl: Any, kube: Any, probe: bool, out: Any) -> dict:
    no_apply = _But(kube, apply=lambda *args, **kwargs: None)  # `kubectl apply -f workloadgroup.yaml` forgotten
    return ORIGINAL["create_workloadgroup"](istioctl, no_apply, probe, out)


def _group_with_plaintext_vm(istioctl: Any, kube: Any, probe: bool, out: Any) -> dict:
    """The WorkloadGroup applied with its entries labelled `security.istio.io/tlsMode: disabled`:
    callers send plaintext, so the VM's inbound path works without identity or policy (what Istio's
    bugs #57334 and #61157 did to VM entries)."""
    def apply(text: str, **kwargs: Any) -> Any:
        group = yaml.safe_load(text)
        group["spec"]["metadata"].setdefault("labels", {})["security.istio.io/tlsMode"] = "disabled"
        return kube.apply(yaml.safe_dump(group), **kwargs)

    return ORIGINAL["create_workloadgroup"](istioctl, _But(kube, apply=apply), probe, out)


def _install_without_hub(istioctl: Any, kube: Any, source_ranges: list, hub: str, workdir: Any, deadline: Any) -> str:
    """`istioctl install` without `--set hub=`: the charts' default registry (docs/facts.md section 6)."""
    def run(args: list, **kwargs: Any) -> Any:
        i = args.index(f"hub={hub}")
        return istioctl.run(args[:i - 1] + args[i + 1:], **kwargs)

    return ORIGINAL["install_istio"](_But(istioctl, run=run), kube, source_ranges, hub, workdir, deadline)


def _skip_manifest(skipped: str) -> Callable[..., str]:
    """manifests.text, where one manifest is a harmless empty ConfigMap: that `kubectl apply` forgotten."""
    def text(name: str, **values: object) -> str:
        if name != skipped:
            return ORIGINAL["text"](name, **values)
        return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: mutation-no-{skipped}}}\n"
    return text


def _vm_files(change: Callable[[list], list] | None = None, **overrides: Any) -> Callable[..., Any]:
    """generate_vm_files with istioctl's arguments changed and/or its parameters overridden."""

    @functools.wraps(ORIGINAL["generate_vm_files"])
    def generate(istioctl: Any, kube: Any, group_file: Any, out: Any, cluster_id: str, vm_ip: str,
                 eastwest_ip: str, token_duration: int, deadline: Any, revision: str = "") -> Any:
        changed = _But(istioctl, run=lambda args, **kwargs: istioctl.run(change(list(args)) if change else args,
                                                                         **kwargs))
        params = {"cluster_id": cluster_id, "token_duration": token_duration, **overrides}
        return ORIGINAL["generate_vm_files"](changed, kube, group_file, out, params["cluster_id"], vm_ip,
                                             eastwest_ip, params["token_duration"], deadline, revision)
    return generate


def _files_with_another_root(*args: Any, **kwargs: Any) -> Any:
    """The VM's files with the root certificate of another mesh (files generated against another
    cluster, or before the mesh's CA changed): what the VM trusts is not what signed istiod."""
    out = ORIGINAL["generate_vm_files"](*args, **kwargs)
    (out / "root-cert.pem").write_text(MeshCa().root_pem)
    return out


def _ratings_not_started(vm: Any, source_dir: Any, user: str, deadline: Any) -> None:
    ORIGINAL["install_ratings"](vm, source_dir, user, deadline)
    vm.run(f"systemctl disable --now {ratings.UNIT}", sudo=True, step="mutation: ratings not started")


def _files_for_another_service_account(istioctl: Any, kube: Any, group_file: Any, *args: Any, **kwargs: Any) -> Any:
    """The VM's files generated from a WorkloadGroup file naming another service account (one that
    exists): the VM's token, cluster.env and so its certificate are that account's."""
    kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "ServiceAccount",
                               "metadata": {"name": IMPOSTOR, "namespace": "ratings"}}))
    group = yaml.safe_load(group_file.read_text())
    group["spec"]["template"]["serviceAccount"] = IMPOSTOR
    group_file.write_text(yaml.safe_dump(group))
    return ORIGINAL["generate_vm_files"](istioctl, kube, group_file, *args, **kwargs)


def _group_of_the_old_revision(istioctl: Any, kube: Any, probe: bool, out: Any) -> dict:
    """The WorkloadGroup applied labelled `istio.io/rev: default`, as if config were pinned to the control
    plane that serves it: only the old istiod sees it (docs/facts.md section 6, "Canary")."""
    def apply(text: str, **kwargs: Any) -> Any:
        group = yaml.safe_load(text)
        group["metadata"].setdefault("labels", {})["istio.io/rev"] = "default"
        return kube.apply(yaml.safe_dump(group), **kwargs)
    return ORIGINAL["create_workloadgroup"](istioctl, _But(kube, apply=apply), probe, out)


def _group_without_probe(istioctl: Any, kube: Any, probe: bool, out: Any) -> dict:
    """The WorkloadGroup applied without its readiness probe: istiod never health-checks the VM."""
    return ORIGINAL["create_workloadgroup"](istioctl, kube, False, out)


def _files_of_an_agent_that_never_reconnects(*args: Any, **kwargs: Any) -> Any:
    """The VM's files, with the lab agent told to never reconnect once its connection to istiod is
    lost (a stand-in's switch: the broken agent this mutation models, not a recipe step)."""
    out = ORIGINAL["generate_vm_files"](*args, **kwargs)
    with (out / "cluster.env").open("a") as f:
        f.write("LAB_STANDIN_NEVER_RECONNECT='1'\n")
    return out


def _entry_problems_without_health(entry: Any, vm_ip: str, probe: bool) -> list:
    """Exercise 1's check of the entry, not asking for condition Healthy (the guard that would stop the
    probe-less group before the health exercise)."""
    return ORIGINAL["entry_problems"](entry, vm_ip, False)


def _apply_except(forgotten: str) -> Callable[..., None]:
    """mesh_security.apply_policy, where one policy's `kubectl apply` is forgotten."""
    def apply(kube: Any, name: str) -> None:
        if name != forgotten:
            ORIGINAL["apply_policy"](kube, name)
    return apply


def _vm_stopped_ten_seconds_first(vm: Any, *args: Any, **kwargs: Any) -> None:
    """The VM's agent stopped by hand before its upgrade, and the package fetched meanwhile (10 s): an
    outage no step announced."""
    vm.run("systemctl stop istio", sudo=True, step=f"mutation: the VM's agent stopped for {OUTAGE_S} s")
    threading.Event().wait(OUTAGE_S)  # the outage this mutation models
    ORIGINAL["vm_in_place"](vm, *args, **kwargs)


IMPOSTOR = "bookinfo-impostor"
ORIGINAL: dict[str, Any] = {"apply_policy": mesh_security.apply_policy, "entry_problems": exercises.entry_problems, "rules": firewall.rules, "text": manifests.text,
                            "create_workloadgroup": workload.create_workloadgroup,
                            "generate_vm_files": workload.generate_vm_files, "install_ratings": ratings.install_ratings,
                            "install_istio": istio.install_istio, "vm_in_place": upgrade_steps.vm_in_place}

AGENT_LATE_S = 660  # the agent starts 11 minutes after its token was issued


def _files_then_eleven_minutes(*args: Any, **kwargs: Any) -> Any:
    """The VM's files with a token for the API's minimum of 600 s; then the cluster's clock (that of
    the API stand-in, which issues and reviews tokens by its unchanged rules) moves on 11 minutes, as
    if the agent started that much later: the token really expires."""
    out = _vm_files(token_duration=600)(*args, **kwargs)
    tokens.time = SimpleNamespace(time=lambda: time.time() + AGENT_LATE_S)  # type: ignore[attr-defined]
    return out


# The firewall dropped packets no rule admitted (the lab router's counters in the firewall dump).
DROPPED = r"(?m)^\s+[1-9]\d*\s+\d+\s+DROP\s"
Effect = tuple[str, str, bool]  # (artifact glob in the run's folder, regex, whether it must match or must not)

# name -> ((module, test) expected to fail first, a regex its failure message or its diagnostics
#          must match (the mistake is caught for its own reason), [(module, attribute, replacement)],
#          the artifact that shows the mutation took effect)
MUTATIONS: dict[str, tuple[tuple[str, str], str, list[tuple[Any, str, Any]], Effect]] = {
    "unpinned-hub": (ISTIO_STAGE, r"Deployment istio-system/istiod runs registry\.istio\.io/release/pilot:\S+, "
                                  r"not from --istio-hub docker\.io/istio",
                     [(istio, "install_istio", _install_without_hub)],
        ("diagnostics/*/cluster-deployments.yaml", r"image: registry\.istio\.io/release/pilot:", True)),
    "no-firewall-rule": (POD_TO_VM, DROPPED,
                         [(firewall, "rules", _rules_without_pods_to_vm)],
        ("ledger.json", r"pods-to-vm", False)),
    "wrong-target-tag": (POD_TO_VM, DROPPED,
                         [(firewall, "rules", _rules_with_wrong_tag)],
        ("diagnostics/*/lab-firewall.txt", r"-pods-to-vm: .* -> targets \(mesh-vm-typo\)", True)),
    "vm-inbound-passthrough": (POD_TO_VM, r"source_principal='unknown', destination_service='ratings\.ratings\.svc\.cluster\.local', "
                               r"destination_principal='unknown', response_code='200', connection_security_policy='none'",
                               [(workload, "create_workloadgroup", _group_with_plaintext_vm)],
        ("diagnostics/*/cluster-workloadentries.yaml", r"security\.istio\.io/tlsMode: disabled", True)),
    "reviews-without-ratings-host": (PRODUCTPAGE, r"Ratings service is currently unavailable",
                                     [(manifests, "text", _reviews_without_ratings_host)],
        ("diagnostics/*/cluster-deployments.yaml", r"SERVICES_DOMAIN", False)),
    "no-expose-istiod": (REGISTRATION, r"not connected: cannot reach istiod at \S+: .*(Connection refused|EOF|reset)",
                         [(manifests, "text", _skip_manifest("expose-istiod"))],
        ("diagnostics/*/cluster-gateways.yaml", r"istiod-gateway", False)),
    "root-cert-of-another-mesh": (REGISTRATION, r"not connected: istiod's certificate at \S+ does not verify against "
                                                r"/etc/certs/root-cert\.pem for istiod\.istio-system\.svc",
                                  [(workload, "generate_vm_files", _files_with_another_root)],
        ("diagnostics/*/vm-journal-istio.txt", r"does not verify against /etc/certs/root-cert\.pem", True)),
    "no-workloadgroup": (REGISTRATION, r"cannot find WorkloadGroup ratings/ratings",
                         [(workload, "create_workloadgroup", _group_not_applied)],
        ("diagnostics/*/cluster-workloadgroups.yaml", r"name: ratings", False)),
    "no-autoregister": (REGISTRATION, r"connected to istiod .*; WorkloadEntry None;", [
        (workload, "generate_vm_files", _vm_files(lambda a: [x for x in a if x != "--autoregister"])),
        (workload, "check_vm_files", lambda *args, **kwargs: None)],
        ("diagnostics/*/vm-cluster.env", r"ISTIO_META_AUTO_REGISTER_GROUP", False)),
    "wrong-cluster-id": (REGISTRATION, r'client claims to be in cluster "not-the-cluster"', [
        (workload, "generate_vm_files", _vm_files(cluster_id="not-the-cluster")),
        (workload, "check_vm_files", lambda *args, **kwargs: None)],
        ("diagnostics/*/vm-cluster.env", r"ISTIO_META_CLUSTER_ID='not-the-cluster'", True)),
    "empty-hosts": (REGISTRATION, r"/etc/hosts: lacks ' istiod\.istio-system\.svc'",
                    [(sidecar, "hosts_line", lambda vm_files: "")],
        ("diagnostics/*/vm-etc-hosts.txt", r"istiod\.istio-system\.svc", False)),
    # A token issued for the API's minimum of 600 s, presented 11 minutes later.
    "expired-token": (REGISTRATION, r"the istio-token is not valid \(unknown, malformed or expired\)", [
        (workload, "generate_vm_files", _files_then_eleven_minutes)],
        ("diagnostics/*/cluster-istiod-logs.txt", r"rejected proxy .*the istio-token is not valid", True)),
    "vm-certificate-for-another-sa": (IDENTITY, rf"the VM's certificate names \['spiffe://cluster\.local/ns/ratings/sa/"
                                                rf"{IMPOSTOR}'\], expected \['spiffe://cluster\.local/ns/ratings/sa/"
                                                rf"bookinfo-ratings'\]",
                                      [(workload, "generate_vm_files", _files_for_another_service_account)],
        ("diagnostics/*/vm-cluster.env", rf"SERVICE_ACCOUNT='{IMPOSTOR}'", True)),
    "peer-authentication-not-applied": (STRICT, r"the VM's sidecar to refuse the plaintext client under STRICT: "
                                                r"not reached .* last seen: \(200, ",
                                        [(mesh_security, "apply_policy", _apply_except("peer-authentication-strict"))],
        ("run.log", r"applied PeerAuthentication ratings/meshvm-strict", False)),
    "authorization-policy-not-applied": (AUTHZ, r"ratings to refuse pod \S+ \(not reviews\): not reached .* "
                                                r"last seen: \(200, ",
                                         [(mesh_security, "apply_policy", _apply_except("authz-ratings-readers"))],
        ("run.log", r"applied AuthorizationPolicy ratings/meshvm-ratings-readers", False)),
    "workloadgroup-without-probe": (HEALTH, r"Healthy=False once ratings stopped \(probe failing\): not reached",
                                    [(workload, "create_workloadgroup", _group_without_probe),
                                     (exercises, "entry_problems", _entry_problems_without_health)],
        ("diagnostics/*/cluster-workloadgroups.yaml", r"periodSeconds", False)),
    "agent-never-reconnects": (ISTIOD_RESTART, r"the VM's entry connected to a new istiod pod \(not one of .*\): "
                                               r"not reached",
                               [(workload, "generate_vm_files", _files_of_an_agent_that_never_reconnects)],
        ("diagnostics/*/vm-cluster.env", r"LAB_STANDIN_NEVER_RECONNECT='1'", True)),
    "istio-not-enabled-at-boot": (REBOOT, r"istio and ratings active after the boot, started by systemd: not reached"
                                          r".* last seen: \['inactive', 'active'\]",
                                  [(sidecar, "enable_at_boot", lambda vm: None)],
        ("diagnostics/*/vm-systemctl-status-istio.txt", r"istio\.service; disabled", True)),
    # The upgrade (tests/upgrade, in-place from UPGRADE_FROM to UPGRADE_TO).
    "upgrade-without-agent-restart": (UPGRADE_VM, r"vm_proxy: expected 1\.31\.1, found Envoy node ISTIO_VERSION on 1\.30\.3",
                                      [(upgrade_steps, "restart_agent", lambda vm: None)],
        ("run.log", r"\$ .*systemctl restart istio", False)),
    "upgrade-traffic-broken-10s": (UPGRADE_TRAFFIC, r"vm: vm->details: \d+\.\d s without a success \(> 5\.0 s\)",
                                   [(upgrade_steps, "vm_in_place", _vm_stopped_ten_seconds_first)],
        ("run.log", r"\[mutation: the VM's agent stopped for 10 s\]", True)),
    # The canary upgrade (--strategy canary).
    "canary-workloadgroup-of-the-old-revision": (
        CANARY_VM, r"cannot find WorkloadGroup ratings/ratings", [(workload, "create_workloadgroup", _group_of_the_old_revision)],
        ("diagnostics/*/cluster-workloadgroups.yaml", r"istio\.io/rev: default", True)),
    "canary-without-the-revision-route": (
        CANARY_VM, r"istiod's certificate at \S+ does not verify against /etc/certs/root-cert\.pem for "
                   r"istiod-1-31-1\.istio-system\.svc",
        [(canary, "expose_revision", lambda kube, revision: None)],
        ("run.log", r"applied VirtualService istio-system/istiod-vs-1-31-1", False)),
    "canary-bookinfo-not-restarted-after-the-move": (
        CANARY_BOOKINFO, r"bookinfo_proxies: expected 1\.31\.1, found \S+ on 1\.30\.3",
        [(upgrade_steps, "restart_bookinfo", lambda *args, **kwargs: [])],
        ("upgrade.json", r'"restarted": \[\]', True)),
    "ratings-not-started": (REGISTRATION, r"condition Healthy is False",
                            [(ratings, "install_ratings", _ratings_not_started)],
        ("diagnostics/*/vm-systemctl-status-ratings.txt", r"Active: inactive", True)),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--mutation", choices=sorted(MUTATIONS), help="self-test: break this recipe step")


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--mutation")
    if name:
        for module, attr, value in MUTATIONS[name][2]:
            setattr(module, attr, value)
