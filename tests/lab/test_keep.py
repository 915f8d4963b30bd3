"""--keep on the gcp path, against the lab's local Google Cloud: a kept run writes kept.json (what it
kept, its expiry label, the exact delete command, never key material), and that command removes it all.
(On --platform lab itself --keep is refused with one line: lab hosts end with the run.)"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from meshvm.config import gather, resolve
from meshvm.lab.platform import LabPlatform
from tests.lab.test_e2e_infra import ROOT, suite

pytestmark = pytest.mark.lab
PROJECT = "meshvm-lab"


@contextmanager
def local_cloud(tmp_path: Path, run_id: str) -> Iterator[tuple[LabPlatform, list[str], dict[str, str]]]:
    """The lab's local Google Cloud, and the suite's gcp arguments and environment pointed at it."""
    raw = gather({"platform": "gcp", "gcp_project": PROJECT, "ssh_source_ranges": ["203.0.113.7/32"],
                  "run_id": f"{run_id}-cloud", "artifacts_dir": str(tmp_path / "cloud")}, {})
    lab = LabPlatform(resolve(raw, {"GOOGLE_APPLICATION_CREDENTIALS": __file__}), tmp_path / "lab")
    try:
        eff = lab.start()
        args = ["--platform", "gcp", "--gcp-project", PROJECT, "--compute-endpoint", str(eff.compute_endpoint),
                "--container-endpoint", str(eff.container_endpoint), "--iam-endpoint", str(eff.iam_endpoint),
                "--resourcemanager-endpoint", str(eff.resourcemanager_endpoint), "--ssh-source-ranges", eff.ssh_source_ranges[0],
                "--subnet-range", eff.subnet_range, "--pod-range", eff.pod_range, "--service-range", eff.service_range,
                "--run-id", run_id]
        yield lab, args, {"E2E_GCP_ACCESS_TOKEN_FILE": str(eff.gcp_access_token_file)}
    finally:
        lab.stop()
        for kept in Path(tempfile.gettempdir()).glob(f"meshvm-{run_id}-*"):  # a kept run's 0700 secret dir
            shutil.rmtree(kept, ignore_errors=True)


def janitor(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The printed `nox -s cleanup -- ARGS` as nox runs it: python -m meshvm.janitor ARGS."""
    argv = shlex.split(command)
    args = argv[argv.index("--") + 1:]
    return subprocess.run([sys.executable, "-m", "meshvm.janitor", *args, "--gcp-access-token-file",
                           env["E2E_GCP_ACCESS_TOKEN_FILE"]], cwd=ROOT, capture_output=True, text=True, timeout=600)


def run_objects(lab: LabPlatform, run_id: str) -> list[str]:
    """What the local cloud still holds of the run: its objects, clusters, and hosts (VM, node) on the lab network."""
    server = lab.server
    return ([k for k in server.world.objects if run_id in k] + [c for c in server.gke.clusters if run_id in str(c)]
            + [h.name for h in lab.backing.router.hosts() if run_id in h.name])


def secrets_of(run_id: str) -> list[str]:
    """The kept run's key material: every line of its secret dir's files (the SSH private key)."""
    found = []
    for d in Path(tempfile.gettempdir()).glob(f"meshvm-{run_id}-*"):
        found += [ln.strip() for f in d.rglob("*") if f.is_file() for ln in f.read_text(errors="replace").splitlines()
                  if len(ln.strip()) >= 16 and "PRIVATE KEY" not in ln]
    return found


def test_kept_run_writes_kept_json_and_its_command_removes_everything(tmp_path):
    run_id, out = "keep-test", tmp_path / "out"
    with local_cloud(tmp_path, run_id) as (lab, args, env):
        r = suite(*args, "--until", "infra", "--keep", "always", "--artifacts-dir", str(out), env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        assert not (out / "cleanup.json").exists()  # kept: nothing was torn down
        kept = json.loads((out / "kept.json").read_text())
        assert kept["run_id"] == run_id and kept["keep"] == "always" and kept["expires"]
        assert sorted({k["kind"] for k in kept["resources"]}) == ["cluster", "firewall", "instance", "network",
                                                                  "subnetwork"]
        assert all(k["e2e-expires"] == kept["expires"] for k in kept["resources"])
        assert kept["delete_command"].startswith(f"nox -s cleanup -- --platform gcp --gcp-project {PROJECT} ")
        assert kept["delete_command"].endswith(f"--run-id {run_id} --yes")
        assert run_objects(lab, run_id), "the kept run's resources should still exist"

        token = Path(env["E2E_GCP_ACCESS_TOKEN_FILE"]).read_text().strip()
        secrets = [token, *secrets_of(run_id)]
        assert len(secrets) > 2, "the kept run's SSH key should be in its secret dir"
        texts = [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()] + [r.stdout, r.stderr]
        assert not [s for s in secrets for t in texts if s in t], "a secret reached kept.json or the artifacts"
        assert all("PRIVATE KEY" not in t and "kubeconfig" not in t.lower() for t in [(out / "kept.json").read_text()])

        j = janitor(kept["delete_command"], env)
        assert j.returncode == 0, j.stdout[-3000:] + j.stderr[-2000:]
        assert run_objects(lab, run_id) == []
