"""The lab control plane's transport: an ADS server (state of the world, xDS v3 over gRPC) for the
lab's Envoys. What it serves is the model (gateway.py, ...): a function from a proxy's node id to its
resources, as JSON-shaped dicts per type URL. Every REFRESH_S and on every request it recomputes a
proxy's resources and sends each type whose content changed, with a content version and a nonce, as
istiod does for a proxy (`pilot/pkg/xds/ads.go` at 1.30.3: one stream per proxy, a push per type).

Envoy's SotW rules kept: listeners and clusters are wildcard (all of them); endpoints, routes and
secrets answer the names the proxy asked for. Secrets (SDS: the workload certificate `default` and the
mesh root `ROOTCA`) are served on a second socket, as pilot-agent serves its Envoy SDS on
`./var/run/secrets/workload-spiffe-uds/socket` (`security/pkg/nodeagent/sds/sdsservice.go` at 1.30.3). An ACK carries the nonce it acknowledges; a NACK (error_detail
set) is logged and kept in `nacks`, the last good config stays in force in Envoy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401  (registers the types ParseDict resolves)
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2, json_format, symbol_database

log = logging.getLogger(__name__)

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
WILDCARD = (LISTENER, CLUSTER)
NAME_FIELD = {LISTENER: "name", CLUSTER: "name", ENDPOINTS: "cluster_name", ROUTES: "name", SECRET: "name"}
REFRESH_S = 1.0
STOP_GRACE_S = 2.0

Resources = dict[str, list[dict[str, Any]]]  # type URL -> resources (JSON form of the v3 protos)
Config = Callable[[str], Resources | None]  # node id -> its resources (None: nothing to push yet)


def to_any(type_url: str, resource: dict[str, Any]) -> any_pb2.Any:
    cls = symbol_database.Default().GetSymbol(type_url.rpartition("/")[2])
    packed = any_pb2.Any()
    packed.Pack(json_format.ParseDict(resource, cls()))
    return packed


def chosen(type_url: str, resources: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """What a SotW answer for this type holds: all (wildcard types) or the named (none when none asked)."""
    if type_url in WILDCARD:
        return resources
    return [r for r in resources if r.get(NAME_FIELD[type_url]) in set(names)]


class _Stream:
    """One proxy's ADS stream: what it subscribed to, and what was last sent per type."""

    def __init__(self, server: AdsServer, requests: Iterator[discovery_pb2.DiscoveryRequest]):
        self.server, self.node = server, ""
        self.inbox: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
        self.names: dict[str, list[str]] = {}
        self.sent: dict[str, str] = {}  # type URL -> version sent
        self.nonce = 0
        threading.Thread(target=self._read, args=(requests,), name="xds-read", daemon=True).start()

    def _read(self, requests: Iterator[discovery_pb2.DiscoveryRequest]) -> None:
        try:
            for r in requests:
                self.inbox.put(r)
        except grpc.RpcError:
            pass
        finally:
            self.inbox.put(None)

    def responses(self) -> Iterator[discovery_pb2.DiscoveryResponse]:
        while not self.server.stopping.is_set():
            try:
                req = self.inbox.get(timeout=REFRESH_S)
            except queue.Empty:
                req = discovery_pb2.DiscoveryRequest()
            if req is None:
                return
            self._note(req)
            yield from self._changed()

    def _note(self, req: discovery_pb2.DiscoveryRequest) -> None:
        if req.node.id:
            self.node = req.node.id
        if not req.type_url:
            return
        if req.HasField("error_detail"):
            self.server.nacks.append(f"{self.node} {req.type_url}: {req.error_detail.message}")
            log.warning("xds: %s rejected %s: %s", self.node, req.type_url, req.error_detail.message)
        if list(req.resource_names) != self.names.get(req.type_url):
            self.sent.pop(req.type_url, None)  # a new subscription: answer it even if nothing changed
        self.names[req.type_url] = list(req.resource_names)

    def _changed(self) -> Iterator[discovery_pb2.DiscoveryResponse]:
        if not self.node or not self.names:
            return
        try:
            everything = self.server.config_of(self.node)
        except Exception:  # noqa: BLE001  (the model failed: log it, keep the proxy's last config)
            log.exception("xds: building the config of %s failed", self.node)
            return
        if everything is None:  # nothing for this proxy (yet): no push at all
            return
        for type_url, names in list(self.names.items()):
            picked = chosen(type_url, everything.get(type_url, []), names)
            version = hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]
            if self.sent.get(type_url) == version:
                continue
            self.sent[type_url] = version
            self.nonce += 1
            yield discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=str(self.nonce),
                                                  resources=[to_any(type_url, r) for r in picked])


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer, sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """Serve `config` over ADS on the unix socket `path` (as pilot-agent serves its Envoy at
    `<config path>/XDS`: a file, so an Envoy in any network namespace of this machine reaches it), and
    its secrets over SDS on `sds` when given."""

    def __init__(self, config: Config, path: Path, sds: Path | None = None):
        self.config, self.path, self.sds = config, path, sds
        self.nacks: list[str] = []
        self.stopping = threading.Event()
        self._grpc: grpc.Server | None = None
        self._cache: dict[str, tuple[float, Resources | None]] = {}
        self._cache_lock = threading.Lock()

    def start(self) -> AdsServer:
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="xds"))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self._grpc)
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, self._grpc)
        for sock in (self.path, self.sds):
            if sock is not None:
                sock.unlink(missing_ok=True)
                self._grpc.add_insecure_port(f"unix:{sock}")
        self._grpc.start()
        # An exit without stop() (a second Ctrl-C skips teardown) must end the streams first: the gRPC
        # executor's threads are joined by a threading-atexit hook, which would wait for them forever.
        # threading's own hook registry runs before that join, newest first (CPython 3.9+).
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            register(self.stopping.set)
        return self

    def config_of(self, node: str) -> Resources | None:
        """`config(node)`, built at most once per REFRESH_S for all of a proxy's streams (ADS and SDS)."""
        with self._cache_lock:
            hit = self._cache.get(node)
            if hit is None or time.monotonic() - hit[0] >= REFRESH_S:
                hit = (time.monotonic(), self.config(node))
                self._cache[node] = hit
            return hit[1]

    def stop(self) -> None:
        self.stopping.set()
        if self._grpc:
            self._grpc.stop(STOP_GRACE_S).wait(STOP_GRACE_S + 1)

    def StreamAggregatedResources(self, request_iterator: Iterator[discovery_pb2.DiscoveryRequest],  # noqa: N802
                                  context: grpc.ServicerContext) -> Iterator[discovery_pb2.DiscoveryResponse]:
        yield from _Stream(self, request_iterator).responses()

    def StreamSecrets(self, request_iterator: Iterator[discovery_pb2.DiscoveryRequest],  # noqa: N802
                      context: grpc.ServicerContext) -> Iterator[discovery_pb2.DiscoveryResponse]:
        yield from _Stream(self, request_iterator).responses()
