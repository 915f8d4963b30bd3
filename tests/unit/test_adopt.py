"""--reuse adopts only what carries the kept run's labels, and records it before anything uses it."""

from datetime import UTC, datetime

import pytest

from meshvm.config import gather, resolve
from meshvm.gcp import adopt, meta
from meshvm.gcp.errors import CloudError
from meshvm.ledger import Ledger

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def cfg(tmp_path):
    kept = tmp_path / "meshvm-kept-1-abc12345" / "ssh"
    kept.mkdir(parents=True)
    (kept / "id_ed25519").write_text("key")
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "E2E_GCP_ACCESS_TOKEN_FILE": __file__}
    return resolve(gather({"gcp_project": "demo-project", "ssh_source_ranges": ["203.0.113.7/32"], "reuse": "kept-1",
                           "artifacts_dir": str(tmp_path / "out")}, env), env, NOW)


def test_the_kept_runs_resource_is_recorded_with_its_own_expiry(cfg, tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    labels = meta.labels_of(meta.description(cfg, "the run's VPC network"))
    adopt.record(cfg, ledger, "network", "mvm-kept-1-net", "demo-project", {**labels, "e2e-expires": "20261126t1300z"})
    [entry] = ledger.entries()
    assert entry.key == "network/demo-project/mvm-kept-1-net"
    assert entry.extra == {"adopted": "true", "e2e-expires": "20261126t1300z"}


@pytest.mark.parametrize("labels", [{}, {"e2e-suite": "meshvm", "e2e-run": "other-run"},
                                    {"e2e-suite": "other", "e2e-run": "kept-1"}])
def test_something_that_is_not_the_kept_runs_is_refused_in_one_line(cfg, tmp_path, labels):
    ledger = Ledger(tmp_path / "ledger.json")
    with pytest.raises(CloudError) as e:
        adopt.record(cfg, ledger, "cluster", "mvm-kept-1", "demo-project/us-central1-a", labels)
    assert str(e.value).startswith("--reuse / E2E_REUSE: cluster mvm-kept-1 exists but is not kept run kept-1's")
    assert "refusing to adopt it" in str(e.value) and "\n" not in str(e.value)
    assert ledger.entries() == []
