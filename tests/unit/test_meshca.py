"""The mesh CA stand-in signs what Python's (OpenSSL's) default verification accepts for the right
name and root, and nothing else: the VM's agent verifies istiod exactly this way."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from meshvm.lab.meshca import MeshCa


def handshake(ca: MeshCa, trusted_root: str, name: str, tmp_path: Path) -> str:
    pair = ca.serving(["istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"])
    (tmp_path / "c.pem").write_text(pair.cert_pem)
    (tmp_path / "k.pem").write_text(pair.key_pem)
    (tmp_path / "root.pem").write_text(trusted_root)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            try:
                server.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        client = ssl.create_default_context(cafile=tmp_path / "root.pem")
        with socket.create_connection(listener.getsockname(), timeout=5) as raw, \
                client.wrap_socket(raw, server_hostname=name) as tls:
            version = str(tls.version())
        t.join(5)
    return version


def test_istiods_certificate_verifies_against_the_mesh_root(tmp_path: Path) -> None:
    ca = MeshCa()
    assert handshake(ca, ca.root_pem, "istiod.istio-system.svc", tmp_path).startswith("TLS")


def test_another_meshs_root_or_another_name_fails(tmp_path: Path) -> None:
    ca = MeshCa()
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        handshake(ca, MeshCa().root_pem, "istiod.istio-system.svc", tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(ca, ca.root_pem, "istiod-canary.istio-system.svc", tmp_path)


def test_a_workload_certificate_carries_its_spiffe_identity() -> None:
    ca = MeshCa()
    cert = x509.load_pem_x509_certificate(ca.workload("ratings", "bookinfo-ratings").cert_pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/ratings/sa/bookinfo-ratings"]
    root = x509.load_pem_x509_certificate(ca.root_pem.encode())
    assert cert.issuer == root.subject
