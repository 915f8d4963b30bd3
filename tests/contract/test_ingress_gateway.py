"""The lab's ingress gateway, a real Envoy, routes by the recipe's Gateway and VirtualService as the
control-plane model translates them (read from the Kubernetes API stand-in) to endpoints handed out by
the mesh registry; it answers only on the gateway Service's load-balancer address (127.0.0.1 here,
where it listens) with a Running pod behind it. Envoy's own answers: 404 without a route, 503 without
an endpoint, retries on a refused connection."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from meshvm import manifests, retry
from meshvm.deadlines import Deadline
from meshvm.kube import KubeClient
from meshvm.lab.envoy import binary
from meshvm.lab.envoy.gateway import GATEWAY_LABELS
from meshvm.lab.envoy.gateways import INGRESS, GatewayProxy
from tests.contract.kube_fixtures import *  # noqa: F403

NET = "networking.istio.io/v1"
PRODUCTPAGE = "productpage.default.svc.cluster.local"


class Backend:
    """An HTTP server answering with its name, the path and the headers it got."""

    def __init__(self, name: str) -> None:
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.hits += 1
                body = json.dumps({"backend": name, "path": self.path,
                                   "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    made = [Backend("a"), Backend("b")]
    yield made
    for b in made:
        b.close()


class Table:
    """resolve(): what the mesh knows, editable by the test; remembers what was asked."""

    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, int], list[str]] = {}
        self.asked: list[tuple[str, int]] = []

    def __call__(self, fqdn: str, port: int) -> list[str]:
        self.asked.append((fqdn, port))
        return list(self.endpoints.get((fqdn, port), []))


@pytest.fixture
def table(backends: list[Backend]) -> Table:
    t = Table()
    t.endpoints[(PRODUCTPAGE, 9080)] = [backends[0].endpoint]
    return t


class GatewayService:
    """The istio-ingressgateway Service (its load-balancer address) and its pod, as the load-balancer
    controller and the Deployment controller leave them; the test moves the address or the pod."""

    def __init__(self, kube: KubeClient, raw: client.ApiClient) -> None:
        self.core = client.CoreV1Api(raw)
        kube.ensure_namespace("istio-system")
        kube.apply_object({"apiVersion": "v1", "kind": "Service",
                           "metadata": {"name": "istio-ingressgateway", "labels": GATEWAY_LABELS},
                           "spec": {"type": "LoadBalancer", "selector": GATEWAY_LABELS,
                                    "ports": [{"name": "http2", "port": 80, "targetPort": 8080}]}},
                          namespace="istio-system")
        kube.apply_object({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": "istio-ingressgateway-0", "labels": GATEWAY_LABELS},
                           "spec": {"containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2"}]}},
                          namespace="istio-system")
        self.address("127.0.0.1")
        self.pod("Running")

    def address(self, ip: str) -> None:
        self.core.patch_namespaced_service_status("istio-ingressgateway", "istio-system",
                                                  {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})

    def pod(self, phase: str) -> None:
        self.core.patch_namespaced_pod_status("istio-ingressgateway-0", "istio-system", {"status": {"phase": phase}})


@pytest.fixture
def lb(kube: KubeClient, raw: client.ApiClient) -> GatewayService:
    return GatewayService(kube, raw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(raw: client.ApiClient, table: Table, workdir: Path) -> GatewayProxy:
    binary.ensure(install=True)
    return GatewayProxy(INGRESS, raw, table, workdir, sockets=workdir / "x", netns=None, host="127.0.0.1",
                        bind={80: free_port()},
                        admin=("127.0.0.1", 0)).start()


@pytest.fixture
def gateway(raw: client.ApiClient, table: Table, lb: GatewayService, tmp_path: Path) -> Iterator[GatewayProxy]:
    gw = start(raw, table, tmp_path)
    yield gw
    gw.stop()
    assert gw.ads.nacks == [], "Envoy rejected the control plane's config"


@pytest.fixture
def bookinfo(kube: KubeClient) -> KubeClient:
    kube.apply(manifests.text("bookinfo-gateway"), namespace="default")
    return kube


def get(gw: GatewayProxy, path: str, host: str = "35.1.2.3") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.bind[80], timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def eventually(what: str, check: Callable[[], bool]) -> None:
    """Config reaches Envoy within a second or two (read, pushed over ADS, applied)."""
    retry.until(what, check, Deadline.after(10, what), transient=(OSError, http.client.HTTPException),
                initial=0.1, ceiling=0.5)


def status(gw: GatewayProxy, path: str) -> int:
    return get(gw, path)[0]


def stat(gw: GatewayProxy, name: str) -> int:
    """A counter from Envoy's admin /stats (0 while Envoy has not created it)."""
    for line in gw.envoy.admin(f"/stats?filter=^{name}$").splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def test_productpage_routed_by_the_recipe_gateway(bookinfo: KubeClient, gateway: GatewayProxy,
                                                  table: Table) -> None:
    eventually("routed", lambda: status(gateway, "/productpage") == 200)
    status_, body = get(gateway, "/productpage?u=normal")
    doc = json.loads(body)
    assert status_ == 200 and doc["backend"] == "a" and doc["path"] == "/productpage?u=normal"
    assert doc["headers"]["host"] == "35.1.2.3" and doc["headers"]["x-forwarded-proto"] == "http"
    assert doc["headers"].get("x-request-id"), "Envoy's HTTP connection manager adds a request id"
    assert (PRODUCTPAGE, 9080) in table.asked
    assert status(gateway, "/static/tailwind/tailwind.css") == 200  # prefix
    assert status(gateway, "/api/v1/products/0") == 200


def test_the_proxy_is_envoy_configured_as_istio_names_it(bookinfo: KubeClient, gateway: GatewayProxy) -> None:
    eventually("routed", lambda: status(gateway, "/productpage") == 200)
    assert gateway.envoy.server_info()["command_line_options"]["disable_hot_restart"] is True
    assert gateway.envoy.server_info()["version"].split("/")[1].startswith(binary.VERSION.rsplit(".", 1)[0])
    dump = json.loads(gateway.envoy.admin("/config_dump"))
    text = json.dumps(dump)
    assert '"0.0.0.0_8080"' in text and '"http.8080"' in text and '"outbound|9080||' + PRODUCTPAGE + '"' in text
    stats = gateway.envoy.admin("/stats")
    assert "cluster.outbound|" not in stats, "Istio's default stats matcher keeps no per-cluster stats"
    assert "cluster.xds-grpc." in stats and "server.live" in stats


def test_unrouted_paths_are_404(bookinfo: KubeClient, gateway: GatewayProxy) -> None:
    eventually("routed", lambda: status(gateway, "/productpage") == 200)
    assert get(gateway, "/other") == (404, b"")
    assert status(gateway, "/productpage/extra") == 404  # exact, not prefix
    assert status(gateway, "/") == 404


def test_without_a_gateway_no_listener(kube: KubeClient, gateway: GatewayProxy) -> None:
    """istiod builds a gateway's listeners from its Gateway servers only: none, nothing listens."""
    eventually("the first LDS answer applied", lambda: stat(gateway, "listener_manager.lds.update_success") >= 1)
    assert '"0.0.0.0_8080"' not in gateway.envoy.admin("/listeners?format=json")
    assert closed(gateway)


def test_virtualservice_deleted_then_404(bookinfo: KubeClient, gateway: GatewayProxy) -> None:
    eventually("routed", lambda: status(gateway, "/productpage") == 200)
    bookinfo.delete(NET, "VirtualService", "bookinfo", "default")
    eventually("route gone", lambda: status(gateway, "/productpage") == 404)


def test_gateway_for_another_selector_or_port_does_not_apply(bookinfo: KubeClient, gateway: GatewayProxy) -> None:
    eventually("routed", lambda: status(gateway, "/productpage") == 200)
    gw = manifests.docs("bookinfo-gateway")[0]
    gw["spec"]["servers"][0]["port"]["number"] = 15443
    bookinfo.apply(yaml.safe_dump(gw), namespace="default")
    eventually("a server on 15443 does not apply", lambda: closed(gateway))
    gw["spec"]["servers"][0]["port"]["number"] = 80  # the 1.13 samples' port: applies too
    bookinfo.apply(yaml.safe_dump(gw), namespace="default")
    eventually("a server on 80 applies", lambda: status(gateway, "/productpage") == 200)
    gw["spec"]["selector"] = {"istio": "eastwestgateway"}
    bookinfo.apply(yaml.safe_dump(gw), namespace="default")
    eventually("another selector does not apply", lambda: closed(gateway))


def test_no_endpoint_503(bookinfo: KubeClient, gateway: GatewayProxy, table: Table) -> None:
    table.endpoints[(PRODUCTPAGE, 9080)] = []
    eventually("no healthy upstream", lambda: get(gateway, "/productpage") == (503, b"no healthy upstream"))


def test_round_robin_and_connect_failover(bookinfo: KubeClient, gateway: GatewayProxy, table: Table,
                                          backends: list[Backend]) -> None:
    table.endpoints[(PRODUCTPAGE, 9080)] = [b.endpoint for b in backends]
    eventually("both endpoints", lambda: {json.loads(get(gateway, "/productpage")[1])["backend"]
                                          for _ in range(6)} == {"a", "b"})
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, not listening: refuses
    try:
        table.endpoints[(PRODUCTPAGE, 9080)] = [f"127.0.0.1:{dead.getsockname()[1]}", backends[1].endpoint]
        eventually("the refusing endpoint in", lambda: len(json.loads(gateway.envoy.admin("/clusters?format=json"))
                                                           ["cluster_statuses"][0]["host_statuses"]) == 2)
        assert all(status(gateway, "/productpage") == 200 for _ in range(6)), "a refused connect is retried elsewhere"
        table.endpoints[(PRODUCTPAGE, 9080)] = [f"127.0.0.1:{dead.getsockname()[1]}"]
        eventually("only the refusing endpoint", lambda: status(gateway, "/productpage") == 503)
        assert b"connection failure" in get(gateway, "/productpage")[1]
    finally:
        dead.close()


def test_virtualservice_in_another_namespace(kube: KubeClient, gateway: GatewayProxy, table: Table) -> None:
    # The Gateway alone in default: shop's VirtualService is the only route that ever exists, so a 200
    # can only come through it (an applied-then-deleted default one still answered under load: CI19).
    gateway_doc, vs = manifests.docs("bookinfo-gateway")
    kube.apply(yaml.safe_dump(gateway_doc), namespace="default")
    kube.ensure_namespace("shop")
    vs["spec"]["gateways"] = ["default/bookinfo-gateway"]
    del vs["spec"]["http"][0]["route"][0]["destination"]["port"]  # the Service's only port
    kube.apply(yaml.safe_dump(vs), namespace="shop")
    kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "productpage"},
                               "spec": {"ports": [{"port": 9080, "name": "http"}]}}), namespace="shop")
    table.endpoints[("productpage.shop.svc.cluster.local", 9080)] = table.endpoints.pop((PRODUCTPAGE, 9080))
    eventually("route via shop/bookinfo", lambda: status(gateway, "/productpage") == 200)
    assert ("productpage.shop.svc.cluster.local", 9080) in table.asked


def closed(gw: GatewayProxy) -> bool:
    """The connection is closed or refused without an answer (nothing serves that address on GKE)."""
    try:
        get(gw, "/productpage")
    except (ConnectionError, http.client.RemoteDisconnected):
        return True
    return False


def test_answers_only_on_the_services_load_balancer_address(bookinfo: KubeClient, gateway: GatewayProxy,
                                                            lb: GatewayService) -> None:
    """Listening on 127.0.0.1: served while 127.0.0.1 is the Service's address, not while 127.0.0.2 is."""
    eventually("routed", lambda: status(gateway, "/productpage") == 200)
    lb.address("127.0.0.2")
    eventually("closed on an address that is not the Service's", lambda: closed(gateway))
    assert closed(gateway)
    lb.address("127.0.0.1")
    eventually("served on the Service's address again", lambda: not closed(gateway))
    assert status(gateway, "/productpage") == 200


def test_no_running_gateway_pod_closes(bookinfo: KubeClient, gateway: GatewayProxy, lb: GatewayService) -> None:
    eventually("routed", lambda: status(gateway, "/productpage") == 200)
    lb.pod("Pending")
    eventually("closed without a Running gateway pod", lambda: closed(gateway))
    lb.pod("Running")
    eventually("served once the pod runs", lambda: not closed(gateway))


def test_a_service_without_port_80_or_for_other_pods_does_not_count(
        bookinfo: KubeClient, gateway: GatewayProxy, lb: GatewayService) -> None:
    eventually("routed", lambda: status(gateway, "/productpage") == 200)
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istio-ingressgateway"},
           "spec": {"type": "LoadBalancer", "selector": GATEWAY_LABELS,
                    "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}
    bookinfo.apply_object(svc, namespace="istio-system")
    eventually("closed without port 80", lambda: closed(gateway))
    svc["spec"].update(selector={"istio": "eastwestgateway"}, ports=[{"name": "http2", "port": 80, "targetPort": 8080}])
    bookinfo.apply_object(svc, namespace="istio-system")
    eventually("closed for another gateway's Service", lambda: closed(gateway))
    svc["spec"]["selector"] = GATEWAY_LABELS
    bookinfo.apply_object(svc, namespace="istio-system")
    eventually("served again", lambda: not closed(gateway))


def test_stop_ends_envoy_and_the_listener(raw: client.ApiClient, table: Table, lb: GatewayService,
                                          bookinfo: KubeClient, tmp_path: Path) -> None:
    gw = start(raw, table, tmp_path)
    port = gw.bind[80]
    eventually("served before the stop", lambda: status(gw, "/productpage") == 200)
    gw.stop()
    assert gw.envoy.proc is not None and gw.envoy.proc.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
