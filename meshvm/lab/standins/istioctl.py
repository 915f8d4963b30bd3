"""lab STAND-IN for istioctl (not Istio): only the subcommands the suite runs, with strict flags
(an unknown flag is an error, as with the real one), against the cluster in --kubeconfig.

Modelled behaviour (Istio's charts and operator at 1.30.3, docs/facts.md sections 1 and 6):
- `install`: the default profile makes istiod (its CLUSTER_ID, the recipe's pilot env), the `istio`
  and `istio-sidecar-injector` ConfigMaps and the ingress gateway; `profile: empty` with an
  ingress gateway named in the IstioOperator makes that gateway. Gateways are LoadBalancer Services.
  Images come from the hub (`--set hub=`, else the IstioOperator's `spec.hub`, else the charts'
  default `DEFAULT_HUB`, a registry that goes away: docs/facts.md section 6) at tag VERSION; the
  injector's values carry `global.hub` and `global.tag` for the injected proxies.
- `install --revision <rev>` (or `spec.revision`): istiod, its Service and ConfigMaps get the suffix
  `-<rev>` (the mesh config's discoveryAddress `istiod-<rev>.istio-system.svc:15012`; istiod's pods
  `istio=istiod`, which Service `istiod`, selecting `istio=pilot`, never picks up); the gateways keep their
  names and are re-rendered in place. Every object is labelled `istio.io/rev` (`default` without a
  revision) and `operator.istio.io/component` (operator/pkg/install/install.go).
- `uninstall --revision <rev>`: deletes the component objects of that revision (operator/pkg/uninstall/
  prune.go); the stand-in makes no webhooks or RBAC, so Deployments, Services and ConfigMaps.
- `x workload ...`: istioctl_workload.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import yaml
from kubernetes import dynamic

from meshvm.lab.injection import INJECT, TEMPLATES
from meshvm.lab.standins.istioctl_workload import NS, Fail, entry_configure, group_create, kube
from meshvm.revisions import DEFAULT, LABEL, suffix

VERSION = os.environ.get("LAB_ISTIOCTL_VERSION", "0.0.0")  # replaced when the lab installs it
# How long `install` keeps polling the control plane, as the real one does until its Deployments are
# ready (--readiness-timeout): a self-test's knob for a command that outlives a token (0: no polling).
INSTALL_S = float(os.environ.get("LAB_ISTIOCTL_INSTALL_S", "0"))
DEFAULT_HUB = "registry.istio.io/release"  # 1.30's charts' hub (docs/facts.md section 6); not the lab registry's


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="istioctl", allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("version", allow_abbrev=False)
    v.add_argument("--remote", default="true")
    v.add_argument("-o", "--output", default="")
    i = sub.add_parser("install", allow_abbrev=False)
    i.add_argument("-y", "--skip-confirmation", action="store_true")
    i.add_argument("--set", "-s", action="append", default=[])
    i.add_argument("-f", "--filename", action="append", default=[])
    i.add_argument("--revision", "-r", default="")
    u = sub.add_parser("uninstall", allow_abbrev=False)
    u.add_argument("-y", "--skip-confirmation", action="store_true")
    u.add_argument("--revision", "-r", default="")
    x = sub.add_parser("x", allow_abbrev=False).add_subparsers(dest="x", required=True)
    w = x.add_parser("workload", allow_abbrev=False).add_subparsers(dest="w", required=True)
    g = w.add_parser("group", allow_abbrev=False).add_subparsers(dest="g", required=True)
    gc = g.add_parser("create", allow_abbrev=False)
    gc.add_argument("--name", required=True)
    gc.add_argument("--namespace", "-n", required=True)
    gc.add_argument("--labels", "-l", default="")
    gc.add_argument("--annotations", "-a", default="")
    gc.add_argument("--serviceAccount", "-s", default="default")
    e = w.add_parser("entry", allow_abbrev=False).add_subparsers(dest="e", required=True)
    ec = e.add_parser("configure", allow_abbrev=False)
    ec.add_argument("-f", "--file", required=True)
    ec.add_argument("-o", "--output", required=True)
    ec.add_argument("--clusterID")
    ec.add_argument("--autoregister", action="store_true")
    ec.add_argument("--capture-dns", default="true")
    ec.add_argument("--internalIP", default="")
    ec.add_argument("--ingressIP", default="")
    ec.add_argument("--ingressService", default="istio-eastwestgateway")
    ec.add_argument("--tokenDuration", type=int, default=3600)
    ec.add_argument("--revision", "-r", default="")
    for leaf in (v, i, u, gc, ec):  # a global flag of the real istioctl, accepted after the subcommand
        leaf.add_argument("--kubeconfig", "-c")
    return p.parse_args(argv)


def apply(dyn: dynamic.DynamicClient, obj: dict[str, Any]) -> None:
    res = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    ns = obj["metadata"].get("namespace")
    res.server_side_apply(body=obj, name=obj["metadata"]["name"], namespace=ns, field_manager="istioctl",
                          force_conflicts=True)


def deployment(name: str, selector: dict[str, str], pods: dict[str, str], env: dict[str, str], hub: str,
               owner: dict[str, str]) -> dict[str, Any]:
    """`pods`: the pod template's labels (a superset of `selector`, which stays the same across revisions);
    `owner`: the operator's labels on the Deployment."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS,
            "labels": {**pods, **owner}}, "spec": {"replicas": 1, "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": pods}, "spec": {"containers": [{
                    "name": "discovery" if name.startswith("istiod") else "istio-proxy",
                    "image": f"{hub}/{'pilot' if name.startswith('istiod') else 'proxyv2'}:{VERSION}",
                    "env": [{"name": k, "value": v} for k, v in sorted(env.items())]}]}}}}


def template(spec: dict[str, Any]) -> str:
    """values.gateways.istio-ingressgateway.injectionTemplate (the east-west gateway's: `gateway`)."""
    gateways = (spec.get("values") or {}).get("gateways") or {}
    return str((gateways.get("istio-ingressgateway") or {}).get("injectionTemplate") or "")


def gateway(name: str, labels: dict[str, str], hub: str, owner: dict[str, str], rev: str,
            injected: bool) -> dict[str, Any]:
    """A gateway's Deployment, as the istio-ingress chart renders it (1.30.3): `deployment.yaml` runs the hub's
    proxyv2 and asks for no injection; with an injection template, `injected-deployment.yaml` has image
    `auto` and asks the webhook of its revision (pod labels `sidecar.istio.io/inject`, `istio.io/rev`
    only with a revision), which fills in the image when it makes the pod. Both label the pods with the
    release (`app.kubernetes.io/version`, zzz_profile.yaml's istio.labels)."""
    labels_of_pods = {**labels, "app.kubernetes.io/version": VERSION}  # istio.labels: a new release rolls the pods
    if not injected:
        d = deployment(name, labels, {**labels_of_pods, LABEL: rev or DEFAULT, INJECT: "false"}, {}, hub, owner)
        d["spec"]["template"]["metadata"]["annotations"] = {LABEL: rev or DEFAULT, INJECT: "false"}
        return d
    d = deployment(name, labels, {**labels_of_pods, INJECT: "true", **({LABEL: rev} if rev else {})}, {}, hub, owner)
    pod = d["spec"]["template"]
    pod["metadata"]["annotations"] = {INJECT: "true", TEMPLATES: "gateway"}
    pod["spec"]["containers"][0]["image"] = "auto"
    return d


def owned(rev: str, component: str) -> dict[str, str]:
    return {LABEL: rev or DEFAULT, "operator.istio.io/component": component}


def lb_service(name: str, labels: dict[str, str], ports: list[dict[str, Any]],
               k8s: dict[str, Any], owner: dict[str, str]) -> dict[str, Any]:
    svc = k8s.get("service") or {}
    spec = {"type": "LoadBalancer", "selector": labels, "ports": svc.get("ports", ports)}
    if svc.get("loadBalancerSourceRanges"):
        spec["loadBalancerSourceRanges"] = svc["loadBalancerSourceRanges"]
    meta = {"name": name, "namespace": NS, "labels": {**labels, **owner}}
    if k8s.get("serviceAnnotations"):
        meta["annotations"] = k8s["serviceAnnotations"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


INGRESS_PORTS = [{"name": "status-port", "port": 15021, "targetPort": 15021},
                 {"name": "http2", "port": 80, "targetPort": 8080},
                 {"name": "https", "port": 443, "targetPort": 8443}]


def install(args: argparse.Namespace) -> None:
    iop: dict[str, Any] = {}
    for f in args.filename:
        with open(f) as fh:
            iop = merge(iop, yaml.safe_load(fh) or {})
    spec = iop.get("spec") or {}
    rev = suffix(args.revision or str(spec.get("revision") or "")).removeprefix("-")
    sets = [s for s in args.set if not s.startswith("hub=")]
    hub = next((s.partition("=")[2] for s in args.set if s.startswith("hub=")), spec.get("hub") or DEFAULT_HUB)
    _, dyn = kube(args.kubeconfig)
    apply(dyn, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    if spec.get("profile", "default") != "empty":
        install_control_plane(dyn, spec, sets, hub, rev)
        poll_control_plane(dyn, f"istiod{suffix(rev)}", INSTALL_S)
    for gw in (spec.get("components") or {}).get("ingressGateways") or (
            [] if spec.get("profile") == "empty" else [{"name": "istio-ingressgateway", "enabled": True}]):
        if gw.get("enabled", True):
            labels = gw.get("label") or {"istio": "ingressgateway", "app": gw["name"]}
            owner = owned(rev, "IngressGateways")
            apply(dyn, gateway(gw["name"], labels, hub, owner, rev, injected=template(spec) != ""))
            apply(dyn, lb_service(gw["name"], labels, INGRESS_PORTS, gw.get("k8s") or {}, owner))
    print("✔ Installation complete")


def install_control_plane(dyn: dynamic.DynamicClient, spec: dict[str, Any], sets: list[str], hub: str,
                          rev: str) -> None:
    env = {"PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION": "true", "PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS": "true"}
    cluster = ((spec.get("values") or {}).get("global") or {}).get("multiCluster", {}).get("clusterName", "")
    for s in sets:
        key, _, value = s.partition("=")
        if key.startswith("values.pilot.env."):
            env[key.removeprefix("values.pilot.env.")] = value
        elif key == "values.global.multiCluster.clusterName":
            cluster = value
        else:
            raise Fail(f"stand-in istioctl: --set {key} is not modelled")
    env["CLUSTER_ID"] = cluster or "Kubernetes"
    env["REVISION"] = rev or DEFAULT
    name, owner = f"istiod{suffix(rev)}", owned(rev, "Pilot")
    # The chart's labels (istio-discovery/templates/{deployment,service}.yaml at 1.30.3)
    selector = {"app": "istiod", LABEL: rev} if rev else {"istio": "pilot"}
    pods = {"app": "istiod", LABEL: rev or DEFAULT, "istio": "istiod" if rev else "pilot"}
    apply(dyn, deployment(name, selector, pods, env, hub, owner))
    service = {"app": "istiod", LABEL: rev} if rev else {"app": "istiod", "istio": "pilot"}
    apply(dyn, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS, "labels": owner},
                "spec": {"selector": service, "ports": [
                    {"name": "grpc-xds", "port": 15012}, {"name": "https-webhook", "port": 443, "targetPort": 15017}]}})
    mesh = {"defaultConfig": {"discoveryAddress": f"{name}.{NS}.svc:15012"}, "trustDomain": "cluster.local"}
    apply(dyn, configmap(f"istio{suffix(rev)}", {"mesh": yaml.safe_dump(mesh)}, owner))
    values = {"global": {"multiCluster": {"clusterName": cluster}, "hub": hub, "tag": VERSION}, "revision": rev}
    apply(dyn, configmap(f"istio-sidecar-injector{suffix(rev)}", {"values": json.dumps(values), "config": "{}"}, owner))


def uninstall(args: argparse.Namespace) -> None:
    """The component objects of `--revision` (Deployments, Services, ConfigMaps in istio-system)."""
    if not args.revision:
        raise Fail("at least one of the --revision (or --set revision=<revision>), --filename or --purge "
                   "flags must be set")
    _, dyn = kube(args.kubeconfig)
    selector = f"{LABEL}={args.revision},operator.istio.io/component"
    for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap")):
        res = dyn.resources.get(api_version=api_version, kind=kind)
        for item in res.get(namespace=NS, label_selector=selector, _request_timeout=10).items:
            res.delete(namespace=NS, name=item.metadata.name, _request_timeout=10)
            print(f"  Removed {kind}:{NS}:{item.metadata.name}.")
    print("✔ Uninstall complete")


def poll_control_plane(dyn: dynamic.DynamicClient, name: str, seconds: float) -> None:
    """Read istiod's Deployment every half second for `seconds` (each read carries the kubeconfig's
    current credential: a token that expires meanwhile fails the install, as it fails the real one)."""
    deployments, until = dyn.resources.get(api_version="apps/v1", kind="Deployment"), time.monotonic() + seconds
    while time.monotonic() < until:
        deployments.get(namespace=NS, name=name, _request_timeout=10)
        time.sleep(min(0.5, max(0.0, until - time.monotonic())))


def configmap(name: str, data: dict[str, str], owner: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS, "labels": owner},
            "data": data}


def merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
    return over


def main(argv: list[str]) -> int:
    args = parse(argv)
    try:
        if args.cmd == "version":
            print(json.dumps({"clientVersion": {"version": VERSION}}) if args.output == "json"
                  else f"client version: {VERSION}")
        elif args.cmd == "install":
            install(args)
        elif args.cmd == "uninstall":
            uninstall(args)
        elif getattr(args, "g", None) == "create":
            group_create(args)
        else:
            entry_configure(args)
    except Fail as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
