"""The suite's front door, run as a user runs it: pytest on tests/e2e in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshvm.stages import STAGE_NAMES
from tests.conftest import KEPT
from tests.root import require_root

ROOT = Path(__file__).resolve().parents[2]


def run_suite(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = (),
              home: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("E2E_") or k in KEPT}
    base.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    if home:
        base["HOME"] = str(home)  # no gcloud credentials there
    return subprocess.run([*prefix, sys.executable, "-m", "pytest", "tests/e2e", *args],
                          cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def test_plan_prints_every_stage_without_any_network(tmp_path):
    """Run in a new network namespace holding only a down loopback: any connection attempt fails."""
    require_root("needs root for a network namespace", "unshare")
    r = run_suite("--plan", "--gcp-project", "demo-project", "--run-id", "planrun",
                  prefix=("unshare", "--net"), home=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in STAGE_NAMES:
        assert f" {name} " in r.stdout
    assert "GKE cluster mvm-planrun in us-central1-a" in r.stdout
    assert "instance mvm-planrun-vm" in r.stdout and "Worst case: " in r.stdout
    assert "--ssh-source-ranges" in r.stdout  # listed as still missing
    assert not (ROOT / "artifacts" / "planrun").exists()
    assert "starts once istio, vm passed" in r.stdout  # the east-west gateway: the graph the run follows
    r = run_suite("--plan", "--gcp-project", "demo-project", "--run-id", "planrun", "--sequential-stages",
                  prefix=("unshare", "--net"), home=tmp_path)
    assert "one after another" in r.stdout and "starts once" not in r.stdout


@pytest.mark.parametrize("version", ["1.30.3", "1.29.6"])
def test_plan_shows_the_sidecar_url_on_blob_istio_io_and_the_hub(tmp_path, version):
    r = run_suite("--plan", "--gcp-project", "demo-project", "--istio-version", version, home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"istio-sidecar.deb: https://blob.istio.io/istio-release/releases/{version}/deb/istio-sidecar.deb" in r.stdout
    assert "image hub docker.io/istio" in r.stdout


def test_plan_resolves_a_minor_from_the_listing(tmp_path):
    listing = tmp_path / "releases.json"
    listing.write_text('[{"tag_name": "1.30.9", "prerelease": true}, {"tag_name": "1.30.4"}, {"tag_name": "1.30.5"},'
                       ' {"tag_name": "1.31.1"}, {"tag_name": "1.30.8", "draft": true}]')
    r = run_suite("--plan", "--gcp-project", "demo-project", "--istio-version", "1.30", home=tmp_path,
                  env={"E2E_ISTIO_RELEASE_LISTING": listing.as_uri()})
    assert r.returncode == 0, r.stderr
    assert f"Istio 1.30.5: the newest 1.30.x in {listing.as_uri()}" in r.stdout
    assert "releases/1.30.5/deb/istio-sidecar.deb" in r.stdout


def test_plan_says_when_the_listing_is_unreachable(tmp_path):
    require_root("needs root for a network namespace", "unshare")
    r = run_suite("--plan", "--gcp-project", "demo-project", "--istio-version", "1.30", prefix=("unshare", "--net"),
                  home=tmp_path, env={"E2E_ISTIO_RELEASE_LISTING": "https://api.github.com/repos/istio/istio/releases"})
    assert r.returncode == 0, r.stderr
    assert "Istio 1.30: resolved to the newest 1.30.x when the run starts; not resolved now: Istio's release " \
           "listing https://api.github.com/repos/istio/istio/releases could not be read" in r.stdout


def test_no_project_fails_fast_and_points_to_the_lab(tmp_path):
    started = time.monotonic()
    r = run_suite(env={"CI": "1"}, home=tmp_path)
    assert time.monotonic() - started < 30
    assert r.returncode == 4
    assert "--gcp-project / E2E_GCP_PROJECT" in r.stderr and "--platform lab" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.parametrize(("args", "env", "named"), [
    (("--platform", "aws"), {}, "--platform / E2E_PLATFORM: 'aws'"),
    ((), {"E2E_PLATFORM": "aws"}, "--platform / E2E_PLATFORM: 'aws'"),
    (("--zone", "uscentral1a"), {}, "--zone / E2E_ZONE: 'uscentral1a'"),
    ((), {"E2E_ISTIO_VERSION": "latest"}, "--istio-version / --from / E2E_ISTIO_VERSION: 'latest'"),
])
def test_a_bad_value_is_one_line_and_creates_nothing(tmp_path, args, env, named):
    (tmp_path / "token").write_text("ya29.x")
    r = run_suite("--gcp-project", "demo-project", "--ssh-source-ranges", "203.0.113.7/32",
                  "--gcp-access-token-file", str(tmp_path / "token"), "--until", "infra",
                  "--artifacts-dir", str(tmp_path / "out"), *args, env=env, home=tmp_path)
    assert r.returncode == 4
    assert r.stderr.splitlines() == [r.stderr.splitlines()[0]] and named in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "out").exists()

