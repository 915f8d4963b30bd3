"""Hand-written structural schemas of the Istio kinds the suite applies (stand-in validation).

Written from Istio's API reference (istio.io/latest/docs/reference/config/networking/...), field
names only; a small DSL, not the CRDs. These CRDs are structural without
x-kubernetes-preserve-unknown-fields under `spec` (IstioOperator's spec is open, `status` is open
everywhere), so as on a real API server an unknown field is rejected under fieldValidation=Strict
(what kubectl and meshvm.kube send) and pruned otherwise. Type and required-field errors are
422 Invalid, naming the field. Rarely used sub-objects are declared open ("object").

DSL: "string" | "integer" | "boolean" | "object" (anything object-like) | "any";
{"field": T, "req!": T} closed object ("!" marks required); ("map", T); [T] array of T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

S, N, B, OPEN = "string", "integer", "boolean", "object"
STRMAP = ("map", S)
PORT_SEL = {"number": N}
DEST = {"host!": S, "subset": S, "port": PORT_SEL}
STRING_MATCH = {"exact": S, "prefix": S, "regex": S}
L4_MATCH = {"destinationSubnets": [S], "port": N, "sourceLabels": STRMAP, "gateways": [S],
            "sourceNamespace": S}
ROUTE_DEST = {"destination!": DEST, "weight": N}
HTTP_MATCH = {"name": S, "uri": STRING_MATCH, "scheme": STRING_MATCH, "method": STRING_MATCH,
              "authority": STRING_MATCH, "headers": ("map", STRING_MATCH), "port": N,
              "sourceLabels": STRMAP, "gateways": [S], "queryParams": ("map", STRING_MATCH),
              "ignoreUriCase": B, "withoutHeaders": ("map", STRING_MATCH), "sourceNamespace": S,
              "statPrefix": S}
HTTP_ROUTE = {"name": S, "match": [HTTP_MATCH], "route": [{"destination!": DEST, "weight": N, "headers": OPEN}],
              "redirect": OPEN, "directResponse": OPEN, "delegate": OPEN, "rewrite": OPEN, "timeout": S,
              "retries": OPEN, "fault": OPEN, "mirror": OPEN, "mirrors": [OPEN], "mirrorPercentage": OPEN,
              "corsPolicy": OPEN, "headers": OPEN}
WORKLOAD_ENTRY = {"address": S, "ports": ("map", N), "labels": STRMAP, "network": S, "locality": S,
                  "weight": N, "serviceAccount": S}
PROBE = {"initialDelaySeconds": N, "timeoutSeconds": N, "periodSeconds": N, "successThreshold": N,
         "failureThreshold": N,
         "httpGet": {"path": S, "port!": N, "host": S, "scheme": S, "httpHeaders": [{"name": S, "value": S}]},
         "tcpSocket": {"host": S, "port!": N}, "exec": {"command": [S]}, "grpc": {"port": N, "service": S}}
SPECS: dict[str, object] = {
    "WorkloadGroup": {"metadata": {"labels": STRMAP, "annotations": STRMAP}, "template!": WORKLOAD_ENTRY,
                      "probe": PROBE},
    "WorkloadEntry": WORKLOAD_ENTRY,
    "Gateway": {"selector": STRMAP, "servers": [{
        "port!": {"number!": N, "name": S, "protocol!": S, "targetPort": N}, "bind": S, "hosts!": [S],
        "tls": {"httpsRedirect": B, "mode": S, "serverCertificate": S, "privateKey": S, "caCertificates": S,
                "credentialName": S, "credentialNames": [S], "subjectAltNames": [S], "minProtocolVersion": S,
                "maxProtocolVersion": S, "cipherSuites": [S], "verifyCertificateSpki": [S],
                "verifyCertificateHash": [S], "caCrl": S, "tlsCertificates": [OPEN]},
        "defaultEndpoint": S, "name": S}]},
    "VirtualService": {"hosts": [S], "gateways": [S], "http": [HTTP_ROUTE], "exportTo": [S],
                       "tls": [{"match!": [{**L4_MATCH, "sniHosts!": [S]}], "route": [ROUTE_DEST]}],
                       "tcp": [{"match": [L4_MATCH], "route": [ROUTE_DEST]}]},
    "IstioOperator": OPEN,
    "PeerAuthentication": {"selector": {"matchLabels": STRMAP}, "mtls": {"mode": S},
                           "portLevelMtls": ("map", {"mode": S})},
    "AuthorizationPolicy": {"selector": {"matchLabels": STRMAP}, "targetRef": OPEN, "targetRefs": [OPEN],
                            "action": S, "provider": {"name": S}, "rules": [{
                                "from": [{"source": {k: [S] for k in (
                                    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
                                    "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks",
                                    "notRemoteIpBlocks", "serviceAccounts", "notServiceAccounts")}}],
                                "to": [{"operation": OPEN}], "when": [OPEN]}]},
}
_TYPES = {S: (str,), N: (int,), B: (bool,)}


@dataclass(frozen=True)
class Cause:
    field: str
    reason: str  # FieldValueTypeInvalid | FieldValueRequired
    message: str


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(value), "null")


def _walk(schema: Any, value: Any, path: str, causes: list[Cause], unknown: list[str], prune: bool) -> None:
    if schema in ("any",) or (schema == OPEN and isinstance(value, dict)):
        return
    expected = ("object" if isinstance(schema, dict | tuple) or schema == OPEN else
                "array" if isinstance(schema, list) else str(schema))
    ok = {"object": dict, "array": list}.get(expected)
    good = isinstance(value, ok) if ok else (isinstance(value, _TYPES[expected])
                                             and not (expected == N and isinstance(value, bool)))
    if not good:
        causes.append(Cause(path, "FieldValueTypeInvalid", f'Invalid value: "{_type_name(value)}": '
                            f"{path} in body must be of type {expected}: \"{_type_name(value)}\""))
        return
    if isinstance(schema, list):
        for i, item in enumerate(value):
            _walk(schema[0], item, f"{path}[{i}]", causes, unknown, prune)
    elif isinstance(schema, tuple):
        for key, item in value.items():
            _walk(schema[1], item, f"{path}.{key}", causes, unknown, prune)
    elif isinstance(schema, dict):
        _walk_object(schema, value, path, causes, unknown, prune)


def _walk_object(schema: dict, value: dict, path: str, causes: list[Cause], unknown: list[str], prune: bool) -> None:
    fields = {k.rstrip("!"): v for k, v in schema.items()}
    for key in [k for k in schema if k.endswith("!") and k[:-1] not in value]:
        causes.append(Cause(f"{path}.{key[:-1]}", "FieldValueRequired", "Required value"))
    for key in list(value):
        if key not in fields:
            unknown.append(f"{path}.{key}")
            if prune:
                del value[key]
        elif value[key] is not None:
            _walk(fields[key], value[key], f"{path}.{key}", causes, unknown, prune)


def validate(kind: str, obj: dict, *, prune: bool) -> tuple[list[Cause], list[str]]:
    """Schema errors and unknown fields of an Istio object; with prune, unknown fields are removed."""
    causes: list[Cause] = []
    unknown: list[str] = []
    if kind in SPECS and "spec" in obj:
        _walk(SPECS[kind], obj["spec"], "spec", causes, unknown, prune)
    return causes, unknown
