"""The secrets folder: 0700, outside the artifacts, registered for redaction, gone at close."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from meshvm import redact, secretdir
from meshvm.secretdir import SecretDir, remove_leftovers


def test_secret_dir_is_private_registered_and_removed(tmp_path):
    sd = SecretDir("r1", tmp_path / "artifacts")
    try:
        assert stat.S_IMODE(sd.path.stat().st_mode) == 0o700
        files = sd.sub("vm_files")
        (files / "istio-token").write_text("eyJhbGciOi.secret-token-body.sig")
        (files / "istio-token").chmod(0o744)  # as istioctl writes it (docs/facts.md section 1)
        sd.register_files(files)
        assert stat.S_IMODE((files / "istio-token").stat().st_mode) == 0o600
        assert redact.scrub("token eyJhbGciOi.secret-token-body.sig") == "token [REDACTED]"
    finally:
        sd.close()
        redact.clear()
    assert not sd.path.exists()


def test_secret_dir_refuses_to_live_inside_the_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="inside the artifacts"):
        SecretDir("r1", tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


def test_a_runs_secret_dirs_are_its_own_not_those_of_a_run_whose_id_starts_alike(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    mine, other = tmp_path / "meshvm-killed-ab12cd34", tmp_path / "meshvm-killed-1a2b-ab12cd34"
    for d in (mine, other):
        d.mkdir()
        (d / secretdir.OWNER_LOCK).touch()  # as a run leaves it; no process holds its lock: both are dead
    assert secretdir.of_run("killed") == [mine]
    assert secretdir.remove_leftovers("killed") == [mine]
    assert other.is_dir() and not mine.exists()


def test_the_janitor_removes_a_secret_dir_only_once_its_owner_is_gone(tmp_path, monkeypatch):
    """Run ids may repeat: a live run's secret dir (its lock held) is never removed; a dead one's is."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    live = SecretDir("same-id", tmp_path / "artifacts")
    code = ("import sys, os; from pathlib import Path; from meshvm.secretdir import SecretDir; "
            "d = SecretDir('same-id', Path(sys.argv[1])); print(d.path, flush=True); os._exit(0)")
    dead = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a2")], capture_output=True, text=True,
                          timeout=60, check=True, env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)},
                          cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    assert Path(dead).is_dir() and live.path.is_dir()
    assert remove_leftovers("same-id") == [Path(dead)]  # its process ended without closing it
    assert live.path.is_dir() and not Path(dead).exists()
    live.close()
