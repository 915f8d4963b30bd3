"""istiod's xDS for the VM's proxy, the lab's model of it: a gRPC server (ADS and SDS, xds.py) on a unix
socket, which istiod's stand-in relays the VM agent's streams to after checking the stream's istio-token
(istiod_standin.py; the agent's side is standins/agentplane.py). A proxy gets the sidecar config
(sidecar.py) of its WorkloadEntry (namespace and labels) and, over SDS, a workload certificate for the
service account its agent registered with, signed by the mesh CA stand-in; only while its agent is
connected with that IP (the node id's), as istiod serves only authenticated proxies; until then nothing
is pushed. What differs: a relayed stream's token is checked (valid, for istio-ca), but which identity a
stream gets is its node's session's, where real istiod ties the certificate to the caller's own token."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Protocol

from meshvm.lab.envoy import security, sidecar, xds
from meshvm.lab.envoy.meshinputs import MeshInputs
from meshvm.lab.meshca import MeshCa


class _Session(Protocol):
    namespace: str
    service_account: str
    labels: dict[str, str]


class _Sessions(Protocol):
    def session_for(self, ip: str) -> _Session | None: ...


class VmXds:
    def __init__(self, sessions: _Sessions, inputs: MeshInputs, ca: MeshCa, path: Path):
        self.sessions, self.inputs, self.ca = sessions, inputs, ca
        self.ads = xds.AdsServer(self.config, path)  # SDS is served on the same socket
        self._secrets: dict[tuple[str, str], list[dict]] = {}
        self._lock = threading.Lock()

    def start(self) -> VmXds:
        self.ads.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ads.start()
        return self

    def stop(self) -> None:
        self.ads.stop()
        shutil.rmtree(self.ads.path.parent, ignore_errors=True)

    def config(self, node_id: str) -> xds.Resources | None:
        parts = node_id.split("~")
        s = self.sessions.session_for(parts[1]) if len(parts) == 4 else None
        if s is None:
            return None
        w = sidecar.Workload(s.namespace, s.labels)
        return {**sidecar.resources(w, self.inputs(), self.inputs.endpoints),
                xds.SECRET: self._secret(s.namespace, s.service_account)}

    def _secret(self, namespace: str, service_account: str) -> list[dict]:
        """One certificate per identity (a new one per push would be a new secret every second)."""
        with self._lock:
            key = (namespace, service_account)
            if key not in self._secrets:
                self._secrets[key] = security.secrets(self.ca.workload(namespace, service_account), self.ca.root_pem)
            return self._secrets[key]
