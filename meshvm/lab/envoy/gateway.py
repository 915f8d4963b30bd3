"""The lab control plane's model of what istiod sends the ingress gateway's Envoy: the xDS built from
the Gateways, VirtualServices and Services in the Kubernetes API, as Istio 1.30.3 builds it
(`pilot/pkg/networking/core/gateway.go` buildGatewayListeners / buildGatewayHTTPRouteConfig /
buildGatewayConnectionManager, `pilot/pkg/networking/core/route/route.go`, `route/retry/retry.go`),
the parts the recipe's bookinfo-gateway uses:

- one listener `0.0.0.0_8080` (the gateway pods' targetPort) with an HTTP connection manager whose
  routes come over RDS as `http.8080`; a Gateway applies when its selector is a subset of the
  gateway pods' labels, a server when its port is 80 (the Service port, which istiod maps to the
  targetPort) or 8080 and its protocol HTTP or HTTP2;
- virtual hosts: for every VirtualService bound to such a server (spec.gateways `<name>` in its own
  namespace or `<ns>/<name>`), oldest first, one per host of the intersection of the server's hosts
  (their `ns/` part limiting which namespaces may bind) and the VirtualService's, named `<host>:<port>`,
  domains `[<host>]`; routes of VirtualServices sharing a host are appended in that order; with no
  virtual host, `blackhole:<port>` with no route (Envoy answers 404 NR);
- a route per http[] rule and per match (uri exact -> path, prefix -> prefix, regex -> safe_regex;
  no match -> prefix "/"; a match with other conditions is left out: not modelled), to the cluster
  `outbound|<port>||<fqdn>` (weighted_clusters for several destinations; a short host is
  `<host>.<VirtualService namespace>.svc.cluster.local`; no port: the Service's only port), with
  Istio's default retry policy (2 retries on connect-failure, refused-stream, unavailable, cancelled,
  retriable-status-codes; previous hosts avoided);
- clusters for the routes' destinations, EDS over ADS, endpoints from the mesh registry.

And the load balancer's part (GKE's, not istiod's): the lab has no gateway pod, so the listener is
bound where the load balancer delivers (the node's port 80) and its filter chain matches only the
load-balancer addresses of LoadBalancer Services selecting the gateway pods, with port 80 and a
Running gateway pod behind them. Any other connection finds no filter chain: Envoy closes it; with
no such address at all there is no listener (the port refuses, as a load balancer without backends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from meshvm.lab import istio_match
from meshvm.lab.envoy import xds

GATEWAY_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
SERVER_PORTS = (80, 8080)  # the Service port and its targetPort
SERVICE_PORT, TARGET_PORT = 80, 8080
ROUTE_NAME = f"http.{TARGET_PORT}"
HTTP_PROTOCOLS = ("HTTP", "HTTP2")
DOMAIN = "svc.cluster.local"
RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
CONNECT_TIMEOUT = "10s"  # MeshConfig connectTimeout's default


class GatewayInputs(NamedTuple):
    gateways: list[dict]
    virtual_services: list[dict]  # oldest first
    services: list[dict]  # every Service (ports for a destination without one; the load balancers)
    pods: list[dict]  # Running pods


def resources(inputs: GatewayInputs, endpoints: Callable[[str, int], list[str]], bind: tuple[str, int]) -> xds.Resources:
    """The ingress gateway's listeners, routes, clusters and endpoints."""
    vhosts, clusters = virtual_hosts(inputs)
    return {
        xds.LISTENER: [listener(addresses, bind)] if (addresses := lb_addresses(inputs)) else [],
        xds.ROUTES: [{"name": ROUTE_NAME, "virtual_hosts": vhosts, "validate_clusters": False}],
        xds.CLUSTER: [cluster(name) for name in sorted(clusters)],
        xds.ENDPOINTS: [load_assignment(name, endpoints) for name in sorted(clusters)],
    }


def lb_addresses(inputs: GatewayInputs) -> list[str]:
    out: list[str] = []
    for svc in inputs.services:
        spec = svc.get("spec") or {}
        selector = spec.get("selector") or {}
        if (spec.get("type") != "LoadBalancer" or not selector or not istio_match.selects(selector, GATEWAY_LABELS)
                or SERVICE_PORT not in [p.get("port") for p in spec.get("ports") or []]):
            continue
        ns = svc["metadata"].get("namespace", "default")
        if any(pod["metadata"].get("namespace", "default") == ns
               and istio_match.selects(selector, pod["metadata"].get("labels") or {}) for pod in inputs.pods):
            out += [ip for ip in istio_match.lb_ips(svc) if ip]
    return sorted(set(out))


def listener(addresses: list[str], bind: tuple[str, int]) -> dict[str, Any]:
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": f"outbound_0.0.0.0_{TARGET_PORT}",
           "rds": {"route_config_name": ROUTE_NAME, "config_source": {"ads": {}, "resource_api_version": "V3"}},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
           "forward_client_cert_details": "SANITIZE_SET",
           "use_remote_address": True, "normalize_path": True, "path_with_escaped_slashes_action": "KEEP_UNCHANGED"}
    return {"name": f"0.0.0.0_{TARGET_PORT}",
            "address": {"socket_address": {"address": bind[0], "port_value": bind[1]}},
            "filter_chains": [{
                "filter_chain_match": {"prefix_ranges": [{"address_prefix": a, "prefix_len": 32} for a in addresses]},
                "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}


def _servers(gateway: dict) -> list[dict]:
    spec = gateway.get("spec") or {}
    if not istio_match.selects(spec.get("selector") or {}, GATEWAY_LABELS):
        return []
    return [s for s in spec.get("servers") or [] if (s.get("port") or {}).get("number") in SERVER_PORTS
            and str((s.get("port") or {}).get("protocol", "")).upper() in HTTP_PROTOCOLS]


def _server_hosts(server: dict, vs_ns: str) -> list[str]:
    """The server's hosts a VirtualService in `vs_ns` may bind to (`ns/host`: `*`, `.` = the Gateway's)."""
    out = []
    for h in server.get("hosts") or []:
        ns, _, name = h.rpartition("/")
        if ns in ("", "*", vs_ns) or (ns == "." and server.get("_gateway_ns") == vs_ns):
            out.append(name.lower())
    return out


def _intersection(server_hosts: list[str], vs_hosts: list[str]) -> list[str]:
    """Istio's host.Names Intersection: of each matching pair, the more specific name."""
    out: list[str] = []
    for s in server_hosts:
        for v in (h.lower() for h in vs_hosts):
            pick = v if istio_match.host_matches(s, v) else s if istio_match.host_matches(v, s) else None
            if pick and pick not in out:
                out.append(pick)
    return out


def virtual_hosts(inputs: GatewayInputs) -> tuple[list[dict[str, Any]], set[str]]:
    """The route configuration's virtual hosts, and the clusters their routes name."""
    servers = [(gw, {**s, "_gateway_ns": gw["metadata"].get("namespace", "default")})
               for gw in inputs.gateways for s in _servers(gw)]
    by_host: dict[str, list[dict[str, Any]]] = {}
    clusters: set[str] = set()
    for vs in inputs.virtual_services:
        vs_ns, spec = vs["metadata"].get("namespace", "default"), vs.get("spec") or {}
        bound = [s for gw, s in servers if any(istio_match.names_gateway(r, vs_ns, gw) for r in spec.get("gateways") or [])]
        hosts = [h for s in bound for h in _intersection(_server_hosts(s, vs_ns), spec.get("hosts") or [])]
        if not hosts:
            continue
        rs = http_routes(spec, vs_ns, inputs.services)
        clusters |= {c for r in rs for c in _route_clusters(r)}
        for h in dict.fromkeys(hosts):
            by_host.setdefault(h, []).extend(rs)
    if not by_host:
        return [{"name": f"blackhole:{SERVICE_PORT}", "domains": ["*"], "routes": []}], clusters
    return [{"name": f"{h}:{SERVICE_PORT}", "domains": [h], "routes": rs} for h, rs in by_host.items()], clusters


def http_routes(spec: dict, vs_ns: str, services: list[dict]) -> list[dict[str, Any]]:
    out = []
    for rule in spec.get("http") or []:
        action = _action(rule, vs_ns, services)
        if action is None:
            continue  # redirect, directResponse, ...: not modelled
        for match in _matches(rule):
            out.append({"match": match, "route": action})
    return out


def _matches(rule: dict) -> list[dict[str, Any]]:
    if not rule.get("match"):
        return [{"prefix": "/"}]
    out = []
    for m in rule["match"]:
        uri = m.get("uri") or {}
        if set(m) - {"uri", "name"} or len(uri) != 1:
            continue  # other conditions: not modelled
        kind, value = next(iter(uri.items()))
        if kind == "exact":
            out.append({"path": value})
        elif kind == "prefix":
            out.append({"prefix": value})
        elif kind == "regex":
            out.append({"safe_regex": {"regex": value}})
    return out


def _action(rule: dict, vs_ns: str, services: list[dict]) -> dict[str, Any] | None:
    routes = [r for r in rule.get("route") or [] if (r.get("destination") or {}).get("host")]
    if not routes:
        return None
    named = [(_cluster_name(r["destination"], vs_ns, services), r.get("weight", 100 if len(routes) == 1 else 0))
             for r in routes]
    action: dict[str, Any] = {"timeout": "0s", "retry_policy": {
        "retry_on": RETRY_ON, "num_retries": 2, "host_selection_retry_max_attempts": "5",
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]}}
    if len(named) == 1:
        action["cluster"] = named[0][0]
    else:
        action["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in named if w > 0]}
    return action


def _route_clusters(route: dict) -> list[str]:
    action = route["route"]
    return [action["cluster"]] if "cluster" in action else [c["name"] for c in action["weighted_clusters"]["clusters"]]


def _cluster_name(destination: dict, vs_ns: str, services: list[dict]) -> str:
    h = destination["host"]
    fqdn = h if "." in h else f"{h}.{vs_ns}.{DOMAIN}"
    port = (destination.get("port") or {}).get("number") or _only_port(fqdn, services)
    return f"outbound|{port or 0}||{fqdn}"


def _only_port(fqdn: str, services: list[dict]) -> int | None:
    for svc in services:
        meta = svc["metadata"]
        if f"{meta['name']}.{meta.get('namespace', 'default')}.{DOMAIN}" == fqdn:
            ports = (svc.get("spec") or {}).get("ports") or []
            return ports[0].get("port") if len(ports) == 1 else None
    return None


def cluster(name: str) -> dict[str, Any]:
    return {"name": name, "type": "EDS", "connect_timeout": CONNECT_TIMEOUT, "lb_policy": "LEAST_REQUEST",
            "eds_cluster_config": {"service_name": name, "eds_config": {"ads": {}, "resource_api_version": "V3"}}}


def load_assignment(name: str, endpoints: Callable[[str, int], list[str]]) -> dict[str, Any]:
    _, port, _, fqdn = name.split("|")
    eps = endpoints(fqdn, int(port)) if int(port) else []
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": ep.rpartition(":")[0],
                                                     "port_value": int(ep.rpartition(":")[2])}}}} for ep in eps]}]}
