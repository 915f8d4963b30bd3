"""istioctl acquisition (checksummed, cached) and its runner (allowlisted env, fresh kubeconfig)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from meshvm.downloads import DownloadFailed
from meshvm.istioctl import IstioctlCli, acquire, samples_of
from tests.unit.conftest import publish

FAKE = b"#!/bin/sh\necho istioctl-for-tests \"$@\"\n"


def archive(content: bytes | None = FAKE, files: dict[str, bytes] | None = None, version: str = "1.30.3") -> bytes:
    """A release archive as Istio publishes it: istio-<V>/bin/istioctl beside istio-<V>/samples/..."""
    members = {**({"bin/istioctl": content} if content is not None else {}), **(files or {})}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"istio-{version}/{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


NAME = "1.30.3/istio-1.30.3-linux-amd64.tar.gz"


def test_acquire_checks_the_archive_and_then_needs_no_network(server, tmp_path):
    base, root = server
    publish(root, NAME, archive(files={"samples/curl/curl.yaml": b"kind: Service\n"}))
    binary = acquire("1.30.3", base, tmp_path / "cache", samples=["curl/curl.yaml", "gone/old.yaml"])
    assert (samples_of(binary) / "curl/curl.yaml").read_bytes() == b"kind: Service\n"
    assert not (samples_of(binary) / "gone").exists()  # a sample the release lacks: the drift report says so
    assert binary.read_bytes() == FAKE and binary.stat().st_mode & 0o111
    assert acquire("1.30.3", "http://127.0.0.1:9", tmp_path / "cache") == binary  # port 9: nothing there


def test_samples_asked_later_come_from_the_cached_archive(server, tmp_path):
    base, root = server
    publish(root, NAME, archive(files={"samples/curl/curl.yaml": b"kind: Service\n"}))
    binary = acquire("1.30.3", base, tmp_path / "cache")  # an e2e run: istioctl only
    assert not samples_of(binary).exists()
    (root / NAME).unlink()  # the release server is gone: the cache must do
    assert acquire("1.30.3", base, tmp_path / "cache", samples=["curl/curl.yaml"]) == binary
    assert (samples_of(binary) / "curl/curl.yaml").read_bytes() == b"kind: Service\n"


def test_a_checksum_mismatch_is_a_clear_error_and_caches_nothing(server, tmp_path):
    base, root = server
    publish(root, NAME, archive(), checksum="ab" * 32)
    with pytest.raises(DownloadFailed, match="checksum mismatch"):
        acquire("1.30.3", base, tmp_path / "cache")
    assert not (tmp_path / "cache/istio/1.30.3/istioctl").exists()
    assert not list((tmp_path / "cache/istio/1.30.3").glob("*.tar.gz"))


def test_an_archive_without_istioctl_is_the_infrastructures_failure(server, tmp_path):
    base, root = server
    publish(root, NAME, archive(content=None, files={"samples/curl/curl.yaml": b"{}"}))
    with pytest.raises(DownloadFailed, match="holds no istio-1.30.3/bin/istioctl"):
        acquire("1.30.3", base, tmp_path / "cache")


def test_runner_passes_a_fresh_kubeconfig_and_only_allowlisted_env(tmp_path):
    script = tmp_path / "istioctl"
    script.write_text("#!/bin/sh\nenv | sort > \"$(dirname \"$0\")/env.txt\"\n"
                      "echo '{\"clientVersion\": {\"version\": \"1.30.3\"}}'\necho \"$@\" >&2\n")
    script.chmod(0o755)
    calls = []

    def kubeconfig() -> Path:
        calls.append(1)
        return tmp_path / f"kubeconfig-{len(calls)}"

    cli = IstioctlCli(script, kubeconfig, {"PATH": "/usr/bin:/bin", "GOOGLE_APPLICATION_CREDENTIALS": "/x",
                                           "KUBECONFIG": "/home/me/.kube/config"})
    assert cli.version() == "1.30.3" and calls == []  # the client's version needs no cluster: no kubeconfig
    r = cli.run(["x", "workload", "group", "create"], step="wg")
    assert r.stderr.strip().endswith(f"--kubeconfig={tmp_path}/kubeconfig-1")
    r = cli.run(["x"], step="again")
    assert r.stderr.strip().endswith(f"--kubeconfig={tmp_path}/kubeconfig-2")  # written afresh for every run
    env = (tmp_path / "env.txt").read_text()
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env and "KUBECONFIG" not in env and "PATH=" in env
    assert json.loads(cli.run(["version"], step="v").stdout)["clientVersion"]["version"] == "1.30.3"
