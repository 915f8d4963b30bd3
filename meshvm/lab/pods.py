"""lab STAND-IN for the kubelet, the pods' sidecars, kube-proxy and cluster DNS on the cluster's node.

What it models, and no more:
- each Running Pod whose image has a lab stand-in (BookInfo's examples-bookinfo-<app>-v<n>, the
  `curl` client) gets a sandbox: a network namespace with the pod IP on `eth0`, a veth to the node
  (routed as GKE routes a node's alias range), and the pod's main process where there is one
  (standins/bookinfo.py with the container's env; the curl client only sleeps, so nothing runs);
  `kubectl exec` into it runs the command in that sandbox;
- a deleted pod's app stops at once; its address and sidecar stay for the proxy's drain (DRAIN_S);
- the pod is Ready (its condition, which the controllers' rollouts and the mesh registry's endpoints
  wait for) once its sidecar's Envoy says LIVE on `/ready` (pilot-agent's readiness rests on it) and its
  app accepts on 9080 (BookInfo's pods have no readiness probe: on GKE they are Ready once the proxy is
  and the app started); a pod with no sandbox (istiod, the gateways: in-process here) at once;
- the pod's resolver is the cluster DNS (resolv.conf with the namespace's search path, ndots:5),
  answered by a DNS stand-in on the node from the mesh registry (Service FQDN -> VIP);
- a pod with an `istio-proxy` container (injected: controllers.py, injection.py) has a sidecar: a real Envoy in its sandbox
  (envoy/sidecars.py), configured by the lab's model of istiod (envoy/sidecar.py: outbound on 15001,
  inbound on 15006, mutual TLS with the certificate of the pod's service account from the mesh CA
  stand-in, PeerAuthentication and AuthorizationPolicy), with istio-iptables' REDIRECT capture of
  outbound TCP to the service range (-> 15001) and of all inbound TCP (-> 15006);
- a pod without a sidecar reaches a Service through kube-proxy's stand-in: TCP to the service range is
  captured and forwarded to one endpoint of the Service port (pods only, never a WorkloadEntry),
  round robin, from the pod's own address;
- the ingress gateway (a real Envoy, envoy/gateways.py) and istiod's VM-facing side run on the node too.
Pods of images with no stand-in (istiod, the gateways: in-process stand-ins here) get no sandbox.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client, dynamic

from meshvm.lab import hostsys
from meshvm.lab.controllers import ReconcileLoop
from meshvm.lab.envoy import sidecar
from meshvm.lab.envoy.meshinputs import MeshInputs
from meshvm.lab.envoy.proxy import Node
from meshvm.lab.envoy.sidecars import SidecarProxy
from meshvm.lab.kubeapi import KubeApiStandIn
from meshvm.lab.leaks import socket_dir
from meshvm.lab.mesh_registry import MeshRegistry, pod_ready
from meshvm.lab.meshca import MeshCa
from meshvm.lab.netsafety import run_ip
from meshvm.lab.standins import meshwire

log = logging.getLogger(__name__)
APPS = Path(__file__).resolve().parent / "standins" / "bookinfo.py"
DNS_IP = "169.254.20.10"  # GKE's NodeLocal DNSCache address
LINK_IP = "169.254.1.1"  # every pod's next hop: local on the node, so its veths answer ARP for it
SIDECAR_PORT, INBOUND_PORT = sidecar.OUTBOUND_PORT, sidecar.INBOUND_PORT
PACE_S = 0.3
TIMEOUT = 10
STOP_S = 3.0
# A deleted pod's sidecar drains for ProxyConfig terminationDrainDuration (default 5 s; `terminate` in
# pkg/envoy/agent.go, Istio 1.30.3) while its app, sent SIGTERM at once, is gone: callers whose EDS still
# holds the pod get a 503 from its Envoy and retry elsewhere, as on GKE (not a silent blackhole).
DRAIN_S = 5.0
_IMAGE = re.compile(r"examples-bookinfo-(details|reviews|productpage)-(v\d+)")


@dataclass
class Sandbox:
    namespace: str
    pod: str
    ip: str
    netns: str
    injected: bool
    service_account: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    proxy: SidecarProxy | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    ready: bool = False
    leaving: float | None = None  # deleted: the sandbox goes at this time.monotonic()


class NodeRuntime(ReconcileLoop):
    """Reconciles the node's pod sandboxes from the API until stopped."""

    def __init__(self, api: client.ApiClient, kube: KubeApiStandIn, registry: MeshRegistry, *, node_netns: str,
                 tag: str, block: str, service_range: str, workdir: Path, mesh_ca: MeshCa, inputs: MeshInputs):
        self._dyn = dynamic.DynamicClient(api)
        self.kube, self.registry, self.mesh_ca, self.inputs = kube, registry, mesh_ca, inputs
        self.node_netns, self.tag, self.block, self.service_range = node_netns, tag, block, service_range
        self.workdir = workdir
        self.sandboxes: dict[tuple[str, str], Sandbox] = {}
        self._n = 0
        self._rr = meshwire.RoundRobin()
        super().__init__("lab kubelet", PACE_S)

    def start(self) -> NodeRuntime:
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ns = self.node_netns
        _sysctl(ns, "net.ipv4.ip_forward=1")
        for ip in (DNS_IP, LINK_IP):
            run_ip("addr", "add", f"{ip}/32", "dev", "lo", netns=ns)
        dns = hostsys.run_in_netns(ns, lambda: meshwire.bound(DNS_IP, 53, socket.SOCK_DGRAM))
        threading.Thread(target=meshwire.serve_dns, args=(dns, self.registry.lookup, self._stop),
                         name="lab-cluster-dns", daemon=True).start()
        self._thread.start()
        return self

    def stop(self) -> None:
        super().stop()
        for key in list(self.sandboxes):
            self._remove(key)

    def reconcile(self) -> None:
        pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in
                (o.to_dict() for o in self._dyn.resources.get(api_version="v1", kind="Pod")
                 .get(_request_timeout=TIMEOUT).items)}
        for key in [k for k in self.sandboxes if k not in pods or pods[k]["metadata"].get("deletionTimestamp")]:
            self._leave(key)
        for key, pod in pods.items():
            ip = (pod.get("status") or {}).get("podIP")
            if key in self.sandboxes or not ip or pod["metadata"].get("deletionTimestamp"):
                continue
            containers = (pod.get("spec") or {}).get("containers") or []
            app = next((m for c in containers if (m := _IMAGE.search(c.get("image") or ""))), None)
            if app is None and not any("curl" in (c.get("image") or "") for c in containers):
                if not pod_ready(pod):
                    self._set_ready(key)  # nothing runs here for it: Ready at once
                continue
            try:
                self._add(key, ip, pod.get("spec") or {}, pod["metadata"].get("labels") or {}, app)
            except Exception:  # a half-made sandbox goes: the next round makes it again
                self._remove(key)
                raise
        for key, sb in list(self.sandboxes.items()):
            if not sb.ready and self._serving(sb):
                self._set_ready(key)
                sb.ready = True

    def _serving(self, sb: Sandbox) -> bool:
        """The sidecar's Envoy LIVE (initialized from its xDS) and the app accepting on 9080."""
        def look() -> bool:  # in the pod's network namespace (a thread that joined it: no process started)
            if sb.proxy is not None:
                with urllib.request.urlopen(f"http://{sb.proxy.envoy.admin_address}/ready", timeout=1) as r:  # noqa: S310
                    if r.read().decode().strip() != "LIVE":
                        return False
            if sb.proc is not None:
                socket.create_connection(("127.0.0.1", 9080), timeout=1).close()
            return True

        try:
            return hostsys.run_in_netns(sb.netns, look)
        except OSError:  # not up yet (refused), or Envoy answers 503 while it is not LIVE
            return False

    def _set_ready(self, key: tuple[str, str]) -> None:
        self._dyn.resources.get(api_version="v1", kind="Pod").status.patch(
            namespace=key[0], name=key[1], body={"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            _request_timeout=TIMEOUT, content_type="application/merge-patch+json")

    # -- one sandbox --------------------------------------------------------------------------

    def _add(self, key: tuple[str, str], ip: str, spec: dict, labels: dict, app: re.Match[str] | None) -> None:
        self._n += 1
        netns, node_dev = f"{self.tag}p{self._n}", f"{self.tag}q{self._n}"
        containers = spec.get("containers") or []
        sb = Sandbox(key[0], key[1], ip, netns, any(c.get("name") == "istio-proxy" for c in containers),
                     spec.get("serviceAccountName") or "default",
                     dict(labels))
        self.sandboxes[key] = sb  # recorded before it exists: _remove cleans a half-made one
        self._wire(sb, node_dev)
        if sb.injected:
            self._sidecar(sb, self._n)
        else:
            listener = hostsys.run_in_netns(netns, lambda: meshwire.bound("0.0.0.0", SIDECAR_PORT))  # noqa: S104
            threading.Thread(target=meshwire.serve_tcp, args=(listener, lambda c: self._kube_proxy(sb, c), sb.stop),
                             name=f"lab-kube-proxy-{key[1]}", daemon=True).start()
        resolv = self.workdir / f"{netns}-resolv.conf"
        resolv.write_text(f"nameserver {DNS_IP}\nsearch {key[0]}.svc.cluster.local svc.cluster.local cluster.local\n"
                          "options ndots:5\n")
        prefix = ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                  'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv)]
        self.kube.set_exec_backend(key[0], key[1], _exec_in(prefix))
        if app is not None:
            self._start_app(sb, prefix, containers, app)
        log.info("lab kubelet: pod %s/%s at %s in %s (%s)", key[0], key[1], ip, netns,
                 "sidecar" if sb.injected else "no sidecar")

    def _wire(self, sb: Sandbox, node_dev: str) -> None:
        """The pod's network namespace: its address on a veth to the node, its routes, and the capture of
        Service addresses (to the sidecar, or kube-proxy's stand-in when there is none)."""
        netns, ip = sb.netns, sb.ip
        run_ip("netns", "add", netns)
        run_ip("link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", node_dev, "netns", self.node_netns)
        for args in (("link", "set", "lo", "up"), ("addr", "add", f"{ip}/32", "dev", "eth0"),
                     ("link", "set", "eth0", "up"), ("route", "add", LINK_IP, "dev", "eth0", "scope", "link"),
                     ("route", "add", self.block, "via", LINK_IP, "dev", "eth0", "src", ip),
                     ("route", "add", DNS_IP, "via", LINK_IP, "dev", "eth0", "src", ip)):
            run_ip(*args, netns=netns)
        run_ip("link", "set", node_dev, "up", netns=self.node_netns)
        run_ip("route", "add", f"{ip}/32", "dev", node_dev, netns=self.node_netns)
        _run(["ip", "netns", "exec", netns, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp",
              "-d", self.service_range, "-j", "REDIRECT", "--to-ports", str(SIDECAR_PORT)])

    def _start_app(self, sb: Sandbox, prefix: list[str], containers: list, app: re.Match[str]) -> None:
        """The pod's app (a BookInfo stand-in) in its sandbox, with the containers' environment."""
        env = {e["name"]: str(e.get("value", "")) for c in containers for e in c.get("env") or [] if "name" in e}
        log_file = (self.workdir / f"{sb.netns}-{sb.pod}.log").open("ab")
        sb.proc = subprocess.Popen(  # noqa: S603
            [*prefix, sys.executable, str(APPS), app.group(1), "--port", "9080", "--lab-tag", self.tag],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": sb.pod,
                 "STANDIN_VERSION": app.group(2), **env},
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
        log_file.close()

    def _sidecar(self, sb: Sandbox, n: int) -> None:
        """The pod's Envoy, and istio-iptables' inbound capture (every inbound TCP connection -> 15006)."""
        _run(["ip", "netns", "exec", sb.netns, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp",
              "-j", "REDIRECT", "--to-ports", str(INBOUND_PORT)])
        workload = sb.labels.get("app") or sb.pod.rsplit("-", 1)[0]
        node = Node("sidecar", sb.ip, sb.pod, sb.namespace, workload, sb.labels)
        sb.proxy = SidecarProxy(node, sb.service_account, self.mesh_ca, self.inputs, self.inputs.endpoints,
                                self.workdir / f"{sb.netns}-envoy", sockets=Path(socket_dir(self.tag, f"p{n}")),
                                netns=sb.netns)
        sb.proxy.start()

    def _leave(self, key: tuple[str, str]) -> None:
        """A deleted pod: its app is stopped at once, its sandbox (address, sidecar) stays for the proxy's
        drain, then goes (the pod's endpoint is gone from the registry already)."""
        sb = self.sandboxes[key]
        if sb.leaving is None:
            sb.leaving = time.monotonic() + DRAIN_S
            _stop_process(sb.proc)
        elif time.monotonic() >= sb.leaving:
            self._remove(key)

    def _remove(self, key: tuple[str, str]) -> None:
        sb = self.sandboxes.pop(key)
        sb.stop.set()
        if sb.proxy is not None:
            sb.proxy.stop()
        self.kube.set_exec_backend(sb.namespace, sb.pod, None)
        _stop_process(sb.proc)
        run_ip("netns", "del", sb.netns, check=False)  # the veth pair goes with it

    def log_source(self, namespace: str, pod: str):  # noqa: ANN201
        """The API's pods/log for a pod whose app runs here: its process's output."""
        sb = self.sandboxes.get((namespace, pod))
        if sb is None or sb.proc is None:
            return None
        path = self.workdir / f"{sb.netns}-{pod}.log"
        return lambda: path.read_text(errors="replace") if path.is_file() else ""

    def _kube_proxy(self, sb: Sandbox, conn: socket.socket) -> None:
        ip, port = meshwire.original_dst(conn)
        found = meshwire.route(self.registry.table(with_entries=False), ip, port)
        if found is None:
            conn.close()
            return
        meshwire.forward(conn, self._rr.order(found.key, found.endpoints), lambda h, p: self.connect_from(sb.netns, h, p))

    @staticmethod
    def connect_from(netns: str, host: str, port: int) -> socket.socket:
        """A connection made inside `netns`: it leaves from that namespace's address."""
        return hostsys.run_in_netns(netns, lambda: socket.create_connection((host, port), timeout=5))


def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_S)
    except ProcessLookupError:
        pass


def _run(argv: Sequence[str]) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT, check=False)  # noqa: S603
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed (rc={proc.returncode}): {proc.stderr.strip()}")


def _sysctl(netns: str, setting: str) -> None:
    _run(["ip", "netns", "exec", netns, "sysctl", "-qw", setting])


def _exec_in(prefix: list[str]):  # noqa: ANN202
    def spawn(argv: Sequence[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*prefix, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S603
                                stderr=subprocess.PIPE)
    return spawn
