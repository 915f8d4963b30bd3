"""The lab control plane's model of what istiod sends a sidecar's Envoy (a pod's or the VM's), as Istio
1.30.3 builds it for iptables REDIRECT capture with the mesh defaults (docs/facts.md section 8), the
parts the recipe uses:

- outbound (`pilot/pkg/networking/core/listener_builder.go` buildVirtualOutboundListener, `listener.go`,
  `httproute.go`, `cluster.go`, `cluster_tls.go`): `virtualOutbound` on 15001 (use_original_dst; a
  blackhole chain for 15001 itself, else the PassthroughCluster); per HTTP Service port a listener
  `0.0.0.0_<port>` (not bound: reached through virtualOutbound) routing by RDS `<port>`: a virtual host
  `<fqdn>:<port>` per Service with that port, domains the FQDN, `<fqdn>.`, `<name>.<ns>`,
  `<name>.<ns>.svc`, the short name in the Service's own namespace and the ClusterIP, the port ignored in
  host matching, then `allow_any` to the PassthroughCluster; clusters `outbound|<port>||<fqdn>` by EDS
  with auto mTLS (`transport_socket_matches`: endpoints whose metadata says tlsMode `istio` get mutual
  TLS (security.upstream_tls), others plaintext);
- inbound (`listener_inbound.go`): `virtualInbound` on 15006 with the original_dst, tls_inspector and
  (PERMISSIVE only) http_inspector listener filters; a blackhole chain for 15006; passthrough chains for
  undeclared ports (PERMISSIVE: mTLS, plaintext and TLS passed through; STRICT: mTLS only); per port of a
  Service selecting the workload, `0.0.0.0_<targetPort>` chains: mTLS (PERMISSIVE: with Istio's ALPNs;
  STRICT: any ALPN) and, PERMISSIVE only, plaintext; each an HTTP connection manager with the RBAC
  filters of security.rbac_filters and an inline route to `inbound|<port>||` (ORIGINAL_DST from
  127.0.0.6). Under STRICT a plaintext connection matches no chain: Envoy closes it;
- EDS endpoints with `envoy.transport_socket_match: {tlsMode: istio}` where the endpoint has a sidecar
  (pods of injected namespaces; a WorkloadEntry with a service account).

The stand-in for Istio's stats filter (`istio.stats`, which upstream Envoy lacks): each HTTP connection
manager writes one JSON access-log line per request to Envoy's stdout, `{"istio_stats": reporter, ...}`
with what Envoy observed (the peer certificate's URI SAN, the response code, the cluster, the TLS
version, the Service), from which the VM's agent stand-in counts `istio_requests_total`.

Not modelled: Istio's own filters (`istio.metadata_exchange`, `istio.stats`, `istio.alpn`: upstream
Envoy has none; so a client offers ALPN `istio-peer-exchange,istio`, which the PERMISSIVE mTLS chain
matches too), TCP-only ports, DestinationRules, Sidecar resources, the catch-all HTTP chains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from meshvm.lab import istio_match
from meshvm.lab.envoy import gateway, security, xds

DOMAIN = "svc.cluster.local"
OUTBOUND_PORT, INBOUND_PORT = 15001, 15006
INBOUND_BIND = "127.0.0.6"  # InboundPassthroughBindIpv4
ALPN_INBOUND_MATCH = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = {"name": "envoy.filters.http.router",
           "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
_LF = "type.googleapis.com/envoy.extensions.filters.listener."


class Endpoint(NamedTuple):
    address: str  # ip:port
    principal: str  # spiffe://... when it has a sidecar (tlsMode istio), else ""


class Workload(NamedTuple):
    namespace: str
    labels: dict[str, str]


class SidecarInputs(NamedTuple):
    services: list[dict]
    peer_authentications: list[dict]
    authorization_policies: list[dict]


Endpoints = Callable[[str, int], list[Endpoint]]


def resources(w: Workload, inputs: SidecarInputs, endpoints: Endpoints) -> xds.Resources:
    out: xds.Resources = {xds.LISTENER: [virtual_outbound(), virtual_inbound(w, inputs)], xds.ROUTES: [],
                          xds.CLUSTER: [_passthrough("PassthroughCluster"), _passthrough("InboundPassthroughCluster"),
                                        {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"}],
                          xds.ENDPOINTS: []}
    by_port: dict[int, list[dict]] = {}
    for svc in inputs.services:
        for sp in _http_ports(svc):
            by_port.setdefault(sp["port"], []).append(svc)
            out[xds.CLUSTER].append(outbound_cluster(svc, sp["port"], endpoints))
            out[xds.ENDPOINTS].append(load_assignment(_fqdn(svc), sp["port"], endpoints))
    for port, svcs in sorted(by_port.items()):
        out[xds.LISTENER].append(_outbound_http_listener(port))
        out[xds.ROUTES].append(route_config(port, svcs, w.namespace))
    out[xds.CLUSTER] += [inbound_cluster(port) for port in inbound_ports(w, inputs.services)]
    return out


def _fqdn(svc: dict) -> str:
    return f"{svc['metadata']['name']}.{svc['metadata'].get('namespace', 'default')}.{DOMAIN}"


def _http_ports(svc: dict) -> list[dict]:
    spec = svc.get("spec") or {}
    if not spec.get("clusterIP") or spec.get("clusterIP") == "None":
        return []
    return [p for p in spec.get("ports") or [] if str(p.get("name", "")).split("-")[0] in ("http", "http2")
            or str(p.get("appProtocol", "")).startswith("http")]


def inbound_ports(w: Workload, services: list[dict]) -> dict[int, str]:
    """The target ports of the Services of the workload's namespace selecting it, each with the first
    such Service's FQDN."""
    out: dict[int, str] = {}
    for svc in sorted(services, key=_fqdn):
        spec = svc.get("spec") or {}
        if svc["metadata"].get("namespace", "default") == w.namespace and spec.get("selector") \
                and istio_match.selects(spec["selector"], w.labels):
            for p in _http_ports(svc):
                out.setdefault(p["targetPort"] if isinstance(p.get("targetPort"), int) else p["port"], _fqdn(svc))
    return dict(sorted(out.items()))


def stats_log(reporter: str, **fields: str) -> list[dict[str, Any]]:
    """The access log standing in for istio.stats (see the module's docstring)."""
    peer = "%DOWNSTREAM_PEER_URI_SAN%" if reporter == "destination" else "%UPSTREAM_PEER_URI_SAN%"
    line = {"istio_stats": reporter, "peer": peer, "code": "%RESPONSE_CODE%", "cluster": "%UPSTREAM_CLUSTER%",
            "tls": "%DOWNSTREAM_TLS_VERSION%", "authority": "%REQ(:AUTHORITY)%", **fields}
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": "/dev/stdout", "log_format": {"json_format": line}}}]


def _passthrough(name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "10s"}
    if name == "InboundPassthroughCluster":
        out["upstream_bind_config"] = {"source_address": {"address": INBOUND_BIND, "port_value": 0}}
    return out


def virtual_outbound() -> dict[str, Any]:
    return {"name": "virtualOutbound", "use_original_dst": True, "traffic_direction": "OUTBOUND",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": OUTBOUND_PORT}},  # noqa: S104
            "filter_chains": [
                {"name": "virtualOutbound-blackhole", "filter_chain_match": {"destination_port": OUTBOUND_PORT},
                 "filters": [gateway.tcp_proxy("BlackHoleCluster")]},
                {"name": "virtualOutbound-catchall-tcp", "filters": [gateway.tcp_proxy("PassthroughCluster")]}]}


def _outbound_http_listener(port: int) -> dict[str, Any]:
    hcm = {"@type": _HCM, "stat_prefix": f"outbound_0.0.0.0_{port};", "http_filters": [_ROUTER],
           "access_log": stats_log("source"),
           "rds": {"route_config_name": str(port),
                   "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}}
    return {"name": f"0.0.0.0_{port}", "bind_to_port": False, "traffic_direction": "OUTBOUND",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},  # noqa: S104
            "continue_on_listener_filters_timeout": True, "listener_filters_timeout": "0s",
            "listener_filters": [{"name": "envoy.filters.listener.http_inspector",
                                  "typed_config": {"@type": _LF + "http_inspector.v3.HttpInspector"}}],
            "filter_chains": [{"filter_chain_match": {"transport_protocol": "raw_buffer",
                                                      "application_protocols": ["http/1.1", "h2c"]},
                               "filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}],
            "default_filter_chain": {"name": "PassthroughFilterChain", "filters": [gateway.tcp_proxy("PassthroughCluster")]}}


def route_config(port: int, services: list[dict], client_namespace: str) -> dict[str, Any]:
    vhosts = []
    for svc in sorted(services, key=_fqdn):
        name, ns = svc["metadata"]["name"], svc["metadata"].get("namespace", "default")
        fqdn = _fqdn(svc)
        domains = [fqdn, f"{fqdn}.", *([name] if ns == client_namespace else []), f"{name}.{ns}.svc", f"{name}.{ns}",
                   svc["spec"]["clusterIP"]]
        action = {"cluster": f"outbound|{port}||{fqdn}", "timeout": "0s", "retry_policy": {
            "retry_on": gateway.RETRY_ON, "num_retries": 2, "host_selection_retry_max_attempts": "5",
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]}}
        vhosts.append({"name": f"{fqdn}:{port}", "domains": domains,
                       "routes": [{"name": "default", "match": {"prefix": "/"}, "route": action}]})
    vhosts.append({"name": "allow_any", "domains": ["*"], "routes": [
        {"name": "allow_any", "match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster", "timeout": "0s"}}]})
    return {"name": str(port), "virtual_hosts": vhosts, "validate_clusters": False, "ignore_port_in_host_matching": True}


def outbound_cluster(svc: dict, port: int, endpoints: Endpoints) -> dict[str, Any]:
    fqdn = _fqdn(svc)
    name = f"outbound|{port}||{fqdn}"
    principals = [e.principal for e in endpoints(fqdn, port) if e.principal]
    return {**gateway.cluster(name), "transport_socket_matches": [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
         "transport_socket": security.upstream_tls(fqdn, port, principals)},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
            "name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}]}


def load_assignment(fqdn: str, port: int, endpoints: Endpoints) -> dict[str, Any]:
    lb = []
    for e in endpoints(fqdn, port):
        ip, _, p = e.address.rpartition(":")
        item: dict[str, Any] = {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": int(p)}}}}
        if e.principal:
            item["metadata"] = {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}
        lb.append(item)
    return {"cluster_name": f"outbound|{port}||{fqdn}", "endpoints": [{"lb_endpoints": lb}]}


def inbound_cluster(port: int) -> dict[str, Any]:
    return {"name": f"inbound|{port}||", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "10s", "upstream_bind_config": {"source_address": {"address": INBOUND_BIND, "port_value": 0}}}


def _inbound_hcm(port: int, rbac: list[dict[str, Any]], service: str) -> dict[str, Any]:
    route = {"name": f"inbound|{port}||", "validate_clusters": False, "virtual_hosts": [
        {"name": f"inbound|http|{port}", "domains": ["*"], "routes": [{"name": "default", "match": {"prefix": "/"},
         "route": {"cluster": f"inbound|{port}||", "timeout": "0s",
                   "retry_policy": {"retry_on": "reset-before-request", "num_retries": 2}}}]}]}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": _HCM, "stat_prefix": f"inbound_0.0.0.0_{port};", "route_config": route,
        "http_filters": [*rbac, _ROUTER], "forward_client_cert_details": "APPEND_FORWARD",
        "access_log": stats_log("destination", service=service),
        "set_current_client_cert_details": {"subject": True, "uri": True, "dns": True},
        "server_name": "istio-envoy", "normalize_path": True, "path_with_escaped_slashes_action": "KEEP_UNCHANGED"}}


def _port_chains(port: int, mode: str, rbac: list[dict[str, Any]], service: str) -> list[dict[str, Any]]:
    mtls: dict[str, Any] = {"name": f"0.0.0.0_{port}", "filters": [_inbound_hcm(port, rbac, service)],
                            "filter_chain_match": {"destination_port": port, "transport_protocol": "tls"},
                            "transport_socket": security.downstream_tls()}
    plain = {"name": f"0.0.0.0_{port}", "filters": [_inbound_hcm(port, rbac, service)],
             "filter_chain_match": {"destination_port": port, "transport_protocol": "raw_buffer"}}
    if mode == "STRICT":
        return [mtls]
    if mode == "DISABLE":
        return [plain | {"filter_chain_match": {"destination_port": port}}]
    mtls["filter_chain_match"]["application_protocols"] = ALPN_INBOUND_MATCH
    return [mtls, plain]


def _passthrough_chains(mode: str) -> list[dict[str, Any]]:
    terminate = {"name": "virtualInbound", "filters": [gateway.tcp_proxy("InboundPassthroughCluster")],
                 "transport_socket": security.downstream_tls(),
                 "filter_chain_match": {"transport_protocol": "tls", "application_protocols": security.ALPN_IN_MESH}}
    if mode == "STRICT":
        return [terminate | {"filter_chain_match": {"transport_protocol": "tls"}}]
    return [terminate, {"name": "virtualInbound", "filter_chain_match": {"transport_protocol": "raw_buffer"},
                        "filters": [gateway.tcp_proxy("InboundPassthroughCluster")]},
            {"name": "virtualInbound", "filter_chain_match": {"transport_protocol": "tls"},
             "filters": [gateway.tcp_proxy("InboundPassthroughCluster")]}]


def virtual_inbound(w: Workload, inputs: SidecarInputs) -> dict[str, Any]:
    ports = inbound_ports(w, inputs.services)
    workload_mode = security.mtls_mode(inputs.peer_authentications, w.namespace, w.labels, 0)
    rbac = security.rbac_filters(inputs.authorization_policies, w.namespace, w.labels)
    chains = [{"name": "virtualInbound-blackhole", "filter_chain_match": {"destination_port": INBOUND_PORT},
               "filters": [gateway.tcp_proxy("BlackHoleCluster")]}, *_passthrough_chains(workload_mode)]
    modes = {port: security.mtls_mode(inputs.peer_authentications, w.namespace, w.labels, port) for port in ports}
    for port, service in ports.items():
        chains += _port_chains(port, modes[port], rbac, service)
    filters = [{"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": _LF + "original_dst.v3.OriginalDst"}},
               {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": _LF + "tls_inspector.v3.TlsInspector"},
                "filter_disabled": _ports_match([INBOUND_PORT])}]
    if workload_mode != "STRICT" or any(m != "STRICT" for m in modes.values()):
        filters.append({"name": "envoy.filters.listener.http_inspector",
                        "typed_config": {"@type": _LF + "http_inspector.v3.HttpInspector"},
                        "filter_disabled": _ports_match([*ports, INBOUND_PORT])})
    return {"name": "virtualInbound", "traffic_direction": "INBOUND", "continue_on_listener_filters_timeout": True,
            "listener_filters_timeout": "0s", "listener_filters": filters, "filter_chains": chains,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": INBOUND_PORT}}}  # noqa: S104


def _ports_match(ports: list[int]) -> dict[str, Any]:
    rules = [{"destination_port_range": {"start": p, "end": p + 1}} for p in ports]
    return rules[0] if len(rules) == 1 else {"or_match": {"rules": rules}}
