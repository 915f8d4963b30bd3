"""One lab Envoy: its bootstrap (standins/envoyboot.py: as pilot-agent writes it, Istio 1.30.3) and its process.

What differs from a real proxy on the node: `xds-grpc` is the unix socket `<sockets>/XDS`, but what
answers there is the lab's control-plane model itself, not pilot-agent proxying istiod over mTLS;
`sds-grpc` (a sidecar's) is a unix socket the lab's control plane answers too, with the certificates
its mesh CA stand-in signs, where pilot-agent would answer with the certificate it got from istiod's
CA. No `agent`, `prometheus_stats` clusters. Envoy runs with `--disable-hot-restart` (as pilot-agent
starts it) and one worker thread (the lab's machine has 2 cores).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.lab.envoy import binary
from meshvm.lab.standins import envoyboot

log = logging.getLogger(__name__)
ADMIN_PORT = 15000
READY_S = 20.0
STOP_S = 5.0
ADMIN_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Node:
    kind: str  # "router" (gateway) or "sidecar"
    ip: str
    name: str  # the pod's (or VM's) name
    namespace: str
    workload: str  # e.g. istio-ingressgateway
    labels: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.kind}~{self.ip}~{self.name}.{self.namespace}~{self.namespace}.svc.cluster.local"


def bootstrap(node: Node, xds: Path, admin: tuple[str, int] = ("127.0.0.1", ADMIN_PORT),
              sds: Path | None = None) -> dict[str, Any]:
    metadata = {"NAMESPACE": node.namespace, "NAME": node.name, "LABELS": node.labels,
                "WORKLOAD_NAME": node.workload, "INSTANCE_IPS": node.ip}
    return envoyboot.bootstrap(node.id, f"{node.workload}.{node.namespace}", metadata, str(xds), admin,
                               str(sds) if sds else None)


class Envoy:
    """An Envoy process (inside network namespace `netns` when given) with its files under `workdir`."""

    def __init__(self, node: Node, xds: Path, workdir: Path, *, netns: str | None = None,
                 admin: tuple[str, int] = ("127.0.0.1", ADMIN_PORT), sds: Path | None = None):
        self.node, self.netns, self.workdir = node, netns, workdir
        self.config = bootstrap(node, xds, admin, sds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_address = ""  # host:port, known once started

    def start(self, deadline: Deadline | None = None) -> Envoy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config, address_file = self.workdir / "envoy.json", self.workdir / "admin-address"
        config.write_text(json.dumps(self.config, indent=1))
        address_file.unlink(missing_ok=True)
        argv = [str(binary.ensure(install=False)), "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
                "--log-level", "warning", "--drain-time-s", "1", "--admin-address-path", str(address_file)]
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with (self.workdir / "envoy.log").open("ab") as out:
            self.proc = subprocess.Popen([*prefix, *argv], stdin=subprocess.DEVNULL, stdout=out,  # noqa: S603
                                         stderr=out, start_new_session=True)
        deadline = deadline or Deadline.after(READY_S, "Envoy's admin address")
        self.admin_address = str(retry.until(f"Envoy {self.node.workload}'s admin address",
                                             lambda: self._started(address_file), deadline, initial=0.05, ceiling=0.2))
        log.info("lab Envoy %s (%s) up, admin %s%s", self.node.workload, self.node.id, self.admin_address,
                 f" in netns {self.netns}" if self.netns else "")
        return self

    def _started(self, address_file: Path) -> str | None:
        if self.proc and self.proc.poll() is not None:
            tail = (self.workdir / "envoy.log").read_text(errors="replace")[-600:]
            raise RuntimeError(f"Envoy {self.node.workload} exited {self.proc.returncode}: {tail}")
        text = address_file.read_text().strip() if address_file.exists() else ""
        return text or None

    def admin(self, path: str) -> str:
        """GET the admin API (inside the netns when there is one: from here only without one)."""
        if self.netns:
            r = subprocess.run(["ip", "netns", "exec", self.netns, "curl", "-sS", "-m", str(ADMIN_TIMEOUT_S),  # noqa: S603,S607
                                f"http://{self.admin_address}{path}"], capture_output=True, text=True,
                               timeout=ADMIN_TIMEOUT_S + 5, check=True)
            return r.stdout
        with urllib.request.urlopen(f"http://{self.admin_address}{path}", timeout=ADMIN_TIMEOUT_S) as r:  # noqa: S310
            return r.read().decode()

    def server_info(self) -> dict[str, Any]:
        return json.loads(self.admin("/server_info"))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_S)
        except ProcessLookupError:
            pass
