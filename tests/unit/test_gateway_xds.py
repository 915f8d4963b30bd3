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
    return gateway.resources(inputs, endpoints, ("0.0.0.0", 80))


def test_the_recipe_gateway_as_istiod_names_it() -> None:
    asked: list = []
    r = build(recipe(), asked)
    (lis,) = r[xds.LISTENER]
    assert lis["name"] == "0.0.0.0_8080"
    assert lis["filter_chains"][0]["filter_chain_match"]["prefix_ranges"] == [{"address_prefix": "35.1.2.3", "prefix_len": 32}]
    (rc,) = r[xds.ROUTES]
    assert rc["name"] == "http.8080"
    (vh,) = rc["virtual_hosts"]
    assert (vh["name"], vh["domains"]) == ("*:80", ["*"])
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
    assert build(recipe(services=[lb_service(port=443)]))[xds.LISTENER] == []
    assert build(recipe(services=[lb_service(selector={"istio": "eastwestgateway"})]))[xds.LISTENER] == []


def test_no_bound_virtualservice_is_the_404_blackhole() -> None:
    (rc,) = build(recipe(virtual_services=[]))[xds.ROUTES]
    assert rc["virtual_hosts"] == [{"name": "blackhole:80", "domains": ["*"], "routes": []}]
    gw = copy.deepcopy(recipe().gateways[0])
    gw["spec"]["selector"] = {"istio": "eastwestgateway"}
    assert build(recipe(gateways=[gw]))[xds.ROUTES][0]["virtual_hosts"][0]["name"] == "blackhole:80"


def test_hosts_intersect_the_more_specific_wins_and_namespaces_limit_binding() -> None:
    gw = copy.deepcopy(recipe().gateways[0])
    gw["spec"]["servers"][0]["hosts"] = ["*.example.com", "other/*"]
    vs = copy.deepcopy(recipe().virtual_services[0])
    vs["spec"]["hosts"] = ["shop.example.com"]
    (rc,) = build(recipe(gateways=[gw], virtual_services=[vs]))[xds.ROUTES]
    assert [v["domains"] for v in rc["virtual_hosts"]] == [["shop.example.com"]]
    gw["spec"]["servers"][0]["hosts"] = ["other/*"]  # only VirtualServices of namespace `other` may bind
    assert build(recipe(gateways=[gw], virtual_services=[vs]))[xds.ROUTES][0]["virtual_hosts"][0]["name"] == "blackhole:80"


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
