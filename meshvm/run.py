"""A run's lifecycle in one place: its start (the platform, the ledger, the Cloud, the metadata), its
stage graph, and its end (the graph stopped, then teardown or keep, then the platform stopped and the
secrets closed), with the one cleanup report (meshvm.cleanup) and the message of an interrupted
teardown. pytest's side (fixtures/world.py) only calls it and turns its outcome into exit statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from meshvm import janitor, platforms
from meshvm import ledger as ledger_mod
from meshvm.cleanup import CleanupReport
from meshvm.config import Config
from meshvm.diagnostics import Collectors
from meshvm.gcp.cloud import GcpCloud
from meshvm.ledger import Ledger
from meshvm.metadata import Metadata
from meshvm.phases import StageBook
from meshvm.platforms import Platform
from meshvm.secretdir import SecretDir
from meshvm.stagegraph import StageGraph
from meshvm.stages import STAGES

log = logging.getLogger("meshvm.world")


@dataclass(frozen=True)
class World:
    cfg: Config  # the effective settings: on the lab, pointed at the local Google Cloud
    platform: Platform  # what differs between gcp and the lab, chosen once (meshvm.platforms)
    cloud: GcpCloud
    ledger: Ledger
    secrets: SecretDir
    metadata: Metadata
    # Run first at teardown, newest first: e.g. releasing the cluster's load balancers, which GKE
    # does not delete with the cluster.
    before_teardown: list[Callable[[], object]] = field(default_factory=list)
    # Each component's failure dump, registered by the stage that makes it (fixtures/diagnostics.py).
    dumps: dict[str, Callable[[], Collectors]] = field(default_factory=dict)
    # Run after teardown: e.g. closing the VM's SSH session.
    closers: list[Callable[[], object]] = field(default_factory=list)


class Run:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.secrets = SecretDir(cfg.run_id, cfg.artifacts_dir, adopt=cfg.reuse)  # --reuse: the kept run's SSH key
        self.platform = platforms.choose(cfg, self.secrets.sub(cfg.platform))
        self.world: World | None = None
        self.graph: StageGraph | None = None
        self._started = False

    @property
    def command(self) -> str:
        """The command that removes what this run leaves."""
        c = self.cfg
        return janitor.command(c.platform, c.run_id, c.gcp_project, c.compute_endpoint, c.container_endpoint)

    def start(self) -> World:
        cfg = self.cfg
        effective, self._started = self.platform.start(), True
        ledger = Ledger(cfg.artifacts_dir / "ledger.json")
        metadata = Metadata(cfg.artifacts_dir / "metadata.json", cfg.istio_version)
        metadata.note("platform", cfg.platform)
        if cfg.istio_requested:
            metadata.note("istio_version_asked", f"{cfg.istio_requested} (newest patch in {cfg.istio_release_listing})")
        metadata.note("istio_hub", cfg.istio_hub)
        metadata.note("vm_image", f"ubuntu-os-cloud/{cfg.vm_image_family}")
        world = World(effective, self.platform, GcpCloud(effective, ledger), ledger, self.secrets, metadata)
        if dumps := self.platform.dumps():
            world.dumps[self.platform.name] = lambda: dumps
        self.world = world
        return world

    def stages(self, book: StageBook, work: Mapping[str, Callable[[StageGraph], object]]) -> StageGraph:
        """The recipe's stages, started as a graph (meshvm.stagegraph)."""
        cfg = self.cfg
        self.graph = StageGraph(STAGES, work, book, cfg.stages(), cfg.deadlines, until=cfg.until,
                                fail_at=cfg.fail_at, sequential=cfg.sequential_stages)
        return self.graph.start()  # known before its first thread starts: an interrupt now still stops it

    def stop_stages(self, why: str) -> None:
        if self.graph is not None:
            self.graph.stop(why)

    def keeping(self, failed: bool) -> bool:
        return self.cfg.keep == "always" or (self.cfg.keep == "on-failure" and failed)

    def teardown(self, failed: bool) -> None:
        """Every stage stopped first; then what the run made is kept (--keep) or removed, verified, and
        reported in cleanup.json."""
        self.stop_stages("teardown started")
        world = self.world
        if world is None:
            return
        try:
            self.platform.report(self.cfg.artifacts_dir)
        except Exception as e:  # a report must not keep the teardown from running
            log.error("teardown: the %s platform's report: %s: %s", self.platform.name, type(e).__name__, e)
        cfg, ledger = self.cfg, world.ledger
        if self.keeping(failed):
            kept = ledger_mod.write_kept(ledger, cfg.artifacts_dir / "kept.json", cfg.run_id, cfg.keep,
                                         cfg.labels["e2e-expires"], self.command)
            log.warning("keeping the run's %d resource(s) (--keep %s, listed in kept.json); delete them with: %s",
                        len(kept["resources"]), cfg.keep, self.command)  # type: ignore[arg-type]
            return
        log.warning("teardown: started for run %s (%d ledger entries)", cfg.run_id, len(ledger.entries()))
        report = CleanupReport(cfg.artifacts_dir / "cleanup.json", command=self.command)
        for step in reversed(world.before_teardown):
            try:
                step()
            except Exception as e:  # the ledger teardown below still runs; the failure is reported
                log.error("teardown: %s", e, exc_info=True)  # counted as remaining: what it guarded may exist
                report.failed_step(getattr(step, "__name__", "step"), f"{type(e).__name__}: {e}")
        summary = world.cloud.teardown(report)
        if summary["remaining"] or summary.get("leftovers"):
            log.error("teardown left: %s %s; remove them with: %s", summary["remaining"], summary.get("leftovers"),
                      self.command)

    def close(self, failed: bool, interrupted: bool) -> None:
        """After teardown: the run's connections, the platform (unless an interrupt left it for the
        janitor), then the secrets (a kept gcp run keeps its SSH key)."""
        try:
            for close in self.world.closers if self.world else []:
                close()
            if self._started and not interrupted:
                self.platform.stop()
        finally:
            if self.keeping(failed) and not self.platform.ephemeral and not interrupted:
                log.warning("kept: the VM's SSH key stays in %s (0700) until you remove it", self.secrets.path)
            else:
                self.secrets.close()

    def interrupted_teardown(self) -> str:
        """Teardown was stopped by a second interrupt: mark cleanup.json, and the message saying what the
        ledger says remains and the command that removes it."""
        cfg = self.cfg
        path = cfg.artifacts_dir / "cleanup.json"
        left = ledger_mod.remaining(self.world.ledger, path) if self.world is not None else []
        report = CleanupReport.read(path)
        if self.world is not None and not path.is_file():
            ledger_mod.interrupted(report, left)
        report.remove_with(self.command)
        lines = [f"meshvm: teardown of run {cfg.run_id} stopped by a second interrupt; {len(left)} resource(s) "
                 "remain (from the ledger):", *(f"meshvm:   {e.key}" for e in left),
                 f"meshvm: {self.platform.leftover_note}" if self.platform.leftover_note else "",
                 f"meshvm: remove them with: {self.command}"]
        return "\n".join(line for line in lines if line)
