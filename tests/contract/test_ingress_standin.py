"""The ingress gateway stand-in routes by the recipe's Gateway and VirtualService, read from the
Kubernetes API stand-in, to endpoints handed out by resolve()."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from kubernetes import client

from meshvm import manifests, retry
from meshvm.deadlines import Deadline
from meshvm.kube import KubeClient
from meshvm.lab.ingress_standin import IngressGatewayStandIn
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


def connect(ip: str, port: int) -> socket.socket:
    return socket.create_connection((ip, port), timeout=5)


@pytest.fixture
def table(backends: list[Backend]) -> Table:
    t = Table()
    t.endpoints[(PRODUCTPAGE, 9080)] = [backends[0].endpoint]
    return t


@pytest.fixture
def gateway(raw: client.ApiClient, table: Table) -> Iterator[IngressGatewayStandIn]:
    gw = IngressGatewayStandIn(raw, table, connect, netns=None, port=0, host="127.0.0.1")
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def bookinfo(kube: KubeClient) -> KubeClient:
    kube.apply(manifests.text("bookinfo-gateway"), namespace="default")
    return kube


def get(gw: IngressGatewayStandIn, path: str, host: str = "35.1.2.3") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def eventually(what: str, check: Callable[[], bool]) -> None:
    retry.until(what, check, Deadline.after(10, what), initial=0.1, ceiling=0.5)


def test_productpage_routed_by_the_recipe_gateway(bookinfo: KubeClient, gateway: IngressGatewayStandIn,
                                                  table: Table) -> None:
    status, body = get(gateway, "/productpage?u=normal")
    doc = json.loads(body)
    assert status == 200 and doc["backend"] == "a" and doc["path"] == "/productpage?u=normal"
    assert doc["headers"]["host"] == "35.1.2.3" and doc["headers"]["connection"] == "close"
    assert table.asked == [(PRODUCTPAGE, 9080)]
    assert get(gateway, "/static/tailwind/tailwind.css")[0] == 200  # prefix
    assert get(gateway, "/api/v1/products/0")[0] == 200


def test_unrouted_paths_are_404(bookinfo: KubeClient, gateway: IngressGatewayStandIn, table: Table) -> None:
    assert get(gateway, "/other") == (404, b"")
    assert get(gateway, "/productpage/extra")[0] == 404  # exact, not prefix
    assert get(gateway, "/")[0] == 404
    assert table.asked == []


def test_without_config_404(kube: KubeClient, gateway: IngressGatewayStandIn) -> None:
    assert get(gateway, "/productpage")[0] == 404


def test_virtualservice_deleted_then_404(bookinfo: KubeClient, gateway: IngressGatewayStandIn) -> None:
    assert get(gateway, "/productpage")[0] == 200
    bookinfo.delete(NET, "VirtualService", "bookinfo", "default")
    eventually("route gone", lambda: get(gateway, "/productpage")[0] == 404)


def test_gateway_for_another_selector_or_port_does_not_apply(bookinfo: KubeClient,
                                                              gateway: IngressGatewayStandIn) -> None:
    assert get(gateway, "/productpage")[0] == 200
    gw = manifests.docs("bookinfo-gateway")[0]
    gw["spec"]["servers"][0]["port"]["number"] = 15443
    bookinfo.apply(yaml.safe_dump(gw), namespace="default")
    eventually("a server on 15443 does not apply", lambda: get(gateway, "/productpage")[0] == 404)
    gw["spec"]["servers"][0]["port"]["number"] = 80  # the 1.13 samples' port: applies too
    bookinfo.apply(yaml.safe_dump(gw), namespace="default")
    eventually("a server on 80 applies", lambda: get(gateway, "/productpage")[0] == 200)
    gw["spec"]["selector"] = {"istio": "eastwestgateway"}
    bookinfo.apply(yaml.safe_dump(gw), namespace="default")
    eventually("another selector does not apply", lambda: get(gateway, "/productpage")[0] == 404)


def test_no_endpoint_503(bookinfo: KubeClient, gateway: IngressGatewayStandIn, table: Table) -> None:
    table.endpoints[(PRODUCTPAGE, 9080)] = []
    status, body = get(gateway, "/productpage")
    assert (status, body) == (503, b"no healthy upstream")


def test_round_robin_and_connect_failover(bookinfo: KubeClient, gateway: IngressGatewayStandIn, table: Table,
                                          backends: list[Backend]) -> None:
    table.endpoints[(PRODUCTPAGE, 9080)] = [b.endpoint for b in backends]
    seen = {json.loads(get(gateway, "/productpage")[1])["backend"] for _ in range(4)}
    assert seen == {"a", "b"}
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, not listening: refuses
    try:
        table.endpoints[(PRODUCTPAGE, 9080)] = [f"127.0.0.1:{dead.getsockname()[1]}", backends[1].endpoint]
        assert all(get(gateway, "/productpage")[0] == 200 for _ in range(3))
        table.endpoints[(PRODUCTPAGE, 9080)] = [f"127.0.0.1:{dead.getsockname()[1]}"]
        status, body = get(gateway, "/productpage")
        assert status == 503 and b"connection failure" in body
    finally:
        dead.close()


def test_virtualservice_in_another_namespace(kube: KubeClient, gateway: IngressGatewayStandIn, table: Table) -> None:
    kube.apply(manifests.text("bookinfo-gateway"), namespace="default")
    kube.delete(NET, "VirtualService", "bookinfo", "default")
    kube.ensure_namespace("shop")
    vs = manifests.docs("bookinfo-gateway")[1]
    vs["spec"]["gateways"] = ["default/bookinfo-gateway"]
    del vs["spec"]["http"][0]["route"][0]["destination"]["port"]  # the Service's only port
    kube.apply(yaml.safe_dump(vs), namespace="shop")
    kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "productpage"},
                               "spec": {"ports": [{"port": 9080, "name": "http"}]}}), namespace="shop")
    table.endpoints[("productpage.shop.svc.cluster.local", 9080)] = table.endpoints.pop((PRODUCTPAGE, 9080))
    eventually("route via shop/bookinfo", lambda: get(gateway, "/productpage")[0] == 200)
    assert table.asked[-1] == ("productpage.shop.svc.cluster.local", 9080)


def test_stop_closes_the_listener(raw: client.ApiClient, table: Table) -> None:
    gw = IngressGatewayStandIn(raw, table, connect, netns=None, port=0, host="127.0.0.1")
    port = gw.start()
    gw.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
