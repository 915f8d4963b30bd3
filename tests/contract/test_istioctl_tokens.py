"""istioctl can outlive a token (issue: `istioctl install` may run 15 min; a token may live less): the
kubeconfig handed to it names the run's credential plugin (meshvm.gcp.kube_credential), which client-go
asks again once a token expires. Here the cluster's tokens live 4 s and the stand-in istioctl's install
polls its control plane for 9 s: it succeeds with the plugin, and fails (401) with a token written into
the kubeconfig, as it would on GKE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshvm.gcp import kube_credential
from meshvm.gcp.credentials import TokenFileCredentials, bearer_token
from meshvm.istioctl import IstioctlCli
from meshvm.kube import KubeClient
from meshvm.kube_auth import Token
from meshvm.lab.cluster import KubeClusterBackend, RotatingTokens
from meshvm.lab.istioctl_standin import install_istioctl_standin

TTL_S, INSTALL_S = 4.0, 9.0  # a token read has >= 3.5 s left: room for a loaded machine


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KubeClient, Path]]:
    tokens = RotatingTokens(tmp_path / "access-token", ttl_s=TTL_S, rotate_s=0.5)
    backend = KubeClusterBackend(tokens, "10.44.0.0/16", ["198.18.0.1"], tmp_path)
    try:
        endpoint, ca = backend.start("c1")
        (tmp_path / "ca.crt").write_text(ca)
        creds = TokenFileCredentials(tokens.path)
        kube = KubeClient(f"https://{endpoint}", tmp_path / "ca.crt",
                          lambda: Token(bearer_token(creds), time.time() + 1.0), call_timeout=10)
        yield kube, tokens.path
        kube.close()
    finally:
        backend.stop()
        tokens.stop()


@pytest.mark.parametrize("credential", ["plugin", "token in the kubeconfig"])
def test_istioctl_install_outlives_its_token(cluster, tmp_path, credential):
    kube, token_file = cluster
    plugin = kube_credential.command(token_file) if credential == "plugin" else []
    (tmp_path / "kube").mkdir()
    cli = IstioctlCli(install_istioctl_standin("1.31.1", tmp_path / "bin", install_s=INSTALL_S),
                      lambda: kube.write_kubeconfig(tmp_path / "kube", plugin), os.environ)
    (tmp_path / "iop.yaml").write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {}\n")
    started = time.monotonic()
    r = cli.run(["install", "-y", "-f", str(tmp_path / "iop.yaml")], step="istio", timeout=60, check=False)
    took = time.monotonic() - started
    config = (tmp_path / "kube" / "meshvm.kubeconfig").read_text()
    assert token_file.read_text().strip() not in config or credential != "plugin"  # no token in the file
    if credential == "plugin":
        assert r.ok, r.stderr[-2000:]
        assert took > INSTALL_S > TTL_S  # the command outlived every token it met
        assert kube.get("apps/v1", "Deployment", "istiod", "istio-system") is not None
    else:
        assert not r.ok and ("401" in r.stderr or "Unauthorized" in r.stderr), r.stderr[-2000:]
        assert took > TTL_S - 1.0  # it worked until its token expired


def test_the_plugin_loads_no_cloud_client_library(tmp_path: Path) -> None:
    """client-go runs the plugin once per kubectl or istioctl process: importing the Compute client
    there cost 1.3 s of CPU per call (most of a lab run's CPU), the HTTP library 0.1 s more. Only
    google.auth may load; reading a token file needs no HTTP library."""
    probe = ("import sys, meshvm.gcp.kube_credential as k; "
             "k.main(['--token-file', sys.argv[1]]); "
             "print(sorted(m for m in sys.modules if m.startswith(('google.cloud', 'kubernetes', 'paramiko', "
             "'requests', 'google.auth.transport.requests'))), file=sys.stderr)")
    token = tmp_path / "token"
    token.write_text("ya29.plugin")
    r = subprocess.run([sys.executable, "-c", probe, str(token)], capture_output=True, text=True, timeout=60, check=True)
    assert r.stderr.strip() == "[]", r.stderr
    assert json.loads(r.stdout)["status"]["token"] == "ya29.plugin"
