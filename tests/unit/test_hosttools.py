"""The lab's host programs: what is missing is named with the command that installs it, before a lab
run creates anything; an e2e lab run without them ends in that one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshvm.lab import hosttools

ROOT = Path(__file__).resolve().parents[2]


def test_nothing_found_on_an_empty_path_names_every_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hosttools, "TOOLS", {t: ((), pkg) for t, (_, pkg) in hosttools.TOOLS.items()})
    gone = hosttools.missing(path=str(tmp_path))
    assert set(gone) == set(hosttools.TOOLS)
    with pytest.raises(hosttools.HostToolsMissing) as e:
        hosttools.ensure(install=False, path=str(tmp_path))
    line = str(e.value)
    assert "\n" not in line and "apt-get install -y --no-install-recommends" in line
    assert all(pkg in line for pkg in set(gone.values())) and "sshd" in line


def test_a_program_on_the_path_is_found(tmp_path: Path):
    (tmp_path / "curl").write_text("#!/bin/sh\n")
    (tmp_path / "curl").chmod(0o755)
    assert "curl" not in hosttools.missing(path=str(tmp_path))


def test_install_is_tried_only_where_it_is_safe_and_rechecked(monkeypatch: pytest.MonkeyPatch):
    calls: list[list[str]] = []
    state = {"gone": {"sshd": "openssh-server"}}
    monkeypatch.setattr(hosttools, "missing", lambda path=None: dict(state["gone"]))
    monkeypatch.setattr(hosttools, "can_install", lambda: True)

    def apt(packages: list[str]) -> bool:
        calls.append(packages)
        state["gone"] = {}
        return True

    monkeypatch.setattr(hosttools, "_apt", apt)
    said: list[str] = []
    hosttools.ensure(install=True, say=said.append)
    assert calls == [["openssh-server"]] and "installing" in said[0]
    state["gone"] = {"sshd": "openssh-server"}
    monkeypatch.setattr(hosttools, "can_install", lambda: False)
    with pytest.raises(hosttools.HostToolsMissing):
        hosttools.ensure(install=True, say=said.append)
    assert len(calls) == 1  # not root on Debian: never tried


def test_a_lab_run_without_the_host_programs_ends_in_one_line(tmp_path: Path):
    """PATH without the lab's programs (nor apt-get): one line naming them and the command, exit 4."""
    env = {**os.environ, "PATH": str(tmp_path)}
    env.pop("CI", None)
    hidden = {t: ((), pkg) for t, (_, pkg) in hosttools.TOOLS.items()}  # the fixed places too
    code = (f"import sys; import meshvm.lab.hosttools as h; h.TOOLS = {hidden!r}; import pytest; "
            f"sys.exit(pytest.main(['tests/e2e', '--platform', 'lab', '--artifacts-dir', {str(tmp_path / 'a')!r}, "
            "'-p', 'no:cacheprovider']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert len(err) == 1 and err[0].startswith("meshvm: --platform lab needs "), proc.stderr
    assert "apt-get install -y --no-install-recommends" in err[0] and "Traceback" not in proc.stdout + proc.stderr
