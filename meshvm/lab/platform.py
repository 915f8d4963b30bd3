"""`--platform lab`: start the local Google Cloud, then hand the gcp code path a Config pointed at it.

What it starts (and stops): a lab network with its router (LabBacking), the Compute/GKE stand-in
on loopback whose instances are lab VMs and whose clusters are Kubernetes API stand-ins with the
controller stand-ins, and short-lived access tokens rotated in a token file (so the gcp path's
token re-reading and the cluster client's refresh are exercised). Nothing here is imported by
meshvm.gcp.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from meshvm.config import Config
from meshvm.lab import census
from meshvm.lab import timing as lab_timing
from meshvm.lab.cluster import LB_PREFIX, NODE_HOST, ClusterNode, KubeClusterBackend, RotatingTokens
from meshvm.lab.gcloud.backing import LabBacking
from meshvm.lab.gcloud.server import GCloudStandIn
from meshvm.lab.istioctl_standin import install_istioctl_standin
from meshvm.lab.netsafety import assert_local_route
from meshvm.lab.sidecar_deb import build_sidecar_deb

log = logging.getLogger(__name__)


class LabPlatform:
    """The Platform (meshvm.platforms) of `--platform lab`."""

    name = "lab"
    leftover_note = "the lab's hosts of the run remain too"
    ephemeral = True

    def __init__(self, cfg: Config, workdir: Path):
        self.cfg, self.workdir = cfg, workdir
        timing = lab_timing.parse(cfg.lab_timing)
        assert timing is not None, cfg.lab_timing  # meshvm.config checked it
        self.timing = timing
        self.backing: LabBacking | None = None
        self.server: GCloudStandIn | None = None
        self.tokens: RotatingTokens | None = None
        self.clusters: list[KubeClusterBackend] = []

    def start(self) -> Config:
        """Bring the local cloud up; the Config the gcp code path runs with."""
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        timing = self.timing
        self.backing = LabBacking.up(self.cfg.run_id, str(self.workdir / "vms"), hostkey_delay=timing.hostkey_s,
                                     dpkg_lock_hold=timing.apt_lock_s)
        addrs = self.backing.router.addrs
        self.tokens = RotatingTokens(self.workdir / "access-token")
        # Load-balancer addresses: the top /27 of the VM subnet, as an internal load balancer's address
        # comes from the subnet's primary range; an alias range of the cluster's node, local there.
        # Lab VMs are numbered up from .10 (LabBacking), the node takes .2: both stay below it.
        lb_range = list(addrs.vm_subnet.subnets(new_prefix=LB_PREFIX))[-1]
        lb_pool = [str(ip) for ip in lb_range.hosts()]

        def cluster(name: str) -> KubeClusterBackend:
            node = ClusterNode(self.backing.router, f"{name}-node", str(addrs.vm_ip(NODE_HOST)),  # type: ignore[union-attr]
                               self._node_tags(name), str(addrs.pod_range), str(lb_range))
            backend = KubeClusterBackend(self.tokens, str(addrs.pod_range), lb_pool, self.workdir,  # type: ignore[arg-type]
                                         node=node, timing=timing)
            self.clusters.append(backend)
            return backend

        self.server = GCloudStandIn(self.cfg.gcp_project or "meshvm-lab", self.backing, cluster, zones=self.cfg.zones,
                                    op_delay=timing.op_s, cluster_delay=timing.cluster_s).start()
        self.server.tokens = self.tokens  # type: ignore[assignment]  # only current tokens are accepted
        log.info("lab: local Google Cloud at %s, lab block %s", self.server.url, addrs.block)
        return replace(self.cfg, compute_endpoint=self.server.url, container_endpoint=self.server.url,
                       iam_endpoint=self.server.url, resourcemanager_endpoint=self.server.url,
                       gcp_access_token_file=self.tokens.path, subnet_range=str(addrs.vm_subnet),
                       pod_range=str(addrs.pod_range), service_range=str(addrs.service_range),
                       ssh_source_ranges=(f"{self.backing.router.external_source}/32",))

    def istioctl(self, version: str, folder: Path) -> Path:
        return install_istioctl_standin(version, folder, self.timing.install_s)

    def release_samples(self, version: str) -> Path | None:
        return None  # the stand-in istioctl comes from no release archive: no drift report on the lab

    def sidecar_package(self, version: str, folder: Path) -> Path:
        return build_sidecar_deb(version, folder)

    def ratings_source(self, version: str) -> Path:
        return self.cfg.ratings_source or Path(__file__).resolve().parent / "standins" / "ratings"

    def guard(self) -> Callable[[str], None] | None:
        return assert_local_route  # a lab address is contacted only if it stays on this machine

    def report(self, folder: Path) -> None:
        """The lab's data plane as the exercises left it (census.py), in lab-dataplane.json."""
        if self.backing is None:
            return  # the lab never started: nothing ran
        node = [(f"node/{gw.node.workload}", gw.envoy) for c in self.clusters for gw in c.gateways]
        node += [(f"pod/{sb.namespace}/{sb.pod}", sb.proxy.envoy) for c in self.clusters if c.runtime
                 for sb in list(c.runtime.sandboxes.values()) if sb.proxy]
        found = census.census(node, self.backing.vms())
        (folder / "lab-dataplane.json").write_text(json.dumps(found, indent=2) + "\n")
        log.info("lab data plane: %d Envoy processes, %.0f MiB resident, machine %.2f GiB used",
                 found["envoy_processes"], found["envoy_rss_mib"], found["machine_used_gib"])

    def dumps(self) -> dict[str, Callable[[], str]]:
        """The lab's side of a failure dump: its router's firewall, as GCP's firewall logs would show it."""
        assert self.backing is not None
        return {"firewall.txt": self.backing.router.firewall_report}

    def _node_tags(self, cluster: str) -> tuple[str, ...]:
        """The node pool's network tags, as the GKE create request that the local cloud got set them."""
        assert self.server is not None
        bodies = [body for (_, name), body in list(self.server.gke.clusters.items()) if name == cluster]
        tags = [t for b in bodies[:1] for pool in b.get("nodePools") or [] for t in (pool.get("config") or {}).get("tags") or []]
        return tuple(dict.fromkeys(tags))

    def stop(self) -> None:
        """Stop everything started here, each step even if an earlier one failed."""
        for step in (*(c.stop for c in self.clusters), self._stop_server, self._close_backing, self._stop_tokens):
            try:
                step()
            except Exception as e:  # keep going: the router and its claim must still go
                log.error("lab platform stop: %s: %s", getattr(step, "__name__", step), e)

    def _stop_server(self) -> None:
        if self.server:
            self.server.stop()

    def _close_backing(self) -> None:
        if self.backing:
            self.backing.close()

    def _stop_tokens(self) -> None:
        if self.tokens:
            self.tokens.stop()
