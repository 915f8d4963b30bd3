"""The lab control plane's model of what istiod sends a gateway's Envoy (the ingress and the east-west
gateway): the xDS built from the Gateways, VirtualServices and Services in the Kubernetes API, as
Istio 1.30.3 builds it (`pilot/pkg/networking/core/gateway.go` buildGatewayListeners,
buildGatewayHTTPRouteConfig, buildGatewayNetworkFiltersFromTLSRoutes; `listener.go`;
`route/route.go`; `route/retry/retry.go`; docs/facts.md section 6), the parts the recipe uses:

- a Gateway applies when its selector is a subset of the gateway pods' labels; a server applies to
  a Service port when its port number is that port (istiod maps it to the targetPort) or the targetPort;
- per targetPort with applicable servers one listener `0.0.0.0_<targetPort>`:
  - HTTP/HTTP2 servers: an HTTP connection manager with routes by RDS `http.<targetPort>`: for every
    VirtualService bound to such a server (spec.gateways `<name>` in its own namespace or `<ns>/<name>`),
    oldest first, one virtual host per host of the intersection of the server's hosts (their `ns/`
    part limiting which namespaces may bind) and the VirtualService's, named `<host>:<server port>`,
    domains `[<host>]`, routes of VirtualServices sharing a host appended in that order, catch-all
    routes last, virtual hosts sorted by name, the port ignored in host matching; with none,
    `blackhole:<server port>` without routes (Envoy answers 404 NR); a route per http[] rule and match (uri
    exact -> path, prefix -> prefix, regex -> safe_regex; no match -> prefix "/"; a match with other
    conditions is left out: not modelled), to `outbound|<port>||<fqdn>` (weighted_clusters for several
    destinations; a short host is `<host>.<VirtualService namespace>.svc.cluster.local`; no port: the
    Service's only port), with Istio's default retry policy;
  - TLS PASSTHROUGH servers: a filter chain per matching `tls` rule of a bound VirtualService (match
    port this port or none), `server_names` from its `sniHosts` unless one is `*` (then any
    connection), a TCP proxy to its destination's cluster; a rule naming an SNI host an earlier chain of
    the port has is skipped (`model.CheckDuplicates`); the tls_inspector reads the SNI;
- clusters for the destinations, EDS over ADS, endpoints from `endpoints(fqdn, port)`.

And the load balancer's part (GKE's, not istiod's): the lab has no gateway pod, so a listener is bound
where the load balancer delivers (the node, on the Service port) and its filter chains match only the
load-balancer addresses of LoadBalancer Services selecting the gateway pods with that port and a
Running gateway pod behind them. Any other connection finds no filter chain: Envoy closes it; with no
such address there is no listener (the port refuses, as a load balancer without backends).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from meshvm.lab import istio_match
from meshvm.lab.envoy import xds

INGRESS_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
EASTWEST_LABELS = {"istio": "eastwestgateway", "app": "istio-eastwestgateway"}  # manifests/eastwest-gateway.yaml
GATEWAY_LABELS = INGRESS_LABELS
HTTP_PROTOCOLS = ("HTTP", "HTTP2")
DOMAIN = "svc.cluster.local"
RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
CONNECT_TIMEOUT = "10s"  # MeshConfig connectTimeout's default
Endpoints = Callable[[str, int], list[str]]
log = logging.getLogger(__name__)


class GatewayInputs(NamedTuple):
    gateways: list[dict]
    virtual_services: list[dict]  # oldest first
    services: list[dict]  # every Service (ports for a destination without one; the load balancers)
    pods: list[dict]  # Running pods


class Port(NamedTuple):
    port: int  # the Service port (where the lab binds)
    target: int  # the pods' port (what istiod names the listener after)
    addresses: list[str]  # load-balancer addresses delivering it


def resources(inputs: GatewayInputs, endpoints: Endpoints, labels: dict[str, str] = INGRESS_LABELS,
              host: str = "0.0.0.0", bind: dict[int, int] | None = None) -> xds.Resources:  # noqa: S104
    """A gateway's listeners, routes, clusters and endpoints; `bind` moves a Service port's listener
    to another local port (self-tests, which share this machine's network namespace)."""
    out: xds.Resources = {xds.LISTENER: [], xds.ROUTES: [], xds.CLUSTER: [], xds.ENDPOINTS: []}
    clusters: set[str] = set()
    for p in ports(inputs, labels):
        servers = [(gw, s) for gw in inputs.gateways for s in _servers(gw, labels, p)]
        chains: list[dict[str, Any]] = []
        if http := [(gw, s) for gw, s in servers if _protocol(s) in HTTP_PROTOCOLS]:
            vhosts, used = virtual_hosts(inputs, http, p)
            out[xds.ROUTES].append({"name": f"http.{p.target}", "virtual_hosts": vhosts, "validate_clusters": False,
                                     "ignore_port_in_host_matching": True})
            chains.append(_chain(p.addresses, [], _hcm(p.target)))
            clusters |= used
        known_sni: set[str] = set()
        for gw, s in servers:
            if _protocol(s) == "TLS" and str((s.get("tls") or {}).get("mode", "")).upper() == "PASSTHROUGH":
                for sni, cluster_name in passthrough_routes(inputs, gw, s, p):
                    hosts = set(sni) or {"*"}
                    if known_sni & hosts:
                        log.warning("gateway model: skipping a tls rule to %s, duplicate SNI %s", cluster_name, hosts)
                        continue  # model.CheckDuplicates: Envoy would reject two chains with one match
                    known_sni |= hosts
                    chains.append(_chain(p.addresses, sni, tcp_proxy(cluster_name)))
                    clusters.add(cluster_name)
        if chains:
            out[xds.LISTENER].append(_listener(p, chains, host, (bind or {}).get(p.port, p.port)))
    out[xds.CLUSTER] = [cluster(name) for name in sorted(clusters)]
    out[xds.ENDPOINTS] = [load_assignment(name, endpoints) for name in sorted(clusters)]
    return out


_TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"


def _listener(p: Port, chains: list[dict[str, Any]], host: str, port: int) -> dict[str, Any]:
    out = {"name": f"0.0.0.0_{p.target}", "filter_chains": chains,
           "address": {"socket_address": {"address": host, "port_value": port}}}
    if any("server_names" in c["filter_chain_match"] for c in chains):  # the SNI is read only where it decides
        out["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector",
                                    "typed_config": {"@type": _TLS_INSPECTOR}}]
    return out


def ports(inputs: GatewayInputs, labels: dict[str, str]) -> list[Port]:
    """The Service ports load balancers deliver to a Running gateway pod, with their addresses."""
    found: dict[tuple[int, int], list[str]] = {}
    for svc in inputs.services:
        spec, ns = svc.get("spec") or {}, svc["metadata"].get("namespace", "default")
        selector = spec.get("selector") or {}
        if spec.get("type") != "LoadBalancer" or not selector or not istio_match.selects(selector, labels):
            continue
        if not any(pod["metadata"].get("namespace", "default") == ns
                   and istio_match.selects(selector, pod["metadata"].get("labels") or {}) for pod in inputs.pods):
            continue
        for sp in spec.get("ports") or []:
            target = sp.get("targetPort") if isinstance(sp.get("targetPort"), int) else sp.get("port")
            found.setdefault((sp["port"], target), []).extend(ip for ip in istio_match.lb_ips(svc) if ip)
    return [Port(port, target, sorted(set(ips))) for (port, target), ips in sorted(found.items()) if ips]


def _protocol(server: dict) -> str:
    return str((server.get("port") or {}).get("protocol", "")).upper()


def _servers(gateway: dict, labels: dict[str, str], p: Port) -> list[dict]:
    spec = gateway.get("spec") or {}
    if not istio_match.selects(spec.get("selector") or {}, labels):
        return []
    return [s for s in spec.get("servers") or [] if (s.get("port") or {}).get("number") in (p.port, p.target)]


def _chain(addresses: list[str], sni: list[str], network_filter: dict[str, Any]) -> dict[str, Any]:
    match: dict[str, Any] = {"prefix_ranges": [{"address_prefix": a, "prefix_len": 32} for a in addresses]}
    if sni:
        match["server_names"] = sorted(sni)
    return {"filter_chain_match": match, "filters": [network_filter]}


def _hcm(target: int) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": f"outbound_0.0.0.0_{target}",
        "rds": {"route_config_name": f"http.{target}", "config_source": {"ads": {}, "resource_api_version": "V3"}},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "forward_client_cert_details": "SANITIZE_SET", "use_remote_address": True, "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED"}}


def tcp_proxy(cluster_name: str) -> dict[str, Any]:
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": cluster_name, "cluster": cluster_name}}


def _server_hosts(server: dict, gw_ns: str, vs_ns: str) -> list[str]:
    """The server's hosts a VirtualService in `vs_ns` may bind to (`ns/host`: `*`, `.` = the Gateway's)."""
    out = []
    for h in server.get("hosts") or []:
        ns, _, name = h.rpartition("/")
        if ns in ("", "*", vs_ns) or (ns == "." and gw_ns == vs_ns):
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


def _bound_hosts(vs: dict, gw: dict, server: dict) -> list[str]:
    """The hosts through which `vs` binds to `server` of `gw` (none: it does not bind)."""
    vs_ns, spec = vs["metadata"].get("namespace", "default"), vs.get("spec") or {}
    if not any(istio_match.names_gateway(r, vs_ns, gw) for r in spec.get("gateways") or []):
        return []
    return _intersection(_server_hosts(server, gw["metadata"].get("namespace", "default"), vs_ns),
                         spec.get("hosts") or [])


def virtual_hosts(inputs: GatewayInputs, servers: list[tuple[dict, dict]], p: Port) -> tuple[list[dict], set[str]]:
    """The route configuration's virtual hosts, and the clusters their routes name: per server, per bound
    VirtualService, per host one virtual host named after the first server that binds it; catch-all
    routes last (SortVHostRoutes), virtual hosts by name (SortVirtualHosts)."""
    by_host: dict[str, dict[str, Any]] = {}
    clusters: set[str] = set()
    for gw, s in servers:
        for vs in inputs.virtual_services:
            hosts = _bound_hosts(vs, gw, s)
            if not hosts:
                continue
            rs = http_routes(vs.get("spec") or {}, vs["metadata"].get("namespace", "default"), inputs.services)
            clusters |= {c for r in rs for c in _route_clusters(r)}
            for h in hosts:
                vhost = by_host.setdefault(h, {"name": f"{h}:{_server_port(s)}", "domains": [h], "routes": []})
                vhost["routes"] += rs
    if not by_host:
        return [{"name": f"blackhole:{_server_port(servers[0][1])}", "domains": ["*"], "routes": []}], clusters
    for vhost in by_host.values():
        vhost["routes"] = [r for r in vhost["routes"] if not _catch_all(r)] + [r for r in vhost["routes"] if _catch_all(r)]
    return sorted(by_host.values(), key=lambda v: v["name"]), clusters


def _server_port(server: dict) -> int:
    return int((server.get("port") or {}).get("number", 0))


def _catch_all(route: dict) -> bool:
    m = route["match"]
    return m.get("prefix") == "/" or (m.get("safe_regex") or {}).get("regex") == ".*"


def passthrough_routes(inputs: GatewayInputs, gw: dict, server: dict, p: Port) -> list[tuple[list[str], str]]:
    """(server names, cluster) per matching `tls` rule of the VirtualServices bound to a passthrough server."""
    out = []
    for vs in inputs.virtual_services:
        if not _bound_hosts(vs, gw, server):
            continue
        vs_ns = vs["metadata"].get("namespace", "default")
        for rule in (vs.get("spec") or {}).get("tls") or []:
            routes = [r for r in rule.get("route") or [] if (r.get("destination") or {}).get("host")]
            for m in rule.get("match") or []:
                if m.get("port") in (None, p.port, p.target) and routes:
                    sni = [h.lower() for h in m.get("sniHosts") or []]
                    out.append(([] if "*" in sni else sni, _cluster_name(routes[0]["destination"], vs_ns,
                                                                          inputs.services)))
    return out


def http_routes(spec: dict, vs_ns: str, services: list[dict]) -> list[dict[str, Any]]:
    out = []
    for rule in spec.get("http") or []:
        action = _action(rule, vs_ns, services)
        if action is None:
            continue  # redirect, directResponse, ...: not modelled
        out += [{"match": match, "route": action} for match in _matches(rule)]
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
        key = {"exact": "path", "prefix": "prefix"}.get(kind)
        if key:
            out.append({key: value})
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
            ports_ = (svc.get("spec") or {}).get("ports") or []
            return ports_[0].get("port") if len(ports_) == 1 else None
    return None


def cluster(name: str) -> dict[str, Any]:
    return {"name": name, "type": "EDS", "connect_timeout": CONNECT_TIMEOUT, "lb_policy": "LEAST_REQUEST",
            "eds_cluster_config": {"service_name": name, "eds_config": {"ads": {}, "resource_api_version": "V3"}}}


def load_assignment(name: str, endpoints: Endpoints) -> dict[str, Any]:
    _, port, _, fqdn = name.split("|")
    eps = endpoints(fqdn, int(port)) if int(port) else []
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": ep.rpartition(":")[0],
                                                     "port_value": int(ep.rpartition(":")[2])}}}} for ep in eps]}]}
