"""Service-account tokens of the Kubernetes API stand-in (TokenRequest, `serviceaccounts/x/token`).

A signed JWT whose claims say what a real one says (audiences, `system:serviceaccount:<ns>:<sa>`,
iat/exp, the kubernetes.io namespace and service account), so a lab istiod stand-in can check
them the way istiod's CA does through a TokenReview. HMAC-signed with a per-API secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from meshvm import redact


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def issue(self, namespace: str, service_account: str, audiences: list[str], seconds: int) -> dict[str, Any]:
        now = int(time.time())
        claims = {"aud": audiences, "iat": now, "nbf": now, "exp": now + seconds, "iss": "lab-kubeapi-standin",
                  "sub": f"system:serviceaccount:{namespace}:{service_account}",
                  "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}}}
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        token = f"{head}.{body}.{sig}"
        redact.register(token)
        return {"token": token, "claims": claims}

    def review(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this API issued and that has not expired; None otherwise."""
        try:
            head, body, sig = token.strip().split(".")
        except ValueError:
            return None
        good = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(good, sig):
            return None
        claims = json.loads(_unb64(body))
        return claims if claims.get("exp", 0) > time.time() else None
