"""lab STAND-IN for istioctl (not Istio): only the subcommands the suite runs, with strict flags
(an unknown flag is an error, as with the real one), against the cluster in --kubeconfig.

Modelled behaviour (istioctl/pkg/workload/workload.go in istio/istio, docs/facts.md section 1):
- `install`: the default profile makes istiod (its CLUSTER_ID, the recipe's pilot env), the `istio`
  and `istio-sidecar-injector` ConfigMaps and the ingress gateway; `profile: empty` with an
  ingress gateway named in the IstioOperator makes that gateway. Gateways are LoadBalancer Services.
  Images come from the hub (`--set hub=`, else the IstioOperator's `spec.hub`, else the charts'
  default `DEFAULT_HUB`, a registry that goes away: docs/facts.md section 6) at tag VERSION; the
  injector's values carry `global.hub` and `global.tag` for the injected proxies.
- `x workload group create`: prints the WorkloadGroup (networking.istio.io/v1alpha3).
- `x workload entry configure`: writes mesh.yaml, cluster.env (sorted KEY='value'), root-cert.pem
  (hard error while istio-ca-root-cert is missing), istio-token (a TokenRequest, audience istio-ca),
  hosts (EMPTY, with a warning and exit 0, while the east-west gateway has no address).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import yaml
from kubernetes import client, config, dynamic

VERSION = os.environ.get("LAB_ISTIOCTL_VERSION", "0.0.0")  # replaced when the lab installs it
# How long `install` keeps polling the control plane, as the real one does until its Deployments are
# ready (--readiness-timeout): a self-test's knob for a command that outlives a token (0: no polling).
INSTALL_S = float(os.environ.get("LAB_ISTIOCTL_INSTALL_S", "0"))
NS = "istio-system"
DEFAULT_HUB = "registry.istio.io/release"  # 1.30's charts' hub (docs/facts.md section 6); not the lab registry's
ISTIOD_HOST = "istiod.istio-system.svc"


class Fail(Exception):
    pass


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
    for leaf in (v, i, gc, ec):  # a global flag of the real istioctl, accepted after the subcommand
        leaf.add_argument("--kubeconfig", "-c")
    return p.parse_args(argv)


def kube(path: str | None) -> tuple[client.CoreV1Api, dynamic.DynamicClient]:
    api = config.new_client_from_config(config_file=path)
    return client.CoreV1Api(api), dynamic.DynamicClient(api)


def apply(dyn: dynamic.DynamicClient, obj: dict[str, Any]) -> None:
    res = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    ns = obj["metadata"].get("namespace")
    res.server_side_apply(body=obj, name=obj["metadata"]["name"], namespace=ns, field_manager="istioctl",
                          force_conflicts=True)


def deployment(name: str, labels: dict[str, str], env: dict[str, str], hub: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS,
            "labels": labels}, "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels}, "spec": {"containers": [{
                    "name": "discovery" if name == "istiod" else "istio-proxy",
                    "image": f"{hub}/{'pilot' if name == 'istiod' else 'proxyv2'}:{VERSION}",
                    "env": [{"name": k, "value": v} for k, v in sorted(env.items())]}]}}}}


def lb_service(name: str, labels: dict[str, str], ports: list[dict[str, Any]],
               k8s: dict[str, Any]) -> dict[str, Any]:
    svc = k8s.get("service") or {}
    spec = {"type": "LoadBalancer", "selector": labels, "ports": svc.get("ports", ports)}
    if svc.get("loadBalancerSourceRanges"):
        spec["loadBalancerSourceRanges"] = svc["loadBalancerSourceRanges"]
    meta = {"name": name, "namespace": NS, "labels": labels}
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
    sets = [s for s in args.set if not s.startswith("hub=")]
    hub = next((s.partition("=")[2] for s in args.set if s.startswith("hub=")), spec.get("hub") or DEFAULT_HUB)
    core, dyn = kube(args.kubeconfig)
    apply(dyn, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    if spec.get("profile", "default") != "empty":
        install_control_plane(dyn, spec, sets, hub)
        poll_control_plane(dyn, INSTALL_S)
    for gw in (spec.get("components") or {}).get("ingressGateways") or (
            [] if spec.get("profile") == "empty" else [{"name": "istio-ingressgateway", "enabled": True}]):
        if gw.get("enabled", True):
            labels = gw.get("label") or {"istio": "ingressgateway", "app": gw["name"]}
            apply(dyn, deployment(gw["name"], labels, {}, hub))
            apply(dyn, lb_service(gw["name"], labels, INGRESS_PORTS, gw.get("k8s") or {}))
    print("✔ Installation complete")


def install_control_plane(dyn: dynamic.DynamicClient, spec: dict[str, Any], sets: list[str], hub: str) -> None:
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
    apply(dyn, deployment("istiod", {"app": "istiod", "istio": "pilot"}, env, hub))
    apply(dyn, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istiod", "namespace": NS},
                "spec": {"selector": {"app": "istiod"}, "ports": [
                    {"name": "grpc-xds", "port": 15012}, {"name": "https-webhook", "port": 443, "targetPort": 15017}]}})
    mesh = {"defaultConfig": {"discoveryAddress": f"{ISTIOD_HOST}:15012"}, "trustDomain": "cluster.local"}
    apply(dyn, configmap("istio", {"mesh": yaml.safe_dump(mesh)}))
    values = {"global": {"multiCluster": {"clusterName": cluster}, "hub": hub, "tag": VERSION}}
    apply(dyn, configmap("istio-sidecar-injector", {"values": json.dumps(values), "config": "{}"}))


def poll_control_plane(dyn: dynamic.DynamicClient, seconds: float) -> None:
    """Read istiod's Deployment every half second for `seconds` (each read carries the kubeconfig's
    current credential: a token that expires meanwhile fails the install, as it fails the real one)."""
    deployments, until = dyn.resources.get(api_version="apps/v1", kind="Deployment"), time.monotonic() + seconds
    while time.monotonic() < until:
        deployments.get(namespace=NS, name="istiod", _request_timeout=10)
        time.sleep(min(0.5, max(0.0, until - time.monotonic())))


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": data}


def merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
    return over


def group_create(args: argparse.Namespace) -> None:
    doc = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "WorkloadGroup",
           "metadata": {"name": args.name, "namespace": args.namespace},
           "spec": {"metadata": {"annotations": pairs(args.annotations), "labels": pairs(args.labels)},
                    "template": {"serviceAccount": args.serviceAccount}}}
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=True))


def pairs(text: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in text.split(",") if p)


def entry_configure(args: argparse.Namespace) -> None:
    with open(args.file) as fh:
        wg = yaml.safe_load(fh)
    name, ns = wg["metadata"]["name"], wg["metadata"]["namespace"]
    spec = wg.get("spec") or {}
    sa = (spec.get("template") or {}).get("serviceAccount") or "default"
    core, _ = kube(args.kubeconfig)
    cluster = args.clusterID or injector_cluster_id(core)
    mesh_cm = read_cm(core, NS, "istio", "configmap istio was not found in namespace istio-system")
    mesh = yaml.safe_load(mesh_cm.get("mesh") or "{}") or {}
    os.makedirs(args.output, mode=0o744, exist_ok=True)
    md = metadata(name, ns, sa, spec, cluster, mesh, args)
    default = {**(mesh.get("defaultConfig") or {}), "proxyMetadata": md}
    if spec.get("probe"):
        default["readinessProbe"] = spec["probe"]
    write(args.output, "mesh.yaml", yaml.safe_dump({"defaultConfig": default}))
    env = {**md, "ISTIO_INBOUND_PORTS": "*", "ISTIO_NAMESPACE": ns, "ISTIO_SERVICE": f"{name}.{ns}",
           "ISTIO_SERVICE_CIDR": "*", "ISTIO_LOCAL_EXCLUDE_PORTS": "22,15090,15021,15020", "SERVICE_ACCOUNT": sa}
    if args.internalIP:
        env["ISTIO_SVC_IP"] = args.internalIP
    write(args.output, "cluster.env", "".join(f"{k}='{v}'\n" for k, v in sorted(env.items())))
    root = read_cm(core, ns, "istio-ca-root-cert",
                   f"configmap istio-ca-root-cert was not found in namespace {ns}")
    write(args.output, "root-cert.pem", root.get("root-cert.pem", ""))
    write(args.output, "istio-token", token(core, ns, sa, args.tokenDuration))
    write(args.output, "hosts", hosts(core, args))
    print(f"Configuration generation into directory {args.output} was successful")


def metadata(name: str, ns: str, sa: str, spec: dict[str, Any], cluster: str, mesh: dict[str, Any],
             args: argparse.Namespace) -> dict[str, str]:
    labels = dict((spec.get("metadata") or {}).get("labels") or {})
    canonical = labels.get("service.istio.io/canonical-name") or labels.get("app") or name
    revision = labels.get("service.istio.io/canonical-revision") or labels.get("version") or "latest"
    md = {"CANONICAL_SERVICE": canonical, "CANONICAL_REVISION": revision, "POD_NAMESPACE": ns,
          "SERVICE_ACCOUNT": sa, "TRUST_DOMAIN": mesh.get("trustDomain", ""), "ISTIO_META_CLUSTER_ID": cluster,
          "ISTIO_META_MESH_ID": "", "ISTIO_META_NETWORK": "", "ISTIO_META_WORKLOAD_NAME": name}
    labels.update({"service.istio.io/canonical-name": canonical, "service.istio.io/canonical-revision": revision})
    md["ISTIO_METAJSON_LABELS"] = json.dumps(labels, separators=(",", ":"), sort_keys=True)
    if args.capture_dns == "true":
        md["ISTIO_META_DNS_CAPTURE"] = "true"
    if args.autoregister:
        md["ISTIO_META_AUTO_REGISTER_GROUP"] = name
    return md


def injector_cluster_id(core: client.CoreV1Api) -> str:
    data = read_cm(core, NS, "istio-sidecar-injector", "fetch injection template: not found")
    name = json.loads(data.get("values") or "{}").get("global", {}).get("multiCluster", {}).get("clusterName")
    if not name:
        raise Fail("failed to automatically determine the --clusterID: could not retrieve "
                   "global.multiCluster.clusterName from injection config")
    return str(name)


def read_cm(core: client.CoreV1Api, ns: str, name: str, error: str) -> dict[str, str]:
    try:
        return core.read_namespaced_config_map(name, ns, _request_timeout=10).data or {}
    except client.ApiException as e:
        if e.status == 404:
            raise Fail(error) from None
        raise


def token(core: client.CoreV1Api, ns: str, sa: str, seconds: int) -> str:
    body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=["istio-ca"], expiration_seconds=seconds))
    try:
        return str(core.create_namespaced_service_account_token(sa, ns, body, _request_timeout=10).status.token)  # type: ignore[union-attr]
    except client.ApiException as e:
        raise Fail(f"could not create a token under service account {sa} in namespace {ns}: {e.reason}") from None


def hosts(core: client.CoreV1Api, args: argparse.Namespace) -> str:
    ip = args.ingressIP
    if not ip:
        try:
            svc = core.read_namespaced_service(args.ingressService, NS, _request_timeout=10)
            ingress = (svc.status.load_balancer.ingress if svc.status and svc.status.load_balancer else None) or []
            ip = ingress[0].ip if ingress else ""
        except client.ApiException:
            ip = ""
    if not ip:
        print(f"warn Could not auto-detect IP for {ISTIOD_HOST}/{NS}. Use --ingressIP to manually specify "
              "the Gateway address to reach istiod from the VM.", file=sys.stderr)
        return ""
    return f"{ip} {ISTIOD_HOST}\n"


def write(folder: str, name: str, text: str) -> None:
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o744)  # as upstream: the token too (docs/facts.md section 1)


def main(argv: list[str]) -> int:
    args = parse(argv)
    try:
        if args.cmd == "version":
            print(json.dumps({"clientVersion": {"version": VERSION}}) if args.output == "json"
                  else f"client version: {VERSION}")
        elif args.cmd == "install":
            install(args)
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
