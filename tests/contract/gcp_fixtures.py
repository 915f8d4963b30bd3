"""Fixtures for the GCP contract tests: the local Google Cloud stand-in with a paper backing (no
root) or real lab VMs (root), a TLS stub cluster backend, a Config pointed at the stand-in, and a
guard that fails any request to a non-loopback host. Import explicitly: `from tests.contract.gcp_fixtures import *`.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import itertools
import os
import ssl
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests.adapters
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from meshvm.config import Config, gather, resolve
from meshvm.deadlines import Deadline
from meshvm.gcp.cloud import GcpCloud
from meshvm.lab.gcloud.server import GCloudStandIn
from meshvm.ledger import Ledger

# What `from tests.contract.gcp_fixtures import *` brings into a test module: the fixtures only.
__all__ = ["cfg", "cloud", "loopback_only", "standin", "token_file"]
PROJECT = "meshvm-lab"
ZONES = ("us-central1-a", "us-central1-b")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every HTTP request the Google clients make goes through requests: refuse any non-loopback host."""
    real_send, sent = requests.adapters.HTTPAdapter.send, []

    def send(self, request, *args, **kwargs):  # noqa: ANN001, ANN202
        host = urlsplit(request.url).hostname or ""
        if host not in LOOPBACK:
            raise AssertionError(f"a test tried to reach a non-loopback endpoint: {request.url}")
        sent.append(host)
        return real_send(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    yield sent


class PaperBacking:
    """Test double for ComputeBacking: VMs exist on paper (TEST-NET-2 addresses, fresh host keys),
    firewall rules are recorded. For API-contract tests that need no root; the lab tests use LabBacking."""

    def __init__(self, hostkey_delay: float = 0.3) -> None:
        self.vms: dict[str, dict] = {}
        self.rules: list[Mapping] = []
        self.hostkey_delay = hostkey_delay
        self._ips = (str(ipaddress.ip_address("198.51.100.0") + i) for i in itertools.count(10))

    def boot(self, name: str, tags: Sequence[str], metadata: Mapping[str, str]) -> tuple[str, str]:
        key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        ip = next(self._ips)
        self.vms[name] = {"tags": list(tags), "metadata": dict(metadata), "ip": ip,
                          "keys": {"ssh-ed25519": key.split()[1]}, "at": datetime.datetime.now()}
        return ip, ip

    def host_keys(self, name: str) -> dict[str, str] | None:
        vm = self.vms.get(name)
        if vm is None or (datetime.datetime.now() - vm["at"]).total_seconds() < self.hostkey_delay:
            return None
        return vm["keys"]

    def halt(self, name: str) -> None:
        self.vms.pop(name, None)

    def set_firewall(self, rules: Sequence[Mapping]) -> None:
        self.rules = list(rules)

    def close(self) -> None:
        self.vms.clear()


def self_signed(host: str = "127.0.0.1") -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stub-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class TlsStubBackend:
    """A tiny TLS API server on 127.0.0.1 that answers /version (until the kube stand-in exists)."""

    def __init__(self) -> None:
        self.httpd: ThreadingHTTPServer | None = None
        self.tokens: set[str] = set()

    def start(self, name: str) -> tuple[str, str]:
        cert, key = self_signed()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory(prefix="stubapi-") as d:  # the test key: read once, then gone
            Path(d, "c.pem").write_bytes(cert)
            Path(d, "k.pem").write_bytes(key)
            ctx.load_cert_chain(Path(d, "c.pem"), Path(d, "k.pem"))
        backend = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                ok = backend.token_ok(token)
                data = b'{"major":"1","minor":"33"}' if ok else b'{"kind":"Status","code":401}'
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"127.0.0.1:{self.httpd.server_address[1]}", cert.decode()

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def token_ok(self, token: str) -> bool:
        return not self.tokens or token in self.tokens


@pytest.fixture
def standin() -> Iterator[GCloudStandIn]:
    server = GCloudStandIn(PROJECT, PaperBacking(), lambda name: TlsStubBackend(), op_delay=0.05,
                           wait_cap=0.5, cluster_delay=0.3)
    with server:
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("ya29.token-one-0123456789\n")
    return path


def make_cfg(server: GCloudStandIn, tmp_path: Path, token_file: Path, now: datetime.datetime | None = None,
             **options: object) -> Config:
    assert urlsplit(server.url).hostname in LOOPBACK  # every client of these tests talks to the stand-in
    raw = gather({"platform": "gcp", "gcp_project": PROJECT, "ssh_source_ranges": ["203.0.113.7/32"],
                  "zone": list(ZONES), "compute_endpoint": server.url, "container_endpoint": server.url,
                  "iam_endpoint": server.url, "resourcemanager_endpoint": server.url,
                  "gcp_access_token_file": str(token_file), "run_id": "ct-" + os.urandom(3).hex(),
                  "artifacts_dir": str(tmp_path / "artifacts"), **options}, {})
    return resolve(raw, {}, now=now)


@pytest.fixture
def cfg(standin: GCloudStandIn, tmp_path: Path, token_file: Path) -> Config:
    return make_cfg(standin, tmp_path, token_file)


@pytest.fixture
def cloud(cfg: Config) -> GcpCloud:
    return GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json"))


def deadline(seconds: float = 60) -> Deadline:
    return Deadline.after(seconds, "contract test")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
