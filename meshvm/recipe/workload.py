"""Recipe: the ratings namespace and service account, the WorkloadGroup, and the VM's files."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from meshvm import manifests, retry, revisions
from meshvm.deadlines import Deadline
from meshvm.recipe import waits
from meshvm.recipe.sidecar import VM_FILES
from meshvm.seams import CommandFailed, Istioctl, Kube

log = logging.getLogger(__name__)
NAMESPACE, GROUP, SERVICE_ACCOUNT = "ratings", "ratings", "bookinfo-ratings"
GROUP_ARGS = ("x", "workload", "group", "create", "--name", GROUP, "--namespace", NAMESPACE,
              "--labels", "app=ratings", "--serviceAccount", SERVICE_ACCOUNT)


class WorkloadGroupInvalid(Exception):
    pass


def create_ratings_namespace(kube: Kube) -> None:
    """Create the ratings namespace and service account."""
    kube.apply(manifests.text("ratings-namespace"))


def create_workloadgroup(istioctl: Istioctl, kube: Kube, probe: bool, out: Path) -> dict:
    """Create the WorkloadGroup with the recipe's own command, check it, add the probe overlay,
    apply it (before any VM agent starts) and keep it in `out` for `workload entry configure -f`."""
    printed = istioctl.run(list(GROUP_ARGS), step="workloadgroup: create", timeout=60).stdout
    group = yaml.safe_load(printed)
    check_group(group)
    if probe:
        group = manifests.merge(group, manifests.docs("workloadgroup-probe")[0])
    text = manifests.dump(group)
    out.write_text(text)
    kube.apply(text, namespace=NAMESPACE)
    return group


def check_group(group: object) -> None:
    """What `istioctl x workload group create` printed is the recipe's WorkloadGroup, or an error."""
    g = group if isinstance(group, dict) else {}
    want = {
        "kind": ("WorkloadGroup", g.get("kind")),
        "metadata.name": (GROUP, (g.get("metadata") or {}).get("name")),
        "metadata.namespace": (NAMESPACE, (g.get("metadata") or {}).get("namespace")),
        "spec.metadata.labels": ({"app": "ratings"}, ((g.get("spec") or {}).get("metadata") or {}).get("labels")),
        "spec.template.serviceAccount": (SERVICE_ACCOUNT, ((g.get("spec") or {}).get("template") or {})
                                         .get("serviceAccount")),
    }
    wrong = [f"{k}: expected {e!r}, got {a!r}" for k, (e, a) in want.items() if e != a]
    if wrong:
        raise WorkloadGroupInvalid("istioctl x workload group create printed another group: " + "; ".join(wrong))


def generate_vm_files(istioctl: Istioctl, kube: Kube, group_file: Path, out: Path, cluster_id: str,
                      vm_ip: str, eastwest_ip: str, token_duration: int, deadline: Deadline, revision: str = "") -> Path:
    """Generate VM artifacts: retried until istioctl succeeds AND `hosts` names the east-west
    address (it writes an empty file and exits 0 while the gateway has none). A canary upgrade's
    `revision`: the files of that revision's istiod (`istiod-<rev>`, docs/facts.md section 6)."""
    waits.present(kube, "v1", "ConfigMap", NAMESPACE, "istio-ca-root-cert", deadline)
    args = ["x", "workload", "entry", "configure", "-f", str(group_file), "-o", str(out), "--autoregister",
            f"--clusterID={cluster_id}", f"--internalIP={vm_ip}", f"--tokenDuration={token_duration}",
            *([f"--revision={revision}"] if revision else [])]
    istiod = revisions.istiod_host(revision)

    def attempt() -> str:
        istioctl.run(args, step="vm files: configure", timeout=deadline.cap(120))
        return (out / "hosts").read_text().strip() if (out / "hosts").is_file() else ""

    retry.until(f"VM files whose hosts names the east-west address {eastwest_ip}", attempt, deadline,
                transient=(CommandFailed,), accept=lambda hosts: hosts == f"{eastwest_ip} {istiod}", ceiling=10)
    check_vm_files(out, cluster_id, f"{istiod}:15012" if revision else None, discovery=f"{istiod}:15012")
    return out


def check_vm_files(out: Path, cluster_id: str, ca_addr: str | None = None, discovery: str | None = None) -> None:
    """What the agent reads: cluster.env's cluster ID, group and (a revision's) CA address, and mesh.yaml's
    discoveryAddress, which istioctl copies from the (revision's) mesh config (`istioctl/pkg/workload/
    workload.go` createMeshConfig at 1.30.3)."""
    missing = [f for f in VM_FILES if not (out / f).is_file()]
    env = dict(_env_lines((out / "cluster.env").read_text())) if "cluster.env" not in missing else {}
    problems = [f"{f} missing" for f in missing]
    if env.get("ISTIO_META_CLUSTER_ID") != cluster_id:
        problems.append(f"cluster.env ISTIO_META_CLUSTER_ID={env.get('ISTIO_META_CLUSTER_ID')!r}, "
                        f"istiod uses {cluster_id!r}")
    if env.get("ISTIO_META_AUTO_REGISTER_GROUP") != GROUP:
        problems.append(f"cluster.env ISTIO_META_AUTO_REGISTER_GROUP={env.get('ISTIO_META_AUTO_REGISTER_GROUP')!r}"
                        f" (was --autoregister passed?)")
    if ca_addr is not None and env.get("CA_ADDR") != ca_addr:
        problems.append(f"cluster.env CA_ADDR={env.get('CA_ADDR')!r}, the revision's istiod is {ca_addr}")
    if discovery is not None and "mesh.yaml" not in missing:
        mesh = yaml.safe_load((out / "mesh.yaml").read_text()) or {}
        found = ((mesh.get("defaultConfig") or {}) if isinstance(mesh, dict) else {}).get("discoveryAddress")
        if found != discovery:
            problems.append(f"mesh.yaml discoveryAddress={found!r}, the istiod to join is {discovery}")
    if problems:
        raise WorkloadGroupInvalid(f"VM files in {out}: " + "; ".join(problems))


def _env_lines(text: str) -> list[tuple[str, str]]:
    """cluster.env lines are `KEY='value'`."""
    pairs = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            pairs.append((key.strip(), value.strip().strip("'\"")))
    return pairs
