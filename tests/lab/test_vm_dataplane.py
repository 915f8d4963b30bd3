"""The VM's data plane on the lab: capture, the agent's DNS proxy, and its Envoy (upstream Envoy,
configured over the agent's xDS relay by the lab's model of istiod) outbound and inbound.

The recipe runs as in test_registration_standin (LabPlatform, GcpCloud, the recipe up to the
installed sidecar), plus the ratings Service of the recipe. `details.default` is a Service of the lab's
cluster whose only endpoint is a WorkloadEntry for a tiny details server on a lab host of its own
(no service account: plaintext, TLS mode `disabled`), reached through the router and two firewall
rules created through the local cloud's API. As a normal user on the VM, `curl details.default.svc:9080`
resolves through the agent's DNS proxy and goes through Envoy's outbound listener to that endpoint; a
request from the details host to the VM's ratings on 9080 goes through Envoy's inbound listener, in
plaintext and with mutual TLS (a client certificate of the mesh CA); the agent's istio_requests_total
(:15020) reports each, with the caller's identity only for mutual TLS, and Envoy's `cluster.outbound|`
stats do not exist (the default stats matcher). Without DNS capture in cluster.env the name does not
resolve; removing the package removes the capture rules.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshvm import telemetry
from meshvm.config import gather, resolve
from meshvm.deadlines import Deadline
from meshvm.gcp import firewall
from meshvm.gcp.clients import insert
from meshvm.gcp.operations import delete_and_wait, wait_compute
from meshvm.lab.hostsys import run_in_netns
from meshvm.lab.netsafety import assert_local_route
from meshvm.lab.platform import LabPlatform
from meshvm.lab.router import Attachment
from meshvm.lab.standins import istiostats
from meshvm.recipe import bookinfo, sidecar
from tests.lab._helpers import stop, wait_listening
from tests.lab.test_registration_standin import Run, build, wait_for
from tests.root import require_root

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]
PORT = 9080
DETAILS_HOST_NUMBER = 200  # below the load-balancer /27, far above the VMs (numbered from .10)
DETAILS_TAG = "dp-details"
CLUSTER_ENV = "/var/lib/istio/envoy/cluster.env"
DETAILS = "details.default.svc.cluster.local"
RATINGS = "ratings.ratings.svc.cluster.local"
CALLER = istiostats.spiffe("default", "bookinfo-reviews")
DETAILS_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "details", "labels": {"app": "details"}},
                   "spec": {"selector": {"app": "details"}, "ports": [{"port": PORT, "name": "http"}]}}
# The details server: BookInfo's answer for /details/<id> (docs/facts.md section 2), 404 otherwise.
DETAILS_SERVER = r"""
import json, re, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        m = re.fullmatch(r"/details/(\d+)", self.path)
        body = json.dumps({"id": int(m.group(1)), "author": "William Shakespeare", "year": 1595,
                           "type": "paperback", "pages": 200, "publisher": "PublisherA", "language": "English",
                           "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}).encode() if m else b"{}"
        self.send_response(200 if m else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


@dataclass
class Scene:
    run: Run
    details: Attachment
    vip: str

    def user(self, command: str, step: str, check: bool = True) -> tuple[bool, str]:
        """`command` on the VM as the normal (SSH) user: its traffic is captured."""
        r = self.run.shell.run(command, step=step, check=check, timeout=20)
        return r.ok, r.stdout + r.stderr

    def stats(self, pattern: str) -> str:
        _, out = self.user(f"curl -sS -m 5 {shlex.quote('localhost:15000/stats?filter=' + pattern)}", "Envoy stats")
        return out

    def grown(self, before: dict, **want: str) -> list:
        """The grown istio_requests_total series, once those with `want`'s labels grew."""
        def rows() -> list:
            found = telemetry.grown(before, telemetry.vm_requests(self.run.shell))
            return found if telemetry.count(found, **want) else []
        return wait_for(f"istio_requests_total{want} to grow", rows, 10)

    def requests(self) -> dict:
        return telemetry.vm_requests(self.run.shell)


def d(seconds: float, what: str) -> Deadline:
    return Deadline.after(seconds, what)


def add_rule(run: Run, rule: firewall.Rule) -> str:
    c, name = run.cloud.clients, run.cfg.names.firewall(rule.purpose)
    op = insert(c, f"creating {name}", c.firewalls.insert, d(30, "rule"), lambda: None, project=c.project,
                firewall_resource=firewall.body(run.cfg, run.net, rule))
    wait_compute(c, op, f"creating {name}", d(30, "rule"))
    return name


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    require_root()
    work = tmp_path_factory.mktemp("dataplane")
    work.chmod(0o700)
    cfg = resolve(gather({"platform": "lab", "run_id": f"dp-{os.getpid()}", "artifacts_dir": str(work / "out")}, {}), {})
    lab = LabPlatform(cfg, work / "lab")
    r, server, rules = None, None, []
    try:
        r = build(cfg, lab, work)
        assert lab.backing is not None
        router = lab.backing.router
        addrs = router.addrs
        details_ip = str(addrs.vm_ip(DETAILS_HOST_NUMBER))
        assert details_ip not in {h.ip for h in router.hosts()}
        details = router.attach("dp-details", details_ip, tags=(DETAILS_TAG,))
        server = subprocess.Popen(["ip", "netns", "exec", details.netns, sys.executable, "-c", DETAILS_SERVER,
                                   details_ip, str(PORT)], stdin=subprocess.DEVNULL)
        wait_listening(details.netns, details_ip, PORT, lambda: None)
        vm_tag = cfg.names.vm_tag
        rules.append(add_rule(r, firewall.Rule("dp-vm-to-details", "test: the VM to the details host",
                                               (str(PORT),), source_tags=(vm_tag,), target_tags=(DETAILS_TAG,))))
        rules.append(add_rule(r, firewall.Rule("dp-details-to-vm", "test: the details host to the VM",
                                               (str(PORT),), source_ranges=(f"{details_ip}/32",),
                                               target_tags=(vm_tag,))))
        bookinfo.expose_ratings(r.kube)
        r.kube.apply_object(DETAILS_SERVICE, namespace="default")
        r.kube.apply_object({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                             "metadata": {"name": "details-host"},
                             "spec": {"address": details_ip, "labels": {"app": "details"}}}, namespace="default")
        assert r.cluster.runtime is not None
        yield Scene(r, details, r.cluster.runtime.registry.vip("default", "details"))
    finally:
        if r is not None:
            c = r.cloud.clients
            for name in rules:
                delete_and_wait(c, f"deleting {name}", c.firewalls.delete, d(30, "delete rule"), firewall=name)
            r.shell.close()
            r.kube.close()
        if server is not None:
            stop(server)
        if lab.backing is not None and any(h.name == "dp-details" for h in lab.backing.router.hosts()):
            lab.backing.router.detach("dp-details")
        lab.stop()


def start_agent(s: Scene) -> None:
    s.run.shell.run("systemctl restart istio", sudo=True, step="restart istio")
    sidecar.wait_ready(s.run.shell, d(30, "agent ready"), settle=1)


def test_details_by_name_through_dns_capture_and_the_outbound_listener(scene: Scene):
    start_agent(scene)
    before = scene.requests()
    ok, out = scene.user(f"curl -sS -m 5 details.default.svc:{PORT}/details/123", "curl details", check=False)
    assert ok, out
    assert json.loads(out) == {"id": 123, "author": "William Shakespeare", "year": 1595, "type": "paperback",
                               "pages": 200, "publisher": "PublisherA", "language": "English",
                               "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}
    rows = scene.grown(before, reporter="source")
    assert telemetry.count(rows, reporter="source", destination_service=DETAILS, response_code="200",
                           source_principal=istiostats.spiffe("ratings", "bookinfo-ratings"),
                           connection_security_policy="unknown") == 1, telemetry.describe(rows)
    # A real sidecar's default stats matcher creates no per-cluster stats: nor does the VM's Envoy.
    assert scene.stats(r"cluster\.outbound") == "", scene.stats("cluster")
    # A destination the mesh does not know is passed through to where it was going (ALLOW_ANY).
    ok, out = scene.user(f"curl -sS -m 5 {scene.details.ip}:{PORT}/details/7", "curl the endpoint", check=False)
    assert ok and json.loads(out)["id"] == 7, out
    rows = scene.grown(before, destination_service_name="PassthroughCluster")
    assert telemetry.count(rows, destination_service_name="PassthroughCluster", response_code="200") == 1
    assert telemetry.count(rows, destination_service=DETAILS) == 1  # unchanged: that one did not go to the VIP
    dump = scene.user("curl -sS -m 5 localhost:15000/config_dump", "config_dump")[1]
    assert '"outbound|9080||details.default.svc.cluster.local"' in dump and '"virtualInbound"' in dump


def test_inbound_request_reaches_the_vm_app_through_the_inbound_listener(scene: Scene):
    start_agent(scene)
    vm_ip, src = scene.run.vm.internal_ip, scene.details.ip
    assert_local_route(vm_ip)

    def get(tls: ssl.SSLContext | None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(vm_ip, PORT, timeout=5, source_address=(src, 0))
        try:
            conn.connect()
            if tls is not None:  # what a caller's sidecar does: its certificate, Istio's ALPN and SNI
                conn.sock = tls.wrap_socket(conn.sock, server_hostname="outbound_.9080_._.ratings.ratings.svc.cluster.local")
            conn.request("GET", "/ratings/1", headers={"Host": "ratings.ratings:9080"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    before = scene.requests()
    status, body = run_in_netns(scene.details.netns, lambda: get(None))
    assert status == 200 and json.loads(body)["id"] == 1, body
    rows = scene.grown(before, reporter="destination")
    assert telemetry.count(rows, reporter="destination", source_principal="unknown", response_code="200",
                           connection_security_policy="none", destination_service=RATINGS) == 1, \
        telemetry.describe(rows)
    # Over mutual TLS with a certificate of the mesh, the same call arrives with the caller's identity.
    status, body = run_in_netns(scene.details.netns, lambda: get(mesh_client(scene, "default", "bookinfo-reviews")))
    assert status == 200 and json.loads(body)["id"] == 1, body
    rows = scene.grown(before, connection_security_policy="mutual_tls")
    assert telemetry.count(rows, reporter="destination", source_principal=CALLER, response_code="200",
                           destination_service=RATINGS,
                           destination_principal=istiostats.spiffe("ratings", "bookinfo-ratings")) == 1, \
        telemetry.describe(rows)
    # The VM's Envoy holds the certificate of its service account, chained to the mesh root.
    certs = json.loads(scene.user("curl -sS -m 5 localhost:15000/certs", "certs")[1])["certificates"]
    sans = [s.get("uri") for c in certs for cc in c.get("cert_chain") or [] for s in cc.get("subject_alt_names") or []]
    assert istiostats.spiffe("ratings", "bookinfo-ratings") in sans, certs


def mesh_client(scene: Scene, namespace: str, service_account: str) -> ssl.SSLContext:
    ca = scene.run.cluster.mesh_ca
    pair = ca.workload(namespace, service_account)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.root_pem)
    ctx.check_hostname = False  # a sidecar checks the server's SPIFFE name, not a DNS name
    ctx.set_alpn_protocols(["istio-peer-exchange", "istio"])
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cert.write_text(pair.cert_pem)
        key.write_text(pair.key_pem)
        ctx.load_cert_chain(cert, key)
    return ctx


def test_without_dns_capture_the_name_does_not_resolve(scene: Scene):
    sh = scene.run.shell
    sh.run(f"cp -p {CLUSTER_ENV} {CLUSTER_ENV}.good && "
           f"sed -i \"s/^ISTIO_META_DNS_CAPTURE=.*/ISTIO_META_DNS_CAPTURE='false'/\" {CLUSTER_ENV}",
           sudo=True, step="no dns capture")
    try:
        start_agent(scene)
        nat = sh.run("iptables -t nat -S ISTIO_OUTPUT", sudo=True, step="nat rules").stdout
        assert "ISTIO_DNS" not in nat and "ISTIO_REDIRECT" in nat, nat
        ok, out = scene.user(f"curl -sS -m 5 details.default.svc:{PORT}/details/1", "curl by name", check=False)
        assert not ok and "resolve" in out.lower(), out
        ok, out = scene.user(f"curl -sS -m 5 {scene.vip}:{PORT}/details/2", "curl the VIP", check=False)
        assert ok and json.loads(out)["id"] == 2, out  # the control: only the name is missing
    finally:
        sh.run(f"mv {CLUSTER_ENV}.good {CLUSTER_ENV}", sudo=True, step="restore cluster.env")
    start_agent(scene)
    ok, out = scene.user(f"curl -sS -m 5 details.default.svc:{PORT}/details/3", "curl by name again", check=False)
    assert ok and json.loads(out)["id"] == 3, out


def test_capture_rules_come_with_the_agent_and_go_when_it_stops(scene: Scene):
    """As the real unit (tools/packaging/common/istio.service at 1.30.3): ExecStopPost cleans the capture."""
    sh = scene.run.shell

    def chains() -> list[str]:
        out = sh.run("iptables -t nat -S", sudo=True, step="nat rules").stdout
        return [ln for ln in out.splitlines() if "ISTIO" in ln]

    start_agent(scene)
    sh.run("systemctl restart istio", sudo=True, step="restart istio")
    sidecar.wait_ready(sh, d(30, "agent ready"), settle=1)
    running = chains()
    assert "-A OUTPUT -j ISTIO_OUTPUT" in running and "-A PREROUTING -p tcp -j ISTIO_INBOUND" in running
    assert len(running) == len(set(running)), f"rules stacked on restart: {running}"
    sh.run("systemctl stop istio", sudo=True, step="stop istio")
    assert chains() == [], "the unit's ExecStopPost removes the capture when the agent stops"
    sh.run("systemctl start istio", sudo=True, step="start istio")
    assert wait_for("the capture back with the agent", lambda: chains() == running, 10) is True
    sidecar.remove_sidecar(sh, d(60, "remove"))
    assert wait_for("no ISTIO_* nat rules after removal", lambda: chains() == [], 10) is True
