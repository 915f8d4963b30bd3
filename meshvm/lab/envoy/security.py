"""The lab control plane's model of what istiod makes of PeerAuthentication and AuthorizationPolicy
for a sidecar's inbound side, and the TLS contexts and secrets it names, as Istio 1.30.3 builds them
(docs/facts.md section 8):

- the PeerAuthentication in force for a workload's port (`pilot/pkg/security/authn/policy_applier.go`):
  a workload policy (selector matching its labels, its port-level mode first) over the namespace's
  (no selector) over the mesh's (root namespace `istio-system`, no selector); UNSET inherits;
  nothing: PERMISSIVE;
- the inbound DownstreamTlsContext (`pilot/pkg/security/authn/utils/utils.go` BuildInboundTLS,
  `pilot/pkg/security/model/authentication.go`): client certificate required, ALPN `h2,http/1.1`,
  SDS secrets `default` and `ROOTCA` from the `sds-grpc` cluster, peers validated by the prefix
  `spiffe://<trust domain>/`;
- the upstream TlsContext of auto mTLS (`pilot/pkg/networking/core/cluster_tls.go`): SNI
  `outbound_.<port>_._.<fqdn>`, ALPN `istio-peer-exchange,istio`, the endpoints' SPIFFE names exact;
- AuthorizationPolicy -> `envoy.filters.http.rbac` (`pilot/pkg/security/authz/builder/builder.go`,
  `model/generator.go`): one filter per action, DENY before ALLOW, policy names
  `ns[<ns>]-policy[<name>]-rule[<i>]`, `source.principals` as `authenticated.principal_name` exact with
  `spiffe://` before it (a trailing `*` a prefix, `*` alone any), `source.namespaces` as the regex
  `.*/ns/<ns>/.*`, an empty `to` as any permission, a policy without rules never matching. Other
  rule fields (`to.operation`, `when`, `notPrincipals`, ...) are not modelled: such a rule is left out
  and logged (an ALLOW policy then allows less, a DENY policy denies less); nor are `targetRef(s)`
  (such a policy is taken as namespace-wide), a root-namespace policy with a selector (Istio applies it
  in every namespace; here it applies nowhere), CUSTOM and AUDIT actions, and TCP RBAC on the
  passthrough chains of undeclared ports;
- the secrets pilot-agent's SDS server answers (`security/pkg/nodeagent/sds/sdsservice.go`).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from meshvm.lab import istio_match
from meshvm.lab.meshca import TRUST_DOMAIN, KeyPair

log = logging.getLogger(__name__)
ROOT_NAMESPACE = "istio-system"
ALPN_IN_MESH = ["istio-peer-exchange", "istio"]  # util.ALPNInMeshWithMxc
ALPN_INBOUND_HTTP = ["h2", "http/1.1"]  # MTLSSettings.HTTP
ALLOWED_SOURCE_KEYS = {"principals", "namespaces"}
_T = "type.googleapis.com/envoy.extensions."
CIPHERS = ["ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
           "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256"]


def _applies(policy: dict, namespace: str, labels: dict[str, str]) -> int:
    """How specifically a policy applies to a workload: 3 workload, 2 namespace, 1 mesh, 0 not at all."""
    meta, spec = policy["metadata"], policy.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels")
    ns = meta.get("namespace", "default")
    if ns == namespace and selector:
        return 3 if istio_match.selects(selector, labels) else 0
    if ns == namespace:
        return 2
    return 1 if ns == ROOT_NAMESPACE and not selector else 0


def mtls_mode(peer_authentications: list[dict], namespace: str, labels: dict[str, str], port: int) -> str:
    """STRICT, PERMISSIVE or DISABLE for a workload's port."""
    ranked = sorted(((_applies(p, namespace, labels), p) for p in peer_authentications), key=lambda x: -x[0])
    for rank, p in ranked:
        if not rank:
            break
        spec = p.get("spec") or {}
        if rank == 3:
            port_mode = ((spec.get("portLevelMtls") or {}).get(str(port)) or {}).get("mode", "UNSET")
            if port_mode != "UNSET":
                return str(port_mode)
        mode = (spec.get("mtls") or {}).get("mode", "UNSET")
        if mode != "UNSET":
            return str(mode)
    return "PERMISSIVE"


def sds(name: str) -> dict[str, Any]:
    """pkg/model/authentication.go ConstructSdsSecretConfig: a secret from pilot-agent's SDS socket."""
    return {"name": name, "sds_config": {
        "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                              "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
        "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}


def _common(alpn: list[str], sans: list[dict[str, str]]) -> dict[str, Any]:
    return {"alpn_protocols": alpn, "tls_certificate_sds_secret_configs": [sds("default")],
            "combined_validation_context": {"default_validation_context": {"match_subject_alt_names": sans},
                                            "validation_context_sds_secret_config": sds("ROOTCA")}}


def downstream_tls(trust_domain: str = TRUST_DOMAIN) -> dict[str, Any]:
    common = _common(ALPN_INBOUND_HTTP, [{"prefix": f"spiffe://{trust_domain}/"}])
    common["tls_params"] = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3",
                            "cipher_suites": CIPHERS}
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": _T + "transport_sockets.tls.v3.DownstreamTlsContext", "require_client_certificate": True,
        "common_tls_context": common}}


def upstream_tls(fqdn: str, port: int, principals: list[str]) -> dict[str, Any]:
    common = _common(ALPN_IN_MESH, [{"exact": p} for p in sorted(set(principals))])
    common["tls_params"] = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": _T + "transport_sockets.tls.v3.UpstreamTlsContext", "sni": f"outbound_.{port}_._.{fqdn}",
        "common_tls_context": common}}


def secrets(pair: KeyPair, root_pem: str) -> list[dict[str, Any]]:
    """What pilot-agent's SDS server answers for `default` and `ROOTCA`."""
    return [{"name": "default", "tls_certificate": {"certificate_chain": {"inline_bytes": _b64(pair.cert_pem)},
                                                    "private_key": {"inline_bytes": _b64(pair.key_pem)}}},
            {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_bytes": _b64(root_pem)}}}]


def _b64(pem: str) -> str:  # bytes fields are base64 in the protos' JSON form
    return base64.b64encode(pem.encode()).decode()


def _principal_matcher(value: str) -> dict[str, Any]:
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.endswith("*"):
        return {"prefix": "spiffe://" + value[:-1]}
    if value.startswith("*"):
        return {"safe_regex": {"regex": "spiffe://.*" + value[1:]}}
    return {"exact": "spiffe://" + value}


def _principals(rule: dict) -> list[dict[str, Any]] | None:
    """One rule's principals (an and of ors, one per `from`), or None when it uses what is not modelled."""
    out: list[dict[str, Any]] = []
    for frm in rule.get("from") or []:
        source = frm.get("source") or {}
        if set(source) - ALLOWED_SOURCE_KEYS or set(frm) - {"source"}:
            return None
        ids: list[dict[str, Any]] = []
        for key, make in (("principals", _principal_matcher),
                          ("namespaces", lambda ns: {"safe_regex": {"regex": f".*/ns/{ns.replace('*', '.*')}/.*"}})):
            if source.get(key):
                ids.append({"or_ids": {"ids": [{"authenticated": {"principal_name": make(v)}} for v in source[key]]}})
        out.append({"and_ids": {"ids": ids or [{"any": True}]}})
    return out or [{"and_ids": {"ids": [{"any": True}]}}]


def rbac_filters(policies: list[dict], namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The inbound HTTP chain's RBAC filters for a workload: DENY, then ALLOW (each only when a policy has it)."""
    by_action: dict[str, dict[str, Any]] = {}
    for p in sorted(policies, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"])):
        if not _applies(p, namespace, labels):
            continue
        spec, meta = p.get("spec") or {}, p["metadata"]
        action = str(spec.get("action", "ALLOW")).upper()
        if action not in ("ALLOW", "DENY"):
            log.warning("authorization model: %s/%s action %s not modelled", meta.get("namespace"), meta["name"], action)
            continue
        rules = by_action.setdefault(action, {})
        for i, rule in enumerate(spec.get("rules") or []):
            principals = _principals(rule)
            if principals is None or set(rule) - {"from"}:
                log.warning("authorization model: %s/%s rule %d uses fields not modelled: left out",
                            meta.get("namespace"), meta["name"], i)
                continue
            rules[f"ns[{meta.get('namespace')}]-policy[{meta['name']}]-rule[{i}]"] = {
                "permissions": [{"and_rules": {"rules": [{"any": True}]}}], "principals": principals}
    out = []
    for action in ("DENY", "ALLOW"):
        if action in by_action:
            rules = {"policies": by_action[action]} | ({"action": "DENY"} if action == "DENY" else {})
            out.append({"name": "envoy.filters.http.rbac", "typed_config": {
                "@type": _T + "filters.http.rbac.v3.RBAC", "rules": rules,
                "shadow_rules_stat_prefix": "istio_dry_run_allow_"}})
    return out
