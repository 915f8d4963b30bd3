"""lab STAND-IN for istiod's self-signed CA (not Istio): the mesh's root certificate and the
certificates istiod's CA signs with it.

Modelled from Istio 1.30.3: istiod's self-signed root (`security/pkg/pki/ca/ca.go`, selfSignedCA: a
CA certificate whose organization is the trust domain, `cluster.local` by default), published to every
namespace as ConfigMap `istio-ca-root-cert` key `root-cert.pem` (what `istioctl x workload entry
configure` copies to the VM as /etc/certs/root-cert.pem); istiod's serving certificate for its xDS
port 15012 with DNS names `istiod.istio-system.svc` (the discoveryAddress' host, the agent's TLS
server name) and the revision's `istiod-<rev>.istio-system.svc`. The VM's agent verifies istiod's
certificate against /etc/certs/root-cert.pem (`pkg/istio-agent/agent.go` FindRootCAForXDS: the
mounted root, security.DefaultRootCertFilePath), so a wrong root cert fails there, as on a real VM.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
DAYS = 2
_PEM = serialization.Encoding.PEM


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=DAYS))


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str


@dataclass
class MeshCa:
    trust_domain: str = TRUST_DOMAIN
    _key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    _cert: x509.Certificate | None = None

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain)])
        self._cert = (_validity(x509.CertificateBuilder()).subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
                      .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                     critical=True)
                      .sign(self._key, hashes.SHA256()))

    @property
    def root_pem(self) -> str:
        assert self._cert is not None
        return self._cert.public_bytes(_PEM).decode()

    def sign(self, sans: list[x509.GeneralName], usages: list[x509.ObjectIdentifier]) -> KeyPair:
        assert self._cert is not None
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (_validity(x509.CertificateBuilder()).subject_name(x509.Name([])).issuer_name(self._cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .add_extension(x509.SubjectAlternativeName(sans), critical=True)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                               critical=False)
                .sign(self._key, hashes.SHA256()))
        return KeyPair(cert.public_bytes(_PEM).decode(),
                       key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())

    def serving(self, dns_names: list[str]) -> KeyPair:
        """A server certificate (istiod's on 15012)."""
        return self.sign([x509.DNSName(n) for n in dns_names], [ExtendedKeyUsageOID.SERVER_AUTH])

    def workload(self, namespace: str, service_account: str) -> KeyPair:
        """A workload certificate: the SPIFFE identity as URI SAN, for both TLS roles (as Istio's CA signs)."""
        uri = f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}"
        return self.sign([x509.UniformResourceIdentifier(uri)],
                         [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
