"""A Kubernetes client-go credential plugin (`users[].user.exec` of a kubeconfig) that hands istioctl
and kubectl a fresh Google access token whenever theirs expires, so that a command that outlives a
token (`istioctl install` may run 15 min; a token file may rotate every few minutes) keeps working
(docs/facts.md section 6).

    python -m meshvm.gcp.kube_credential [--token-file PATH | --adc-file PATH]

prints an ExecCredential (client.authentication.k8s.io/v1) with the token and its expiry: the token
file's current token valid for FILE_TOKEN_S (the file is re-read after that), else Application
Default Credentials' token with its own expiry. client-go runs the plugin again once the expiry has
passed or the API answers 401; the token never appears in a command line or a file of ours."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from meshvm.gcp import credentials

API_VERSION = "client.authentication.k8s.io/v1"
FILE_TOKEN_S = 30.0  # a token file may rotate under us: ask again this soon
REFRESH_TIMEOUT_S = 30.0  # ADC's token endpoint: client-go waits on the plugin


class _Source:
    compute_endpoint = container_endpoint = gcp_project = None

    def __init__(self, token_file: Path | None) -> None:
        self.gcp_access_token_file = token_file


def command(token_file: Path | None, adc_file: str | None = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")) -> list[str]:
    """The kubeconfig exec command for the run's credentials: where to get a token, never a token.
    istioctl runs with an allowlisted environment, so ADC's file is passed by path."""
    where = ["--token-file", str(token_file)] if token_file else ["--adc-file", adc_file] if adc_file else []
    return [sys.executable, "-m", "meshvm.gcp.kube_credential", *where]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="meshvm.gcp.kube_credential", description=__doc__.splitlines()[0])
    p.add_argument("--token-file", type=Path)
    p.add_argument("--adc-file", help="GOOGLE_APPLICATION_CREDENTIALS for Application Default Credentials")
    args = p.parse_args(argv)
    if args.adc_file:
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = args.adc_file
    try:
        creds = credentials.load(_Source(args.token_file))
        credentials.bearer_token(creds, timeout=REFRESH_TIMEOUT_S, min_life_s=0)
    except Exception as e:  # client-go shows the plugin's stderr: one line, never a token
        print(f"meshvm credential plugin: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    now = datetime.datetime.now(datetime.UTC)
    expiry = getattr(creds, "expiry", None) or getattr(getattr(creds, "inner", None), "expiry", None)
    until = expiry.replace(tzinfo=datetime.UTC) if expiry else now + datetime.timedelta(seconds=FILE_TOKEN_S)
    status = {"token": str(creds.token), "expirationTimestamp": until.strftime("%Y-%m-%dT%H:%M:%SZ")}
    json.dump({"apiVersion": API_VERSION, "kind": "ExecCredential", "status": status}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
