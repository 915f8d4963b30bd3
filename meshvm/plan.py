"""`--plan`: what a run with these settings would do, with concrete names and deadlines. Offline."""

from __future__ import annotations

from meshvm import upgrade_phases
from meshvm.config import Config
from meshvm.stages import BY_NAME, TEARDOWN_DEADLINE

ADOPTING = ("network", "firewall", "cluster", "vm")  # --reuse: the kept run's, where they still exist


def render(cfg: Config, unresolved: str | None = None) -> str:
    """The plan; `unresolved` says why a minor --istio-version could not be resolved to a patch yet."""
    ssh = ", ".join(cfg.ssh_source_ranges) or ("the lab host" if cfg.platform == "lab" else "(missing)")
    lines = [
        f"Run plan: platform {cfg.platform}, project {cfg.gcp_project or '(missing)'}, "
        f"zone {', '.join(cfg.zones)}, Istio {cfg.istio_version}",
        f"  run id {cfg.run_id}; labels {', '.join(f'{k}={v}' for k, v in cfg.labels.items())}",
        f"  artifacts {cfg.artifacts_dir}",
        *_istio(cfg, unresolved),
    ]
    if cfg.reuse:
        lines.append(f"  reuses kept run {cfg.run_id}: its network, firewall rules, cluster and VM are adopted "
                     "(recorded in this run's ledger) where they exist, created where not; its SSH key from "
                     "its secret dir")
    if cfg.platform == "lab":
        lines.append("  addresses: allocated from the lab range 172.29.0.0/16 when the run starts")
    lines.append("")
    lines.append("Stages (one after another: --sequential-stages):" if cfg.sequential_stages else
                 "Stages (each starts once the stages it needs passed; the others run at the same time):")
    lines += [
        *_stages(cfg, ssh),
        f"    {'teardown':<18} {_mins(TEARDOWN_DEADLINE):>7}  everything above, in reverse"
        + (" (adopted included)" if cfg.reuse else ""),
        "",
        "Then the exercises: the WorkloadEntry appears; the VM reaches details.default.svc; "
        "a pod reaches ratings.ratings; the product page shows stars.",
        *_upgrade(cfg),
        f"Worst case: {_mins(cfg.worst_case_s())} (the stage deadlines, the exercises' waits and teardown); "
        f"the run's resources expire at {cfg.labels['e2e-expires']}.",
    ]
    if cfg.platform == "gcp" and not cfg.node_service_account:
        lines.append("Warning: the nodes run as the project's default Compute service account (broad roles); "
                     "pass --node-service-account with a minimal one.")
    if cfg.token_window():
        lines.append(f"The istio-token ({_mins(cfg.token_duration)}) must outlive {_mins(cfg.token_window())}: "
                     "stage vm_files to the agent's first connection.")
    if cfg.until:
        lines.append(f"Stops after stage {cfg.until} (--until).")
    if cfg.unwired():
        lines.append(f"Not wired into the suite yet (a run asking for them is refused): {', '.join(cfg.unwired())}.")
    if cfg.missing:
        lines += ["", "Required settings still missing:", *(f"  - {m}" for m in cfg.missing)]
    return "\n".join(lines)


def _upgrade(cfg: Config) -> list[str]:
    """An upgrade run's phases, each with its worst case: its deadline and its exercise waits."""
    if cfg.upgrade_to is None:
        return []
    requested = f" (the newest {cfg.upgrade_requested}.x)" if cfg.upgrade_requested else ""
    lines = ["", f"Then the upgrade to Istio {cfg.upgrade_to}{requested}, {cfg.upgrade_strategy}, phase by phase "
             "(each a testcase; worst case = its deadline + its exercise waits):"]
    for i, phase in enumerate(upgrade_phases.phases(cfg.upgrade_strategy), 1):
        worst = phase.deadline + phase.exercise_waits * cfg.exercise_deadline
        lines.append(f"{i:2}. {phase.name:<18} {_mins(worst):>7}  {phase.does}")
    if cfg.platform != "lab":
        lines.append(f"    istio-sidecar.deb of {cfg.upgrade_to}: {' then '.join(cfg.sidecar_urls(cfg.upgrade_to))}")
        lines.append(f"    drift.json: {cfg.upgrade_to}'s samples/ against the suite's manifests (a report, not a check)")
    return lines


def _istio(cfg: Config, unresolved: str | None) -> list[str]:
    """Which Istio, from where: the version (resolved or not), the image hub, the sidecar package."""
    if unresolved:
        version = (f"  Istio {cfg.istio_version}: resolved to the newest {cfg.istio_version}.x when the run starts; "
                   f"not resolved now: {unresolved}")
    elif cfg.istio_requested:
        version = f"  Istio {cfg.istio_version}: the newest {cfg.istio_requested}.x in {cfg.istio_release_listing}"
    else:
        version = f"  Istio {cfg.istio_version}"
    if cfg.platform == "lab":
        package = "the lab's stand-in istio-sidecar.deb, built for this version"
        archive = "the lab's stand-in istioctl"
    else:
        archive = (f"{cfg.istio_release_url}/<V>/istio-<V>-linux-amd64.tar.gz (checked against its .sha256; "
                   "bin/istioctl and samples/)")
        urls = cfg.sidecar_urls() if not unresolved else [u.replace(f"/{cfg.istio_version}/", f"/{cfg.istio_version}.x/")
                                                          for u in cfg.sidecar_urls()]
        package = " then ".join(urls) + " (each checked against its .sha256)"
    return [version, f"  image hub {cfg.istio_hub} (istioctl install --set hub=; every Istio image must come from it)",
            f"  istioctl: {archive}", f"  istio-sidecar.deb: {package}"]


def _stages(cfg: Config, ssh: str) -> list[str]:
    """Each stage: its deadline and step, what it creates (or adopts), what it waits for."""
    lines = []
    for i, name in enumerate(cfg.stages(), 1):
        stage, deadline = BY_NAME[name], cfg.deadlines[name]
        creates = stage.creates.format(n=cfg.names, c=cfg, zone=cfg.zones[0], ssh=ssh)
        lines.append(f"{i:2}. {name:<18} {_mins(deadline):>7}  {stage.step.format(c=cfg)}")
        verb = "adopts or creates" if cfg.reuse and name in ADOPTING else "creates"
        lines.append(f"    {'':<18} {'':>7}  {verb}: {creates}")
        if stage.needs and not cfg.sequential_stages:
            lines.append(f"    {'':<18} {'':>7}  starts once {', '.join(stage.needs)} passed")
    return lines


def _mins(seconds: int) -> str:
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"{seconds // 60}m"
