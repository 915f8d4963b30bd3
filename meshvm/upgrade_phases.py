"""An upgrade run's phases (nox -s upgrade), after the recipe and its four exercises at --from: what each
does, its deadline, and the exercise waits it runs. The tests are in tests/upgrade; the facts they rest on
in docs/facts.md section 6 ("Upgrading with a VM")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UpgradePhase:
    name: str
    does: str  # what happens in it, for --plan and the reports
    deadline: int  # seconds for its own steps (each wait bounded by it)
    exercise_waits: int  # waits of up to --exercise-deadline each: the four exercises once more, or none
    moves: tuple[str, ...] = ()  # the layers (meshvm.versions) this phase moves to --to


EXERCISES_AGAIN = 4  # the WorkloadEntry, the VM -> details, a pod -> ratings, the product page's stars
PHASES: tuple[UpgradePhase, ...] = (
    UpgradePhase("before", "background traffic starts on every path at --from (product page through the "
                 "ingress gateway, a pod -> ratings.ratings, the VM -> details), each every 200 ms; once each "
                 "answered 50 times in a row, the baseline: 25 more requests on each; every layer on --from", 120, 0),
    UpgradePhase("control_plane", "istioctl of --to: `install` over the running control plane, then over the "
                 "east-west gateway; the skew point: istiod and gateways on --to, every proxy still on --from; "
                 "the four exercises", 1500, EXERCISES_AGAIN, ("istiod", "ingress_gateway", "eastwest_gateway")),
    UpgradePhase("vm", "the VM's files regenerated with istioctl of --to, istio-sidecar.deb of --to installed "
                 "(checked sha256), `systemctl restart istio`, ready; its WorkloadEntry; the four exercises",
                 900, EXERCISES_AGAIN, ("vm_package", "vm_agent", "vm_proxy")),
    UpgradePhase("bookinfo", "BookInfo restarted (`kubectl rollout restart`): its proxies injected at --to; "
                 "every layer on --to; the four exercises", 600, EXERCISES_AGAIN, ("bookinfo_proxies",)),
    UpgradePhase("verdict", "the traffic stopped and judged per phase: success rate >= 0.99 and no gap over "
                 "5 s on every path; upgrade.json and traffic.png", 60, 0),
)
BY_NAME = {p.name: p for p in PHASES}
LAYERS = tuple(layer for p in PHASES for layer in p.moves)


def expected(phase: str, first: str, second: str) -> dict[str, str]:
    """Layer -> the release it must run once `phase` passed: --to where this or an earlier phase moved it."""
    names = [p.name for p in PHASES]
    moved = {layer for p in PHASES[: names.index(phase) + 1] for layer in p.moves}
    return {layer: second if layer in moved else first for layer in LAYERS}


def worst_case_s(exercise_deadline: int) -> int:
    return sum(p.deadline + p.exercise_waits * exercise_deadline for p in PHASES)
