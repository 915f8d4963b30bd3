"""Beyond the recipe: a canary Istio upgrade with the VM in the mesh (`--strategy canary`). Istio documents no
VM upgrade; these steps follow what docs/facts.md section 6 ("Canary") reads in Istio's source:

1. the control plane: `istioctl install --revision <rev>` of the new release beside the running one (the
   ingress gateway is re-rendered in place), the east-west gateway installed again as that revision, and
   the revision's own route through it (`istiod-vs-<rev>`, SNI `istiod-<rev>.istio-system.svc`);
2. BookInfo's namespace moved to the revision (`istio.io/rev=<rev>`, no `istio-injection`) and its pods
   (the client's too) restarted, so the revision injects them;
3. the VM: its files generated again with `--revision <rev>` (CA_ADDR, discoveryAddress and hosts name
   `istiod-<rev>`), the new package, `systemctl restart istio` (meshvm.recipe.upgrade.vm_in_place);
4. the old revision removed: its route `istiod-vs`, then `istioctl uninstall --revision default`.
The WorkloadGroup never carries `istio.io/rev`: an istiod sees a config object only without one or with its
own revision, so a group pinned to one revision is invisible to the other.
"""

from __future__ import annotations

from pathlib import Path

from meshvm import manifests, revisions
from meshvm.deadlines import Deadline
from meshvm.recipe import eastwest, istio, waits
from meshvm.recipe.upgrade import UpgradeStepFailed
from meshvm.seams import Istioctl, Kube

REV = revisions.LABEL
OLD = revisions.DEFAULT  # the revision of a revisionless install
NETWORKING = "networking.istio.io/v1"


def revision_of(version: str) -> str:
    """The revision a release is installed as: its version with dashes (`1.31.1` -> `1-31-1`), as Istio's
    canary page names them (a revision is a DNS label)."""
    return version.replace(".", "-")


def control_plane(istioctl: Istioctl, kube: Kube, source_ranges: list[str], hub: str, lb_mode: str,
                  vm_external_ip: str, cluster_id: str, eastwest_address: str, revision: str, workdir: Path,
                  deadline: Deadline) -> None:
    """The new release as `revision` beside the old control plane, the east-west gateway as that revision,
    and the revision's route; the cluster ID and the east-west address the VM's files carry must hold."""
    now = istio.install_istio(istioctl, kube, source_ranges, hub, workdir, deadline, revision=revision)
    if now != cluster_id:
        raise UpgradeStepFailed(f"istiod-{revision}'s cluster ID is {now!r}, not {cluster_id!r}: the VM's "
                                "cluster.env claims the old one, which its CA rejects")
    address = eastwest.install_eastwest(istioctl, kube, lb_mode, vm_external_ip, hub, workdir, deadline,
                                        revision=revision)
    if address != eastwest_address:
        raise UpgradeStepFailed(f"the east-west gateway's address moved from {eastwest_address} to {address}: the "
                                "VM's hosts line points at the old one")
    expose_revision(kube, revision)


def expose_revision(kube: Kube, revision: str) -> None:
    """`expose-istiod-rev.yaml.tmpl` for the revision: its istiod through the east-west gateway."""
    kube.apply(manifests.text("expose-istiod-rev", REVISION=revision), namespace="istio-system")


def move_namespace(kube: Kube, namespace: str, revision: str) -> None:
    """`kubectl label namespace <ns> istio-injection- istio.io/rev=<rev>`: new pods get the revision's proxy
    (`istio-injection` would win over `istio.io/rev`)."""
    kube.patch("v1", "Namespace", namespace, None, {"metadata": {"labels": {"istio-injection": None, REV: revision}}})


def remove_old_revision(istioctl: Istioctl, kube: Kube, deadline: Deadline) -> None:
    """The old route (`istiod-vs`: nothing may use the revisionless istiod any more), then `istioctl
    uninstall --revision default`, until its istiod is gone."""
    kube.delete(NETWORKING, "VirtualService", "istiod-vs", "istio-system", deadline=deadline)
    istioctl.run(["uninstall", "--revision", OLD, "-y"], step="upgrade: istioctl uninstall --revision default",
                 timeout=deadline.cap(600))
    # istioctl deletes with foreground propagation and does not wait (operator/pkg/uninstall/prune.go): the
    # Deployment stays, being deleted, until its pods are gone.
    waits.gone(kube, "apps/v1", "Deployment", "istio-system", "istiod", deadline)
    waits.pods_gone(kube, "istio-system", revisions.istiod_pods(OLD), deadline)


def old_revision_users(kube: Kube, namespaces: tuple[str, ...]) -> list[str]:
    """Pods (not going away; istiod's own aside) whose proxy the old revision injected or whose labels name it."""
    users = []
    for ns in namespaces:
        for pod in kube.list("v1", "Pod", ns):
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") \
                    or (meta.get("labels") or {}).get("app") == "istiod":
                continue
            rev = (meta.get("annotations") or {}).get(REV) or (meta.get("labels") or {}).get(REV)
            if rev == OLD:
                users.append(f"{ns}/{meta['name']}")
    return users
