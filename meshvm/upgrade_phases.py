"""An upgrade run's phases (nox -s upgrade), after the recipe and its four exercises at --from, per strategy:
what each does, its deadline, the exercise waits it runs and the layers it changes. The tests are in
tests/upgrade; the facts they rest on in docs/facts.md section 6 ("Upgrading with a VM", "Canary")."""

from __future__ import annotations

from dataclasses import dataclass

NONE = "(none)"  # a layer that must not run at all (before its revision is installed, after it is removed)


@dataclass(frozen=True)
class UpgradePhase:
    name: str
    does: str  # what happens in it, for --plan and the reports
    deadline: int  # seconds for its own steps (each wait bounded by it)
    exercise_waits: int  # waits of up to --exercise-deadline each: the four exercises once more, or none
    moves: tuple[str, ...] = ()  # the layers (meshvm.versions) this phase moves to --to
    starts: tuple[str, ...] = ()  # layers that first run in this phase (on --to)
    ends: tuple[str, ...] = ()  # layers that stop running in this phase


EXERCISES_AGAIN = 4  # the WorkloadEntry, the VM -> details, a pod -> ratings, the product page's stars
GATEWAYS = ("ingress_gateway", "eastwest_gateway")
VM = ("vm_package", "vm_agent", "vm_proxy")
PODS = ("bookinfo_proxies", "client_proxy")  # injected proxies: each keeps its release until its pod is made again
BEFORE = UpgradePhase(
    "before", "background traffic starts on every path at --from (product page through the ingress gateway, a "
    "pod -> ratings.ratings, the VM -> details), each every 200 ms; once each answered 50 times in a row, the "
    "baseline: 25 more requests on each; every layer on --from", 120, 0)
VERDICT = UpgradePhase("verdict", "the traffic stopped and judged per phase: success rate >= 0.99 and no gap over "
                       "5 s on every path; upgrade.json and traffic.png", 60, 0)
VM_PHASE = "the VM's files regenerated with istioctl of --to{}, istio-sidecar.deb of --to installed (checked " \
           "sha256), `systemctl restart istio`, ready; its WorkloadEntry{}; the four exercises"
STRATEGIES: dict[str, tuple[UpgradePhase, ...]] = {
    "in-place": (
        BEFORE,
        UpgradePhase("control_plane", "istioctl of --to: `install` over the running control plane, then over the "
                     "east-west gateway; the skew point: istiod and gateways on --to, every proxy still on --from; "
                     "the four exercises", 1500, EXERCISES_AGAIN, ("istiod", *GATEWAYS)),
        UpgradePhase("vm", VM_PHASE.format("", ""), 900, EXERCISES_AGAIN, VM),
        UpgradePhase("bookinfo", "the client, then BookInfo restarted (`kubectl rollout restart`): their proxies "
                     "injected at --to; every layer on --to; the four exercises", 600, EXERCISES_AGAIN, PODS),
        VERDICT),
    "canary": (
        BEFORE,
        UpgradePhase("control_plane", "istioctl of --to: `install --revision <rev>` beside the running control "
                     "plane (the ingress gateway re-rendered in place), the east-west gateway installed as <rev>, "
                     "the revision's route `istiod-vs-<rev>`; both istiods run, every proxy still on --from; the "
                     "four exercises", 1500, EXERCISES_AGAIN, GATEWAYS, starts=("istiod_canary",)),
        UpgradePhase("bookinfo", "namespace default moved to <rev> (`istio.io/rev`, no `istio-injection`), BookInfo "
                     "and the client restarted: injected by <rev> at --to; the four exercises", 600, EXERCISES_AGAIN,
                     PODS),
        UpgradePhase("vm", VM_PHASE.format(" `--revision <rev>`", ", now controlled by an istiod-<rev> pod"), 900,
                     EXERCISES_AGAIN, VM),
        UpgradePhase("old_revision", "the old route `istiod-vs` deleted, `istioctl uninstall --revision default`; "
                     "before that, no pod or gateway of the old revision left (the VM left it in phase vm); the old istiod gone; "
                     "the four exercises", 600,
                     EXERCISES_AGAIN, ends=("istiod",)),
        VERDICT),
}


def phases(strategy: str) -> tuple[UpgradePhase, ...]:
    return STRATEGIES[strategy]


def phase(strategy: str, name: str) -> UpgradePhase:
    return next(p for p in phases(strategy) if p.name == name)


def layers(strategy: str) -> tuple[str, ...]:
    """Every layer the strategy checks, in order ("istiod": the revisionless control plane's pods)."""
    seen = ("istiod", *GATEWAYS, *PODS, *VM)
    return (*seen, *(layer for p in phases(strategy) for layer in p.starts))


def expected(strategy: str, name: str, first: str, second: str) -> dict[str, str]:
    """Layer -> the release it must run once phase `name` passed: --to where this or an earlier phase moved or
    started it, NONE before it started or once it ended, --from otherwise."""
    done = phases(strategy)[: [p.name for p in phases(strategy)].index(name) + 1]
    moved = {layer for p in done for layer in (*p.moves, *p.starts)}
    started = {layer for p in phases(strategy) for layer in p.starts}
    ended = {layer for p in done for layer in p.ends}
    return {layer: NONE if layer in ended or (layer in started and layer not in moved)
            else second if layer in moved else first for layer in layers(strategy)}


def worst_case_s(strategy: str, exercise_deadline: int) -> int:
    return sum(p.deadline + p.exercise_waits * exercise_deadline for p in phases(strategy))
