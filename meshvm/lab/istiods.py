"""The lab's istiods: one in-process stand-in (istiod_standin.py) per istiod Deployment of the cluster,
`istiod` (revision `default`, made with the cluster) and each `istiod-<rev>` a canary install adds (made
when its first pod is rolled out). A stand-in plays its Deployment's current pod (a rollout restart
replaces it), is the endpoint of its Service's port 15012 for the east-west gateway while that Service
has endpoints (once `istioctl uninstall` removed it, the gateway has none: as on GKE), and answers the API's
pods/log of its pods."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from meshvm.lab.istiod_standin import PORT, IstiodStandIn, Session, deployment_of, names_of

NS = "istio-system"


class Istiods:
    def __init__(self, make: Callable[[str, int, list[str]], IstiodStandIn], xds_socket: Path | None = None):
        """`make(revision, port, dns_names)`: a stand-in, not started."""
        self._make, self.xds_socket = make, xds_socket
        self._lock = threading.Lock()
        self.by_revision: dict[str, IstiodStandIn] = {}
        self._by_pod: dict[str, IstiodStandIn] = {}

    def start(self, revision: str = "default") -> IstiodStandIn:
        with self._lock:
            if (found := self.by_revision.get(revision)) is not None:
                return found
            standin = self._make(revision, PORT if revision == "default" else 0, names_of(revision)).start()
            standin.xds_socket = self.xds_socket
            self.by_revision[revision] = standin
            return standin

    def stop(self) -> None:
        with self._lock:
            standins = list(self.by_revision.values())
        for s in standins:
            s.stop()

    def rolled(self, namespace: str, deployment: str, pods: list[str]) -> None:
        """The Deployment controller's news: an istiod Deployment's pods (the first names the stand-in; none: a
        revision's Deployment was deleted, its stand-in stops)."""
        if namespace != NS or not (deployment == "istiod" or deployment.startswith("istiod-")):
            return
        revision = "default" if deployment == "istiod" else deployment.removeprefix("istiod-")
        if not pods:
            with self._lock:
                gone = self.by_revision.pop(revision, None) if revision != "default" else None
            if gone is not None:  # the revisionless one stays: its stand-in is the cluster's (tests read it)
                gone.stop()
            return
        standin = self.start(revision)
        standin.serve_as(pods[0])
        with self._lock:
            self._by_pod[pods[0]] = standin

    def endpoints(self, registry_endpoints: Callable[[str, int], list[str]]) -> Callable[[str, int], list[str]]:
        """The registry's endpoints, with a stand-in's address for its Service's xDS port (the lab runs no
        istiod process in a pod)."""
        def endpoints(fqdn: str, port: int) -> list[str]:
            found = registry_endpoints(fqdn, port)
            if port != PORT or not found:
                return found
            with self._lock:
                standin = next((s for s in self.by_revision.values()
                                if fqdn == f"{deployment_of(s.revision)}.{NS}.svc.cluster.local"), None)
            return [f"{standin.host}:{standin.port}"] if standin is not None else found
        return endpoints

    def session_for(self, ip: str) -> Session | None:
        """The VM proxy's session with whichever istiod it is connected to."""
        with self._lock:
            standins = list(self.by_revision.values())
        return next((s for i in standins if (s := i.session_for(ip)) is not None), None)

    def log_source(self, namespace: str, pod: str) -> Callable[[], str] | None:
        with self._lock:
            standin = self._by_pod.get(pod) if namespace == NS else None
        return standin.log_text if standin is not None else None
