"""--reuse on the gcp path, against the lab's local Google Cloud: a kept run's network, firewall rules,
cluster, VM and load balancers are adopted by later runs (the local cloud receives no create for them),
the last of which tears everything down and verifies it; no secret reaches any run's artifacts. A --reuse of a run
that was not kept fails fast with one line and creates nothing."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path

import pytest

from meshvm import releases
from meshvm.config import LAB_RELEASE_LISTING
from meshvm.lab.gcloud.gke import CREATE_CLUSTER
from meshvm.lab.istioctl_standin import install_istioctl_standin
from meshvm.lab.platform import LabPlatform
from meshvm.lab.sidecar_deb import build_sidecar_deb
from meshvm.settings import BY_FIELD
from meshvm.stages import STAGE_NAMES
from tests.lab.test_e2e_infra import RECIPE_ONLY, ROOT, suite
from tests.lab.test_keep import local_cloud, run_objects

pytestmark = pytest.mark.lab
KINDS = ["cluster", "firewall", "instance", "network", "subnetwork"]
# The patch the default --istio-version resolves to from the (self-tests') release listing: the istioctl
# the gcp-path run looks for in its cache.
VERSION = releases.newest_patch(BY_FIELD["istio_version"].default, LAB_RELEASE_LISTING)


def creates(lab: LabPlatform) -> list[str]:
    """The create operations the local cloud has received (Compute inserts, GKE cluster creates)."""
    assert lab.server is not None
    return [str(op.fields.get("targetLink")) for op in lab.server.ops.all()
            if op.fields.get("operationType") in ("insert", CREATE_CLUSTER)]


def key_material(run_id: str) -> list[str]:
    """The run's secrets in its secret dir: the SSH private key's lines and the VM's istio-token."""
    found = []
    for d in Path(tempfile.gettempdir()).glob(f"meshvm-{run_id}-*"):
        for f in (d / "ssh" / "id_ed25519", d / "vm_files" / "istio-token"):
            if f.is_file():
                found += [ln.strip() for ln in f.read_text().splitlines() if len(ln.strip()) >= 16
                          and "PRIVATE KEY" not in ln]
    return found


def texts(out: Path, *streams: str) -> list[str]:
    return [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()] + list(streams)


@pytest.fixture
def offline(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """What the gcp path downloads after the cloud part, from the lab's stand-ins: istioctl and
    istio-sidecar.deb in a cache of the test's own (as `acquire` and `fetch_verified` leave them),
    BookInfo's ratings with --ratings-source. Then every stage and exercise runs against the local cloud."""
    cache = tmp_path / "cache"
    install_istioctl_standin(VERSION, cache / "meshvm" / "istio" / VERSION)
    deb = cache / "meshvm" / "istio-sidecar" / VERSION / "istio-sidecar.deb"
    deb.parent.mkdir(parents=True)
    deb.write_bytes(build_sidecar_deb(VERSION, tmp_path / "deb").read_bytes())
    deb.with_name(deb.name + ".sha256").write_text(hashlib.sha256(deb.read_bytes()).hexdigest())
    return ["--ratings-source", str(ROOT / "meshvm/lab/standins/ratings")], {"XDG_CACHE_HOME": str(cache)}


def test_reuse_adopts_a_kept_run_then_tears_it_all_down(tmp_path, offline):
    """Run 1 (every stage and exercise) is kept; run 2 reuses it up to the VM and is kept again; run 3
    reuses that through every stage and exercise once more (the recipe's stages on a cluster and VM that
    already hold them), then tears everything down."""
    run_id, first, second, third = "reuse-test", tmp_path / "first", tmp_path / "second", tmp_path / "third"
    extra, cache = offline
    with local_cloud(tmp_path, run_id) as (lab, args, env):
        env = {**env, **cache}
        r1 = suite(*args, *extra, *RECIPE_ONLY, "--keep", "always", "--artifacts-dir", str(first), env=env)
        assert r1.returncode == 0, r1.stdout[-3000:] + r1.stderr[-2000:]
        kept = json.loads((first / "kept.json").read_text())
        assert set(KINDS) <= {k["kind"] for k in kept["resources"]}
        assert "forwarding-rule" in {k["kind"] for k in kept["resources"]}  # the gateways' load balancers
        made = creates(lab)
        assert len(made) == 8, made  # network, subnetwork, 4 firewall rules, cluster, VM
        key_lines = key_material(run_id)
        assert len(key_lines) > 2, "the kept run's SSH key and istio-token should be in its secret dir"

        r2 = suite(*args, "--reuse", run_id, "--until", "vm", "--keep", "always", "--artifacts-dir", str(second),
                   env=env)
        assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-2000:]
        assert creates(lab) == made, "the reusing run created something the kept run had"
        ledger = json.loads((second / "ledger.json").read_text())["entries"]
        assert all(e["extra"].get("adopted") == "true" for e in ledger), ledger
        kept2 = json.loads((second / "kept.json").read_text())
        assert sorted((k["kind"], k["name"]) for k in kept2["resources"]) == \
            sorted((k["kind"], k["name"]) for k in kept["resources"]), "kept again: the same resources"
        assert kept2["expires"] == kept["expires"]  # adopted resources keep their expiry label
        assert key_material(run_id) == key_lines, "kept again: the same key, still in its secret dir"

        r3 = suite(*args, *extra, *RECIPE_ONLY, "--reuse", run_id, "--artifacts-dir", str(third), env=env)
        assert r3.returncode == 0, r3.stdout[-3000:] + r3.stderr[-2000:]
        assert creates(lab) == made, "the reusing run created something the kept run had"
        phases = {p["name"]: p["outcome"] for p in json.loads((third / "phases.json").read_text())["phases"]
                  if p["kind"] == "stage"}
        assert set(phases.values()) == {"passed"} and len(phases) == len(STAGE_NAMES), phases
        summary = r3.stdout.strip().splitlines()[-1]  # e.g. "==== 21 passed, 4 deselected in 50.1s ===="
        assert re.fullmatch(r"=+ \d+ passed, \d+ deselected in .*", summary), "every stage and exercise passed: " + summary
        cleanup = json.loads((third / "cleanup.json").read_text())
        assert cleanup["remaining"] == [] and cleanup["leftovers"] == []
        assert set(KINDS) <= {i["kind"] for i in cleanup["items"]}
        assert run_objects(lab, run_id) == [], "the reusing run's teardown left some of the kept run"
        assert not (third / "kept.json").exists()
        assert not list(Path(tempfile.gettempdir()).glob(f"meshvm-{run_id}-*")), "the secret dir outlived the run"

        token = Path(env["E2E_GCP_ACCESS_TOKEN_FILE"]).read_text().strip()
        every = [t for out, r in ((first, r1), (second, r2), (third, r3)) for t in texts(out, r.stdout, r.stderr)]
        assert not [s for s in [token, *key_lines] for t in every if s in t], "a secret reached the artifacts"
        assert all("PRIVATE KEY" not in t for t in every)


def test_reuse_of_a_run_that_was_not_kept_fails_fast_and_creates_nothing(tmp_path):
    run_id = "reuse-none"
    with local_cloud(tmp_path, run_id) as (lab, args, env):
        r = suite(*args, "--reuse", run_id, "--until", "vm", "--artifacts-dir", str(tmp_path / "out"), env=env)
        assert r.returncode == 4, r.stdout[-3000:] + r.stderr[-2000:]
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "--reuse / E2E_REUSE" in ln]
        assert len(lines) == 1 and f"no kept run {run_id}: no secret dir" in lines[0], r.stdout + r.stderr
        assert "Traceback" not in r.stdout + r.stderr
        assert creates(lab) == [] and not (tmp_path / "out").exists()

        # A secret dir left behind, but nothing of the run in the project: the network stage says so
        # in one line, before anything is created.
        stray = Path(tempfile.mkdtemp(prefix=f"meshvm-{run_id}-"))
        (stray / "ssh").mkdir()
        (stray / "ssh" / "id_ed25519").write_text("not a key\n")
        r = suite(*args, "--reuse", run_id, "--until", "vm", "--artifacts-dir", str(tmp_path / "out2"), env=env)
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
        assert f"--reuse / E2E_REUSE: no kept run {run_id}: nothing in project" in r.stdout
        assert creates(lab) == [] and run_objects(lab, run_id) == []
        cleanup = json.loads((tmp_path / "out2" / "cleanup.json").read_text())
        assert cleanup["items"] == [] and cleanup["remaining"] == [] and cleanup["leftovers"] == []
