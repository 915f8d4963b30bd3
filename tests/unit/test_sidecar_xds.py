"""The sidecar model's translation (meshvm/lab/envoy/sidecar.py, security.py) checked as data against the
shapes Istio 1.30.3 builds (docs/facts.md section 8); tests/lab/test_sidecar_envoy.py runs it through
real Envoys."""

from __future__ import annotations

from meshvm.lab.envoy import security, sidecar, xds
from meshvm.lab.meshca import MeshCa


def svc(name: str, ns: str, ip: str) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {
        "clusterIP": ip, "selector": {"app": name}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}}


def pa(ns: str, mode: str, selector: dict | None = None, ports: dict | None = None) -> dict:
    spec: dict = {"mtls": {"mode": mode}}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = ports
    return {"metadata": {"name": f"pa-{ns}-{mode}", "namespace": ns}, "spec": spec}


RATINGS = sidecar.Workload("ratings", {"app": "ratings"})
EP = sidecar.Endpoint("10.0.0.7:9080", "spiffe://cluster.local/ns/ratings/sa/bookinfo-ratings")


def build(w: sidecar.Workload = RATINGS, pas: list | None = None, aps: list | None = None) -> xds.Resources:
    inputs = sidecar.SidecarInputs([svc("ratings", "ratings", "10.96.0.10"), svc("details", "default", "10.96.0.11")],
                                   pas or [], aps or [])
    return sidecar.resources(w, inputs, lambda fqdn, port: [EP] if fqdn.startswith("ratings.") else [])


def test_peer_authentication_precedence_workload_port_then_namespace_then_mesh() -> None:
    labels = {"app": "ratings"}
    assert security.mtls_mode([], "ratings", labels, 9080) == "PERMISSIVE"
    mesh, ns = pa("istio-system", "STRICT"), pa("ratings", "PERMISSIVE")
    assert security.mtls_mode([mesh], "ratings", labels, 9080) == "STRICT"
    assert security.mtls_mode([mesh, ns], "ratings", labels, 9080) == "PERMISSIVE"
    port = pa("ratings", "UNSET", labels, {"9080": {"mode": "DISABLE"}})
    assert security.mtls_mode([mesh, ns, port], "ratings", labels, 9080) == "DISABLE"
    assert security.mtls_mode([mesh, ns, port], "ratings", labels, 9090) == "PERMISSIVE", "UNSET inherits"
    assert security.mtls_mode([pa("ratings", "STRICT", {"app": "other"})], "ratings", labels, 9080) == "PERMISSIVE"
    assert security.mtls_mode([pa("default", "STRICT")], "ratings", labels, 9080) == "PERMISSIVE"


def test_outbound_is_rds_by_port_with_auto_mtls_to_sidecar_endpoints() -> None:
    r = build(sidecar.Workload("default", {"app": "reviews"}))
    (rc,) = r[xds.ROUTES]
    assert rc["name"] == "9080" and rc["ignore_port_in_host_matching"] is True
    vh = {v["name"]: v for v in rc["virtual_hosts"]}
    assert vh["ratings.ratings.svc.cluster.local:9080"]["domains"] == [
        "ratings.ratings.svc.cluster.local", "ratings.ratings.svc.cluster.local.", "ratings.ratings.svc",
        "ratings.ratings", "10.96.0.10"]
    assert "details" in vh["details.default.svc.cluster.local:9080"]["domains"], "a short name in the own namespace"
    assert list(vh)[-1] == "allow_any"
    cluster = next(c for c in r[xds.CLUSTER] if c["name"] == "outbound|9080||ratings.ratings.svc.cluster.local")
    tls = cluster["transport_socket_matches"][0]["transport_socket"]["typed_config"]
    assert tls["sni"] == "outbound_.9080_._.ratings.ratings.svc.cluster.local"
    assert tls["common_tls_context"]["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    assert tls["common_tls_context"]["combined_validation_context"]["default_validation_context"][
        "match_subject_alt_names"] == [{"exact": EP.principal}]
    cla = next(c for c in r[xds.ENDPOINTS] if c["cluster_name"].endswith("ratings.ratings.svc.cluster.local"))
    assert cla["endpoints"][0]["lb_endpoints"][0]["metadata"] == {
        "filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}


def inbound_chains(r: xds.Resources, port: int = 9080) -> list[dict]:
    vi = next(x for x in r[xds.LISTENER] if x["name"] == "virtualInbound")
    return [c for c in vi["filter_chains"] if c["filter_chain_match"].get("destination_port") == port]


def test_inbound_permissive_has_mtls_and_plaintext_strict_only_mtls() -> None:
    chains = inbound_chains(build())
    assert [c["filter_chain_match"]["transport_protocol"] for c in chains] == ["tls", "raw_buffer"]
    assert "istio-peer-exchange" in chains[0]["filter_chain_match"]["application_protocols"]
    ctx = chains[0]["transport_socket"]["typed_config"]
    assert ctx["require_client_certificate"] is True
    strict = inbound_chains(build(pas=[pa("ratings", "STRICT")]))
    assert [c["filter_chain_match"] for c in strict] == [{"destination_port": 9080, "transport_protocol": "tls"}]
    vi = next(x for x in build(pas=[pa("ratings", "STRICT")])[xds.LISTENER] if x["name"] == "virtualInbound")
    assert "envoy.filters.listener.http_inspector" not in [f["name"] for f in vi["listener_filters"]]
    assert inbound_chains(build(sidecar.Workload("default", {"app": "reviews"}))) == [], "no Service selects reviews"


def test_authorization_policies_become_rbac_deny_before_allow() -> None:
    allow = {"metadata": {"name": "readers", "namespace": "ratings"}, "spec": {
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-reviews"]}}]}]}}
    deny = {"metadata": {"name": "no-vm", "namespace": "istio-system"}, "spec": {"action": "DENY", "rules": [
        {"from": [{"source": {"namespaces": ["ratings"]}}]}, {"to": [{"operation": {"paths": ["/x"]}}]}]}}
    hcm = inbound_chains(build(aps=[allow, deny]))[0]["filters"][0]["typed_config"]
    rbac = [f["typed_config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.rbac"]
    assert [r["rules"].get("action", "ALLOW") for r in rbac] == ["DENY", "ALLOW"]
    assert list(rbac[0]["rules"]["policies"]) == ["ns[istio-system]-policy[no-vm]-rule[0]"], "`to` is not modelled"
    ids = rbac[0]["rules"]["policies"]["ns[istio-system]-policy[no-vm]-rule[0]"]["principals"][0]["and_ids"]["ids"]
    assert ids == [{"or_ids": {"ids": [{"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/ratings/.*"}}}}]}}]
    (policy,) = rbac[1]["rules"]["policies"].values()
    assert policy["principals"][0]["and_ids"]["ids"][0]["or_ids"]["ids"][0]["authenticated"]["principal_name"] == {
        "exact": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    other_ns = dict(allow, metadata={"name": "readers", "namespace": "default"})
    assert inbound_chains(build(aps=[other_ns]))[0]["filters"][0]["typed_config"]["http_filters"][0]["name"] == \
        "envoy.filters.http.router", "a policy of another namespace does not apply"


def test_every_resource_and_secret_is_a_valid_envoy_proto() -> None:
    ca = MeshCa()
    r = build(pas=[pa("ratings", "STRICT")], aps=[{"metadata": {"name": "a", "namespace": "ratings"}, "spec": {}}])
    r[xds.SECRET] = security.secrets(ca.workload("ratings", "bookinfo-ratings"), ca.root_pem)
    for type_url, items in r.items():
        for item in items:
            assert xds.to_any(type_url, item).type_url == type_url
