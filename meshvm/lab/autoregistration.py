"""lab STAND-IN for istiod's WorkloadEntry auto-registration (pilot/pkg/autoregistration/controller.go at
1.30.3; docs/facts.md sections 1 and 6), the part of istiod_standin.py that writes entries:

- on accept it creates (or, on a reconnect within the grace period, re-annotates) the WorkloadEntry
  `<group>-<ip>` in the group's namespace: address, labels from the group (spec.metadata.labels, then the
  proxy's labels), annotations `istio.io/autoRegistrationGroup`, `istio.io/workloadController` (the istiod
  pod the stand-in plays), `istio.io/connectedAt`, ownerReference to the group (controller: true); with a
  group probe also `proxy.istio.io/health-checks-enabled: "true"` and the status condition `Healthy` from
  what the agent reports;
- when the proxy's connection ends `connectedAt` is replaced by `istio.io/disconnectedAt` and the entry is
  deleted after the grace period (10 s) unless the proxy came back;
- an entry another istiod took over (a VM moved to another revision within the grace period: it names that
  istiod's pod) is neither marked disconnected nor deleted by this one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import dynamic
from kubernetes.dynamic.exceptions import NotFoundError

log = logging.getLogger("meshvm.lab.istiod_standin")
NET = "networking.istio.io/v1"
AUTO_GROUP, CONTROLLER = "istio.io/autoRegistrationGroup", "istio.io/workloadController"
CONNECTED, DISCONNECTED = "istio.io/connectedAt", "istio.io/disconnectedAt"
HEALTH_CHECKS = "proxy.istio.io/health-checks-enabled"
TIMEOUT = 10


@dataclass
class Session:
    """One proxy connection; `entry` is None when the proxy asked for no auto-registration."""

    namespace: str
    ip: str
    entry: str | None = None
    health_checks: bool = False
    health: tuple[bool, str] | None = None
    service_account: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # the WorkloadEntry's


def get_object(dyn: dynamic.DynamicClient, api_version: str, kind: str, ns: str, name: str) -> dict | None:
    """One object as a dict, or None when it does not exist."""
    try:
        res = dyn.resources.get(api_version=api_version, kind=kind)
        return res.get(namespace=ns, name=name, _request_timeout=TIMEOUT).to_dict()
    except NotFoundError:
        return None


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class EntryBook:
    """The entries one istiod controls: `controller()` is its current pod, `played` every pod it has been."""

    def __init__(self, dyn: dynamic.DynamicClient, grace_s: float, controller: Callable[[], str], played: set[str]):
        self._dyn, self.grace_s, self.controller, self.played = dyn, grace_s, controller, played
        self._conns: dict[tuple[str, str], int] = {}
        self._gone: dict[tuple[str, str], float] = {}  # disconnected entries: monotonic time
        self._lock = threading.Lock()
        self._notes = threading.Lock()  # a connect's and a disconnect's count and annotation, in one order
        self._stop = threading.Event()

    def start(self) -> EntryBook:
        threading.Thread(target=self._reap, name="istiod-standin-grace", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def register(self, wg: dict, ip: str, proxy_labels: dict[str, str]) -> Session:
        """The entry `<group>-<ip>` of the (visible) group `wg`: created, or re-annotated when it is there."""
        ns, group, spec = wg["metadata"]["namespace"], wg["metadata"]["name"], wg.get("spec") or {}
        checks = bool(spec.get("probe"))
        name, key = f"{group}-{ip}", (ns, f"{group}-{ip}")
        with self._notes:
            with self._lock:
                self._conns[key] = self._conns.get(key, 0) + 1
                self._gone.pop(key, None)  # back within the grace period: the entry stays
            notes = {CONTROLLER: self.controller(), CONNECTED: now_rfc3339()}
            try:
                if self._get(NET, "WorkloadEntry", ns, name) is not None:
                    self._annotate(ns, name, {**notes, DISCONNECTED: None})
                else:
                    self._res("WorkloadEntry").create(namespace=ns, _request_timeout=TIMEOUT,
                                                      body=self._entry(wg, name, ip, proxy_labels, notes))
            except BaseException:
                with self._lock:
                    self._conns[key] -= 1
                    if not self._conns[key]:
                        del self._conns[key]
                        self._gone[key] = time.monotonic()  # an entry left behind still goes
                raise
        log.info("istiod stand-in: registered WorkloadEntry %s/%s (address %s)", ns, name, ip)
        labels = {**((spec.get("template") or {}).get("labels") or {}),
                  **((spec.get("metadata") or {}).get("labels") or {}), **proxy_labels}
        return Session(ns, ip, name, checks, labels=labels)

    def disconnect(self, s: Session) -> None:
        """The proxy's connection ended: its entry is marked and deleted after the grace period, unless it
        returns, or another istiod took it over."""
        if not s.entry or self._stop.is_set():
            return
        key = (s.namespace, s.entry)
        with self._notes:
            with self._lock:
                left = self._conns.get(key, 1) - 1
                if left > 0:  # another connection of the same proxy is still there
                    self._conns[key] = left
                    return
                self._conns.pop(key, None)
            if not self._controls(s.namespace, s.entry):
                log.info("istiod stand-in: %s/%s disconnected; another istiod controls it now", s.namespace, s.entry)
                return
            with self._lock:
                self._gone[key] = time.monotonic()
            self._annotate(s.namespace, s.entry, {CONNECTED: None, DISCONNECTED: now_rfc3339()})
        log.info("istiod stand-in: %s/%s disconnected; deleted in %.0f s unless it returns",
                 s.namespace, s.entry, self.grace_s)

    def heartbeat(self, s: Session, health: dict[str, Any] | None) -> None:
        if not s.entry or not s.health_checks or not health or health.get("healthy") is None:
            return
        now = (bool(health["healthy"]), str(health.get("message") or ""))
        if now == s.health:
            return
        condition = {"type": "Healthy", "status": "True" if now[0] else "False",
                     "lastProbeTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()}
        if not now[0]:
            condition["message"] = now[1]
        self._res("WorkloadEntry").status.patch(
            namespace=s.namespace, name=s.entry, body={"status": {"conditions": [condition]}},
            content_type="application/merge-patch+json", _request_timeout=TIMEOUT)
        s.health = now
        log.info("istiod stand-in: %s/%s Healthy=%s", s.namespace, s.entry, condition["status"])

    def _entry(self, wg: dict, name: str, ip: str, proxy_labels: dict[str, str], notes: dict[str, str]) -> dict:
        """As istiod's workloadEntryFromGroup: the template, the VM's address, the group's labels."""
        spec, meta = wg.get("spec") or {}, wg["metadata"]
        labels = {**((spec.get("template") or {}).get("labels") or {}),
                  **((spec.get("metadata") or {}).get("labels") or {}), **proxy_labels}
        annotations = {**((spec.get("metadata") or {}).get("annotations") or {}), AUTO_GROUP: meta["name"], **notes}
        if spec.get("probe"):
            annotations[HEALTH_CHECKS] = "true"
        owner = {"apiVersion": wg.get("apiVersion", NET), "kind": "WorkloadGroup", "name": meta["name"],
                 "uid": meta.get("uid", ""), "controller": True}
        return {"apiVersion": NET, "kind": "WorkloadEntry",
                "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                             "annotations": annotations, "ownerReferences": [owner]},
                "spec": {**(spec.get("template") or {}), "address": ip, "labels": labels}}

    def _annotate(self, ns: str, name: str, notes: dict[str, str | None]) -> None:
        try:
            self._res("WorkloadEntry").patch(namespace=ns, name=name, body={"metadata": {"annotations": notes}},
                                             content_type="application/merge-patch+json", _request_timeout=TIMEOUT)
        except NotFoundError:
            log.info("istiod stand-in: WorkloadEntry %s/%s is gone already", ns, name)

    def _reap(self) -> None:
        """Delete entries whose proxy stayed away for the grace period."""
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._lock:
                due = [k for k, t in self._gone.items() if now - t >= self.grace_s]
                for k in due:
                    del self._gone[k]
            for ns, name in due:
                if not self._controls(ns, name):
                    continue  # another istiod took it over meanwhile
                try:
                    self._res("WorkloadEntry").delete(namespace=ns, name=name, _request_timeout=TIMEOUT)
                    log.info("istiod stand-in: deleted WorkloadEntry %s/%s after the grace period", ns, name)
                except NotFoundError:
                    pass
                except Exception as e:  # keep reaping the others
                    log.warning("istiod stand-in: deleting %s/%s: %s", ns, name, e)

    def _controls(self, ns: str, name: str) -> bool:
        """The entry names one of this stand-in's pods as its controller (or is gone: nothing to protect)."""
        entry = self._get(NET, "WorkloadEntry", ns, name)
        controller = (entry["metadata"].get("annotations") or {}).get(CONTROLLER) if entry else None
        return controller is None or controller in self.played

    def _res(self, kind: str) -> Any:
        return self._dyn.resources.get(api_version=NET, kind=kind)

    def _get(self, api_version: str, kind: str, ns: str, name: str) -> dict | None:
        return get_object(self._dyn, api_version, kind, ns, name)
