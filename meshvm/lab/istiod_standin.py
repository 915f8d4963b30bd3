"""lab STAND-IN for istiod's VM-facing side (not Istio): WorkloadEntry auto-registration and the
mesh table pushed to VM proxies.

It models docs/facts.md section 1 and nothing more:

- a VM proxy connects with its istio-token and its metadata (cluster ID, auto-register group,
  namespace, service account, IP). The token must be one the cluster's API issued and still live
  (the API stand-in's `review_token`, as istiod asks a TokenReview), for audience `istio-ca` and
  subject `system:serviceaccount:<namespace>:<service account>` of the proxy's claims; the cluster
  ID must be the one istiod uses (its Deployment's CLUSTER_ID env, else the injector's
  `global.multiCluster.clusterName`, else `Kubernetes`: "client claims to be in cluster ...");
  the WorkloadGroup must exist in the proxy's namespace ("cannot find WorkloadGroup").
  Rejections are logged, kept in `rejections` and returned to the agent with the reason.
- on accept it registers the WorkloadEntry `<group>-<ip>` (autoregistration.py: its labels, annotations,
  ownerReference and Healthy condition; `disconnectedAt` when the connection ends (the agent stopped, or
  no heartbeat for IDLE_S), deleted after the grace period, 10 s, unless the proxy came back);
- configuration push, the lab's small xDS: the connect answer and every heartbeat answer carry the
  mesh table as seen from a VM (`"mesh"`, meshwire's format: services with VIP, ports and
  "ip:port" endpoints, healthy WorkloadEntries included), from the `mesh_table` function the
  platform passes; without one, an empty table `{"services": []}`. A function that raises is
  logged and its answer carries no "mesh" (the agent keeps the table it has).

TLS as on the real port 15012: the connection is TLS with istiod's serving certificate, signed by the
mesh's root (meshca.py: DNS names `istiod.istio-system.svc` and its `.cluster.local` form), which the
VM's agent verifies against /etc/certs/root-cert.pem with the discoveryAddress' host as server name.
What differs from the real istiod, on purpose: HTTP/1.1 inside that TLS instead of gRPC xDS, the
workload certificate handed out in the connect answer (the real agent sends a CSR; here the key is made
on istiod's side), and the whole table sent every second instead of incremental xDS updates. As the
real istiod, a proxy authenticates with its token or, when it has none valid (a rebooted VM's /var/run
is empty), with the workload certificate it kept, as TLS client certificate (ClientCertAuthenticator,
pilot/pkg/bootstrap/server.go; security/pkg/nodeagent/caclient/credentials.go at 1.30.3). One proxy connection is one keep-alive HTTP connection:
`POST /v1/connect` (Authorization: Bearer <istio-token>, JSON metadata) answered
`{"accepted": true, "workloadEntry": <name or null>, "mesh": <table>}`, then `POST /v1/heartbeat`
(JSON `{"health": {"healthy": bool|null, "message": str}}`) every second answered
`{"ok": true, "mesh": <table>}`; the end of that connection is the end of the xDS stream. The lab starts it with the
cluster, listening on 0.0.0.0:15012 inside the cluster node's network namespace.

The path to it, as on GKE: a VM reaches istiod only through the east-west gateway's load-balancer
address, and only once the recipe exposed istiod there: the east-west gateway is a real Envoy
(envoy/gateways.py) whose listener on 15012 the lab's model of istiod's gateway config builds from
the Gateway and VirtualService (manifests/expose-istiod.yaml); without them it has no listener or
filter chain and closes the connection before any TLS. This stand-in listens on the node's loopback
(127.0.0.1:15012, SO_REUSEPORT beside the gateway's 0.0.0.0:15012): the gateway's cluster
`outbound|15012||istiod.istio-system.svc.cluster.local` has this address as its endpoint.

Revisions (docs/facts.md section 6, "Canary"): one stand-in per istiod Deployment, `istiod` (revision
`default`) or `istiod-<rev>` (its own port; the gateway's cluster `outbound|15012||istiod-<rev>...` has it
as endpoint; its certificate adds `istiod-<rev>.istio-system.svc`, as `getDNSNames` in
pilot/pkg/bootstrap/server.go). Each reads its own Deployment's CLUSTER_ID and injector ConfigMap, and sees
a WorkloadGroup only without `istio.io/rev` or with its own revision (`LabelsInRevision`,
pkg/config/model.go). A VM that moves to another revision within the grace period keeps its entry: the
new stand-in writes itself as `workloadController`, and the old one then neither marks it disconnected
nor deletes it (pilot/pkg/autoregistration/controller.go).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, dynamic

from meshvm import revisions
from meshvm.lab.autoregistration import NET, EntryBook, Session, get_object
from meshvm.lab.hostsys import run_in_netns
from meshvm.lab.istiod_wire import ProxyConnection, Rejected, WireServer, server_context
from meshvm.lab.meshca import KeyPair, MeshCa

log = logging.getLogger(__name__)
PORT = 15012
GRACE_S = 10.0  # PILOT_WORKLOAD_ENTRY_GRACE_PERIOD's default
NAME = "lab-istiod-standin"
TIMEOUT = 10
ISTIOD_FQDN = "istiod.istio-system.svc.cluster.local"
ISTIOD_SNI = "istiod.istio-system.svc"  # the host of mesh.yaml's discoveryAddress, the proxy's SNI
REV = revisions.LABEL
deployment_of = revisions.istiod  # istiod's Deployment (and Service) of a revision: `istiod` for `default`


def names_of(revision: str) -> list[str]:
    """The DNS names of a revision's serving certificate (the `.svc` form is the VM's SNI)."""
    hosts = {revisions.istiod_host(""), revisions.istiod_host(revision)}
    return [n for h in sorted(hosts) for n in (h, f"{h}.cluster.local")]


class IstiodStandIn:
    """Serve proxies on `port` (inside `netns` if given); write WorkloadEntries through `api`."""

    def __init__(self, api: client.ApiClient, review_token: Callable[[str], dict | None], *,
                 netns: str | None = None, host: str = "0.0.0.0", port: int = PORT,  # noqa: S104
                 grace_s: float = GRACE_S, name: str = NAME, mesh_table: Callable[[], dict] | None = None,
                 tls: KeyPair | None = None, workdir: Path | None = None, ca: MeshCa | None = None,
                 revision: str = "default"):
        self._dyn = dynamic.DynamicClient(api)
        self.revision, self.deployment = revision, deployment_of(revision)
        self.mesh_table = mesh_table  # what every answer pushes; a test may swap it while serving
        self.tls, self.workdir = tls, workdir  # serving certificate (None: plain, for self-tests of the API side)
        self.ca = ca  # issues the proxies' workload certificates and verifies them as client certificates
        self._review = review_token
        self.netns, self.host, self.port, self.grace_s, self.name = netns, host, port, grace_s, name
        self.rejections: list[str] = []  # for tests and diagnostics: "<ip>: <reason>"
        self.accepted: list[str] = []  # "<ip> -> <entry or ->"
        self.sessions: dict[str, Session] = {}  # by the proxy's IP
        self.xds_socket: Path | None = None  # the VM proxies' gRPC xDS (vm_xds.py), reached by relay
        self._lock = threading.Lock()
        self.entries = EntryBook(self._dyn, grace_s, lambda: self.name, {name})  # their pods: every one it played
        self._httpd: WireServer | None = None

    def start(self) -> IstiodStandIn:
        def make() -> WireServer:
            return WireServer((self.host, self.port), ProxyConnection, self)

        self._httpd = run_in_netns(self.netns, make) if self.netns else make()
        self.port = self._httpd.server_address[1]
        if self.tls is not None:
            self._httpd.tls = server_context(self.tls, self.workdir)
            if self.ca is not None:
                self._httpd.tls.verify_mode = ssl.CERT_OPTIONAL
                self._httpd.tls.load_verify_locations(cadata=self.ca.root_pem)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                         name=f"istiod-standin-{self.port}", daemon=True).start()
        self.entries.start()
        log.info("istiod stand-in serving proxies on %s:%s (netns %s)", self.host, self.port, self.netns or "-")
        return self

    def stop(self) -> None:
        self.entries.stop()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
            self._httpd = None

    def serve_as(self, pod: str) -> None:
        """istiod's pod changed (a rollout): the old pod's connections end with its process, and the
        proxies that reconnect are this pod's; it writes its own name as their entries' controller."""
        if pod == self.name:
            return
        old, self.name = self.name, pod
        self.entries.played.add(pod)
        if self._httpd is not None:
            self._httpd.close_connections()
        log.info("istiod stand-in: now pod %s (was %s): its proxies' connections closed", pod, old)

    def log_text(self) -> str:
        """What this stand-in would log of proxies, for the API's pods/log of the istiod pod."""
        return "".join([*(f"accepted proxy {a}\n" for a in list(self.accepted)),
                        *(f"rejected proxy {r}\n" for r in list(self.rejections))])

    # -- the proxy's connection --------------------------------------------------------------

    def connect(self, token: str, meta: dict[str, Any], peer: str, peer_identity: str | None = None) -> Session:
        """Authenticate (the token, else the verified client certificate's identity) and register the
        proxy, or raise Rejected."""
        ns, sa = str(meta.get("namespace") or ""), str(meta.get("serviceAccount") or "")
        ip = str(meta.get("ip") or peer)
        try:
            self._authenticate(token, ns, sa, str(meta.get("clusterID") or ""), peer_identity)
            group = str(meta.get("autoRegisterGroup") or "")
            if not group:  # connected, but nothing asked to be registered (--autoregister forgotten)
                log.info("istiod stand-in: %s connected without an auto-registration group", ip)
                session = Session(ns, ip)
            else:
                session = self._register(ns, group, ip, meta.get("labels") or {})
            session.service_account = sa
            with self._lock:
                self.sessions[ip] = session
            self.accepted.append(f"{ip} -> {session.entry or '-'}")
            return session
        except Rejected as e:
            self.rejections.append(f"{ip}: {e.reason}")
            log.warning("istiod stand-in: rejected proxy %s: %s", ip, e.reason)
            raise

    def push(self) -> dict[str, Any]:
        """The `"mesh"` part of an answer: {} when the table function failed (nothing pushed)."""
        if self.mesh_table is None:
            return {"mesh": {"services": []}}
        try:
            return {"mesh": self.mesh_table()}
        except Exception as e:  # a broken table must not cut every proxy off
            log.warning("istiod stand-in: mesh table: %s: %s", type(e).__name__, e)
            return {}

    def session_for(self, ip: str) -> Session | None:
        """The connected proxy of that address (what the VM's xDS is served for)."""
        with self._lock:
            return self.sessions.get(ip)

    def check_token(self, token: str) -> str:
        """A proxy's istio-token, as istiod's TokenReview checks it: its subject, or Rejected."""
        claims = self._review(token) if token else None
        if claims is None:
            raise Rejected(401, "authentication failed: the istio-token is not valid (unknown, malformed or expired)")
        aud = claims.get("aud") or []
        if "istio-ca" not in (aud if isinstance(aud, list) else [aud]):
            raise Rejected(401, f"authentication failed: token audiences {aud} do not include istio-ca")
        return str(claims.get("sub") or "")

    def disconnect(self, s: Session) -> None:
        with self._lock:
            if self.sessions.get(s.ip) is s:
                del self.sessions[s.ip]
        self.entries.disconnect(s)

    def heartbeat(self, s: Session, health: dict[str, Any] | None) -> None:
        self.entries.heartbeat(s, health)

    # -- internals -----------------------------------------------------------------------------

    def certificate(self, s: Session) -> dict[str, str]:
        """The proxy's workload certificate (its key too: see the module's note), for the connect answer."""
        if self.ca is None or not s.service_account:
            return {}
        pair = self.ca.workload(s.namespace, s.service_account)
        return {"chain": pair.cert_pem, "key": pair.key_pem}

    def check_stream(self, token: str, peer_identity: str | None) -> None:
        """A relayed xDS or SDS stream: a valid token, or a client certificate of the mesh."""
        try:
            self.check_token(token)
        except Rejected:
            if not peer_identity:
                raise

    def _authenticate(self, token: str, ns: str, sa: str, claimed_cluster: str, peer_identity: str | None) -> None:
        want = f"system:serviceaccount:{ns}:{sa}"
        try:
            subject = self.check_token(token)
        except Rejected:
            if self.ca is None or peer_identity != f"spiffe://{self.ca.trust_domain}/ns/{ns}/sa/{sa}":
                raise
            subject = want  # the workload certificate it kept, verified by TLS against the mesh root
        if subject != want:
            raise Rejected(401, f"authentication failed: the token is for {subject}, the proxy claims {want}")
        cluster = self._cluster_id()
        if cluster is None:
            raise Rejected(503, f"istiod is not installed (no Deployment istio-system/{self.deployment})")
        if claimed_cluster != cluster:
            raise Rejected(403, f'client claims to be in cluster "{claimed_cluster}", but we only know about '
                                f'local cluster "{cluster}" and remote clusters []')

    def _cluster_id(self) -> str | None:
        """What istiod uses: its CLUSTER_ID env, else the injector's clusterName, else Kubernetes."""
        istiod = self._get("apps/v1", "Deployment", "istio-system", self.deployment)
        if istiod is None:
            return None
        for c in istiod.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for env in c.get("env") or []:
                if env.get("name") == "CLUSTER_ID" and env.get("value"):
                    return str(env["value"])
        injector = self._get("v1", "ConfigMap", "istio-system", revisions.injector(self.revision)) or {}
        values = json.loads((injector.get("data") or {}).get("values") or "{}")
        return str(values.get("global", {}).get("multiCluster", {}).get("clusterName") or "Kubernetes")

    def _register(self, ns: str, group: str, ip: str, proxy_labels: dict[str, str]) -> Session:
        wg = self._get(NET, "WorkloadGroup", ns, group)
        if wg is None or (wg["metadata"].get("labels") or {}).get(REV, self.revision) != self.revision:
            # absent, or another revision's config: this istiod does not see it
            raise Rejected(404, f"auto-registration of WorkloadEntry {group}-{ip} failed: "
                                f"cannot find WorkloadGroup {ns}/{group}")
        return self.entries.register(wg, ip, proxy_labels)

    def _get(self, api_version: str, kind: str, ns: str, name: str) -> dict | None:
        return get_object(self._dyn, api_version, kind, ns, name)
