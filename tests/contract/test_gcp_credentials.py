"""Credentials: a token file re-read before every use (rotation mid-run), tokens redacted, a clear
line when no credentials exist; and proof that these tests only ever reach loopback."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import requests

from meshvm import redact
from meshvm.gcp import credentials
from meshvm.gcp.errors import CloudError
from meshvm.gcp.janitor import Target
from tests.contract.gcp_fixtures import *  # noqa: F403
from tests.contract.gcp_fixtures import deadline

GCP_SRC = Path(__file__).resolve().parents[2] / "meshvm" / "gcp"


def test_a_token_that_expires_mid_run_is_reread_from_the_file(cloud, standin, token_file):
    standin.tokens = {"ya29.token-one-0123456789"}
    net = cloud.create_network(deadline())
    token_file.write_text("ya29.token-two-9876543210\n")  # the CI wrapper rotates the file...
    standin.tokens = {"ya29.token-two-9876543210"}  # ...and the old token expires
    assert cloud.create_firewall_rules(net, deadline())
    assert redact.scrub("Bearer ya29.token-two-9876543210") == f"Bearer {redact.MASK}"


def test_a_rejected_token_is_a_clear_error(cloud, standin):
    standin.tokens = {"someone-elses-token"}
    with pytest.raises(CloudError, match=r"credentials rejected \(401\)"):
        cloud.create_network(deadline())


def test_no_credentials_at_all_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))  # no metadata probe
    with pytest.raises(credentials.CredentialsMissing, match="Google credentials: none found; set "
                                                             "GOOGLE_APPLICATION_CREDENTIALS"):
        credentials.load(Target("meshvm-lab"))
    with pytest.raises(credentials.CredentialsMissing, match="no such file"):
        credentials.load(Target("meshvm-lab", gcp_access_token_file=tmp_path / "none"))


def test_the_guard_refuses_non_loopback_hosts():
    """The autouse guard (gcp_fixtures.loopback_only) fails any request to a non-loopback host before
    it is sent; every test here runs under it. 192.0.2.1 is TEST-NET-1 (never routed)."""
    with pytest.raises(AssertionError, match="non-loopback endpoint"):
        requests.get("http://192.0.2.1/", timeout=1)


def test_these_tests_reached_only_loopback(cloud, loopback_only):
    cloud.create_network(deadline())
    assert loopback_only and set(loopback_only) <= {"127.0.0.1", "localhost", "::1"}


def test_the_gcp_code_never_uses_extended_operation_result():
    """ExtendedOperation.result() polls compute.googleapis.com whatever the endpoint (docs/facts.md section 3)."""
    for path in GCP_SRC.glob("*.py"):
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr == "result"]
        assert not calls, f"{path.name}:{calls[0].lineno} calls .result()"


def test_adc_tokens_are_redacted_and_the_quota_project_kept():
    class FakeAdc(credentials.ga_credentials.Credentials):
        def __init__(self):
            super().__init__()
            self._quota_project_id = "billing-project"

        def refresh(self, request):
            self.token = "ya29.adc-minted-token-42"

    creds = credentials.RedactedCredentials(FakeAdc())
    headers: dict = {}
    creds.before_request(None, "GET", "http://127.0.0.1/", headers)
    assert headers == {"authorization": "Bearer ya29.adc-minted-token-42", "x-goog-user-project": "billing-project"}
    assert redact.MASK in redact.scrub("token ya29.adc-minted-token-42")
    assert credentials.bearer_token(creds) == "ya29.adc-minted-token-42"


def test_a_token_with_less_than_twenty_minutes_left_is_refreshed_before_istioctl_gets_it():
    """google-auth would keep a token with 5 minutes left; `istioctl install` may run 15."""
    import datetime

    class ShortLived(credentials.ga_credentials.Credentials):
        minted = 0

        def refresh(self, request):
            ShortLived.minted += 1
            self.token = f"ya29.token-{ShortLived.minted}"
            self.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(
                minutes=5 if ShortLived.minted == 1 else 60)

    creds = credentials.RedactedCredentials(ShortLived())
    creds.refresh(None)
    assert creds.valid and creds.token == "ya29.token-1"  # google-auth: still valid for 5 minutes
    assert credentials.bearer_token(creds) == "ya29.token-2"  # the suite: refreshed, now an hour
    assert credentials.bearer_token(creds) == "ya29.token-2"  # long-lived enough: kept
