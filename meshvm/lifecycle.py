"""Beyond the recipe: the VM's life in the mesh after it joined, as checks over the seams.

What Istio does, in docs/facts.md: a health-checked WorkloadEntry whose condition Healthy is not True is
in no caller's EDS, on 1.30 and 1.31 alike ("Health", section 6); an agent back within the grace period
keeps its entry, one away longer loses it to a fresh one ("Upgrading with a VM", section 6, and
section 1). Each exercise measures how long the mesh took; the run's book keeps the figures
(phases.json, lifecycle.json).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from meshvm import exercises, retry, revisions
from meshvm.deadlines import Deadline
from meshvm.recipe import ratings
from meshvm.recipe.upgrade import RESTARTED_AT as RESTARTED_AT  # re-exported: the lifecycle tests use it
from meshvm.recipe.upgrade import rollout_restart as rollout_restart
from meshvm.seams import Kube, VmShell

GRACE_S = 10.0  # PILOT_WORKLOAD_ENTRY_GRACE_PERIOD's default (pilot/pkg/features/pilot.go at 1.30.3)
SETTLE_S = 15.0  # istiod's write of a change and its push to every caller, beyond the probe's own time
FAIL_FAST_S = 5  # a call to a ratings without a live endpoint must be answered (503) within this, not hang
DISCONNECTED = "istio.io/disconnectedAt"
CONNECTED = "istio.io/connectedAt"
CONTROLLER = "istio.io/workloadController"  # the istiod pod the entry's agent is connected to


def entry(kube: Kube, vm_ip: str) -> dict | None:
    """The VM's auto-registered WorkloadEntry (its name is the group's and the address)."""
    return kube.get(exercises.WE_API, "WorkloadEntry", f"ratings-{vm_ip}", "ratings")


def uid(found: dict | None) -> str | None:
    return ((found or {}).get("metadata") or {}).get("uid")


def notes(found: dict | None) -> dict:
    return ((found or {}).get("metadata") or {}).get("annotations") or {}


def probe_budget(probe: dict, healthy: bool = False) -> float:
    """Seconds the agent's probe needs to report the VM unhealthy (failureThreshold failing periods) or
    healthy again (successThreshold passing ones), plus one timeout, plus istiod's write and push. Unset
    fields take the agent's defaults, not Kubernetes': period 10 s, thresholds 1, timeout 1 s
    (pkg/istio-agent/health/health_check.go at 1.30.3)."""
    threshold = probe.get("successThreshold" if healthy else "failureThreshold") or 1
    return float(probe.get("periodSeconds") or 10) * int(threshold) + float(probe.get("timeoutSeconds") or 1) + SETTLE_S


def caller_endpoint(kube: Kube, pod: str, vm_ip: str) -> str:
    """How a caller's sidecar holds the VM in ratings' cluster, from its Envoy's `/clusters`: "absent",
    or Envoy's health flags ("healthy", "/failed_eds_health" for an endpoint sent UNHEALTHY)."""
    r = kube.exec("default", pod, ["curl", "-sS", "-m", "5", "localhost:15000/clusters"], container="istio-proxy",
                  timeout=20)
    if not r.ok:
        return f"unread: curl exited {r.rc}: {r.stderr.strip()[-200:]}"
    prefix = f"outbound|9080||{exercises.RATINGS_SERVICE}::{vm_ip}:9080::health_flags::"
    return next((line[len(prefix):] for line in r.stdout.splitlines() if line.startswith(prefix)), "absent")


NO_ENDPOINT = "503 no healthy upstream"  # Envoy's own answer for a cluster without a healthy endpoint


def pod_call_code(kube: Kube, pod: str) -> str:
    """A pod's call of ratings: its HTTP status and body (short), or how curl failed (exit 28 is a hang).
    NO_ENDPOINT is the caller's own Envoy answering, not the VM's (Istio sets no local reply of its own)."""
    r = kube.exec("default", pod, ["curl", "-sS", "-m", str(FAIL_FAST_S), "-w", "\n%{http_code}",
                                   "ratings.ratings:9080/ratings/123"], container="curl", timeout=30)
    if not r.ok:
        return f"curl exited {r.rc}: {r.stderr.strip()[-200:]}"
    body, _, code = r.stdout.rpartition("\n")
    return f"{code.strip()} {body.strip()[:200]}".strip()


def timed(what: str, look: Callable[[], object], ok: Callable[[object], bool], deadline: Deadline,
          since: float, ceiling: float = 1, transient: tuple[type[BaseException], ...] = ()) -> tuple[object, float]:
    """Wait until `look()` is `ok`; return it and the seconds since `since` (time.monotonic())."""
    seen = retry.until(what, look, deadline, accept=ok, initial=0.2, ceiling=ceiling, transient=transient)
    return seen, round(time.monotonic() - since, 1)


def mesh_serves_ratings(kube: Kube, pod: str, since: float, deadline: Deadline) -> float:
    """Seconds since `since` until a pod's call of ratings answers right again."""
    _, took = timed("a pod's call of ratings answered right again", lambda: exercises.pod_calls_ratings(kube, pod),
                    lambda a: a == ratings.EXPECTED, deadline, since, ceiling=2)
    return took


def istiod_pods(kube: Kube, revision: str | None = None) -> list[str]:
    """istiod's Running pods that are not going away (of one revision: `default` is the revisionless one)."""
    selector = revisions.istiod_pods(revision) if revision else "app=istiod"
    return sorted(p["metadata"]["name"] for p in kube.list("v1", "Pod", "istio-system", label_selector=selector)
                  if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"))


# Envoy counts every accepted LDS and CDS answer; both stats are kept by Istio's bootstrap (the required
# inclusions `listener_manager` and `cluster_manager`: pkg/bootstrap/config.go at 1.30.3).
XDS_UPDATES = ("curl -gsS -m 5 "
               "'localhost:15000/stats?filter=^(listener_manager[.]lds|cluster_manager[.]cds)[.]update_success$'")


def xds_updates(vm: VmShell) -> dict[str, int]:
    """The VM's Envoy's accepted LDS and CDS answers so far (a new istiod's first push adds one to each)."""
    r = vm.run(XDS_UPDATES, step="lifecycle: the VM proxy's xDS updates", timeout=20)
    pairs = (line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    return {name: int(value) for name, value in pairs if value.strip().isdigit()}


def boot_id(vm: VmShell) -> str:
    """The VM's boot id: a new one after every boot."""
    return vm.run("cat /proc/sys/kernel/random/boot_id", step="lifecycle: boot id", timeout=20).stdout.strip()


def reboot(vm: VmShell) -> None:
    """`systemctl reboot`, a second after this command returned (the SSH connection goes with the VM)."""
    vm.run("nohup sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 &", sudo=True, step="lifecycle: reboot")


def units_active(vm: VmShell) -> list[str]:
    """`systemctl is-active istio ratings`: each unit's state."""
    r = vm.run("systemctl is-active istio ratings", step="lifecycle: units active", check=False, timeout=20)
    return r.stdout.split()


def token_after_boot(vm: VmShell) -> str:
    """Whether the recipe's istio-token survived the boot ("absent" where /var/run is a tmpfs: the agent
    then authenticates with the workload certificate it kept, docs/facts.md section 6)."""
    return vm.run("test -e /var/run/secrets/tokens/istio-token && echo present || echo absent", sudo=True,
                  step="lifecycle: istio-token after the boot", timeout=20).stdout.strip()
