"""Fixtures for the Kube contract tests: the Kubernetes API stand-in, spoken to by the real
kubernetes client, the Kube adapter and the real kubectl. Unit speed, no root.
Import explicitly: `from tests.contract.kube_fixtures import *`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from meshvm.kube import KubeClient
from meshvm.kube_auth import Token
from meshvm.lab.kubeapi import KubeApiStandIn

__all__ = ["ca_file", "honest_tokens", "kube", "raw", "standin"]


@pytest.fixture
def standin() -> Iterator[KubeApiStandIn]:
    api = KubeApiStandIn()
    api.start()
    yield api
    api.stop()


@pytest.fixture
def ca_file(standin: KubeApiStandIn, tmp_path: Path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_text(standin.ca_pem)
    return path


def honest_tokens(standin: KubeApiStandIn, ttl_s: float = 600) -> Callable[[], Token]:
    return lambda: Token(standin.issue_token(ttl_s), time.time() + ttl_s)


@pytest.fixture
def kube(standin: KubeApiStandIn, ca_file: Path) -> Iterator[KubeClient]:
    k = KubeClient(standin.endpoint, ca_file, honest_tokens(standin), call_timeout=10)
    yield k
    k.close()


@pytest.fixture
def raw(standin: KubeApiStandIn, ca_file: Path) -> Iterator[client.ApiClient]:
    """The plain kubernetes client with a long-lived token, for the stand-in's own contract."""
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert = standin.endpoint, str(ca_file)
    cfg.api_key, cfg.api_key_prefix = {"BearerToken": standin.issue_token(600)}, {"BearerToken": "Bearer"}
    api = client.ApiClient(cfg)
    yield api
    api.close()
