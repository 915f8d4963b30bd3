"""The identity check of the VM's certificate (meshvm/mesh_security.py) against chains made by a mesh CA."""

from __future__ import annotations

import base64
import json

from cryptography import x509

from meshvm import mesh_security
from meshvm.lab.meshca import MeshCa
from meshvm.seams import Result

WANT = "spiffe://cluster.local/ns/ratings/sa/bookinfo-ratings"


def chain(ca: MeshCa, sa: str = "bookinfo-ratings") -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(ca.workload("ratings", sa).cert_pem.encode())


def root(ca: MeshCa) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.root_pem.encode())


def test_the_right_identity_from_the_mesh_root_has_no_problem() -> None:
    ca = MeshCa()
    assert mesh_security.identity_problems(chain(ca), [root(ca)], WANT) == []


def test_another_service_account_another_root_or_none_are_each_named() -> None:
    ca, other = MeshCa(), MeshCa()
    assert mesh_security.identity_problems(chain(ca, "impostor"), [root(ca)], WANT) == [
        f"the VM's certificate names ['spiffe://cluster.local/ns/ratings/sa/impostor'], expected [{WANT!r}]"]
    (problem,) = mesh_security.identity_problems(chain(other), [root(ca)], WANT)
    assert problem.startswith("the VM's certificate is not signed by the mesh root")
    assert mesh_security.identity_problems(chain(other), [root(ca), root(other)], WANT) == [], "a rotating root"
    assert mesh_security.identity_problems([], [root(ca)], WANT) == [mesh_security.NO_CERTIFICATE]


class Shell:
    def __init__(self, out: str, rc: int = 0) -> None:
        self.result = Result(rc, out, "")

    def run(self, command: str, **kwargs: object) -> Result:
        return self.result


def test_the_chain_is_read_from_envoys_secrets_dump_whatever_the_nesting() -> None:
    ca = MeshCa()
    pem = ca.workload("ratings", "bookinfo-ratings").cert_pem
    dump = {"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret", "name": "default",
                         "secret": {"name": "default", "tls_certificate": {
                             "certificate_chain": {"inline_bytes": base64.b64encode(pem.encode()).decode()},
                             "private_key": {"inline_bytes": base64.b64encode(b"[redacted]").decode()}}}},
                        {"name": "ROOTCA", "secret": {"name": "ROOTCA", "validation_context": {"trusted_ca": {}}}}]}
    got = mesh_security.vm_workload_chain(Shell(json.dumps(dump)))  # type: ignore[arg-type]
    assert mesh_security.identity_problems(got, [root(ca)], WANT) == []
    assert mesh_security.vm_workload_chain(Shell("", rc=7)) == []  # type: ignore[arg-type]


def test_refused_is_a_closed_connection_not_a_timeout_or_a_refusal() -> None:
    assert mesh_security.refused((0, "curl: (56) Recv failure: Connection reset by peer"))
    assert mesh_security.refused((0, "curl: (52) Empty reply from server"))
    assert not mesh_security.refused((0, "curl: (28) Operation timed out after 10001 milliseconds"))
    assert not mesh_security.refused((0, "curl: (7) Failed to connect to 10.0.0.5 port 9080: Connection refused"))
    assert not mesh_security.refused((200, "{}"))
    assert mesh_security.status_body(Result(0, "body\n403", "")) == (403, "body")
    assert mesh_security.status_body(Result(56, "\n000", "curl: (56) Recv failure")) == (0, "curl: (56) Recv failure")


def _cert(subject: str, key, issuer: str, signer, ca: bool, uri: str | None = None) -> x509.Certificate:  # noqa: ANN001
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if uri:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
    return builder.sign(signer, hashes.SHA256())


def test_a_leaf_from_a_plugged_in_intermediate_ca_chains_to_the_root() -> None:
    """With a plugged-in CA (`cacerts`) istiod signs with an intermediate that follows the leaf in the chain."""
    from cryptography.hazmat.primitives.asymmetric import ec
    root_key, mid_key, leaf_key, stray_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    root_cert = _cert("root", root_key, "root", root_key, ca=True)
    mid = _cert("intermediate", mid_key, "root", root_key, ca=True)
    leaf = _cert("leaf", leaf_key, "intermediate", mid_key, ca=False, uri=WANT)
    assert mesh_security.identity_problems([leaf, mid], [root_cert], WANT) == []
    stray_mid = _cert("intermediate", stray_key, "root", stray_key, ca=True)  # not signed by the root
    (problem,) = mesh_security.identity_problems([leaf, stray_mid], [root_cert], WANT)
    assert problem.startswith("the VM's certificate is not signed by the mesh root")
    assert mesh_security.identity_problems([leaf], [root_cert], WANT) != [], "the intermediate is needed"
