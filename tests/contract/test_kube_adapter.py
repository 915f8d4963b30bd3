"""The Kube adapter (meshvm.kube) against the API stand-in."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.kube import ApplyConflict, KubeClient, KubeError
from meshvm.kube_auth import Token
from meshvm.kube_errors import ExecTimeout
from meshvm.lab.kubeapi import KubeApiStandIn, local_exec
from meshvm.recipe import waits
from tests.contract.kube_fixtures import *  # noqa: F403

NET = "networking.istio.io/v1"


def cm(name: str, ns: str = "default", **extra: object) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                           **extra})


def wait_invalid(standin: KubeApiStandIn, token: str) -> None:
    retry.until("token expired at the API", lambda: not standin.token_valid(token), Deadline.after(5, "expiry"),
                initial=0.2)


def test_token_refreshed_before_expiry(standin: KubeApiStandIn, ca_file: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    issued: list[str] = []

    def provider() -> Token:
        issued.append(standin.issue_token(1.0))
        return Token(issued[-1], time.time() + 1.0)

    kube = KubeClient(standin.endpoint, ca_file, provider, refresh_margin_s=0.5)
    kube.list("v1", "Namespace")
    wait_invalid(standin, issued[0])
    with caplog.at_level(logging.INFO, logger="meshvm.kube"):
        assert kube.get("v1", "Namespace", "default") is not None
    assert len(issued) >= 2 and "401" not in caplog.text  # refreshed by the hook, not by a refusal


def test_token_expired_early_401_then_refreshed(standin: KubeApiStandIn, ca_file: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    issued: list[str] = []

    def lying_provider() -> Token:  # claims an hour, the API accepts it for half a second
        issued.append(standin.issue_token(0.5 if not issued else 600))
        return Token(issued[-1], time.time() + 3600)

    kube = KubeClient(standin.endpoint, ca_file, lying_provider)
    kube.list("v1", "Namespace")
    wait_invalid(standin, issued[0])
    with caplog.at_level(logging.INFO, logger="meshvm.kube"):
        kube.apply(cm("after-401"))
    assert len(issued) == 2 and "401" in caplog.text
    assert kube.get("v1", "ConfigMap", "after-401", "default") is not None


def test_apply_multi_document_core_and_custom(kube: KubeClient) -> None:
    manifest = cm("a") + "---\n" + yaml.safe_dump({
        "apiVersion": NET, "kind": "WorkloadGroup", "metadata": {"name": "ratings"},
        "spec": {"metadata": {"labels": {"app": "ratings"}}, "template": {"serviceAccount": "ratings"},
                 "probe": {"httpGet": {"path": "/health", "port": 9080}, "periodSeconds": 5}}})
    out = kube.apply(manifest, namespace="default")
    assert [o["kind"] for o in out] == ["ConfigMap", "WorkloadGroup"]
    wg = kube.get(NET, "WorkloadGroup", "ratings", "default")
    assert wg and wg["spec"]["probe"]["httpGet"]["port"] == 9080
    assert [m["manager"] for m in wg["metadata"]["managedFields"]] == ["meshvm"]


def test_apply_conflict_is_a_clear_error_naming_fields(kube: KubeClient, raw: client.ApiClient) -> None:
    client.CoreV1Api(raw).create_namespaced_config_map(
        "default", {"metadata": {"name": "shared"}, "data": {"mode": "a", "other": "x"}}, field_manager="operator",
        _request_timeout=5)
    kube.apply(cm("shared", data={"other": "x"}))  # same value: shared ownership, no conflict
    with pytest.raises(ApplyConflict) as e:
        kube.apply(cm("shared", data={"mode": "b"}))
    assert e.value.fields == [".data.mode"] and ".data.mode" in str(e.value) and "operator" in str(e.value)
    assert kube.get("v1", "ConfigMap", "shared", "default")["data"]["mode"] == "a"  # not forced


def test_schema_violation_names_the_field(kube: KubeClient) -> None:
    gw = {"apiVersion": NET, "kind": "Gateway", "metadata": {"name": "gw", "namespace": "default"},
          "spec": {"servers": [{"port": {"number": 15012, "protocol": "TLS"}, "hosts": "*"}]}}
    with pytest.raises(KubeError, match=r"422.*spec\.servers\[0\]\.hosts"):
        kube.apply(yaml.safe_dump(gw))
    gw["spec"]["servers"][0]["hosts"] = ["*"]
    gw["spec"]["servers"][0]["tsl"] = {"mode": "PASSTHROUGH"}  # a typo: the adapter applies strictly
    with pytest.raises(KubeError, match=r"spec\.servers\[0\]\.tsl"):
        kube.apply(yaml.safe_dump(gw))


def test_label_selectors(kube: KubeClient) -> None:
    for name, labels in (("a", {"app": "a", "tier": "web"}), ("b", {"app": "b"}), ("c", {"app": "c", "tier": "db"})):
        kube.apply(cm(name), namespace="default") if not labels else kube.apply(yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default",
                                                                   "labels": labels}}))

    def names(selector: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in kube.list("v1", "ConfigMap", "default", selector))

    assert names("app=a") == ["a"] and names("app!=a") == ["b", "c"]
    assert names("app in (a, c)") == ["a", "c"] and names("app notin (a)") == ["b", "c"]
    assert names("tier") == ["a", "c"] and names("!tier") == ["b"] and names("app,tier=db") == ["c"]


def test_watch_survives_expiry_by_relisting(ca_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    standin = KubeApiStandIn(history=0)  # every watch from an older resourceVersion gets 410
    standin.start()
    try:
        kube = KubeClient(standin.endpoint, ca_file_for(standin, ca_file), lambda: Token(
            standin.issue_token(600), time.time() + 600))
        kube.apply(cm("before"))
        events = kube.watch("v1", "ConfigMap", "default", deadline=Deadline.after(10, "watch"))
        assert next(events)[1]["metadata"]["name"] == "before"
        with caplog.at_level(logging.INFO, logger="meshvm.kube_watch"):
            kube.apply(cm("later"))
            type_, obj = next(events)
        assert (type_, obj["metadata"]["name"]) == ("ADDED", "later") and "relisting" in caplog.text
        events.close()
    finally:
        standin.stop()


def ca_file_for(standin: KubeApiStandIn, like: Path) -> Path:
    path = like.with_name("ca-history0.crt")
    path.write_text(standin.ca_pem)
    return path


def test_watch_delivers_modified_and_deleted(kube: KubeClient) -> None:
    events = kube.watch("v1", "ConfigMap", "default", deadline=Deadline.after(10, "watch"))
    kube.apply(cm("w", data={"k": "1"}))
    assert next(events)[0] == "ADDED"
    kube.apply(cm("w", data={"k": "2"}))
    assert next(events)[0] == "MODIFIED"
    kube.delete("v1", "ConfigMap", "w", "default")
    assert next(events)[0] == "DELETED"
    events.close()


def test_finalizers_delay_deletion_until_removed(kube: KubeClient) -> None:
    kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "held", "namespace": "default", "finalizers": ["example.com/hold"]}}))
    with pytest.raises(retry.WaitFailed, match="deleted"):
        kube.delete("v1", "ConfigMap", "held", "default", deadline=Deadline.after(1.0, "delete"))
    assert kube.get("v1", "ConfigMap", "held", "default")["metadata"]["deletionTimestamp"]
    kube.apply(cm("held"))  # our apply no longer lists the finalizer: SSA removes the field we owned
    kube.delete("v1", "ConfigMap", "held", "default", deadline=Deadline.after(5, "delete"))
    assert kube.get("v1", "ConfigMap", "held", "default") is None
    kube.delete("v1", "ConfigMap", "held", "default", deadline=Deadline.after(5, "delete"))  # NotFound = done


def test_deleting_a_workload_group_deletes_its_entries(kube: KubeClient) -> None:
    kube.apply(yaml.safe_dump({"apiVersion": NET, "kind": "WorkloadGroup", "metadata": {"name": "ratings"},
                               "spec": {"template": {"serviceAccount": "ratings"}}}), namespace="default")
    uid = kube.get(NET, "WorkloadGroup", "ratings", "default")["metadata"]["uid"]
    entry = {"apiVersion": NET, "kind": "WorkloadEntry", "metadata": {
        "name": "ratings-10.0.0.7", "namespace": "default",
        "ownerReferences": [{"apiVersion": NET, "kind": "WorkloadGroup", "name": "ratings", "uid": uid}]},
        "spec": {"address": "10.0.0.7"}}
    kube.apply(yaml.safe_dump(entry))
    kube.apply(yaml.safe_dump({**entry, "metadata": {"name": "unowned", "namespace": "default"}}))
    kube.delete(NET, "WorkloadGroup", "ratings", "default", deadline=Deadline.after(5, "delete"))
    retry.until("entry collected", lambda: kube.get(NET, "WorkloadEntry", "ratings-10.0.0.7", "default") is None,
                Deadline.after(5, "gc"), initial=0.1)
    assert kube.get(NET, "WorkloadEntry", "unowned", "default") is not None


def test_namespace_deletion_removes_its_objects(kube: KubeClient) -> None:
    kube.ensure_namespace("ratings", {"istio-injection": "disabled"})
    kube.ensure_service_account("ratings", "ratings")
    kube.apply(cm("x", ns="ratings"))
    kube.delete("v1", "Namespace", "ratings", deadline=Deadline.after(5, "delete"))
    assert kube.get("v1", "ConfigMap", "x", "ratings") is None
    assert kube.get("v1", "ServiceAccount", "ratings", "ratings") is None
    with pytest.raises(KubeError, match='404 namespaces "ratings" not found'):
        kube.apply(cm("y", ns="ratings"))


def test_exec_rc_stdout_stderr(standin: KubeApiStandIn, kube: KubeClient) -> None:
    kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "curl", "namespace": "default"},
                               "spec": {"containers": [{"name": "curl", "image": "curlimages/curl"}]}}))
    with pytest.raises(KubeError, match="no exec backend"):
        kube.exec("default", "curl", ["true"])
    standin.set_exec_backend("default", "curl", local_exec())
    ok = kube.exec("default", "curl", ["/bin/sh", "-c", "echo out; echo err >&2"], container="curl")
    assert (ok.rc, ok.stdout, ok.stderr) == (0, "out\n", "err\n")
    bad = kube.exec("default", "curl", ["/bin/sh", "-c", "echo partial; exit 7"])
    assert (bad.rc, bad.stdout) == (7, "partial\n")
    with pytest.raises(KubeError, match="could not run"):
        kube.exec("default", "curl", ["/no/such/binary"])
    with pytest.raises(ExecTimeout):
        kube.exec("default", "curl", ["sleep", "30"], timeout=1)


def test_recipe_waits_over_the_adapter(kube: KubeClient, raw: client.ApiClient) -> None:
    kube.apply(yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "details", "namespace": "default"}, "spec": {"replicas": 1, "selector": {}, "template": {}}}))
    with pytest.raises(retry.WaitFailed, match="rolled out"):
        waits.rollout(kube, "default", "details", Deadline.after(1, "rollout"))
    client.AppsV1Api(raw).patch_namespaced_deployment_status("details", "default", {"status": {
        "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}, _request_timeout=5)
    assert waits.rollout(kube, "default", "details", Deadline.after(5, "rollout"))["metadata"]["name"]
    kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "istio-eastwestgateway", "namespace": "default"}, "spec": {"type": "LoadBalancer"}}))
    client.CoreV1Api(raw).patch_namespaced_service_status("istio-eastwestgateway", "default", {
        "status": {"loadBalancer": {"ingress": [{"ip": "172.29.4.9"}]}}}, _request_timeout=5)
    assert waits.lb_address(kube, "default", "istio-eastwestgateway", Deadline.after(5, "lb")) == "172.29.4.9"
    with pytest.raises(retry.WaitFailed, match="istio-ca-root-cert"):
        waits.present(kube, "v1", "ConfigMap", "default", "istio-ca-root-cert", Deadline.after(1, "cm"))


def test_kubeconfig_is_private_and_carries_a_fresh_token(standin: KubeApiStandIn, kube: KubeClient,
                                                         tmp_path: Path) -> None:
    path = kube.write_kubeconfig(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == standin.endpoint
    assert standin.token_valid(doc["users"][0]["user"]["token"])


def test_logs_of_a_pod_tail_and_a_pod_without_logs_is_an_error(standin: KubeApiStandIn, kube: KubeClient):
    kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n")
    for name in ("istiod-0", "quiet-0"):
        kube.apply(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: istio-system}}\n"
                   "spec: {containers: [{name: discovery, image: x}]}\n")
    standin.add_log_source(lambda ns, pod: (lambda: "one\ntwo\nthree\n") if pod == "istiod-0" else None)
    assert kube.logs("istio-system", "istiod-0", tail_lines=2) == "two\nthree\n"
    with pytest.raises(Exception, match="waiting to start"):
        kube.logs("istio-system", "quiet-0")
