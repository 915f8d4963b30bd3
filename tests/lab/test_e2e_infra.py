"""The suite itself, run as a user runs it, for the cloud part of the recipe (`--until infra`):
on the lab, and on the gcp platform pointed at a server that speaks the Compute and GKE APIs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from meshvm.config import gather, resolve
from meshvm.lab.leaks import find_leftovers
from meshvm.lab.netsafety import TAG_PATTERN
from meshvm.lab.platform import LabPlatform
from meshvm.stages import STAGE_NAMES, STAGES
from tests.conftest import KEPT

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
# The exercises beyond the recipe (identity, STRICT, authorization): the self-tests of the run's own
# machinery (reuse, concurrency, diagnostics) leave them out; the benchmarks and mutations run them all.
BEYOND_RECIPE = ("test_mtls_identity or test_peer_authentication or test_authorization or test_vm_health or "
                 "test_agent_restart or test_agent_stopped or test_istiod_restart or test_vm_reboot")
RECIPE_ONLY = ("-k", f"not ({BEYOND_RECIPE})")


def suite(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("E2E_") or k in KEPT}
    return subprocess.run([sys.executable, "-m", "pytest", "tests/e2e", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=600)


def no_lab_leftovers(out: Path) -> None:
    """The run's own lab (found by its tag in run.log; other runs may share the machine) is gone."""
    tags = set(re.findall(rf"lab router ({TAG_PATTERN})-rt up", (out / "run.log").read_text()))
    assert tags, "the run.log names no lab router"
    assert [find_leftovers(t) for t in tags] == [[] for _ in tags]


def check_reports(out: Path, secrets: list[str]) -> dict:
    cleanup = json.loads((out / "cleanup.json").read_text())
    assert cleanup["remaining"] == [] and cleanup["leftovers"] == []
    kinds = sorted({i["kind"] for i in cleanup["items"]})
    assert kinds == ["cluster", "firewall", "instance", "network", "subnetwork"], kinds
    phases = {p["name"]: p["outcome"] for p in json.loads((out / "phases.json").read_text())["phases"]}
    assert phases == {"network": "passed", "firewall": "passed", "cluster": "passed", "vm": "passed"}
    texts = [p.read_text(errors="replace") for p in out.iterdir() if p.is_file()]
    assert not [s for s in secrets for t in texts if s in t], "a secret reached the artifacts"
    assert all("PRIVATE KEY" not in t for t in texts)
    return cleanup


def test_lab_run_until_infra_provisions_and_leaves_nothing(tmp_path):
    r = suite("--platform", "lab", "--until", "infra", "--artifacts-dir", str(tmp_path / "out"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    check_reports(tmp_path / "out", [])
    texts = [p.read_text(errors="replace") for p in (tmp_path / "out").iterdir()] + [r.stdout, r.stderr]
    assert not [m for t in texts for m in re.findall(r"lab-[A-Za-z0-9_-]{32}", t)], "an access token leaked"
    no_lab_leftovers(tmp_path / "out")


def test_gcp_path_against_a_server_speaking_the_apis(tmp_path):
    """E2E_GCP_ACCESS_TOKEN_FILE=F nox -s e2e -- --platform gcp --gcp-project P --compute-endpoint ...
    --container-endpoint ... --until infra (the server here is the lab's, with rotating tokens)."""
    raw = gather({"platform": "gcp", "gcp_project": "meshvm-lab", "ssh_source_ranges": ["203.0.113.7/32"],
                  "run_id": "gcp-path-test", "artifacts_dir": str(tmp_path / "out")}, {})
    lab = LabPlatform(resolve(raw, {"GOOGLE_APPLICATION_CREDENTIALS": __file__}), tmp_path / "lab")
    try:
        eff = lab.start()
        r = suite("--platform", "gcp", "--gcp-project", "meshvm-lab", "--until", "infra",
                  "--compute-endpoint", str(eff.compute_endpoint), "--container-endpoint", str(eff.container_endpoint),
                  "--iam-endpoint", str(eff.iam_endpoint),
                  "--resourcemanager-endpoint", str(eff.resourcemanager_endpoint),
                  "--ssh-source-ranges", eff.ssh_source_ranges[0], "--subnet-range", eff.subnet_range,
                  "--pod-range", eff.pod_range, "--service-range", eff.service_range,
                  "--artifacts-dir", str(tmp_path / "out"),
                  env={"E2E_GCP_ACCESS_TOKEN_FILE": str(eff.gcp_access_token_file)})
        token = Path(str(eff.gcp_access_token_file)).read_text().strip()
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        check_reports(tmp_path / "out", [token])
    finally:
        lab.stop()


def test_lab_run_through_every_stage_leaves_nothing_and_no_secret(tmp_path):
    out = tmp_path / "out"
    r = suite("--platform", "lab", "--until", "bookinfo_gateway", "--artifacts-dir", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    phases = json.loads((out / "phases.json").read_text())["phases"]
    assert {p["name"]: p["outcome"] for p in phases} == dict.fromkeys(STAGE_NAMES, "passed")
    spans = {p["name"]: (p["start_s"], p["end_s"]) for p in phases}
    late = [(s.name, need) for s in STAGES for need in s.needs if spans[s.name][0] < spans[need][1]]
    assert late == [], f"stages started before what they need ended: {late}"
    cleanup = json.loads((out / "cleanup.json").read_text())
    assert cleanup["remaining"] == [] and cleanup["leftovers"] == []
    texts = [p.read_text(errors="replace") for p in out.iterdir() if p.is_file()] + [r.stdout, r.stderr]
    # The stand-in's service-account tokens (the VM's istio-token) are HS256 JWTs; the local cloud's
    # access tokens are lab-<32 chars> (meshvm/lab/cluster.py RotatingTokens).
    assert not [t for t in texts if "eyJhbGciOiJIUzI1Ni" in t or "PRIVATE KEY" in t]
    assert not [m for t in texts for m in re.findall(r"lab-[A-Za-z0-9_-]{32}", t)]
    no_lab_leftovers(out)
