"""The canary upgrade's own steps over a fake cluster (meshvm.recipe.canary), and the revision rules the lab
models (meshvm.lab.injection); the whole canary runs on the lab in `nox -s upgrade -- --strategy canary`."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshvm import retry, versions
from meshvm.deadlines import Deadline
from meshvm.lab import injection
from meshvm.recipe import canary, sidecar, workload
from meshvm.seams import Result


class Kube:
    """Records what the steps ask; `lingering` reads of Deployment istiod still find it (being deleted)."""

    def __init__(self, pods=(), lingering=0):
        self.pods, self.lingering, self.calls = list(pods), lingering, []

    def get(self, api_version, kind, name, namespace=None):
        self.calls.append(("get", kind, name))
        if kind == "Deployment" and name == "istiod" and self.lingering:
            self.lingering -= 1
            return {"metadata": {"name": "istiod", "deletionTimestamp": "2026-12-07T00:00:00Z"}}
        return None

    def list(self, api_version, kind, namespace=None, label_selector=None):
        self.calls.append(("list", kind, namespace, label_selector))
        return [p for p in self.pods if p["metadata"].get("namespace", namespace) == namespace
                and (label_selector is None or label_selector.startswith("app=istiod") == (
                    p["metadata"].get("labels", {}).get("app") == "istiod"))]

    def delete(self, api_version, kind, name, namespace=None, *, deadline=None):
        self.calls.append(("delete", kind, name))

    def patch(self, api_version, kind, name, namespace, body):
        self.calls.append(("patch", kind, name, body))
        return body


class Istioctl:
    def __init__(self):
        self.runs = []

    def run(self, args, *, step, timeout=300, stdin=None, check=True, cluster=True):
        self.runs.append(list(args))
        return Result(0, "✔ Uninstall complete\n", "")


def pod(name, ns="default", annotations=None, labels=None, deleting=False):
    meta = {"name": name, "namespace": ns, "annotations": annotations or {}, "labels": labels or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    return {"metadata": meta, "status": {"phase": "Running"}}


def test_a_revision_is_its_release_with_dashes():
    assert canary.revision_of("1.31.1") == "1-31-1"
    assert canary.revision_of("1.31.0-rc.0") == "1-31-0-rc-0"


def test_the_old_revisions_users_are_pods_it_injected_or_labelled_but_not_istiod_itself():
    kube = Kube([pod("reviews-v1-a", annotations={"istio.io/rev": "default"}),
                 pod("reviews-v2-b", annotations={"istio.io/rev": "1-31-1"}),
                 pod("details-v1-c", annotations={"istio.io/rev": "default"}, deleting=True),
                 pod("istio-eastwestgateway-d", "istio-system", labels={"istio.io/rev": "default"}),
                 pod("istiod-e", "istio-system", labels={"app": "istiod", "istio.io/rev": "default"}),
                 pod("curl-f")])
    assert canary.old_revision_users(kube, ("default", "istio-system")) == [
        "default/reviews-v1-a", "istio-system/istio-eastwestgateway-d"]


def test_the_namespace_moves_to_the_revision_without_istio_injection():
    kube = Kube()
    canary.move_namespace(kube, "default", "1-31-1")
    assert kube.calls == [("patch", "Namespace", "default",
                           {"metadata": {"labels": {"istio-injection": None, "istio.io/rev": "1-31-1"}}})]


def test_the_old_revision_goes_route_first_and_its_foreground_deletion_is_waited_for():
    kube, istioctl = Kube(lingering=2), Istioctl()
    canary.remove_old_revision(istioctl, kube, Deadline.after(20, "test"))
    assert kube.calls[0] == ("delete", "VirtualService", "istiod-vs")
    assert istioctl.runs == [["uninstall", "--revision", "default", "-y"]]
    assert [c for c in kube.calls if c[0] == "get"] == [("get", "Deployment", "istiod")] * 3  # gone on the third
    assert kube.calls[-1] == ("list", "Pod", "istio-system", "app=istiod,istio.io/rev=default")


def test_an_old_istiod_that_never_goes_fails_the_step_by_its_deadline():
    with pytest.raises(retry.WaitFailed, match="Deployment istio-system/istiod gone"):
        canary.remove_old_revision(Istioctl(), Kube(lingering=10**6), Deadline.after(1.5, "test"))


@pytest.mark.parametrize(("labels", "revision"), [
    ({"istio-injection": "enabled"}, "default"),
    ({"istio-injection": "enabled", "istio.io/rev": "1-31-1"}, "default"),  # istio-injection wins
    ({"istio.io/rev": "1-31-1"}, "1-31-1"),
    ({"istio-injection": "disabled", "istio.io/rev": "1-31-1"}, None),
    ({}, None),
])
def test_the_lab_injects_as_istios_webhooks_select(labels, revision):
    assert injection.revision(labels) == revision
    if revision:
        assert injection.injector_configmap(revision) == (
            "istio-sidecar-injector" if revision == "default" else f"istio-sidecar-injector-{revision}")


def test_a_revisions_vm_files_name_its_istiod(tmp_path: Path):
    (tmp_path / "hosts").write_text("10.0.0.9 istiod-1-31-1.istio-system.svc\n")
    assert sidecar.hosts_line(tmp_path) == "10.0.0.9 istiod-1-31-1.istio-system.svc"
    (tmp_path / "hosts").write_text("10.0.0.9 istiod.istio-system.svc.evil\n")
    with pytest.raises(sidecar.VmFilesInvalid):
        sidecar.hosts_line(tmp_path)


def test_a_canary_reads_each_istiod_by_its_revision():
    layers = versions.pod_layers("1-31-1")
    assert layers["istiod"] == ("istio-system", "app=istiod,istio.io/rev=default", "discovery")
    assert layers["istiod_canary"] == ("istio-system", "app=istiod,istio.io/rev=1-31-1", "discovery")
    assert versions.pod_layers(None) == versions.POD_LAYERS


def vm_files(folder: Path, ca_addr: str | None, discovery: str) -> Path:
    env = {"ISTIO_META_CLUSTER_ID": "Kubernetes", "ISTIO_META_AUTO_REGISTER_GROUP": workload.GROUP,
           **({"CA_ADDR": ca_addr} if ca_addr else {})}
    (folder / "cluster.env").write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))
    (folder / "mesh.yaml").write_text(f"defaultConfig:\n  discoveryAddress: {discovery}\n")
    for name in ("hosts", "root-cert.pem", "istio-token"):
        (folder / name).write_text("x\n")
    return folder


def test_vm_files_name_the_istiod_to_join_in_cluster_env_and_mesh_yaml(tmp_path: Path):
    """A revision's VM files name istiod-<rev> as CA_ADDR and as mesh.yaml's discoveryAddress (istioctl's
    createMeshConfig copies the revision's mesh config); files for another istiod are refused, naming what."""
    rev = "istiod-1-31-1.istio-system.svc:15012"
    workload.check_vm_files(vm_files(tmp_path, rev, rev), "Kubernetes", rev, discovery=rev)
    old = "istiod.istio-system.svc:15012"
    with pytest.raises(workload.WorkloadGroupInvalid, match=r"mesh.yaml discoveryAddress='istiod.istio-system"):
        workload.check_vm_files(vm_files(tmp_path, rev, old), "Kubernetes", rev, discovery=rev)
    with pytest.raises(workload.WorkloadGroupInvalid, match=r"cluster.env CA_ADDR=None"):
        workload.check_vm_files(vm_files(tmp_path, None, rev), "Kubernetes", rev, discovery=rev)
    workload.check_vm_files(vm_files(tmp_path, None, old), "Kubernetes", None, discovery=old)  # revisionless
