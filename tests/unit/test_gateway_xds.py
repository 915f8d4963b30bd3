"""The ingress gateway's xDS as the lab's model of istiod builds it (meshvm/lab/envoy/gateway.py):
checked here as data; tests/contract/test_ingress_gateway.py runs it through a real Envoy."""

from __future__ import annotations

import copy

from meshvm import manifests
from meshvm.lab.envoy import gateway, xds
from meshvm.lab.envoy.gateway import GatewayInputs

LABELS = gateway.GATEWAY_LABELS


def lb_service(ip: str = "35.1.2.3", port: int = 80, selector: dict | None = None) -> dict:
    return {"metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
            "spec": {"type": "LoadBalancer", "selector": LABELS if selector is None else selector,
                     "ports": [{"port": port, "targetPort": 8080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}


POD = {"metadata": {"name": "gw-0", "namespace": "istio-system", "labels": LABELS}}


def recipe(**changes: object) -> GatewayInputs:
    gw, vs = (dict(d, metadata={**d["metadata"], "namespace": "default"}) for d in manifests.docs("bookinfo-gateway"))
    base = GatewayInputs([gw], [vs], [lb_service()], [POD])
    return base._replace(**changes)  # type: ignore[arg-type]


def build(inputs: GatewayInputs, asked: list | None = None) -> xds.Resources:
    def endpoints(fqdn: str, port: int) -> list[str]:
        (asked if asked is not None else []).append((fqdn, port))
        return ["10.0.0.5:9080"]
    return gateway.resources(inputs, endpoints)


def test_the_recipe_gateway_as_istiod_names_it() -> None:
    asked: list = []
    r = build(recipe(), asked)
    (lis,) = r[xds.LISTENER]
    assert lis["name"] == "0.0.0.0_8080"
    assert lis["filter_chains"][0]["filter_chain_match"]["prefix_ranges"] == [{"address_prefix": "35.1.2.3", "prefix_len": 32}]
    (rc,) = r[xds.ROUTES]
    assert rc["name"] == "http.8080"
    (vh,) = rc["virtual_hosts"]
    assert (vh["name"], vh["domains"]) == ("*:8080", ["*"]), "named after the Gateway server's port"
    assert rc["ignore_port_in_host_matching"] is True
    assert {"path": "/productpage"} in [rt["match"] for rt in vh["routes"]]
    assert {"prefix": "/static"} in [rt["match"] for rt in vh["routes"]]
    assert {rt["route"]["cluster"] for rt in vh["routes"]} == {"outbound|9080||productpage.default.svc.cluster.local"}
    assert [c["name"] for c in r[xds.CLUSTER]] == ["outbound|9080||productpage.default.svc.cluster.local"]
    (cla,) = r[xds.ENDPOINTS]
    assert cla["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "10.0.0.5", "port_value": 9080}
    assert asked == [("productpage.default.svc.cluster.local", 9080)]


def test_no_load_balancer_address_no_listener() -> None:
    assert build(recipe(pods=[]))[xds.LISTENER] == []
    no_80 = lb_service(port=443)
    no_80["spec"]["ports"][0]["targetPort"] = 8443
    assert build(recipe(services=[no_80]))[xds.LISTENER] == []
    (lis,) = build(recipe(services=[lb_service(port=443)]))[xds.LISTENER]  # 443 -> the pods' 8080: served
    assert (lis["name"], lis["address"]["socket_address"]["port_value"]) == ("0.0.0.0_8080", 443)
    assert build(recipe(services=[lb_service(selector={"istio": "eastwestgateway"})]))[xds.LISTENER] == []


def test_no_bound_virtualservice_is_the_404_blackhole_and_no_gateway_no_listener() -> None:
    (rc,) = build(recipe(virtual_services=[]))[xds.ROUTES]
    assert rc["virtual_hosts"] == [{"name": "blackhole:8080", "domains": ["*"], "routes": []}]
    gw = copy.deepcopy(recipe().gateways[0])
    gw["spec"]["selector"] = {"istio": "eastwestgateway"}
    assert build(recipe(gateways=[gw])) == {xds.LISTENER: [], xds.ROUTES: [], xds.CLUSTER: [], xds.ENDPOINTS: []}


def test_hosts_intersect_the_more_specific_wins_and_namespaces_limit_binding() -> None:
    gw = copy.deepcopy(recipe().gateways[0])
    gw["spec"]["servers"][0]["hosts"] = ["*.example.com", "other/*"]
    vs = copy.deepcopy(recipe().virtual_services[0])
    vs["spec"]["hosts"] = ["shop.example.com"]
    (rc,) = build(recipe(gateways=[gw], virtual_services=[vs]))[xds.ROUTES]
    assert [v["domains"] for v in rc["virtual_hosts"]] == [["shop.example.com"]]
    gw["spec"]["servers"][0]["hosts"] = ["other/*"]  # only VirtualServices of namespace `other` may bind
    assert build(recipe(gateways=[gw], virtual_services=[vs]))[xds.ROUTES][0]["virtual_hosts"][0]["name"] == "blackhole:8080"


def test_weights_short_hosts_and_unmodelled_matches() -> None:
    vs = copy.deepcopy(recipe().virtual_services[0])
    vs["spec"]["http"] = [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": {"host": "reviews"}}]},
        {"route": [{"destination": {"host": "reviews", "port": {"number": 9080}}, "weight": 80},
                   {"destination": {"host": "ratings.ratings.svc.cluster.local", "port": {"number": 9080}}, "weight": 20}]}]
    (rc,) = build(recipe(virtual_services=[vs]))[xds.ROUTES]
    (route,) = rc["virtual_hosts"][0]["routes"]  # the header match is not modelled: left out
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": "outbound|9080||reviews.default.svc.cluster.local", "weight": 80},
        {"name": "outbound|9080||ratings.ratings.svc.cluster.local", "weight": 20}]
    assert route["route"]["retry_policy"]["num_retries"] == 2


def test_every_resource_is_a_valid_envoy_proto() -> None:
    for type_url, items in build(recipe()).items():
        for item in items:
            assert xds.to_any(type_url, item).type_url == type_url


def eastwest(**changes: object) -> GatewayInputs:
    svc = {"metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system"},
           "spec": {"type": "LoadBalancer", "selector": gateway.EASTWEST_LABELS,
                    "ports": [{"port": p, "targetPort": p} for p in (15021, 15443, 15012, 15017)]},
           "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.200"}]}}}
    pod = {"metadata": {"name": "ew-0", "namespace": "istio-system", "labels": gateway.EASTWEST_LABELS}}
    docs = [dict(d, metadata={**d["metadata"], "namespace": "istio-system"}) for d in manifests.docs("expose-istiod")]
    base = GatewayInputs([docs[0]], [docs[1]], [svc], [pod])
    return base._replace(**changes)  # type: ignore[arg-type]


def test_expose_istiod_passes_any_connection_on_15012_to_istiod() -> None:
    r = gateway.resources(eastwest(), lambda fqdn, port: ["127.0.0.1:15012"], gateway.EASTWEST_LABELS)
    listeners = {lis["name"]: lis for lis in r[xds.LISTENER]}
    assert sorted(listeners) == ["0.0.0.0_15012", "0.0.0.0_15017"]  # no Gateway server on 15021 or 15443
    (chain,) = listeners["0.0.0.0_15012"]["filter_chains"]
    assert "server_names" not in chain["filter_chain_match"], "sniHosts '*' matches any connection"
    assert "listener_filters" not in listeners["0.0.0.0_15012"]
    assert chain["filters"][0]["typed_config"]["cluster"] == "outbound|15012||istiod.istio-system.svc.cluster.local"
    assert {c["name"] for c in r[xds.CLUSTER]} == {"outbound|15012||istiod.istio-system.svc.cluster.local",
                                                   "outbound|443||istiod.istio-system.svc.cluster.local"}
    assert r[xds.ROUTES] == []
    assert gateway.resources(eastwest(), lambda f, p: [], gateway.INGRESS_LABELS)[xds.LISTENER] == []


def test_a_revisions_sni_gets_its_own_chain_read_by_the_tls_inspector() -> None:
    ins = eastwest()
    rev = copy.deepcopy(ins.virtual_services[0])
    rev["metadata"]["name"] = "istiod-canary-vs"
    rev["spec"]["tls"] = [{"match": [{"port": 15012, "sniHosts": ["istiod-canary.istio-system.svc"]}],
                           "route": [{"destination": {"host": "istiod-canary.istio-system.svc.cluster.local",
                                                      "port": {"number": 15012}}}]}]
    r = gateway.resources(ins._replace(virtual_services=[rev]), lambda f, p: [], gateway.EASTWEST_LABELS)
    (lis,) = [x for x in r[xds.LISTENER] if x["name"] == "0.0.0.0_15012"]
    assert [c["filter_chain_match"].get("server_names") for c in lis["filter_chains"]] == [
        ["istiod-canary.istio-system.svc"]]
    assert lis["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    for type_url, items in r.items():
        for item in items:
            assert xds.to_any(type_url, item).type_url == type_url


def test_catch_all_routes_go_last_and_virtual_hosts_sort_by_name() -> None:
    first, second = (copy.deepcopy(recipe().virtual_services[0]) for _ in range(2))
    first["spec"]["hosts"] = ["b.example.com", "a.example.com"]
    first["spec"]["http"] = [{"route": [{"destination": {"host": "reviews", "port": {"number": 9080}}}]}]
    second["metadata"]["name"] = "second"
    second["spec"]["hosts"] = ["a.example.com"]
    second["spec"]["http"] = [{"match": [{"uri": {"prefix": "/api"}}],
                               "route": [{"destination": {"host": "details", "port": {"number": 9080}}}]}]
    (rc,) = build(recipe(virtual_services=[first, second]))[xds.ROUTES]
    assert [v["name"] for v in rc["virtual_hosts"]] == ["a.example.com:8080", "b.example.com:8080"]
    assert [r["match"] for r in rc["virtual_hosts"][0]["routes"]] == [{"prefix": "/api"}, {"prefix": "/"}]


def test_a_tls_rule_repeating_an_sni_host_of_the_port_is_skipped() -> None:
    ins = eastwest()
    one, two = (copy.deepcopy(ins.virtual_services[0]) for _ in range(2))
    two["metadata"]["name"] = "again"
    for vs, dest in ((one, "istiod"), (two, "istiod-canary")):
        vs["spec"]["tls"] = [{"match": [{"port": 15012, "sniHosts": ["istiod.istio-system.svc"]}],
                              "route": [{"destination": {"host": f"{dest}.istio-system.svc.cluster.local",
                                                         "port": {"number": 15012}}}]}]
    r = gateway.resources(ins._replace(virtual_services=[one, two]), lambda f, p: [], gateway.EASTWEST_LABELS)
    (lis,) = [x for x in r[xds.LISTENER] if x["name"] == "0.0.0.0_15012"]
    assert [c["filters"][0]["typed_config"]["cluster"] for c in lis["filter_chains"]] == [
        "outbound|15012||istiod.istio-system.svc.cluster.local"], "Envoy rejects two chains with one match"


def test_sotw_answers_wildcard_types_whole_and_named_types_by_name() -> None:
    items = [{"name": "a", "cluster_name": "a"}, {"name": "b", "cluster_name": "b"}]
    assert xds.chosen(xds.CLUSTER, items, []) == items
    assert xds.chosen(xds.ENDPOINTS, items, ["b"]) == [items[1]]
    assert xds.chosen(xds.ROUTES, items, []) == [], "no names asked: none (an EDS/RDS subscription is never wildcard)"
