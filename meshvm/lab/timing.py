"""How long the local Google Cloud takes for what takes Google Cloud long (`--lab-timing`).

`fast` (the default) keeps the lab's own short figures, for quick rehearsals and the self-tests.
`gcp[:FACTOR]` answers with Google Cloud's usual latencies times FACTOR (default 0.1), so that what
the stage graph's overlap saves is measured on the lab (phases.json's wall / critical path) rather
than argued. The figures are typical values, not guarantees: Google documents no latency for these
operations, so each is the order of magnitude a run sees (docs/facts.md section 7).
A real run's phases.json records the true ones per stage; update these from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DEFAULT_FACTOR = 0.1


@dataclass(frozen=True)
class LabTiming:
    op_s: float = 0.2  # a Compute operation (network, firewall rule, instance insert) until DONE
    cluster_s: float = 0.5  # a GKE cluster create until RUNNING
    hostkey_s: float = 1.0  # a VM's boot until its guest agent published the SSH host keys
    apt_lock_s: float = 0.0  # first boot: apt's locks held by the image's own apt runs
    lb_s: float = 0.0  # a LoadBalancer Service until it has an address
    pull_s: float = 0.0  # a Deployment until its pods run (image pulls)
    install_s: float = 0.0  # istioctl install until the control plane it waits for is ready


FAST = LabTiming()
# Google Cloud's usual figures, in seconds (docs/facts.md section 7).
GCP = LabTiming(op_s=15.0, cluster_s=330.0, hostkey_s=35.0, apt_lock_s=60.0, lb_s=60.0, pull_s=20.0,
                install_s=60.0)


def parse(text: str) -> LabTiming | None:
    """`fast`, `gcp` or `gcp:FACTOR` (0 < FACTOR <= 1); None if it is none of them."""
    if text == "fast":
        return FAST
    name, _, factor = text.partition(":")
    if name != "gcp":
        return None
    try:
        f = float(factor) if factor else DEFAULT_FACTOR
    except ValueError:
        return None
    if not 0 < f <= 1:
        return None
    return replace(GCP, **{k: round(v * f, 3) for k, v in vars(GCP).items()})
