"""Two lab sidecars, each a real Envoy in its own network namespace with istio-iptables' REDIRECT capture,
configured by the sidecar model (meshvm/lab/envoy/sidecar.py): a client workload (namespace default,
service account bookinfo-reviews) calls the `ratings` Service's ClusterIP; its Envoy sends the call over
mutual TLS to the server workload's Envoy (namespace ratings, service account bookinfo-ratings), which
hands it to the app. What is asserted is Envoy's own behaviour under the model's config: the identity
the server's Envoy forwards (x-forwarded-client-cert), the certificate on /certs, STRICT refusing a
plaintext client, RBAC's 403."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshvm import mesh_security, retry
from meshvm.deadlines import Deadline
from meshvm.lab import addressing
from meshvm.lab.envoy import binary, sidecar
from meshvm.lab.envoy.proxy import Node
from meshvm.lab.envoy.sidecars import SidecarProxy
from meshvm.lab.leaks import socket_dir
from meshvm.lab.meshca import MeshCa
from meshvm.lab.netsafety import run_ip
from meshvm.seams import Result
from tests.root import require_root

APP = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(("0.0.0.0", 9080), H).serve_forever()
"""
READER, SERVER_SA = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews", "bookinfo-ratings"


@dataclass
class Mesh:
    client: SidecarProxy
    server: SidecarProxy
    client_ns: str
    vip: str
    server_ip: str
    policies: sidecar.SidecarInputs

    def curl(self, target: str, *, netns: str | None = None) -> tuple[int, str]:
        r = subprocess.run(["ip", "netns", "exec", netns or self.client_ns, "curl", "-sS", "-m", "5",  # noqa: S607
                            "-o", "/dev/stdout", "-w", "\n%{http_code}", f"http://{target}/"],
                           capture_output=True, text=True, timeout=15, check=False)
        return mesh_security.status_body(Result(r.returncode, r.stdout, r.stderr))


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    require_root()
    binary.ensure(install=True)
    addrs = addressing.allocate(f"pytest-sidecar-{os.getpid()}")
    c_ns, s_ns = f"{addrs.tag}sc", f"{addrs.tag}ss"
    net = addrs.pod_range
    c_ip, s_ip, vip = str(net.network_address + 2), str(net.network_address + 3), str(addrs.service_range.network_address + 10)
    app: subprocess.Popen[bytes] | None = None
    proxies: list[SidecarProxy] = []
    try:
        run_ip("link", "add", f"{addrs.tag}c0", "type", "veth", "peer", "name", f"{addrs.tag}s0")
        run_ip("netns", "add", c_ns)
        run_ip("netns", "add", s_ns)
        run_ip("link", "set", f"{addrs.tag}c0", "netns", c_ns)
        run_ip("link", "set", f"{addrs.tag}s0", "netns", s_ns)
        for ns, ip, dev in ((c_ns, c_ip, f"{addrs.tag}c0"), (s_ns, s_ip, f"{addrs.tag}s0")):
            for args in (("link", "set", "lo", "up"), ("addr", "add", f"{ip}/24", "dev", dev), ("link", "set", dev, "up")):
                run_ip(*args, netns=ns)
        run_ip("route", "add", str(addrs.service_range), "dev", f"{addrs.tag}c0", netns=c_ns)  # a VIP is routable
        # istio-iptables' REDIRECT capture, the parts that matter here: outbound to the service range -> 15001;
        # every inbound connection -> 15006
        _iptables(c_ns, "OUTPUT", "-d", str(addrs.service_range), "-j", "REDIRECT", "--to-ports", "15001")
        _iptables(s_ns, "PREROUTING", "-j", "REDIRECT", "--to-ports", "15006")
        app = subprocess.Popen(["ip", "netns", "exec", s_ns, sys.executable, "-c", APP])  # noqa: S603,S607
        ca = MeshCa()
        svc = {"metadata": {"name": "ratings", "namespace": "ratings"}, "spec": {
            "clusterIP": vip, "selector": {"app": "ratings"}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}}
        policies = sidecar.SidecarInputs([svc], [], [])
        endpoints = lambda fqdn, port: [sidecar.Endpoint(f"{s_ip}:9080", f"spiffe://cluster.local/ns/ratings/sa/{SERVER_SA}")]  # noqa: E731
        for name, ns, sa, ip, labels, netns in (("client", "default", "bookinfo-reviews", c_ip, {"app": "reviews"}, c_ns),
                                                 ("server", "ratings", SERVER_SA, s_ip, {"app": "ratings"}, s_ns)):
            node = Node("sidecar", ip, f"{labels['app']}-0", ns, labels["app"], labels)
            proxies.append(SidecarProxy(node, sa, ca, lambda: policies, endpoints, tmp_path / name,
                                        sockets=Path(socket_dir(addrs.tag, name)), netns=netns).start())
        yield Mesh(proxies[0], proxies[1], c_ns, vip, s_ip, policies)
    finally:
        for p in proxies:
            p.stop()
        if app is not None:
            app.kill()
            app.wait(5)
        for ns in (c_ns, s_ns):
            run_ip("netns", "del", ns, check=False)
        addrs.release()
    assert [n for p in proxies for n in p.ads.nacks] == [], "Envoy rejected the sidecar model's config"


def _iptables(netns: str, chain: str, *rule: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "iptables", "-t", "nat", "-A", chain, "-p", "tcp", *rule],  # noqa: S603,S607
                   check=True, capture_output=True, timeout=10)


def answers(mesh: Mesh, target: str, code: int, body: str | None = None) -> tuple[int, str]:
    """Wait until a call from the client's namespace gets `code` (and `body`); its answer."""
    return retry.until(f"{code} from {target}", lambda: mesh.curl(target), Deadline.after(15, f"{code} from {target}"),
                       accept=lambda r: r[0] == code and body in (None, r[1]), initial=0.1, ceiling=0.5)


def test_a_call_through_the_sidecars_is_mutual_tls_with_both_identities(mesh: Mesh) -> None:
    headers = json.loads(answers(mesh, f"{mesh.vip}:9080", 200)[1])
    xfcc = headers.get("x-forwarded-client-cert", "")
    assert f"URI={READER}" in xfcc, f"the server's Envoy saw no client certificate of reviews: {xfcc!r}"
    assert "spiffe://cluster.local/ns/ratings/sa/bookinfo-ratings" in xfcc  # By=: the server's own identity
    certs = json.loads(mesh.server.envoy.admin("/certs"))["certificates"]
    sans = [s.get("uri") for c in certs for cc in c.get("cert_chain") or [] for s in cc.get("subject_alt_names") or []]
    assert "spiffe://cluster.local/ns/ratings/sa/bookinfo-ratings" in sans


def test_permissive_takes_plaintext_strict_refuses_it(mesh: Mesh) -> None:
    plain = json.loads(answers(mesh, f"{mesh.server_ip}:9080", 200)[1])
    assert "x-forwarded-client-cert" not in plain, "a plaintext client has no certificate to forward"
    mesh.policies.peer_authentications.append(
        {"metadata": {"name": "default", "namespace": "ratings"}, "spec": {"mtls": {"mode": "STRICT"}}})
    assert mesh_security.refused(answers(mesh, f"{mesh.server_ip}:9080", 0))  # closed: no HTTP answer
    answers(mesh, f"{mesh.vip}:9080", 200)  # the mesh path works under STRICT


def test_authorization_allows_the_named_principal_only_and_deny_wins(mesh: Mesh) -> None:
    answers(mesh, f"{mesh.vip}:9080", 200)
    allow = {"metadata": {"name": "ratings-readers", "namespace": "ratings"}, "spec": {
        "selector": {"matchLabels": {"app": "ratings"}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]}]}}
    mesh.policies.authorization_policies.append(allow)
    answers(mesh, f"{mesh.vip}:9080", 403, "RBAC: access denied")  # reviews is not productpage
    allow["spec"]["rules"][0]["from"][0]["source"]["principals"].append(READER.removeprefix("spiffe://"))
    answers(mesh, f"{mesh.vip}:9080", 200)
    mesh.policies.authorization_policies.append({"metadata": {"name": "no-default", "namespace": "ratings"}, "spec": {
        "action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["default"]}}]}]}})
    answers(mesh, f"{mesh.vip}:9080", 403, "RBAC: access denied")  # a DENY of its namespace wins over its ALLOW
    stats = mesh.server.envoy.admin("/stats?filter=rbac")
    assert "rbac.denied" in stats
