"""The bootstrap of a lab Envoy, shaped as pilot-agent writes it (standard library only: the lab's
stand-in sidecar package ships it for the VM's agent; envoy/proxy.py uses it for the node's Envoys).

Modelled from `tools/packaging/common/envoy_bootstrap.json` and `pkg/bootstrap/config.go`
(getStatsOptions) at Istio 1.30.3:
- node: id `<type>~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local` (`pkg/model/context.go`
  ServiceNode), cluster `<workload>.<namespace>`, metadata;
- admin on localhost:15000 (ProxyAdminPort), its access log to /dev/null;
- stats_config: `use_all_default_tags: false` and the stats matcher's inclusion list: ProxyConfig's
  `proxyStatsMatcher` inclusions, then Istio's defaults (istiostats.DEFAULT_*), so a stat a real proxy
  would not keep does not exist here either;
- dynamic_resources: LDS and CDS over ADS (`initial_fetch_timeout: 0s`), ADS over gRPC to the static
  cluster `xds-grpc` (the unix socket `./etc/istio/proxy/XDS`), and a sidecar's `sds-grpc` (the unix
  socket `./var/run/secrets/workload-spiffe-uds/socket`).
"""

from __future__ import annotations

try:  # in meshvm (the node's Envoys) or beside it in the package (the VM's agent)
    from . import istiostats
except ImportError:
    import istiostats  # type: ignore[no-redef]

SDS_SOCKET = "./var/run/secrets/workload-spiffe-uds/socket"
XDS_SOCKET = "./etc/istio/proxy/XDS"


def stats_patterns(proxy_config: dict | None = None) -> list[dict]:
    m = (proxy_config or {}).get("proxyStatsMatcher") or {}
    return ([{"prefix": p} for p in (*(m.get("inclusionPrefixes") or ()), *istiostats.DEFAULT_PREFIXES)]
            + [{"suffix": s} for s in (*(m.get("inclusionSuffixes") or ()), *istiostats.DEFAULT_SUFFIXES)]
            + [{"safe_regex": {"regex": r}} for r in (*(m.get("inclusionRegexps") or ()), *istiostats.DEFAULT_REGEXPS)])


def grpc_pipe(name: str, path: str) -> dict:
    """A static HTTP/2 cluster to a unix socket (`xds-grpc`, `sds-grpc`)."""
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"pipe": {"path": path}}}}]}]}}


def bootstrap(node_id: str, cluster: str, metadata: dict, xds: str, admin: tuple = ("127.0.0.1", 15000),
              sds: str | None = None, proxy_config: dict | None = None) -> dict:
    ads = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": cluster, "metadata": metadata},
        "stats_config": {"use_all_default_tags": False,
                         "stats_matcher": {"inclusion_list": {"patterns": stats_patterns(proxy_config)}}},
        "admin": {"address": {"socket_address": {"address": admin[0], "port_value": admin[1]}},
                  "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                      "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                      "path": "/dev/null"}}]},
        "dynamic_resources": {
            "lds_config": ads, "cds_config": ads,
            "ads_config": {"api_type": "GRPC", "set_node_on_first_message_only": True, "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
        "static_resources": {"clusters": [grpc_pipe("xds-grpc", xds), *([grpc_pipe("sds-grpc", sds)] if sds else [])]},
    }
