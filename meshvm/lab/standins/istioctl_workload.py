"""lab STAND-IN for istioctl's workload commands (not Istio; istioctl/pkg/workload/workload.go at 1.30.3,
docs/facts.md sections 1 and 6): `x workload group create` prints the WorkloadGroup; `x workload entry
configure` writes mesh.yaml, cluster.env (sorted KEY='value'), root-cert.pem (hard error while
istio-ca-root-cert is missing), istio-token (a TokenRequest, audience istio-ca) and hosts (EMPTY, with a
warning and exit 0, while the east-west gateway has no address). With `--revision <rev>` it reads the
revision's ConfigMaps `istio-<rev>` and `istio-sidecar-injector-<rev>`, and points CA_ADDR and the hosts
line at `istiod-<rev>.istio-system.svc` (the discoveryAddress comes from the revision's mesh config).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import yaml
from kubernetes import client, config, dynamic

from meshvm.revisions import suffix

NS = "istio-system"


class Fail(Exception):
    pass


def kube(path: str | None) -> tuple[client.CoreV1Api, dynamic.DynamicClient]:
    api = config.new_client_from_config(config_file=path)
    return client.CoreV1Api(api), dynamic.DynamicClient(api)


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
    rev = suffix(args.revision)
    cluster = args.clusterID or injector_cluster_id(core, rev)
    mesh_cm = read_cm(core, NS, f"istio{rev}", f"configmap istio{rev} was not found in namespace istio-system")
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
    if rev:  # only a revisioned VM names its CA (workload.go); otherwise the agent uses discoveryAddress
        env["CA_ADDR"] = f"istiod{rev}.{NS}.svc:15012"
    write(args.output, "cluster.env", "".join(f"{k}='{v}'\n" for k, v in sorted(env.items())))
    root = read_cm(core, ns, "istio-ca-root-cert",
                   f"configmap istio-ca-root-cert was not found in namespace {ns}")
    write(args.output, "root-cert.pem", root.get("root-cert.pem", ""))
    write(args.output, "istio-token", token(core, ns, sa, args.tokenDuration))
    write(args.output, "hosts", hosts(core, args, f"istiod{rev}.{NS}.svc"))
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


def injector_cluster_id(core: client.CoreV1Api, rev: str) -> str:
    data = read_cm(core, NS, f"istio-sidecar-injector{rev}", "fetch injection template: not found")
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


def hosts(core: client.CoreV1Api, args: argparse.Namespace, istiod: str) -> str:
    ip = args.ingressIP
    if not ip:
        try:
            svc = core.read_namespaced_service(args.ingressService, NS, _request_timeout=10)
            ingress = (svc.status.load_balancer.ingress if svc.status and svc.status.load_balancer else None) or []
            ip = ingress[0].ip if ingress else ""
        except client.ApiException:
            ip = ""
    if not ip:
        print(f"warn Could not auto-detect IP for {istiod}/{NS}. Use --ingressIP to manually specify "
              "the Gateway address to reach istiod from the VM.", file=sys.stderr)
        return ""
    return f"{ip} {istiod}\n"


def write(folder: str, name: str, text: str) -> None:
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o744)  # as upstream: the token too (docs/facts.md section 1)
