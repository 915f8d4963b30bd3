"""The kinds the Kubernetes API stand-in serves, and its discovery documents."""

from __future__ import annotations

from dataclasses import dataclass

VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-meshvm-standin", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0",
           "compiler": "gc", "platform": "linux/amd64"}  # every field a real /version carries
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Kind:
    group: str  # "" for core
    versions: tuple[str, ...]  # served; the same stored object answers in each (Istio's aliases)
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False  # has a /status subresource
    schema: bool = False  # Istio kind validated by schema.py

    def api_version(self, version: str | None = None) -> str:
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v


_NET = ("v1", "v1beta1", "v1alpha3")  # networking.istio.io serves all three for the same objects
KINDS: tuple[Kind, ...] = (
    Kind("", ("v1",), "namespaces", "Namespace", namespaced=False, status=True),
    Kind("", ("v1",), "pods", "Pod", status=True),
    Kind("", ("v1",), "services", "Service", status=True),
    Kind("", ("v1",), "serviceaccounts", "ServiceAccount"),
    Kind("", ("v1",), "configmaps", "ConfigMap"),
    Kind("", ("v1",), "secrets", "Secret"),
    Kind("", ("v1",), "events", "Event"),
    Kind("", ("v1",), "endpoints", "Endpoints"),
    Kind("apps", ("v1",), "deployments", "Deployment", status=True),
    Kind("networking.istio.io", _NET, "gateways", "Gateway", status=True, schema=True),
    Kind("networking.istio.io", _NET, "virtualservices", "VirtualService", status=True, schema=True),
    Kind("networking.istio.io", _NET, "workloadentries", "WorkloadEntry", status=True, schema=True),
    Kind("networking.istio.io", _NET, "workloadgroups", "WorkloadGroup", status=True, schema=True),
    Kind("install.istio.io", ("v1alpha1",), "istiooperators", "IstioOperator", status=True, schema=True),
    Kind("security.istio.io", ("v1", "v1beta1"), "peerauthentications", "PeerAuthentication", status=True, schema=True),
    Kind("security.istio.io", ("v1", "v1beta1"), "authorizationpolicies", "AuthorizationPolicy", status=True,
         schema=True),
)


def find(group: str, version: str, plural: str) -> Kind | None:
    for k in KINDS:
        if k.group == group and k.plural == plural and version in k.versions:
            return k
    return None


def by_kind(api_version: str, kind: str) -> Kind | None:
    group, _, version = api_version.rpartition("/")
    return next((k for k in KINDS if k.group == group and k.kind == kind and version in k.versions), None)


def api_versions(address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}


def _group_versions() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k in KINDS:
        if k.group:
            out.setdefault(k.group, [])
            out[k.group] += [v for v in k.versions if v not in out[k.group]]
    return out


def group_list() -> dict:
    groups = []
    for name, versions in _group_versions().items():
        gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        groups.append({"name": name, "versions": gvs, "preferredVersion": gvs[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(group: str, version: str) -> dict | None:
    served = [k for k in KINDS if k.group == group and version in k.versions]
    if not served:
        return None
    resources = []
    for k in served:
        base = {"namespaced": k.namespaced, "kind": k.kind}
        resources.append({"name": k.plural, "singularName": k.kind.lower(), "verbs": VERBS, **base})
        if k.status:
            resources.append({"name": f"{k.plural}/status", "singularName": "", "verbs": ["get", "patch", "update"],
                              **base})
        if k.plural == "serviceaccounts":
            resources.append({"name": "serviceaccounts/token", "singularName": "", "verbs": ["create"],
                              "namespaced": True, "kind": "TokenRequest", "group": "authentication.k8s.io",
                              "version": "v1"})
        if k.plural == "pods":
            resources.append({"name": "pods/exec", "singularName": "", "verbs": ["create", "get"],
                              "namespaced": True, "kind": "PodExecOptions"})
            resources.append({"name": "pods/log", "singularName": "", "verbs": ["get"], "namespaced": True,
                              "kind": "Pod"})
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def openapi_index() -> dict:
    """/openapi/v3: kubectl reads it to learn that the server validates fields (fieldValidation)."""
    gvs = {(k.group, v) for k in KINDS for v in k.versions}
    paths = {(f"apis/{g}/{v}" if g else f"api/{v}"): {"serverRelativeURL": f"/openapi/v3/{'apis/' + g if g else 'api'}/{v}"}
             for g, v in sorted(gvs)}
    return {"paths": paths}


def openapi_doc(group: str, version: str) -> dict | None:
    """A minimal OpenAPI v3 document: each kind's PATCH operation and its fieldValidation parameter."""
    served = [k for k in KINDS if k.group == group and version in k.versions]
    if not served:
        return None
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    param = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}]
    paths = {}
    for k in served:
        scope = "/namespaces/{namespace}" if k.namespaced else ""
        gvk = {"group": group, "version": version, "kind": k.kind}
        paths[f"{prefix}{scope}/{k.plural}/{{name}}"] = {"patch": {
            "x-kubernetes-group-version-kind": gvk, "parameters": param, "responses": {}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes API stand-in", "version": VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": {}}}
