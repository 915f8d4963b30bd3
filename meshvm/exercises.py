"""The recipe's four exercises as checks over the seams. Each retries until its deadline and fails
saying what was expected and what was last seen (through meshvm.retry)."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from meshvm import productpage, retry, telemetry
from meshvm.deadlines import Deadline
from meshvm.recipe import ratings
from meshvm.seams import Kube, VmShell

WE_API = "networking.istio.io/v1"
DETAILS_PATH = "details.default.svc:9080/details/123"
DETAILS_SERVICE = "details.default.svc.cluster.local"
RATINGS_SERVICE = "ratings.ratings.svc.cluster.local"
CALLS = 3  # each path's calls counted in the VM proxy's istio_requests_total
SETTLE_S = 30  # for a request to show in the proxy's metrics once the caller has its answer
LOADS = 12  # product page loads per check: round robin over reviews v1-v3, v2/v3 answer about 2 in 3


# -- Exercise 1: the WorkloadEntry appears -------------------------------------------------------


@dataclass
class EntryWatch:
    """Watches WorkloadEntries in `ratings` from before the agent starts (list + watch: no miss)."""

    kube: Kube
    deadline: Deadline
    events: list[tuple[str, dict]]
    error: BaseException | None = None

    def run(self) -> None:
        try:
            for event in self.kube.watch(WE_API, "WorkloadEntry", "ratings", deadline=self.deadline):
                self.events.append(event)
        except BaseException as e:  # the test reads it; a thread must not die silently
            self.error = e


def watch_entries(kube: Kube, deadline: Deadline) -> EntryWatch:
    w = EntryWatch(kube, deadline, [])
    threading.Thread(target=w.run, name="workloadentry-watch", daemon=True).start()
    return w


def entry_problems(entry: dict | None, vm_ip: str, probe: bool) -> list[str]:
    """What is wrong with the auto-registered entry, against docs/facts.md section 1."""
    if entry is None:
        return [f"no WorkloadEntry ratings-{vm_ip} in namespace ratings"]
    meta, spec = entry.get("metadata") or {}, entry.get("spec") or {}
    notes = meta.get("annotations") or {}
    problems = []
    if spec.get("address") != vm_ip:
        problems.append(f"address {spec.get('address')!r}, expected the VM's {vm_ip}")
    if (meta.get("labels") or {}).get("app") != "ratings":
        problems.append(f"labels {meta.get('labels')!r} lack app=ratings")
    if notes.get("istio.io/autoRegistrationGroup") != "ratings":
        problems.append(f"annotation istio.io/autoRegistrationGroup is {notes.get('istio.io/autoRegistrationGroup')!r}")
    if "istio.io/connectedAt" not in notes:
        problems.append("annotation istio.io/connectedAt missing (agent not connected)")
    if probe and healthy(entry) is not True:
        problems.append(f"condition Healthy is {healthy(entry)!r}, expected True (probe on ratings /health)")
    return problems


def healthy(entry: dict) -> bool | None:
    for c in (entry.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Healthy":
            return c.get("status") == "True"
    return None


def wait_entry(watch: EntryWatch, vm_ip: str, probe: bool, deadline: Deadline) -> dict:
    name = f"ratings-{vm_ip}"

    def latest() -> tuple[list[str], dict | None]:
        if watch.error:
            raise watch.error
        seen = [o for t, o in watch.events if o["metadata"]["name"] == name and t != "DELETED"]
        entry = seen[-1] if seen else None
        return entry_problems(entry, vm_ip, probe), entry

    _, entry = retry.until(f"WorkloadEntry {name} registered", latest, deadline,
                           accept=lambda r: not r[0], ceiling=3)
    return entry  # type: ignore[return-value]


def entry_registered(kube: Kube, vm_ip: str, probe: bool, deadline: Deadline) -> dict:
    """Exercise 1 once the agent runs (an upgrade run asks it after each phase): the VM's entry is there,
    connected, and healthy when the group has the probe."""
    name = f"ratings-{vm_ip}"

    def latest() -> tuple[list[str], dict | None]:
        entry = kube.get(WE_API, "WorkloadEntry", name, "ratings")
        return entry_problems(entry, vm_ip, probe), entry

    _, entry = retry.until(f"WorkloadEntry {name} registered", latest, deadline, accept=lambda r: not r[0], ceiling=3)
    return entry  # type: ignore[return-value]


# -- Exercise 2: the VM reaches details ----------------------------------------------------------


def vm_calls_details(vm: VmShell) -> object:
    """`curl details.default.svc:9080/details/123` on the VM as the login user (not istio-proxy)."""
    r = vm.run(f"curl -sS -m 10 -w '\\n%{{http_code}}' {DETAILS_PATH}", step="exercise 2: curl details",
               check=False, timeout=20)
    if not r.ok:
        return f"curl exited {r.rc}: {r.stderr.strip()[-200:]}"
    body, _, code = r.stdout.rpartition("\n")
    if code.strip() != "200":
        return f"HTTP {code.strip()}: {body[:200]}"
    try:
        return json.loads(body)
    except ValueError:
        return body[:200]


def details_ok(answer: object) -> bool:
    return isinstance(answer, dict) and answer.get("id") == 123 and answer.get("author") == "William Shakespeare"


def vm_reaches_details(vm: VmShell, deadline: Deadline) -> None:
    """Exercise 2: details' answer from the VM, CALLS times, each seen by the VM's sidecar."""
    before = telemetry.baseline(vm, deadline)
    retry.until("details' JSON for id 123 from the VM", lambda: vm_calls_details(vm), deadline, accept=details_ok,
                ceiling=5)
    repeat("details from the VM", lambda: vm_calls_details(vm), details_ok, CALLS - 1)
    metrics_grew(vm, before, {"reporter": "source", "destination_service": DETAILS_SERVICE, "response_code": "200"},
                 CALLS, "the calls did not go through the VM's sidecar")


# -- Exercise 3: a pod reaches ratings on the VM -------------------------------------------------


def pod_calls_ratings(kube: Kube, pod: str) -> object:
    return kube.exec("default", pod, ["curl", "-sS", "-m", "10", "ratings.ratings:9080/ratings/123"],
                     container="curl", timeout=30).answer()


def pod_principal(kube: Kube, namespace: str, pod: str) -> str:
    """The SPIFFE identity a pod's proxy presents: its service account's."""
    spec = (kube.get("v1", "Pod", pod, namespace) or {}).get("spec") or {}
    return telemetry.spiffe(namespace, spec.get("serviceAccountName") or "default")


def pod_reaches_ratings(kube: Kube, vm: VmShell, pod: str, deadline: Deadline) -> None:
    """Exercise 3: ratings' answer from the client pod, CALLS times, arriving at the VM over mutual TLS
    from the pod's identity."""
    before = telemetry.baseline(vm, deadline)
    call = lambda: pod_calls_ratings(kube, pod)  # noqa: E731
    retry.until(f"ratings' answer {ratings.EXPECTED} from pod {pod}", call, deadline,
                accept=lambda answer: answer == ratings.EXPECTED, ceiling=5)
    repeat(f"ratings from pod {pod}", call, lambda answer: answer == ratings.EXPECTED, CALLS - 1)
    caller = pod_principal(kube, "default", pod)
    metrics_grew(vm, before, {
        "reporter": "destination", "destination_service": RATINGS_SERVICE, "source_principal": caller,
        "connection_security_policy": "mutual_tls", "response_code": "200"},
        CALLS, f"the calls did not arrive at the VM's sidecar over mutual TLS from {caller}")


def workload_principal(kube: Kube, namespace: str, deployment: str) -> str:
    spec = ((kube.get("apps/v1", "Deployment", deployment, namespace) or {}).get("spec") or {})
    return telemetry.spiffe(namespace, (spec.get("template") or {}).get("spec", {}).get("serviceAccountName")
                            or "default")


def repeat(what: str, call: Callable[[], object], ok: Callable[[object], bool], times: int) -> None:
    """`times` more calls of a path that already answered: each must answer right."""
    for i in range(times):
        answer = call()
        assert ok(answer), f"{what}: call {i + 1} of {times} after the first good answer got {answer!r}"


def metrics_grew(vm: VmShell, before: dict, want: dict[str, str], n: float, why: str) -> None:
    """The VM proxy's istio_requests_total series with `want`'s labels grew by at least `n`."""
    rows = telemetry.settle(lambda: telemetry.vm_requests(vm), before, want, n,
                            Deadline.after(SETTLE_S, "istio_requests_total"))
    got = telemetry.count(rows, **want)
    assert got >= n, (f"the VM proxy's istio_requests_total{want} grew by {got:g}, expected >= {n:g}: {why}; "
                      f"the series that grew:\n{telemetry.describe(rows)}")


# -- Exercise 4: the product page shows stars from the VM ----------------------------------------


def load_page(address: str, guard: Callable[[str], None] | None, timeout: float = 15) -> productpage.Reading:
    if guard:
        guard(address)
    with urllib.request.urlopen(f"http://{address}/productpage", timeout=timeout) as r:  # noqa: S310
        return productpage.read(r.read().decode(errors="replace"))


def load_pages(address: str, guard: Callable[[str], None] | None, n: int = LOADS) -> list[productpage.Reading]:
    return [load_page(address, guard) for _ in range(n)]


def page_problems(readings: list[productpage.Reading], need_rated: int = 2) -> list[str]:
    rated = [r for r in readings if r.version in ("v2", "v3")]
    problems = [f"load {i}: title is not 'Simple Bookstore App'" for i, r in enumerate(readings) if not r.title_ok]
    problems += [f"load {i}: '{productpage.UNAVAILABLE}'" for i, r in enumerate(readings) if r.unavailable]
    problems += [f"load {i}: '{productpage.REVIEWS_ERROR}'" for i, r in enumerate(readings) if r.reviews_error]
    problems += [f"load {i} ({r.version}): {r.full_stars} full stars, expected 9 (5 + 4)"
                 for i, r in enumerate(readings) if r.version in ("v2", "v3") and r.full_stars != 9]
    if len(rated) < need_rated:
        problems.append(f"only {len(rated)} of {len(readings)} loads came from reviews v2/v3; expected >= {need_rated}")
    return problems


def page_shows_vm_stars(kube: Kube, vm: VmShell, address: str, guard: Callable[[str], None] | None,
                        deadline: Deadline) -> None:
    """Exercise 4: the stars on every rated page, and the VM's proxy saw reviews (by its identity, over
    mTLS) ask ratings for them."""
    before = telemetry.baseline(vm, deadline)
    last: list[productpage.Reading] = []

    def problems() -> list[str]:
        last[:] = load_pages(address, guard)
        return page_problems(last)

    retry.until(f"{LOADS} loads of /productpage with 9 stars on every v2/v3 page", problems, deadline,
                transient=(OSError,), accept=lambda found: found == [], ceiling=10)
    rated = sum(r.version in ("v2", "v3") for r in last)
    reviews = workload_principal(kube, "default", "reviews-v2")
    metrics_grew(vm, before, {
        "reporter": "destination", "destination_service": RATINGS_SERVICE, "source_principal": reviews,
        "destination_principal": telemetry.spiffe("ratings", "bookinfo-ratings"),
        "connection_security_policy": "mutual_tls", "response_code": "200"},
        rated, f"the stars of {rated} rated pages did not come from ratings on the VM, asked by {reviews}")


def ratings_gone_from_page(address: str, guard: Callable[[str], None] | None) -> bool:
    r = load_page(address, guard)
    return r.unavailable


def stop_ratings_shows_unavailable(vm: VmShell, address: str, guard: Callable[[str], None] | None,
                                   deadline: Deadline) -> None:
    """The negative control: with ratings stopped on the VM the page says ratings are unavailable."""
    ratings.stop_ratings(vm)
    retry.until("the product page to say ratings are unavailable once ratings on the VM stopped",
                lambda: ratings_gone_from_page(address, guard), deadline, transient=(OSError,), ceiling=3)


# -- The four again (an upgrade run, after each phase) ---------------------------------------------


def all_four(kube: Kube, vm: VmShell, vm_ip: str, probe: bool, pod: str, address: str,
             guard: Callable[[str], None] | None, wait: float) -> None:
    """The recipe's four exercises once the agent runs, each within `wait` seconds. During an upgrade
    the background traffic rides the same paths: the metrics checks then count it too, which still
    proves each path goes through the sidecars as the exercise says (mTLS, identity); the answers
    checked are the exercise's own calls."""
    entry_registered(kube, vm_ip, probe, Deadline.after(wait, "exercise 1: the VM's entry"))
    vm_reaches_details(vm, Deadline.after(wait, "exercise 2: the VM -> details"))
    pod_reaches_ratings(kube, vm, pod, Deadline.after(wait, "exercise 3: a pod -> ratings"))
    page_shows_vm_stars(kube, vm, address, guard, Deadline.after(wait, "exercise 4: the product page"))
