"""Exercise 1 on the lab: `systemctl start istio` on the VM makes its WorkloadEntry appear.

The recipe runs as the suite runs it (LabPlatform, GcpCloud and the recipe's own functions, up to
the installed sidecar); then the VM's agent stand-in reaches the cluster's istiod stand-in through
/etc/hosts, the lab router and the run's firewall (`vm-to-eastwest`). The negative cases break one
thing each (no WorkloadGroup, a wrong cluster ID, an expired token, no firewall rule, istiod not
exposed through the east-west gateway) and show the agent rejected or cut off, not ready, and no entry.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from google.cloud import compute_v1

from meshvm import exercises, lifecycle, manifests, retry
from meshvm.config import Config, gather, resolve
from meshvm.deadlines import Deadline
from meshvm.gcp import firewall
from meshvm.gcp.clients import insert
from meshvm.gcp.cloud import GcpCloud
from meshvm.gcp.credentials import bearer_token
from meshvm.gcp.operations import delete_and_wait, wait_compute
from meshvm.istioctl import IstioctlCli
from meshvm.kube import KubeClient
from meshvm.kube_auth import Token
from meshvm.lab import autoregistration, istiod_standin
from meshvm.lab.cluster import KubeClusterBackend
from meshvm.lab.istioctl_standin import install_istioctl_standin
from meshvm.lab.meshca import MeshCa
from meshvm.lab.netsafety import assert_local_route
from meshvm.lab.platform import LabPlatform
from meshvm.lab.sidecar_deb import build_sidecar_deb
from meshvm.ledger import Ledger
from meshvm.recipe import eastwest, istio, ratings, sidecar, workload
from meshvm.seams import NetworkInfo, VmInfo
from meshvm.ssh import SshShell
from meshvm.sshkeys import new_key
from tests.root import require_root

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]
log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
USER = "meshvm"
NS, GROUP, SA = workload.NAMESPACE, workload.GROUP, workload.SERVICE_ACCOUNT
WE, WG = ("networking.istio.io/v1", "WorkloadEntry"), ("networking.istio.io/v1", "WorkloadGroup")
GW, VS = ("networking.istio.io/v1", "Gateway"), ("networking.istio.io/v1", "VirtualService")


@dataclass
class Run:
    cfg: Config
    lab: LabPlatform
    cloud: GcpCloud
    net: NetworkInfo
    vm: VmInfo
    shell: SshShell
    kube: KubeClient
    group_file: Path
    files: Path

    @property
    def cluster(self) -> KubeClusterBackend:
        return self.lab.clusters[0]

    @property
    def istiod(self) -> istiod_standin.IstiodStandIn:
        assert self.cluster.istiod is not None
        return self.cluster.istiod

    @property
    def entry_name(self) -> str:
        return f"{GROUP}-{self.vm.internal_ip}"

    def entry(self) -> dict | None:
        return self.kube.get(*WE, self.entry_name, NS)

    def sudo(self, command: str, step: str) -> str:
        return self.shell.run(command, sudo=True, step=step).stdout

    def agent_log(self, since: float) -> str:
        return self.shell.run(f"journalctl -u istio -o cat --no-pager --since @{int(since)}", sudo=True,
                              step="agent log", check=False).stdout


def d(seconds: float, what: str) -> Deadline:
    return Deadline.after(seconds, what)


def sub(work: Path, name: str) -> Path:
    (work / name).mkdir(mode=0o700, exist_ok=True)
    return work / name


def build(cfg: Config, lab: LabPlatform, work: Path) -> Run:
    """The recipe's stages, as the e2e fixtures run them, up to the installed sidecar."""
    eff = lab.start()
    cloud = GcpCloud(eff, Ledger(work / "ledger.json"))
    net = cloud.create_network(d(60, "network"))
    cloud.create_firewall_rules(net, d(60, "firewall"))
    cluster = cloud.create_cluster(net, d(60, "cluster"))
    key = new_key(work, f"{USER}@{cfg.run_id}")
    vm = cloud.create_vm(net, USER, key.public_line, d(60, "vm"))
    shell = SshShell(vm.external_ip, USER, key.private, vm.host_keys, before_connect=assert_local_route)
    shell.connect(d(60, "ssh"))
    (work / "ca.crt").write_text(cluster.ca_pem)
    creds = cloud.clients.creds
    kube = KubeClient(f"https://{cluster.endpoint}", work / "ca.crt", lambda: Token(bearer_token(creds), time.time() + 60))
    cli = IstioctlCli(install_istioctl_standin(eff.istio_version, sub(work, "bin")),
                      lambda: kube.write_kubeconfig(sub(work, "kube")), os.environ)
    ratings.install_ratings(shell, ROOT / "meshvm/lab/standins/ratings", USER, d(120, "ratings"))
    cluster_id = istio.install_istio(cli, kube, list(eff.ssh_source_ranges), eff.istio_hub, work, d(60, "istio"))
    address = eastwest.install_eastwest(cli, kube, eff.eastwest_lb, vm.external_ip, eff.istio_hub, work,
                                      d(60, "eastwest"))
    workload.create_ratings_namespace(kube)
    group_file = work / "workloadgroup.yaml"
    workload.create_workloadgroup(cli, kube, True, group_file)
    files = workload.generate_vm_files(cli, kube, group_file, sub(work, "vm_files"), cluster_id, vm.internal_ip,
                                       address, eff.token_duration, d(60, "vm files"))
    sidecar.install_sidecar(shell, files, build_sidecar_deb(eff.istio_version, sub(work, "deb")), d(120, "sidecar"))
    return Run(eff, lab, cloud, net, vm, shell, kube, group_file, files)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    require_root()
    work = tmp_path_factory.mktemp("registration")
    work.chmod(0o700)
    raw = gather({"platform": "lab", "run_id": f"reg-{os.getpid()}", "artifacts_dir": str(work / "out")}, {})
    cfg = resolve(raw, {})
    lab = LabPlatform(cfg, work / "lab")
    r = None
    try:
        r = build(cfg, lab, work)
        yield r
    finally:
        if r is not None:
            r.shell.close()
            r.kube.close()
        lab.stop()


def wait_for(what: str, check, seconds: float, interval: float = 0.1):  # noqa: ANN001, ANN201
    return retry.until(what, check, d(seconds, what), initial=interval, ceiling=interval * 2, max_attempts=100_000)


def assert_refused(run: Run, since: float, reason: str | None) -> None:
    """The agent is not ready and no entry exists; istiod said `reason` (None: never heard of it)."""
    ip = run.vm.internal_ip
    if reason is not None:
        try:
            wait_for(f"istiod to reject {ip} with {reason!r}",
                     lambda: [r for r in run.istiod.rejections if r.startswith(ip) and reason in r], 15)
        except retry.WaitFailed as e:
            raise AssertionError(f"{e}\nthe agent said:\n{run.agent_log(since)[-2000:]}") from None
        logged = wait_for("the agent to log the reason", lambda: reason in run.agent_log(since), 10)
        assert logged
    ready, _, code = sidecar.readiness(run.shell)
    assert not ready, f"the agent is ready ({code}) although istiod should have refused it"
    assert run.entry() is None


KEPT = "/etc/certs/cert-chain.pem /etc/certs/key.pem"  # the workload certificate the agent keeps


def restart_agent(run: Run) -> float:
    run.istiod.rejections.clear()
    run.istiod.accepted.clear()
    since = time.time() - 1
    run.sudo("systemctl restart istio", "restart istio")
    return since


def test_entry_appears_then_goes_after_the_grace_period(run: Run):
    ip = run.vm.internal_ip
    lb_range = run.cluster.node.lb_range if run.cluster.node else ""
    hosts = sidecar.hosts_line(run.files).split()[0]
    assert ipaddress.ip_address(hosts) in ipaddress.ip_network(lb_range), "the east-west address is not on the node"
    assert run.entry() is None

    t0 = time.monotonic()
    run.sudo("systemctl start istio", "systemctl start istio")
    first = wait_for(f"WorkloadEntry {run.entry_name}", run.entry, 15)
    t_entry = time.monotonic() - t0
    healthy = wait_for("the entry Healthy=True", lambda: exercises.healthy(run.entry() or {}) is True, 15)
    t_healthy = time.monotonic() - t0
    entry = run.entry()
    assert healthy and entry is not None
    log.info("FIGURES: systemctl start istio -> WorkloadEntry %.2f s, -> Healthy=True %.2f s", t_entry, t_healthy)

    assert exercises.entry_problems(entry, ip, True) == []  # exercise 1's own check
    meta = entry["metadata"]
    notes = meta["annotations"]
    assert first["metadata"]["annotations"][autoregistration.CONNECTED] == notes[autoregistration.CONNECTED]
    assert entry["spec"]["address"] == ip and meta["labels"]["app"] == "ratings"
    assert notes["istio.io/autoRegistrationGroup"] == GROUP
    assert notes["istio.io/workloadController"] == run.istiod.name and run.istiod.name.startswith("istiod-"), (
        "the controller is the istiod pod the stand-in plays")
    assert notes["proxy.istio.io/health-checks-enabled"] == "true"
    datetime.fromisoformat(notes["istio.io/connectedAt"])  # RFC3339
    group = run.kube.get(*WG, GROUP, NS)
    assert group is not None
    assert meta["ownerReferences"] == [{"apiVersion": group["apiVersion"], "kind": "WorkloadGroup", "name": GROUP,
                                        "uid": group["metadata"]["uid"], "controller": True}]
    sidecar.wait_ready(run.shell, d(20, "agent ready"), settle=1)
    assert any(a.startswith(f"{ip} ") for a in run.istiod.accepted), "istiod never saw the VM's own address"

    t1 = time.monotonic()
    run.sudo("systemctl stop istio", "systemctl stop istio")
    gone = wait_for("disconnectedAt", lambda: autoregistration.DISCONNECTED in
                    ((run.entry() or {}).get("metadata", {}).get("annotations") or {}), 10)
    assert gone
    notes = run.entry()["metadata"]["annotations"]  # type: ignore[index]
    assert autoregistration.CONNECTED not in notes
    datetime.fromisoformat(notes[autoregistration.DISCONNECTED])
    time.sleep(max(0.0, istiod_standin.GRACE_S - 2 - (time.monotonic() - t1)))
    assert run.entry() is not None, "the entry went before the 10 s grace period"
    wait_for("the entry deleted after the grace period", lambda: run.entry() is None, 2 * istiod_standin.GRACE_S)
    t_deleted = time.monotonic() - t1
    log.info("FIGURES: systemctl stop istio -> entry deleted %.2f s", t_deleted)
    assert istiod_standin.GRACE_S - 1 <= t_deleted <= 2 * istiod_standin.GRACE_S + 2


def test_no_workloadgroup_no_entry_and_not_ready(run: Run):
    run.kube.delete(*WG, GROUP, NS)
    try:
        since = restart_agent(run)
        assert_refused(run, since, f"cannot find WorkloadGroup {NS}/{GROUP}")
    finally:
        run.sudo("systemctl stop istio", "stop istio")
        run.kube.apply(run.group_file.read_text(), namespace=NS)


def test_wrong_cluster_id_is_rejected(run: Run):
    env = "/var/lib/istio/envoy/cluster.env"
    run.sudo(f"cp -p {env} {env}.good && sed -i \"s/^ISTIO_META_CLUSTER_ID=.*/ISTIO_META_CLUSTER_ID='not-this-cluster'/\" {env}",
             "claim another cluster")
    try:
        since = restart_agent(run)
        assert_refused(run, since, 'client claims to be in cluster "not-this-cluster"')
    finally:
        run.sudo(f"systemctl stop istio; mv {env}.good {env}", "restore cluster.env")


def test_expired_token_is_rejected(run: Run, tmp_path: Path):
    token = "/var/run/secrets/tokens/istio-token"
    assert run.cluster.api is not None
    expired = run.cluster.api.service_account_tokens.issue(NS, SA, ["istio-ca"], 1)["token"]
    (tmp_path / "t").write_text(expired)
    run.shell.upload(tmp_path / "t", "/tmp/expired-token", mode=0o600)  # noqa: S108 (the VM's /tmp)
    time.sleep(1.5)  # now past its exp
    run.sudo(f"cp -p {token} {token}.good && install -m 0600 -o istio-proxy /tmp/expired-token {token}", "expire token")
    # as on a VM that never connected: no workload certificate kept to fall back on
    run.sudo(f"mkdir -p /root/kept && mv {KEPT} /root/kept/ 2>/dev/null || true", "set the kept certificate aside")
    try:
        since = restart_agent(run)
        assert_refused(run, since, "the istio-token is not valid")
    finally:
        run.sudo(f"systemctl stop istio; mv {token}.good {token}; rm -f /tmp/expired-token; "
                 "mv /root/kept/* /etc/certs/ 2>/dev/null || true", "restore token and certificate")


def test_without_a_valid_token_the_kept_certificate_authenticates(run: Run):
    """As a rebooted VM: no istio-token at all; the agent presents the workload certificate it kept from
    its last connection, and istiod accepts it (the real ClientCertAuthenticator's part)."""
    token = "/var/run/secrets/tokens/istio-token"
    run.sudo("systemctl start istio", "start istio")
    assert wait_for("the certificate kept in /etc/certs", lambda: "BEGIN CERTIFICATE" in run.sudo(
        "cat /etc/certs/cert-chain.pem 2>/dev/null || true", "kept certificate"), 15)
    run.sudo(f"systemctl stop istio && mv {token} {token}.away", "token away")
    try:
        since = restart_agent(run)
        assert wait_for("accepted without a token", lambda: any(a.startswith(f"{run.vm.internal_ip} ")
                                                                for a in run.istiod.accepted), 20)
        assert "no istio-token" in run.agent_log(since)
        sidecar.wait_ready(run.shell, d(20, "agent ready on its certificate"), settle=1)
    finally:
        run.sudo(f"systemctl stop istio; mv {token}.away {token}", "token back")
    wait_for("the entry gone (grace period)", lambda: run.entry() is None, 2 * istiod_standin.GRACE_S + 2)


def test_a_root_cert_of_another_mesh_fails_the_tls_to_istiod(run: Run, tmp_path: Path):
    """istiod's certificate is verified against /etc/certs/root-cert.pem for istiod.istio-system.svc:
    the root of another mesh refuses it before any token is sent (istiod never hears of the VM);
    with the recipe's root back, the same agent registers (the control)."""
    root = "/etc/certs/root-cert.pem"
    (tmp_path / "other-root.pem").write_text(MeshCa().root_pem)
    run.shell.upload(tmp_path / "other-root.pem", "/tmp/other-root.pem", mode=0o644)  # noqa: S108 (the VM's /tmp)
    run.sudo(f"cp -p {root} {root}.good && install -m 0644 /tmp/other-root.pem {root}", "another mesh's root")
    try:
        since = restart_agent(run)
        want = (f"not connected: istiod's certificate at {sidecar.hosts_line(run.files).split()[0]}:15012 does not "
                f"verify against {root} for istiod.istio-system.svc: ")  # OpenSSL's reason follows
        assert wait_for("the agent to refuse istiod's certificate", lambda: want in run.agent_log(since), 15)
        assert_refused(run, since, None)
        assert run.istiod.accepted == [] and run.istiod.rejections == []
    finally:
        run.sudo(f"systemctl stop istio; mv {root}.good {root}; rm -f /tmp/other-root.pem", "restore root cert")
    restart_agent(run)
    wait_for("the entry with the recipe's root cert", run.entry, 15)
    run.sudo("systemctl stop istio", "stop istio")
    wait_for("the entry gone (grace period)", lambda: run.entry() is None, 2 * istiod_standin.GRACE_S + 2)


def test_without_a_rule_to_the_eastwest_gateway_the_agent_cannot_reach_istiod(run: Run):
    """No firewall rule admits the VM to the east-west gateway: the run's `vm-to-eastwest`, and GKE's
    own `k8s-fw-*` of the gateway's Service (which admits 0.0.0.0/0 without loadBalancerSourceRanges)."""
    c, name = run.cloud.clients, run.cfg.names.firewall("vm-to-eastwest")
    gke_rules = [f for f in c.firewalls.list(project=c.project, timeout=30) if f.name.startswith("k8s-fw-")]
    assert gke_rules, "the east-west gateway's Service has no GKE firewall rule to take away"
    for rule_name in [name, *(f.name for f in gke_rules)]:
        delete_and_wait(c, f"deleting {rule_name}", c.firewalls.delete, d(30, "delete rule"), firewall=rule_name)
    try:
        since = restart_agent(run)
        logged = wait_for("the agent to say istiod is unreachable", lambda: "unreachable" in run.agent_log(since), 10)
        assert logged
        assert_refused(run, since, None)
        heard = [a for a in run.istiod.accepted + run.istiod.rejections if a.startswith(run.vm.internal_ip)]
        assert heard == [], "istiod heard from the VM without the rule"
    finally:
        rule = next(r for r in firewall.rules(run.cfg) if r.purpose == "vm-to-eastwest")
        op = insert(c, f"creating {name}", c.firewalls.insert, d(30, "rule"), lambda: None, project=c.project,
                    firewall_resource=firewall.body(run.cfg, run.net, rule))
        wait_compute(c, op, f"creating {name}", d(30, "rule"))
        for f in gke_rules:
            back = compute_v1.Firewall(name=f.name, network=f.network, direction=f.direction, priority=f.priority,
                                       description=f.description, source_ranges=list(f.source_ranges),
                                       target_tags=list(f.target_tags), allowed=list(f.allowed))
            op = insert(c, f"creating {f.name}", c.firewalls.insert, d(30, "rule"), lambda: None,
                        project=c.project, firewall_resource=back)
            wait_compute(c, op, f"creating {f.name}", d(30, "rule"))
    restart_agent(run)  # the control: with the rule back, the same agent registers
    wait_for("the entry once the rule is back", run.entry, 15)
    sidecar.wait_ready(run.shell, d(20, "agent ready"), settle=1)
    run.sudo("systemctl stop istio", "stop istio")


def test_without_istiod_exposed_through_the_eastwest_gateway_the_agent_cannot_register(run: Run):
    """The VM still reaches the east-west address (firewall and hosts line intact), but: the
    VirtualService routes only another SNI (a revision's `istiod-canary.istio-system.svc`): the gateway's
    Envoy has a 15012 listener with no filter chain for the agent's server name and cuts the connection
    before TLS; expose-istiod deleted: no 15012 listener, refused. istiod never hears of the VM and no
    entry appears. Restored, the same agent registers (the control)."""
    ip, address = run.vm.internal_ip, sidecar.hosts_line(run.files).split()[0]
    (gw,) = [d for d in manifests.docs("expose-istiod") if d["kind"] == "Gateway"]
    (vs,) = [d for d in manifests.docs("expose-istiod") if d["kind"] == "VirtualService"]
    eastwest = run.cluster.gateways[1]
    assert eastwest.node.workload == "istio-eastwestgateway"
    # An earlier test's entry stays for the grace period after its agent stopped: start without one.
    assert wait_for("no entry left from before", lambda: run.entry() is None, 2 * istiod_standin.GRACE_S + 2)

    def refused(listening: bool, said: tuple[str, ...]) -> None:
        wait_for(f"the east-west Envoy {'with' if listening else 'without'} a 15012 listener",
                 lambda: ('"0.0.0.0_15012"' in eastwest.envoy.admin("/listeners?format=json")) == listening, 10)
        since = restart_agent(run)
        want = f"not connected: cannot reach istiod at {address}:15012"
        try:
            wait_for(f"the agent to say {want!r}", lambda: want in run.agent_log(since), 15)
        except retry.WaitFailed as e:
            raise AssertionError(f"{e}\nthe agent said:\n{run.agent_log(since)[-2000:]}") from None
        assert any(w in run.agent_log(since).split(want, 1)[1].splitlines()[0] for w in said)
        assert run.entry() is None
        ready, _, code = sidecar.readiness(run.shell)
        assert not ready, f"the agent is ready ({code}) without a route to istiod"
        assert [a for a in run.istiod.accepted + run.istiod.rejections if a.startswith(ip)] == [], "istiod heard it"

    try:
        vs["spec"]["tls"][0]["match"][0]["sniHosts"] = ["istiod-canary.istio-system.svc"]
        run.kube.apply(yaml.safe_dump(vs), namespace="istio-system")
        wait_for("the gateway to match the other SNI only", lambda: "istiod-canary.istio-system.svc" in
                 eastwest.envoy.admin("/config_dump?resource=dynamic_listeners"), 10)
        refused(True, ("Connection reset by peer",))
        run.kube.delete(*VS, vs["metadata"]["name"], "istio-system")
        run.kube.delete(*GW, gw["metadata"]["name"], "istio-system")
        # refused, or reset while the removed listener drains (the listener is gone from /listeners)
        refused(False, ("Connection refused", "Connection reset by peer"))
    finally:
        run.sudo("systemctl stop istio", "stop istio")
        run.kube.apply(manifests.text("expose-istiod"), namespace="istio-system")
    restart_agent(run)  # the control: with the route back, the same agent registers
    wait_for("the entry once istiod is exposed again", run.entry, 15)
    sidecar.wait_ready(run.shell, d(20, "agent ready"), settle=1)
    run.sudo("systemctl stop istio", "stop istio")


def test_healthy_follows_the_probe_the_agent_runs(run: Run):
    """The group's probe (ratings /health) runs on the VM; istiod writes what the agent reports."""
    def condition() -> tuple[bool | None, str]:
        entry = run.entry() or {}
        cond = [c for c in (entry.get("status") or {}).get("conditions") or [] if c.get("type") == "Healthy"]
        return exercises.healthy(entry), (cond[0].get("message", "") if cond else "")

    ratings.stop_ratings(run.shell)
    try:
        restart_agent(run)
        assert wait_for("Healthy=False with ratings stopped", lambda: condition()[0] is False, 15)
        assert "/health" in condition()[1], condition()
    finally:
        ratings.start_ratings(run.shell, d(30, "ratings"))
    up = wait_for("Healthy=True once ratings answers again", lambda: condition()[0] is True, 15)
    assert up
    run.sudo("systemctl stop istio", "stop istio")


def test_a_restarted_istiod_takes_the_vm_over_on_the_same_entry(run: Run):
    """`kubectl rollout restart deployment/istiod`: the lab's Deployment controller makes a new istiod pod,
    the stand-in plays it and closes the old pod's connections; the agent reconnects in its own process
    (as the real one does, Envoy serving on) and the same entry names the new pod."""
    run.sudo("systemctl start istio", "start istio")
    first = wait_for("the entry connected", lambda: autoregistration.CONNECTED in lifecycle.notes(run.entry()), 15)
    assert first
    old_pod, before, since = run.istiod.name, run.entry(), time.time() - 1
    main_pid = run.sudo("systemctl show -p MainPID --value istio", "the agent's pid").strip()
    lifecycle.rollout_restart(run.kube, "istio-system", "istiod")
    moved = wait_for("the entry controlled by the new istiod pod", lambda: lifecycle.notes(run.entry()).get(
        autoregistration.CONTROLLER) not in (None, old_pod) and autoregistration.CONNECTED in lifecycle.notes(run.entry()), 20)
    assert moved
    assert lifecycle.istiod_pods(run.kube) == [run.istiod.name], "the stand-in plays istiod's one pod"
    assert lifecycle.notes(run.entry())[autoregistration.CONTROLLER] == run.istiod.name
    assert lifecycle.uid(run.entry()) == lifecycle.uid(before), "a reconnect within the grace period keeps the entry"
    assert "reconnected to istiod" in run.agent_log(since)
    assert run.sudo("systemctl show -p MainPID --value istio", "the agent's pid").strip() == main_pid, (
        "the agent restarted instead of reconnecting")
    run.sudo("systemctl stop istio", "stop istio")
