"""Google credentials: Application Default Credentials, or an access token file re-read before
every request (a CI wrapper may rotate it under a running suite). Every token is registered with
the redaction registry the moment it is read."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import google.auth
from google.auth import credentials as ga_credentials
from google.auth import exceptions as ga_exceptions
from google.auth.transport import Request

from meshvm import redact

if TYPE_CHECKING:  # the plugin (kube_credential) runs per kubectl call: no Compute client import
    from meshvm.gcp.clients import Target

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class CredentialsMissing(Exception):
    """Neither a token file nor Application Default Credentials: one clear line."""


class TokenFileCredentials(ga_credentials.Credentials):
    """A bearer token read from a file before every use; a 401 also re-reads it (AuthorizedSession)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def refresh(self, request: Request) -> None:
        self.reread()

    def reread(self) -> None:
        """The file's current token (no request: no network, no HTTP library)."""
        try:
            token = self.path.read_text().strip()
        except OSError as e:
            raise ga_exceptions.RefreshError(f"access token file {self.path}: {e.strerror}") from None
        if not token:
            raise ga_exceptions.RefreshError(f"access token file {self.path} is empty")
        redact.register(token)
        self.token, self.expiry = token, None  # the file is the authority on validity, not a clock

    def before_request(self, request: Request, method: str, url: str, headers: dict) -> None:
        self.refresh(request)  # re-read every time: a rotated file takes effect on the next call
        self.apply(headers)


class RedactedCredentials(ga_credentials.Credentials):
    """Wraps ADC so that every token it mints is registered with the redaction registry."""

    def __init__(self, inner: ga_credentials.Credentials) -> None:
        super().__init__()
        self.inner = inner
        self._quota_project_id = inner.quota_project_id  # user ADC bills quota to this project

    def refresh(self, request: Request) -> None:
        self.inner.refresh(request)
        redact.register(self.inner.token)
        self.token, self.expiry = self.inner.token, self.inner.expiry


def load(cfg: Target) -> ga_credentials.Credentials:
    """The run's credentials: the token file when set, else ADC with the cloud-platform scope."""
    if cfg.gcp_access_token_file:
        if not cfg.gcp_access_token_file.is_file():
            raise CredentialsMissing(f"--gcp-access-token-file {cfg.gcp_access_token_file}: no such file")
        return TokenFileCredentials(cfg.gcp_access_token_file)
    try:
        inner, _ = google.auth.default(scopes=list(SCOPES))
    except ga_exceptions.DefaultCredentialsError:
        raise CredentialsMissing(
            "Google credentials: none found; set GOOGLE_APPLICATION_CREDENTIALS (Workload Identity "
            "Federation in CI), run `gcloud auth application-default login`, or pass "
            "--gcp-access-token-file / E2E_GCP_ACCESS_TOKEN_FILE") from None
    return RedactedCredentials(inner)


# google-auth refreshes a token only when under ~3m45s of life remain; a kubeconfig handed to
# istioctl must outlive its longest command (`istioctl install`, up to 15 min; docs/facts.md section 6).
MIN_LIFE_S = 20 * 60


def bearer_token(creds: ga_credentials.Credentials, timeout: float = 30.0, min_life_s: float = MIN_LIFE_S) -> str:
    """A current access token (for the Kubernetes client of a GKE cluster and the kubeconfig handed to
    istioctl) with at least `min_life_s` left where the credentials say when it expires: refreshed
    when stale or shorter-lived (a token file's validity is the file's, not a clock's)."""
    expiry = getattr(creds, "expiry", None)
    short = expiry is not None and (expiry - _utcnow()).total_seconds() < min_life_s
    if isinstance(creds, TokenFileCredentials):
        creds.reread()
    elif not creds.valid or short:
        creds.refresh(_timed(timeout))
    return str(creds.token)


def _utcnow() -> datetime.datetime:
    """google-auth's expiry is a naive UTC datetime."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _timed(limit: float) -> Request:
    """A token-endpoint request that cannot hang: every call carries a timeout. The HTTP library is
    imported here, not above: the kubectl credential plugin (a process per kubectl call) that reads a
    token file never needs it (0.1 s of CPU per call)."""
    from google.auth.transport.requests import Request as RequestsRequest

    class Timed(RequestsRequest):
        def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
            return super().__call__(url, method, body, headers, timeout or limit, **kwargs)

    return Timed()
