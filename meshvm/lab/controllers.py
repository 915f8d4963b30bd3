"""lab STAND-INS for the cluster's own controllers, over the Kubernetes API (not Kubernetes):

- kubelet + Deployment controller: each Deployment gets its Pods (`<name>-<pod-template-hash>-<i>`),
  Running with an address from the pod range, and an available status for its generation once they are
  Ready; a changed template (`kubectl rollout restart` sets an annotation in it) gets new pods, and the
  old ones go once the new ones are Ready (the default RollingUpdate's maxSurge 25% rounds up, its
  maxUnavailable 25% down: for one replica a new pod first, the old one only when it is available);
  `on_pods` hears the Deployment's pods. Ready is the node's to say (pods.py, `kubelet_ready`): there
  a pod is Ready once its sidecar and app are; without a node, at once. A pod whose image the lab's
  registry (`PULLABLE`) does not hold stays Pending in ImagePullBackOff and its Deployment
  unavailable, as a wrong image prefix or tag leaves it on GKE;
- the cloud's load-balancer controller: each LoadBalancer Service gets an address from a pool
  (the lab can hold one back, as GKE does for minutes, to exercise the empty `hosts` case) and the
  finalizer `service.kubernetes.io/load-balancer-cleanup`, which it clears once the Service is
  being deleted; optional hooks make and delete the cloud's resources of it (`on_lb`, `on_lb_deleted`);
- istiod's namespace controller: once istiod exists, every namespace gets `istio-ca-root-cert`.

They reconcile in one background thread at a short fixed pace until stopped.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kubernetes import client, dynamic
from kubernetes.dynamic.exceptions import NotFoundError

from meshvm.lab import injection
from meshvm.lab.mesh_registry import TLS_MODE, pod_ready  # TLS_MODE: the injection template's pod label

log = logging.getLogger(__name__)
PACE_S = 0.2
ROOT_CERT_CHECK_S = 2.0
TIMEOUT = 10
LB_FINALIZER = "service.kubernetes.io/load-balancer-cleanup"
# The images the lab can "pull": BookInfo's at the tag docs/facts.md pins, the curl client the manifest
# names, and Istio's own (the stand-in istioctl's, any version).
PULLABLE = re.compile(r"docker\.io/istio/(examples-bookinfo-(details|productpage|ratings)-v1"
                      r"|examples-bookinfo-reviews-v[123]):1\.20\.3|docker\.io/curlimages/curl:8\.16\.0"
                      r"|docker\.io/istio/(pilot|proxyv2):[0-9][0-9a-z.-]*")
# on_lb(namespace, name, ip, loadBalancerSourceRanges, ((protocol, port), ...), annotations);
# on_lb_deleted(namespace, name)
OnLb = Callable[[str, str, str, Sequence[str], Sequence[tuple[str, int]], dict[str, str]], None]
OnLbDeleted = Callable[[str, str], None]
OnPods = Callable[[str, str, list[str]], None]  # on_pods(namespace, deployment, its pods' names)


class ReconcileLoop:
    """Calls `reconcile()` in one background thread at a fixed pace until stopped. A stand-in must not
    die silently: an error is kept in `errors` (for the tests) and logged, and the loop goes on."""

    def __init__(self, name: str, pace_s: float = PACE_S):
        self.errors: list[str] = []
        self._pace_s = pace_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def reconcile(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self._pace_s):
            try:
                self.reconcile()
            except Exception as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                log.warning("%s: %s", self._thread.name, e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)


class ClusterControllers(ReconcileLoop):
    def __init__(self, api: client.ApiClient, pod_range: str, lb_pool: list[str], root_cert_pem: str,
                 on_lb: OnLb | None = None, on_lb_deleted: OnLbDeleted | None = None, *, lb_s: float = 0.0,
                 pull_s: float = 0.0, on_pods: OnPods | None = None, kubelet_ready: bool = False):
        self._on_lb, self._on_lb_deleted, self._on_pods = on_lb, on_lb_deleted, on_pods
        self._kubelet_ready = kubelet_ready  # a node's kubelet stand-in sets each pod's Ready condition
        self._seen: dict[tuple[str, str], dict[str, Any]] = {}  # this round's pods
        self._pods: dict[tuple[str, str], list[str]] = {}  # each Deployment's pods, of its current template
        self._made: dict[tuple[str, str], set[str]] = {}  # every pod each Deployment made (the garbage collector's)
        self._root_checked: dict[tuple[str, str], float] = {}  # (namespace, uid) -> when its root cert was looked at
        # --lab-timing: how long a LoadBalancer Service waits for its address and a Deployment for its pods
        self._lb_s, self._pull_s = lb_s, pull_s
        self._first_seen: dict[str, float] = {}
        self._dyn = dynamic.DynamicClient(api)
        self._pod_ips: Iterator[ipaddress.IPv4Address] = iter(ipaddress.IPv4Network(pod_range).hosts())
        self._lb_pool = list(lb_pool)
        self._assigned: dict[str, str] = {}  # a Service keeps its address, as a reserved IP would
        self._root_cert = root_cert_pem
        self.hold_lb: set[str] = set()  # "namespace/name" of Services left without an address
        self.hold_root_cert: set[str] = set()  # namespaces istiod has not reached yet
        super().__init__("lab controllers")

    def start(self) -> ClusterControllers:
        self._thread.start()
        return self

    def _res(self, api_version: str, kind: str) -> Any:
        return self._dyn.resources.get(api_version=api_version, kind=kind)

    def reconcile(self) -> None:
        self._seen = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in
                      (o.to_dict() for o in self._res("v1", "Pod").get(_request_timeout=TIMEOUT).items)}
        istiod = False  # any control plane (a revision's too) writes the mesh root into every namespace
        deployments = [o.to_dict() for o in self._res("apps/v1", "Deployment").get(_request_timeout=TIMEOUT).items]
        for d in deployments:
            self._deployment(d)
            istiod = istiod or (d["metadata"]["namespace"], (d["metadata"].get("labels") or {}).get("app")) == (
                "istio-system", "istiod")
        self._collect({(d["metadata"]["namespace"], d["metadata"]["name"]) for d in deployments})
        for s in self._res("v1", "Service").get(_request_timeout=TIMEOUT).items:
            self._service(s.to_dict())
        if istiod:
            self._root_certs()

    @staticmethod
    def _patch_status(res: Any, namespace: str, name: str, body: dict[str, Any]) -> None:
        res.status.patch(namespace=namespace, name=name, body=body, _request_timeout=TIMEOUT,
                         content_type="application/merge-patch+json")

    def _exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        try:
            self._res(api_version, kind).get(namespace=namespace, name=name, _request_timeout=TIMEOUT)
            return True
        except NotFoundError:
            return False

    def _deployment(self, d: dict[str, Any]) -> None:
        meta, spec = d["metadata"], d["spec"]
        ns, replicas = meta["namespace"], spec.get("replicas", 1)
        if not self._waited(f"deployment {ns}/{meta['name']}", self._pull_s):
            return
        template_hash = hashlib.sha256(json.dumps(spec["template"], sort_keys=True).encode()).hexdigest()[:10]
        names = [f"{meta['name']}-{template_hash}-{i}" for i in range(replicas)]
        missing = [n for n in names if (ns, n) not in self._seen]  # this round's listing (last round's pods are in it)
        if missing:
            unpullable = self._create(ns, meta["name"], spec["template"], template_hash, missing)
        else:  # the webhook is asked only for new pods: the pods it made say what they run
            unpullable = self._unpullable(self._seen[(ns, names[0])].get("spec") or {})
        ready = 0 if unpullable else sum(self._ready(ns, name) for name in names)
        if ready == replicas:
            self._rolled(ns, meta["name"], names)
        status = d.get("status") or {}
        if (status.get("observedGeneration"), status.get("availableReplicas")) != (meta.get("generation"), ready):
            self._patch_status(self._res("apps/v1", "Deployment"), ns, meta["name"], {"status": {
                "observedGeneration": meta.get("generation"), "replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": replicas - ready}})

    def _create(self, ns: str, deployment: str, template: dict[str, Any], template_hash: str,
                names: list[str]) -> list[str]:
        """The template's pods as the injecting revision's webhook returns them, Running or, with an image the
        lab's registry lacks, in ImagePullBackOff; returns those images."""
        meta = template["metadata"]
        pod_spec, rev = self._inject(ns, meta.get("labels") or {}, template["spec"])
        gateway = (meta.get("annotations") or {}).get(injection.TEMPLATES) == "gateway"  # labels no TLS mode
        labels = {**meta.get("labels", {}), **({TLS_MODE: "istio"} if rev and not gateway else {}),  # injected:
                  "pod-template-hash": template_hash}  # the sidecar template labels the pod's TLS mode
        annotations = {**(meta.get("annotations") or {}), **({injection.REV: rev} if rev else {})}
        unpullable, pods = self._unpullable(pod_spec), self._res("v1", "Pod")
        for name in names:
            self._made.setdefault((ns, deployment), set()).add(name)
            pods.create(namespace=ns, _request_timeout=TIMEOUT, body={
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": pod_spec})
            if unpullable:
                self._patch_status(pods, ns, name, {"status": {"phase": "Pending", "containerStatuses": [
                    {"name": "app", "image": image, "ready": False, "restartCount": 0, "imageID": "",
                     "state": {"waiting": {"reason": "ImagePullBackOff",
                                           "message": f'Back-off pulling image "{image}"'}}}
                    for image in unpullable]}})
                log.warning("lab kubelet: %s/%s cannot pull %s", ns, name, ", ".join(unpullable))
            else:
                self._patch_status(pods, ns, name, {"status": {
                    "phase": "Running", "podIP": str(next(self._pod_ips)),
                    "conditions": [{"type": "Ready", "status": "False" if self._kubelet_ready else "True"}]}})
        return unpullable

    @staticmethod
    def _unpullable(pod_spec: dict[str, Any]) -> list[str]:
        return [c["image"] for c in pod_spec.get("containers") or [] if not PULLABLE.fullmatch(c.get("image") or "")]

    def _ready(self, ns: str, name: str) -> bool:
        """As this round's listing saw it (a pod made in this round is not Ready yet)."""
        pod = self._seen.get((ns, name))
        return pod is not None and pod_ready(pod)

    def _rolled(self, ns: str, deployment: str, names: list[str]) -> None:
        """The pods of the Deployment's older template go once the new ones exist (a rollout)."""
        before = self._pods.get((ns, deployment))
        if before == names:
            return
        for old in set(before or []) - set(names):
            try:
                self._res("v1", "Pod").delete(namespace=ns, name=old, _request_timeout=TIMEOUT)
            except NotFoundError:
                pass
        self._pods[(ns, deployment)] = names
        if before is not None:
            log.info("lab Deployment controller: %s/%s rolled out: pods %s replace %s", ns, deployment, names, before)
        if self._on_pods:
            self._on_pods(ns, deployment, names)

    def _collect(self, deployments: set[tuple[str, str]]) -> None:
        """The garbage collector: a deleted Deployment's pods, every one it made, go with it (their ReplicaSet's
        owner is gone); `on_pods` hears it has none."""
        for key in [k for k in self._made if k not in deployments]:
            for name in self._made.pop(key):
                try:
                    self._res("v1", "Pod").delete(namespace=key[0], name=name, _request_timeout=TIMEOUT)
                except NotFoundError:
                    pass
            self._pods.pop(key, None)
            log.info("lab garbage collector: Deployment %s/%s is gone, and so are its pods", *key)
            if self._on_pods:
                self._on_pods(key[0], key[1], [])

    def _inject(self, namespace: str, pod_labels: dict[str, str],
                pod_spec: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The pod spec as the injecting revision's webhook returns it (only the proxy container's image: a
        container `istio-proxy` the pod has, a gateway's with image `auto`, gets it, else one is added; the
        sidecar template also labels the pod `security.istio.io/tlsMode: istio`, which _create adds), and
        that revision (None: not injected)."""
        try:
            ns = self._res("v1", "Namespace").get(name=namespace, _request_timeout=TIMEOUT).to_dict()
            rev = injection.revision(ns["metadata"].get("labels") or {}, pod_labels)
            if rev is None:
                return pod_spec, None
            injector = self._res("v1", "ConfigMap").get(namespace="istio-system", name=injection.injector_configmap(rev),
                                                        _request_timeout=TIMEOUT).to_dict()
        except NotFoundError:  # no webhook of that revision: the pod is made without a proxy
            return pod_spec, None
        values = (json.loads((injector.get("data") or {}).get("values") or "{}").get("global")) or {}
        image = f"{values.get('hub')}/proxyv2:{values.get('tag')}"
        others = [c for c in pod_spec.get("containers") or [] if c.get("name") != "istio-proxy"]
        return {**pod_spec, "containers": [*others, {"name": "istio-proxy", "image": image}]}, rev

    def _service(self, s: dict[str, Any]) -> None:
        meta, key = s["metadata"], f"{s['metadata']['namespace']}/{s['metadata']['name']}"
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp"):  # the cloud's resources go first, then the finalizer
            if LB_FINALIZER in finalizers:
                if self._on_lb_deleted:
                    self._on_lb_deleted(meta["namespace"], meta["name"])
                self._finalizers(meta, [f for f in finalizers if f != LB_FINALIZER])
            return
        if s["spec"].get("type") != "LoadBalancer" or key in self.hold_lb:
            return
        if ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
            return
        if not self._waited(f"service {key}", self._lb_s):
            return
        if key not in self._assigned and not self._lb_pool:
            raise RuntimeError(f"no load-balancer address left for {key}")
        ip = self._assigned.setdefault(key, self._lb_pool[0])
        if self._lb_pool and self._lb_pool[0] == ip:
            self._lb_pool.pop(0)
        if LB_FINALIZER not in finalizers:
            self._finalizers(meta, [*finalizers, LB_FINALIZER])
        if self._on_lb:
            ports = [(p.get("protocol", "TCP"), p["port"]) for p in s["spec"].get("ports") or []]
            self._on_lb(meta["namespace"], meta["name"], ip, s["spec"].get("loadBalancerSourceRanges") or [], ports,
                        dict(meta.get("annotations") or {}))
        self._patch_status(self._res("v1", "Service"), meta["namespace"], meta["name"], {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})
        log.info("lab load balancer: %s gets %s", key, ip)

    def _waited(self, key: str, seconds: float) -> bool:
        """True once `seconds` passed since this loop first saw `key` (the modelled cloud latency)."""
        seen = self._first_seen.setdefault(key, time.monotonic())
        return time.monotonic() - seen >= seconds

    def _finalizers(self, meta: dict[str, Any], finalizers: list[str]) -> None:
        self._res("v1", "Service").patch(namespace=meta["namespace"], name=meta["name"], _request_timeout=TIMEOUT,
                                         body={"metadata": {"finalizers": finalizers}},
                                         content_type="application/merge-patch+json")

    def _root_certs(self) -> None:
        """istiod's namespace controller: `istio-ca-root-cert` in every namespace, each looked at no more often
        than ROOT_CERT_CHECK_S (a deleted one comes back within it; a new namespace is looked at at once)."""
        cms, now = self._res("v1", "ConfigMap"), time.monotonic()
        for ns in self._res("v1", "Namespace").get(_request_timeout=TIMEOUT).items:
            name, key = ns.metadata.name, (ns.metadata.name, ns.metadata.uid)
            if now - self._root_checked.get(key, float("-inf")) < ROOT_CERT_CHECK_S:
                continue
            self._root_checked[key] = now
            if name not in self.hold_root_cert and not self._exists("v1", "ConfigMap", name, "istio-ca-root-cert"):
                cms.create(namespace=name, _request_timeout=TIMEOUT, body={
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert"},
                    "data": {"root-cert.pem": self._root_cert}})
