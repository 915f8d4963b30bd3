"""Beyond the recipe: an in-place Istio upgrade with the VM in the mesh. Istio documents no VM upgrade;
these are the recipe's own steps run again with the next release's istioctl and package, in the order
docs/facts.md section 6 ("Upgrading with a VM") derives from Istio's source:

1. the control plane: `istioctl install` of the new release over the running one, then over the east-west
   gateway (its own IstioOperator), each rolled out; the proxies keep running the old release (the skew);
2. the VM: its files generated again with the new istioctl (a new istio-token), the new package installed
   over the old one, and `systemctl restart istio`: the package does not restart the agent;
3. BookInfo: `kubectl rollout restart`, so its pods are injected with the new proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

from meshvm.deadlines import Deadline
from meshvm.recipe import bookinfo, eastwest, istio, sidecar, waits
from meshvm.seams import Istioctl, Kube, VmShell

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets in the pod template
BOOKINFO = "app in (details,productpage,reviews)"  # BookInfo's Deployments in default (ratings is the VM)


class UpgradeStepFailed(Exception):
    """An upgrade step left the mesh other than it must be (e.g. the east-west address moved)."""


def control_plane_in_place(istioctl: Istioctl, kube: Kube, source_ranges: list[str], hub: str, lb_mode: str,
                           vm_external_ip: str, cluster_id: str, eastwest_address: str, workdir: Path,
                           deadline: Deadline) -> None:
    """`istioctl install` of the new release with the recipe's settings, then the east-west gateway's; the
    cluster ID and the east-west address the VM's files carry must not change."""
    now = istio.install_istio(istioctl, kube, source_ranges, hub, workdir, deadline)
    if now != cluster_id:
        raise UpgradeStepFailed(f"istiod's cluster ID changed from {cluster_id!r} to {now!r}: the VM's cluster.env "
                                "claims the old one, which istiod's CA rejects")
    address = eastwest.install_eastwest(istioctl, kube, lb_mode, vm_external_ip, hub, workdir, deadline)
    if address != eastwest_address:
        raise UpgradeStepFailed(f"the east-west gateway's address moved from {eastwest_address} to {address}: the "
                                "VM's hosts line points at the old one")


def vm_in_place(vm: VmShell, vm_files: Path, deb: Path, deadline: Deadline, ready_s: float,
                restarting: Callable[[], AbstractContextManager[object]] = nullcontext,
                back: Callable[[], object] = lambda: None) -> None:
    """The VM configuration recipe again with the new files and package, then the agent restarted and
    ready within `ready_s` (an agent that istiod rejects retries forever: the wait is an exercise's, not the
    phase's), and `back` (e.g. its entry healthy again): all that inside `restarting()`, the one outage a
    single VM's restart must cause (its calls, and the calls to it, have no other proxy meanwhile)."""
    sidecar.install_sidecar(vm, vm_files, deb, deadline)
    with restarting():
        restart_agent(vm)
        sidecar.wait_ready(vm, Deadline.after(min(ready_s, deadline.remaining()), "the VM's agent ready again"))
        back()


def restart_agent(vm: VmShell) -> None:
    """`systemctl restart istio`: a new package leaves the old agent running (docs/facts.md section 6)."""
    vm.run("systemctl restart istio", sudo=True, step="upgrade: systemctl restart istio")


def restart_bookinfo(kube: Kube, deadline: Deadline) -> list[str]:
    """`kubectl rollout restart` of each BookInfo Deployment, each rolled out (a pod replaced under traffic
    may fail the requests it holds: its app stops while callers still route to it, so the caller announces
    it); returns their names."""
    names = sorted(d["metadata"]["name"] for d in kube.list("apps/v1", "Deployment", "default", label_selector=BOOKINFO))
    if not names:
        raise UpgradeStepFailed(f"no BookInfo Deployment ({BOOKINFO}) in default")
    for name in names:
        rollout_restart(kube, "default", name)
    for name in names:
        waits.rollout(kube, "default", name, deadline)
    return names


def restart_client(kube: Kube, deadline: Deadline) -> str:
    """`kubectl rollout restart deployment/curl`, rolled out; returns the new client pod's name."""
    rollout_restart(kube, "default", "curl")
    waits.rollout(kube, "default", "curl", deadline)
    return bookinfo.client_pod_name(kube)


def rollout_restart(kube: Kube, namespace: str, name: str) -> None:
    """`kubectl rollout restart deployment/<name>`: a new time in the pod template's annotations (a
    patch, as kubectl's), so the Deployment replaces every pod."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    kube.patch("apps/v1", "Deployment", name, namespace,
               {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}})
