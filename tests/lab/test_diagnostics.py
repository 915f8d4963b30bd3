"""A failed exercise leaves a diagnostics folder (the VM's and the cluster's dumps, collected before
teardown), and neither it nor any other artifact of the failed run holds one of the run's secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.lab.test_e2e_infra import BEYOND_RECIPE, no_lab_leftovers, suite

pytestmark = pytest.mark.lab
FAILED = "test_vm_to_mesh.py_test_vm_reaches_details_through_its_sidecar"
VM_FILES = {"systemctl-status-istio.txt", "journal-istio.txt", "var-log-istio.txt", "cluster.env",
            "iptables-save.txt", "etc-hosts.txt", "agent-ready.txt", "config_dump.json", "stats.txt",
            "istio-metrics.txt", "systemctl-status-ratings.txt"}
CLUSTER_FILES = {"workloadentries.yaml", "workloadgroups.yaml", "pods.yaml", "deployments.yaml", "gateways.yaml",
                 "virtualservices.yaml", "events.yaml", "istiod-logs.txt", "eastwest-logs.txt"}


def secret_hits(out: Path, extra: list[str]) -> list[str]:
    """Every file under `out` (diagnostics included) scanned for the run's secrets: the VM's istio-token
    (the stand-in's HS256 JWTs), private keys, the local cloud's access tokens (lab-<32 chars>)."""
    hits = []
    for p in [p for p in out.rglob("*") if p.is_file()]:
        t = p.read_text(errors="replace")
        if "eyJhbGciOiJIUzI1Ni" in t or "PRIVATE KEY" in t or re.search(r"lab-[A-Za-z0-9_-]{32}", t):
            hits.append(str(p.relative_to(out)))
    return hits + [f"output: {s[:12]}..." for s in extra if "eyJhbGciOiJIUzI1Ni" in s or "PRIVATE KEY" in s]


def test_failed_exercise_leaves_diagnostics_without_secrets(tmp_path, capsys):
    out = tmp_path / "out"
    r = suite("--platform", "lab", "-p", "tests.lab.fail_exercise", "-k", f"not pod_to_vm and not productpage and not ({BEYOND_RECIPE})",
              "--artifacts-dir", str(out), env={"MESHVM_SELFTEST_FAIL": "test_vm_to_mesh"})
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    folder = out / "diagnostics" / FAILED
    names = {p.name for p in folder.iterdir()}
    want = ({f"vm-{n}" for n in VM_FILES} | {f"cluster-{n}" for n in CLUSTER_FILES}
            | {"istioctl-proxy-status.txt", "lab-firewall.txt", "INDEX.txt"})
    assert want <= names, f"missing: {sorted(want - names)}; index: {(folder / 'INDEX.txt').read_text()}"
    index = (folder / "INDEX.txt").read_text()
    assert f"vm: {len(VM_FILES)} collector(s)" in index and f"cluster: {len(CLUSTER_FILES)} collector(s)" in index
    assert "lab: 1 collector(s)" in index and "LAB-VPC-FW chain" in (folder / "lab-firewall.txt").read_text()
    assert "ISTIO_META_CLUSTER_ID" in (folder / "vm-cluster.env").read_text()  # cluster.env is no secret
    assert "istiod.istio-system.svc" in (folder / "vm-etc-hosts.txt").read_text()
    assert "kind: WorkloadGroup" in (folder / "cluster-workloadgroups.yaml").read_text()
    assert "accepted proxy" in (folder / "cluster-istiod-logs.txt").read_text()  # istiod stand-in's log, via pods/log
    # Only the failed test has a folder, and it was written before teardown.
    assert [p.name for p in (out / "diagnostics").iterdir()] == [FAILED]
    assert secret_hits(out, [r.stdout, r.stderr]) == []
    cleanup = json.loads((out / "cleanup.json").read_text())
    assert cleanup["remaining"] == [] and cleanup["leftovers"] == []
    no_lab_leftovers(out)
    size = sum(p.stat().st_size for p in folder.iterdir())
    with capsys.disabled():
        print(f"\ndiagnostics: {len(names)} files, {size} bytes; {index.strip().splitlines()[-1]}")
