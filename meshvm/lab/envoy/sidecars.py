"""A lab sidecar: a real Envoy (proxy.py) in a workload's network namespace, configured over ADS with
what sidecar.py models istiod sending it, and given its workload certificate and the mesh root over
SDS (what pilot-agent's SDS server would hand it: security.secrets) from the lab's mesh CA stand-in."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from meshvm.lab.envoy import security, sidecar, xds
from meshvm.lab.envoy.proxy import Envoy, Node
from meshvm.lab.meshca import MeshCa
from meshvm.lab.standins import istiostats

Inputs = Callable[[], sidecar.SidecarInputs]


class SidecarProxy:
    """One workload's sidecar; `service_account` names its identity; sockets under `sockets` (short)."""

    def __init__(self, node: Node, service_account: str, ca: MeshCa, inputs: Inputs, endpoints: sidecar.Endpoints,
                 workdir: Path, *, sockets: Path, netns: str | None):
        self.node, self.inputs, self.endpoints, self.workdir, self._sockets = node, inputs, endpoints, workdir, sockets
        self.workload = sidecar.Workload(node.namespace, node.labels)
        self.principal = istiostats.spiffe(node.namespace, service_account, ca.trust_domain)
        self._secrets = security.secrets(ca.workload(node.namespace, service_account), ca.root_pem)
        self.ads = xds.AdsServer(self.config, sockets / "XDS", sds=sockets / "SDS")
        self.envoy = Envoy(node, sockets / "XDS", workdir, netns=netns, sds=sockets / "SDS")

    def start(self) -> SidecarProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._sockets.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ads.start()
        try:
            self.envoy.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.envoy.stop()
        self.ads.stop()
        shutil.rmtree(self._sockets, ignore_errors=True)

    def config(self, node_id: str) -> xds.Resources:
        return {**sidecar.resources(self.workload, self.inputs(), self.endpoints), xds.SECRET: self._secrets}
