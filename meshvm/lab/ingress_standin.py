"""lab STAND-IN for the routing Envoy does in `istio-ingressgateway` (not Envoy): HTTP/1.1 in, one
request per connection, routed by the Gateway and VirtualService objects read from the Kubernetes
API, spliced to an endpoint of the destination Service (docs/facts.md section 2: bookinfo-gateway).

What it models, and nothing more:
- it stands for the gateway's load-balancer address: a connection is served only when its local
  address (where the client connected) is a `status.loadBalancer.ingress[].ip` of a LoadBalancer
  Service (istio-system's `istio-ingressgateway`, or any whose selector is a non-empty subset of the
  gateway pods' labels below) with port 80, and a Running pod matching that Service's selector
  exists in its namespace (the Deployment controller's pods); otherwise it is closed unanswered,
  as nothing listens on a node's other addresses on GKE (the reason logged at INFO);
- it listens on the ingress gateway Service's port (80; the Service maps it to the pods' 8080), so a
  Gateway server applies when its port.number is 80 (Istio 1.13 samples) or 8080 (>= 1.2x samples) and
  its protocol HTTP; a Gateway applies when its spec.selector is a subset of the gateway pods' labels
  (`istio: ingressgateway`, `app: istio-ingressgateway`);
- server hosts and VirtualService hosts match the request's Host: "*", "*.suffix" or exact, with a
  server host's `ns/` part ("*", "." or a namespace) limiting which VirtualServices may bind;
- VirtualServices bind with spec.gateways `<name>` (in their own namespace) or `<ns>/<name>`; their
  http[] rules are tried in order (VirtualServices oldest first), a rule matching when it has no
  match or one whose uri exact/prefix/regex matches the path (a match with other conditions is not
  modelled and never matches); the first matching rule decides;
- its route's destination (weights honoured; a short host is `<host>.<vs ns>.svc.cluster.local`; no
  port means the Service's only port) goes to `resolve(fqdn, port)` for "ip:port" endpoints, taken
  round robin, connect failures tried on the next one, as Envoy does;
- no route: 404 with an empty body (Envoy's answer); no endpoint: 503 `no healthy upstream`; every
  endpoint refusing: 503 `upstream connect error ...`.
The request goes upstream as read, with `connection: close` instead of its hop-by-hop headers.
Config (Gateways, VirtualServices, LoadBalancer Services, gateway pods) is read through the API at
most once a second; when the API fails, the last config read stays in force (Envoy keeps its last
xDS push).
"""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from meshvm.lab import hostsys, istio_match
from meshvm.lab.standins import meshwire

log = logging.getLogger(__name__)

GATEWAY_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
GATEWAY_PORTS = (80, 8080)  # the Service port and its targetPort: a server on either applies here
SERVICE_PORT = 80  # the Service port the listener stands for (whatever port it was given)
HTTP_PROTOCOLS = ("HTTP", "HTTP2")
CONFIG_TTL_S = 1.0
API_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0  # for the request head
HEAD_LIMIT = 64 * 1024
STOP_JOIN_S = 5.0
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection"}  # replaced by `connection: close`
_NET = ("networking.istio.io", "v1")


@dataclass(frozen=True)
class Destination:
    host: str  # FQDN
    port: int | None  # None: the Service has no single port to default to


class _Config(NamedTuple):
    gateways: list[dict]
    virtual_services: list[dict]
    services: list[dict]  # LoadBalancer Services selecting the gateway pods, with port 80
    pods: list[dict]  # Running gateway pods


_NO_CONFIG = _Config([], [], [], [])


class IngressGatewayStandIn:
    def __init__(self, api: client.ApiClient, resolve: Callable[[str, int], list[str]],
                 connect: Callable[[str, int], socket.socket], *, netns: str | None, port: int = 80,
                 host: str = "0.0.0.0") -> None:
        self.api, self.resolve, self.connect = api, resolve, connect
        self.netns, self.port, self.host = netns, port, host  # port 0: any free one, known after start()
        self._rr = meshwire.RoundRobin()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._config_lock = threading.Lock()
        self._config = _NO_CONFIG
        self._config_at = float("-inf")

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> int:
        """Listen and serve; returns the port listened on."""
        listener = hostsys.run_in_netns(self.netns, self._listen) if self.netns else self._listen()
        self._listener, self.port = listener, listener.getsockname()[1]
        self._stop.clear()
        self._accepting = threading.Thread(target=self._accept_loop, name="ingress-standin", daemon=True)
        self._accepting.start()
        log.info("ingress gateway stand-in listening on %s:%d%s", self.host, self.port,
                 f" in netns {self.netns}" if self.netns else "")
        return self.port

    def stop(self) -> None:
        self._stop.set()
        if self._listener:
            self._listener.close()
        if self._accepting:
            self._accepting.join(STOP_JOIN_S)
        with self._lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            workers = list(self._workers)
        deadline = time.monotonic() + STOP_JOIN_S
        for t in workers:
            t.join(max(0.0, deadline - time.monotonic()))

    def _listen(self) -> socket.socket:
        s = meshwire.bound(self.host, self.port)
        s.settimeout(0.5)
        return s

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="ingress-conn", daemon=True)
            with self._lock:
                self._workers = {w for w in self._workers if w.is_alive()} | {t}
            t.start()

    def _track(self, *socks: socket.socket, on: bool = True) -> None:
        with self._lock:
            for s in socks:
                (self._open.add if on else self._open.discard)(s)

    # -- one connection, one request -----------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        self._track(conn)
        upstream: socket.socket | None = None
        try:
            local = conn.getsockname()[0]
            problem = self.address_problem(local)
            if problem is not None:
                log.info("ingress stand-in: closed a connection to %s unanswered: %s", local, problem)
                return
            conn.settimeout(READ_TIMEOUT_S)
            head, rest = _read_head(conn)
            if head is None:
                return
            try:
                method, target, headers = _parse_head(head)
            except ValueError:
                return _respond(conn, 400, "Bad Request", b"bad request\n")
            path = urlsplit(target).path if "://" in target else target.split("?", 1)[0]
            authority = headers.get("host") or (urlsplit(target).netloc if "://" in target else "")
            dest = self.route(authority, path)
            if dest is None:
                return _respond(conn, 404, "Not Found")
            endpoints = self.resolve(dest.host, dest.port) if dest.port else []
            if not endpoints:
                return _respond(conn, 503, "Service Unavailable", b"no healthy upstream")
            upstream = self._connect_any(f"{dest.host}:{dest.port}", endpoints)
            if upstream is None:
                return _respond(conn, 503, "Service Unavailable",
                                b"upstream connect error or disconnect/reset before headers. "
                                b"reset reason: connection failure")
            self._track(upstream)
            upstream.sendall(_upstream_head(head) + rest)
            conn.settimeout(None)
            meshwire.splice(conn, upstream)
        except OSError as e:
            log.debug("ingress stand-in connection ended: %s", e)
        finally:
            self._track(conn, *([upstream] if upstream else []), on=False)
            conn.close()
            if upstream:
                upstream.close()

    def _connect_any(self, key: str, endpoints: list[str]) -> socket.socket | None:
        for ep in self._rr.order(key, endpoints):
            ip, _, port = ep.rpartition(":")
            try:
                return self.connect(ip, int(port))
            except (OSError, ValueError) as e:
                log.info("ingress stand-in: %s refused (%s), trying the next endpoint", ep, e)
        return None

    # -- the load-balancer address ------------------------------------------------------------------

    def address_problem(self, local: str) -> str | None:
        """None when `local` is a gateway Service's load-balancer address with a Running pod behind it."""
        cfg = self._read_config()
        services = [svc for svc in cfg.services if local in istio_match.lb_ips(svc)]
        if not services:
            return (f"{local} is not the load-balancer address of a LoadBalancer Service with port "
                    f"{SERVICE_PORT} selecting the ingress gateway pods")
        if not any(_selected(pod, svc) for svc in services for pod in cfg.pods):
            names = ", ".join(f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in services)
            return f"no Running pod behind Service {names}"
        return None

    # -- routing -------------------------------------------------------------------------------------

    def route(self, authority: str, path: str) -> Destination | None:
        """Where a request for this Host and path goes, or None (no route: 404)."""
        host = _strip_port(authority).lower()
        gateways, virtual_services, _, _ = self._read_config()
        bound = [(gw, srv) for gw in gateways if _selects_us(gw) for srv in _servers_here(gw)
                 if any(istio_match.host_matches(_host_part(h), host) for h in srv.get("hosts") or [])]
        if not bound:
            return None
        for vs in virtual_services:
            vs_ns = vs["metadata"].get("namespace", "default")
            spec = vs.get("spec") or {}
            if not any(_binds(ref, vs_ns, gw, srv) for ref in spec.get("gateways") or [] for gw, srv in bound):
                continue
            if not any(istio_match.host_matches(h, host) for h in spec.get("hosts") or []):
                continue
            for rule in spec.get("http") or []:
                if not _rule_matches(rule, path):
                    continue
                return self._destination(rule, vs_ns)
        return None

    def _destination(self, rule: dict, vs_ns: str) -> Destination | None:
        routes = [r for r in rule.get("route") or [] if (r.get("destination") or {}).get("host")]
        if not routes:
            return None  # redirect, directResponse...: not modelled
        weights = [r.get("weight", 100 if len(routes) == 1 else 0) for r in routes]
        chosen = random.choices(routes, weights)[0] if sum(weights) > 0 else routes[0]
        d = chosen["destination"]
        fqdn = d["host"] if "." in d["host"] else f"{d['host']}.{vs_ns}.{meshwire.DOMAIN}"
        port = (d.get("port") or {}).get("number")
        return Destination(fqdn, int(port) if port else self._only_port(fqdn))

    def _only_port(self, fqdn: str) -> int | None:
        name, _, rest = fqdn.partition(".")
        ns, _, domain = rest.partition(".")
        if domain != meshwire.DOMAIN:
            return None
        try:
            svc = client.CoreV1Api(self.api).read_namespaced_service(name, ns, _request_timeout=API_TIMEOUT_S)
        except (ApiException, urllib3.exceptions.HTTPError, OSError):
            return None
        ports = (svc.spec.ports if svc.spec else None) or []
        return ports[0].port if len(ports) == 1 else None

    def _read_config(self) -> _Config:
        with self._config_lock:
            if time.monotonic() - self._config_at < CONFIG_TTL_S:
                return self._config
            api, core = client.CustomObjectsApi(self.api), client.CoreV1Api(self.api)
            try:
                gateways = cast(dict, api.list_cluster_custom_object(*_NET, "gateways", _request_timeout=API_TIMEOUT_S))
                vss = cast(dict, api.list_cluster_custom_object(*_NET, "virtualservices", _request_timeout=API_TIMEOUT_S))
                services = core.list_service_for_all_namespaces(_request_timeout=API_TIMEOUT_S)
                pods = core.list_pod_for_all_namespaces(_request_timeout=API_TIMEOUT_S)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                log.warning("ingress stand-in: reading the gateway's config failed, keeping the last: %s", e)
                return self._config
            items = sorted(vss.get("items") or [], key=lambda o: (
                o["metadata"].get("creationTimestamp") or "", o["metadata"].get("namespace", ""),
                o["metadata"]["name"]))
            to_dict = self.api.sanitize_for_serialization
            lbs = [svc for svc in map(to_dict, services.items) if _is_gateway_lb(svc)]
            running = [pod for pod in map(to_dict, pods.items) if (pod.get("status") or {}).get("phase") == "Running"]
            self._config = _Config(gateways.get("items") or [], items, lbs, running)
            self._config_at = time.monotonic()
            return self._config


# -- matching ----------------------------------------------------------------------------------------


def _is_gateway_lb(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    selector = spec.get("selector") or {}
    return (spec.get("type") == "LoadBalancer" and bool(selector) and istio_match.selects(selector, GATEWAY_LABELS)
            and SERVICE_PORT in [p.get("port") for p in spec.get("ports") or []])


def _selected(pod: dict, svc: dict) -> bool:
    return (pod.get("metadata") or {}).get("namespace") == svc["metadata"].get("namespace") and istio_match.selects(
        (svc.get("spec") or {}).get("selector") or {}, (pod.get("metadata") or {}).get("labels") or {})


def _selects_us(gw: dict) -> bool:
    return istio_match.selects((gw.get("spec") or {}).get("selector") or {}, GATEWAY_LABELS)


def _servers_here(gw: dict) -> list[dict]:
    return [s for s in (gw.get("spec") or {}).get("servers") or []
            if (s.get("port") or {}).get("number") in GATEWAY_PORTS
            and str((s.get("port") or {}).get("protocol", "")).upper() in HTTP_PROTOCOLS]


def _host_part(server_host: str) -> str:
    return server_host.split("/", 1)[1] if "/" in server_host else server_host


def _binds(ref: str, vs_ns: str, gw: dict, server: dict) -> bool:
    """Does the VirtualService's gateway reference name this Gateway, and may it bind to this server?"""
    if not istio_match.names_gateway(ref, vs_ns, gw):
        return False
    gw_ns = gw["metadata"].get("namespace", "default")
    allowed = {h.split("/", 1)[0] for h in server.get("hosts") or [] if "/" in h}
    if not allowed or any("/" not in h for h in server.get("hosts") or []):
        return True
    return "*" in allowed or vs_ns in allowed or ("." in allowed and vs_ns == gw_ns)


def _rule_matches(rule: dict, path: str) -> bool:
    matches = rule.get("match") or []
    return not matches or any(_match(m, path) for m in matches)


def _match(m: dict, path: str) -> bool:
    if set(m) - {"uri", "name"}:
        return False  # headers, methods, ports... not modelled
    uri = m.get("uri") or {}
    if "exact" in uri:
        return path == uri["exact"]
    if "prefix" in uri:
        return path.startswith(uri["prefix"])
    if "regex" in uri:
        return re.fullmatch(uri["regex"], path) is not None
    return True


# -- HTTP/1.1 ----------------------------------------------------------------------------------------


def _read_head(conn: socket.socket) -> tuple[bytes | None, bytes]:
    """(request line and headers up to the blank line, bytes read past it); None head on EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_LIMIT:
            _respond(conn, 431, "Request Header Fields Too Large")
            return None, b""
        data = conn.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(version)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, sep, v = line.partition(":")
            if not sep:
                raise ValueError(line)
            headers[k.strip().lower()] = v.strip()
    return method, target, headers


def _upstream_head(head: bytes) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    kept = [lines[0]] + [ln for ln in lines[1:] if ln and ln.partition(":")[0].strip().lower() not in _HOP_BY_HOP]
    return ("\r\n".join(kept + ["connection: close", "", ""])).encode("latin-1")


def _strip_port(authority: str) -> str:
    if authority.startswith("["):
        return authority.split("]", 1)[0] + "]"
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def _respond(conn: socket.socket, status: int, reason: str, body: bytes = b"") -> None:
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-length: {len(body)}\r\n"
            + ("content-type: text/plain\r\n" if body else "")
            + f"date: {formatdate(usegmt=True)}\r\nserver: istio-envoy\r\nconnection: close\r\n\r\n")
    try:
        conn.sendall(head.encode() + body)
    except OSError:
        pass
