"""Credentials of the Kube adapter: a bearer token refreshed before expiry, the client
Configuration we own (never load_kube_config/set_default, never ~/.kube), a temporary kubeconfig."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client

from meshvm import redact


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # wall clock (time.time()); Google reports expiry as a UTC instant


TokenProvider = Callable[[], Token]


class TokenSource:
    """The current token; a new one from the provider when it is within `margin_s` of expiry."""

    def __init__(self, provider: TokenProvider, margin_s: float = 300.0):
        self._provider, self._margin = provider, margin_s
        self._lock = threading.Lock()
        self._token: Token | None = None

    def current(self, *, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or time.time() >= self._token.expires_at - self._margin:
                token = self._provider()
                redact.register(token.value)
                self._token = token
            return self._token.value

    def hook(self, cfg: client.Configuration) -> None:
        """The client's refresh_api_key_hook: runs before every request that carries a token."""
        cfg.api_key["BearerToken"] = self.current()


def configuration(host: str, ca_file: Path, tokens: TokenSource) -> client.Configuration:
    cfg = client.Configuration()
    cfg.host = host.rstrip("/")
    cfg.ssl_ca_cert = str(ca_file)  # a file: the websocket (exec) path ignores ca_cert_data
    cfg.verify_ssl = True
    # The hook only runs when a BearerToken is already present (docs/facts.md section 3): seed it.
    cfg.api_key = {"BearerToken": tokens.current()}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    cfg.refresh_api_key_hook = tokens.hook  # type: ignore[assignment]  # typed None in the client's stubs
    return cfg


def write_kubeconfig(directory: Path, host: str, ca_file: Path, token: str, name: str = "meshvm",
                     credential: Sequence[str] = ()) -> Path:
    """A kubeconfig (0600) for istioctl/kubectl, rewritten on every call: with `credential` (a command
    printing an ExecCredential) client-go asks it for a token whenever the one it has expires, so a
    command may outlive any one token; else it holds the current token."""
    path = directory / f"{name}.kubeconfig"
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": credential[0],
                     "args": list(credential[1:]), "interactiveMode": "Never"}} if credential else {"token": token}
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": name, "preferences": {},
        "clusters": [{"name": name, "cluster": {
            "server": host, "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode()}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
    }
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")  # stages overlap: one per thread
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when a stale .tmp existed with other modes
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f)
    tmp.replace(path)
    return path
