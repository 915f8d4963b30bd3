"""`--plan`: what a run with these settings would do, with concrete names and deadlines. Offline."""

from __future__ import annotations

from meshvm.config import Config
from meshvm.stages import BY_NAME, TEARDOWN_DEADLINE

ADOPTING = ("network", "firewall", "cluster", "vm")  # --reuse: the kept run's, where they still exist


def render(cfg: Config) -> str:
    n = cfg.names
    ssh = ", ".join(cfg.ssh_source_ranges) or ("the lab host" if cfg.platform == "lab" else "(missing)")
    lines = [
        f"Run plan: platform {cfg.platform}, project {cfg.gcp_project or '(missing)'}, "
        f"zone {', '.join(cfg.zones)}, Istio {cfg.istio_version}",
        f"  run id {cfg.run_id}; labels {', '.join(f'{k}={v}' for k, v in cfg.labels.items())}",
        f"  artifacts {cfg.artifacts_dir}",
    ]
    if cfg.reuse:
        lines.append(f"  reuses kept run {cfg.run_id}: its network, firewall rules, cluster and VM are adopted "
                     "(recorded in this run's ledger) where they exist, created where not; its SSH key from "
                     "its secret dir")
    if cfg.platform == "lab":
        lines.append("  addresses: allocated from the lab range 172.29.0.0/16 when the run starts")
    lines.append("")
    total = 0
    for i, name in enumerate(cfg.stages(), 1):
        stage, deadline = BY_NAME[name], cfg.deadlines[name]
        total += deadline
        creates = stage.creates.format(n=n, c=cfg, zone=cfg.zones[0], ssh=ssh)
        lines.append(f"{i:2}. {name:<18} {_mins(deadline):>7}  {stage.step.format(c=cfg)}")
        verb = "adopts or creates" if cfg.reuse and name in ADOPTING else "creates"
        lines.append(f"    {'':<18} {'':>7}  {verb}: {creates}")
    total += TEARDOWN_DEADLINE
    lines += [
        f"    {'teardown':<18} {_mins(TEARDOWN_DEADLINE):>7}  everything above, in reverse"
        + (" (adopted included)" if cfg.reuse else ""),
        "",
        "Then the exercises: the WorkloadEntry appears; the VM reaches details.default.svc; "
        "a pod reaches ratings.ratings; the product page shows stars.",
        f"Worst case: {_mins(total)} (sum of the stage deadlines and teardown).",
    ]
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


def _mins(seconds: int) -> str:
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"{seconds // 60}m"
