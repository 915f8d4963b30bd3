"""The lab's east-west gateway, a real Envoy, passes TLS through by SNI as the control-plane model
translates the recipe's expose-istiod Gateway and VirtualService (and a revision's own VirtualService,
as a canary upgrade adds): the client's TLS reaches istiod's certificate untouched (verified against
the mesh root), a server name no chain matches is cut, and without the Gateway nothing listens."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from meshvm import manifests, retry
from meshvm.deadlines import Deadline
from meshvm.kube import KubeClient
from meshvm.lab.envoy import binary
from meshvm.lab.envoy.gateway import EASTWEST_LABELS
from meshvm.lab.envoy.gateways import EASTWEST, GatewayProxy
from meshvm.lab.meshca import MeshCa
from tests.contract.kube_fixtures import *  # noqa: F403

NET = "networking.istio.io/v1"
ISTIOD, CANARY = "istiod.istio-system.svc", "istiod-canary.istio-system.svc"
CA = MeshCa()


class Istiod:
    """A TLS server with istiod's certificate (both revisions' names) that says its name and closes."""

    def __init__(self, name: str, workdir: Path) -> None:
        pair = CA.serving([ISTIOD, CANARY])
        (workdir / f"{name}.crt").write_text(pair.cert_pem)
        (workdir / f"{name}.key").write_text(pair.key_pem)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(workdir / f"{name}.crt", workdir / f"{name}.key")
        self.name, self.sock = name, socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.tls.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(self.name.encode())
            except (OSError, ssl.SSLError):
                conn.close()


@pytest.fixture
def eastwest(kube: KubeClient, raw: client.ApiClient, tmp_path: Path) -> Iterator[tuple[GatewayProxy, int]]:
    binary.ensure(install=True)
    kube.ensure_namespace("istio-system")
    kube.apply_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istio-eastwestgateway"},
                       "spec": {"type": "LoadBalancer", "selector": EASTWEST_LABELS,
                                "ports": [{"name": "tls-istiod", "port": 15012, "targetPort": 15012}]}},
                      namespace="istio-system")
    kube.apply_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ew-0", "labels": EASTWEST_LABELS},
                       "spec": {"containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2"}]}},
                      namespace="istio-system")
    core = client.CoreV1Api(raw)
    core.patch_namespaced_service_status("istio-eastwestgateway", "istio-system",
                                         {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}})
    core.patch_namespaced_pod_status("ew-0", "istio-system", {"status": {"phase": "Running"}})
    stable, canary = Istiod("stable", tmp_path), Istiod("canary", tmp_path)
    table = {f"{ISTIOD}.cluster.local": [stable.endpoint], f"{CANARY}.cluster.local": [canary.endpoint]}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    gw = GatewayProxy(EASTWEST, raw, lambda fqdn, p: table.get(fqdn, []) if p == 15012 else [], tmp_path / "ew",
                      sockets=tmp_path / "x", netns=None, host="127.0.0.1", bind={15012: port}, admin=("127.0.0.1", 0)).start()
    yield gw, port
    gw.stop()
    stable.sock.close()
    canary.sock.close()
    assert gw.ads.nacks == [], "Envoy rejected the control plane's config"


def through(port: int, server_name: str) -> str:
    """TLS through the gateway with this server name, verified against the mesh root: who answered."""
    ctx = ssl.create_default_context(cadata=CA.root_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        return tls.recv(100).decode()


def eventually(what: str, port: int, server_name: str, want: str | type[BaseException]) -> None:
    def check() -> bool:
        try:
            return through(port, server_name) == want
        except (OSError, ssl.SSLError) as e:
            return isinstance(want, type) and isinstance(e, want)
    retry.until(what, check, Deadline.after(10, what), initial=0.1, ceiling=0.5)


def test_expose_istiod_passes_tls_for_any_name_to_istiod(kube: KubeClient, eastwest: tuple[GatewayProxy, int]) -> None:
    gw, port = eastwest
    eventually("nothing listens before expose-istiod", port, ISTIOD, ConnectionRefusedError)
    kube.apply(manifests.text("expose-istiod"), namespace="istio-system")
    eventually("istiod through the gateway", port, ISTIOD, "stable")
    assert through(port, CANARY) == "stable", "sniHosts '*' passes every server name to istiod"
    assert "cluster.outbound|" not in gw.envoy.admin("/stats"), "Istio's default stats matcher"


def test_a_revisions_own_virtualservice_routes_its_server_name(kube: KubeClient,
                                                                eastwest: tuple[GatewayProxy, int]) -> None:
    gw, port = eastwest
    gateway_doc, vs = manifests.docs("expose-istiod")
    kube.apply(yaml.safe_dump(gateway_doc), namespace="istio-system")
    vs["metadata"]["name"] = "istiod-canary-vs"
    vs["spec"]["tls"] = [{"match": [{"port": 15012, "sniHosts": [CANARY]}],
                          "route": [{"destination": {"host": f"{CANARY}.cluster.local", "port": {"number": 15012}}}]}]
    kube.apply(yaml.safe_dump(vs), namespace="istio-system")
    eventually("the canary through its own server name", port, CANARY, "canary")
    eventually("the stable name has no chain: cut", port, ISTIOD, ConnectionResetError)
    kube.delete(NET, "VirtualService", "istiod-canary-vs", "istio-system")
    eventually("no route at all: no listener", port, CANARY, ConnectionRefusedError)
