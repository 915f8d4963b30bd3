"""The stand-in's HTTP server (127.0.0.1 only): routes, bearer-token check, error injection, and a
record of every request body (for tests that assert on what the client sent).

    with GCloudStandIn("meshvm-lab", backing) as gc:
        Config(..., compute_endpoint=gc.url, container_endpoint=gc.url)
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from meshvm.lab.gcloud.backing import ClusterBackend, ComputeBacking
from meshvm.lab.gcloud.compute import Compute, World
from meshvm.lab.gcloud.faults import ApiError, Fault, Faults, error_body
from meshvm.lab.gcloud.gke import Gke, server_config
from meshvm.lab.gcloud.loadbalancers import LoadBalancers
from meshvm.lab.gcloud.operations import Operations
from meshvm.lab.gcloud.resources import Kinds

log = logging.getLogger(__name__)
Handler = Callable[[dict, dict, dict], dict]
_P = r"/compute/v1/projects/(?P<project>[^/]+)"
_G = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"


@dataclass(frozen=True)
class Recorded:
    method: str  # API method id, e.g. "compute.instances.insert"
    path: str
    query: dict
    body: dict


class GCloudStandIn:
    def __init__(self, project: str, backing: ComputeBacking,
                 cluster_backend: Callable[[str], ClusterBackend] | None = None, *, op_delay: float = 0.2,
                 wait_cap: float = 2.0, cluster_delay: float = 0.5, zones: tuple[str, ...] | None = None) -> None:
        self.world = World(project, zones) if zones else World(project)
        self.faults = Faults()
        self.ops = Operations(op_delay, wait_cap)
        self.backing = backing
        self.compute = Compute(self.world, self.ops, self.faults, backing, lambda: self.url)
        self.kinds = Kinds(self.compute)
        self.load_balancers = LoadBalancers(self.compute, self.kinds)  # what clusters' LB Services make
        self.gke = Gke(self.world, self.ops, self.faults, cluster_backend, lambda: self.url, cluster_delay,
                       load_balancers=self.load_balancers)
        self.tokens: set[str] | None = None  # None: any caller (AnonymousCredentials) is accepted
        self.recorded: list[Recorded] = []
        self.routes = _routes(self)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "stand-in not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> GCloudStandIn:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))  # loopback only
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gcloud-standin", daemon=True)
        self._thread.start()
        log.info("local Google Cloud stand-in at %s (project %s)", self.url, self.world.project)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.ops.stop()
        try:
            self.gke.stop()
        finally:
            self.backing.close()

    def __enter__(self) -> GCloudStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def calls(self, method: str) -> list[Recorded]:
        return [r for r in list(self.recorded) if r.method == method]

    def dispatch(self, verb: str, path: str, query: dict, body: dict, auth: str) -> tuple[int, dict]:
        for rverb, regex, method, handler in self.routes:
            m = regex.fullmatch(path)
            if rverb != verb or m is None:
                continue
            self.recorded.append(Recorded(method, path, query, body))
            if self.tokens is not None and auth.removeprefix("Bearer ") not in self.tokens:
                return 401, error_body(Fault(401, "authError", "Request had invalid authentication credentials."))
            fault = self.faults.take(method)
            try:
                if fault is not None:
                    raise ApiError(fault.status, fault.reason, fault.message)
                return 200, handler(m.groupdict(), query, body)
            except ApiError as e:
                return e.fault.status, error_body(_with_details(e.fault, fault))
        return 404, error_body(Fault(404, "notFound", f"stand-in: no route for {verb} {path}"))


def _with_details(f: Fault, injected: Fault | None) -> Fault:
    return injected if injected is not None else f


def _q(qs: dict, key: str) -> str:
    return (qs.get(key) or [""])[0]


def _routes(s: GCloudStandIn) -> list[tuple[str, re.Pattern[str], str, Handler]]:
    r = _compute_routes(s) + _gke_routes(s) + _policy_routes(s)
    return [(verb, re.compile(regex), method, h) for verb, regex, method, h in r]


def _compute_routes(s: GCloudStandIn) -> list:
    c, k, q = s.compute, s.kinds, _q
    r = [
        ("GET", _P, "compute.projects.get", lambda m, qs, b: c.project(m["project"])),
        ("GET", _P + r"/zones/(?P<zone>[^/]+)", "compute.zones.get", lambda m, qs, b: c.zone(**m)),
        ("GET", _P + r"/regions/(?P<region>[^/]+)", "compute.regions.get", lambda m, qs, b: c.region(**m)),
        ("GET", _P + r"/zones/(?P<zone>[^/]+)/machineTypes/(?P<machine_type>[^/]+)", "compute.machineTypes.get",
         lambda m, qs, b: c.machine_type(**m)),
        ("GET", _P + r"/global/images/family/(?P<family>[^/]+)", "compute.images.getFromFamily",
         lambda m, qs, b: c.image_family(**m)),
        ("POST", _P + r"/global/networks", "compute.networks.insert",
         lambda m, qs, b: c.insert("compute.networks.insert", m["project"], "global", "networks", b)),
        ("POST", _P + r"/regions/(?P<region>[^/]+)/subnetworks", "compute.subnetworks.insert",
         lambda m, qs, b: c.insert("compute.subnetworks.insert", m["project"], f"regions/{m['region']}",
                                   "subnetworks", b, check=k.check_subnetwork)),
        ("POST", _P + r"/global/firewalls", "compute.firewalls.insert",
         lambda m, qs, b: c.insert("compute.firewalls.insert", m["project"], "global", "firewalls", b,
                                   work=k.sync_firewall, check=k.check_firewall)),
        ("POST", _P + r"/regions/(?P<region>[^/]+)/forwardingRules", "compute.forwardingRules.insert",
         lambda m, qs, b: c.insert("compute.forwardingRules.insert", m["project"], f"regions/{m['region']}",
                                   "forwardingRules", b)),
        ("POST", _P + r"/zones/(?P<zone>[^/]+)/instances", "compute.instances.insert",
         lambda m, qs, b: c.insert("compute.instances.insert", m["project"], f"zones/{m['zone']}", "instances", b,
                                   work=k.boot_instance, check=lambda body: k.check_instance(m["zone"], body))),
        # --reuse extends the expiry of what it adopts
        ("POST", _P + r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/setLabels", "compute.instances.setLabels",
         lambda m, qs, b: c.update("compute.instances.setLabels", m["project"], f"zones/{m['zone']}", "instances",
                                   m["name"], {"labels": dict(b.get("labels") or {})})),
        ("PATCH", _P + r"/global/firewalls/(?P<name>[^/]+)", "compute.firewalls.patch",
         lambda m, qs, b: c.update("compute.firewalls.patch", m["project"], "global", "firewalls", m["name"],
                                   {k: v for k, v in b.items() if k != "name"})),
        ("GET", _P + r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/getGuestAttributes",
         "compute.instances.getGuestAttributes",
         lambda m, qs, b: k.guest_attributes(m["project"], m["zone"], m["name"], q(qs, "queryPath"))),
    ]
    return r + _compute_collections(s)


def _compute_collections(s: GCloudStandIn) -> list:
    """Each collection's list, get and delete, and the three scopes' operations."""
    c, k, q, lb = s.compute, s.kinds, _q, s.load_balancers
    r: list = []
    colls = [("networks", "global", None, k.check_network_delete),
             ("subnetworks", "regions/(?P<region>[^/]+)", None, k.check_subnetwork_delete),
             ("firewalls", "global", k.delete_firewall, None),
             ("forwardingRules", "regions/(?P<region>[^/]+)", None, None),
             # made by GKE for LoadBalancer Services (loadbalancers.py), read and deleted by the suite
             ("targetPools", "regions/(?P<region>[^/]+)", None, lb.check_target_pool_delete),
             ("httpHealthChecks", "global", None, lb.check_http_health_check_delete),
             ("addresses", "regions/(?P<region>[^/]+)", None, None),
             ("backendServices", "regions/(?P<region>[^/]+)", None, lb.check_backend_service_delete),
             ("healthChecks", "global", None, lb.check_health_check_delete),
             ("instanceGroups", "zones/(?P<zone>[^/]+)", None, lb.check_group_delete),
             ("networkEndpointGroups", "zones/(?P<zone>[^/]+)", None, lb.check_group_delete),
             ("instances", "zones/(?P<zone>[^/]+)", k.halt_instance, None)]
    for coll, scope_re, work, check in colls:
        r += _collection_routes(c, coll, scope_re, work, check, q)
    for kind, scope_re in (("zoneOperations", r"zones/(?P<zone>[^/]+)"), ("regionOperations", r"regions/(?P<region>[^/]+)"),
                           ("globalOperations", "global")):
        base = _P + "/" + scope_re + r"/operations/(?P<op>[^/]+)"
        r += [("GET", base, f"compute.{kind}.get", lambda m, qs, b: c.operation(m["project"], m["op"], False)),
              ("POST", base + "/wait", f"compute.{kind}.wait", lambda m, qs, b: c.operation(m["project"], m["op"], True))]
    return r


def _policy_routes(s: GCloudStandIn) -> list:
    """IAM's testIamPermissions on a service account and Resource Manager's effective org policy."""
    w = s.world

    def test_permissions(m: dict, qs: dict, b: dict) -> dict:
        asked = list((b or {}).get("permissions") or [])
        held = w.sa_permissions.get(m["sa"], asked)
        return {"permissions": [p for p in asked if p in held]}

    return [
        ("POST", r"/v1/projects/-/serviceAccounts/(?P<sa>[^/:]+):testIamPermissions",
         "iam.serviceAccounts.testIamPermissions", test_permissions),
        ("POST", r"/v1/projects/(?P<project>[^/:]+):getEffectiveOrgPolicy", "cloudresourcemanager.projects."
         "getEffectiveOrgPolicy", lambda m, qs, b: {"constraint": (b or {}).get("constraint"),
                                                    **w.org_policies.get((b or {}).get("constraint", ""), {})}),
    ]


def _gke_routes(s: GCloudStandIn) -> list:
    g = s.gke
    return [
        ("POST", _G + "/clusters", "container.clusters.create", lambda m, qs, b: g.create(m["project"], m["location"], b)),
        ("GET", _G + "/clusters", "container.clusters.list", lambda m, qs, b: g.list(**m)),
        ("GET", _G + r"/clusters/(?P<name>[^/]+)", "container.clusters.get", lambda m, qs, b: g.get(**m)),
        ("DELETE", _G + r"/clusters/(?P<name>[^/]+)", "container.clusters.delete", lambda m, qs, b: g.delete(**m)),
        ("POST", _G + r"/clusters/(?P<name>[^/:]+):setResourceLabels", "container.clusters.setResourceLabels",
         lambda m, qs, b: g.set_labels(**m, labels=dict(b.get("resourceLabels") or {}))),
        ("GET", _G + r"/operations/(?P<name>[^/]+)", "container.operations.get", lambda m, qs, b: g.operation(**m)),
        ("GET", _G + "/operations", "container.operations.list", lambda m, qs, b: g.operations(**m)),
        ("GET", _G + "/serverConfig", "container.projects.locations.getServerConfig",
         lambda m, qs, b: server_config(g, **m)),
    ]


def _collection_routes(c: Compute, coll: str, scope_re: str, work, check, q) -> list:  # noqa: ANN001
    def scope(m: dict) -> str:
        return re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda x: m[x.group(1)], scope_re)

    one = _P + "/" + scope_re + f"/{coll}/(?P<name>[^/]+)"
    return [
        ("GET", one, f"compute.{coll}.get", lambda m, qs, b: c.get(m["project"], scope(m), coll, m["name"])),
        ("DELETE", one, f"compute.{coll}.delete",
         lambda m, qs, b: c.delete(f"compute.{coll}.delete", m["project"], scope(m), coll, m["name"], work, check)),
        ("GET", _P + "/" + scope_re + f"/{coll}", f"compute.{coll}.list",
         lambda m, qs, b: c.list(m["project"], scope(m), coll, q(qs, "filter"))),
        ("GET", _P + f"/aggregated/{coll}", f"compute.{coll}.aggregatedList",
         lambda m, qs, b: c.aggregated(m["project"], coll, q(qs, "filter"))),
    ]


def _handler_class(s: GCloudStandIn) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, verb: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            status, out = s.dispatch(verb, url.path, parse_qs(url.query), body, self.headers.get("Authorization", ""))
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._serve("DELETE")

        def do_PATCH(self) -> None:  # noqa: N802
            self._serve("PATCH")

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("stand-in: " + fmt, *args)

    return H
