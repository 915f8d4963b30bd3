"""The mesh-security exercises' checks (beyond the recipe): the VM's workload identity, STRICT mutual
TLS, and authorization on the VM path. Each policy a check applies is removed again by its exercise.

What they read on a real VM is what the lab shows too (docs/facts.md section 8):
- the VM's Envoy config dump (`localhost:15000/config_dump?resource=dynamic_active_secrets`): the SDS
  secret `default` pilot-agent handed it, its certificate chain inline (Envoy redacts the private key);
  its URI SAN is the SPIFFE identity `spiffe://<trust domain>/ns/<ns>/sa/<service account>`, and it must
  be signed by the mesh's root, the `root-cert.pem` of ConfigMap `istio-ca-root-cert`;
- a plaintext client's call straight to the VM's address (a Service's ClusterIP would not do: kube-proxy
  knows no WorkloadEntry): answered under PERMISSIVE, refused under STRICT (the sidecar's inbound
  listener has no plaintext filter chain: the connection is closed without an HTTP answer);
- RBAC's answer to a denied request: HTTP 403 with the body `RBAC: access denied`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from meshvm import manifests, telemetry
from meshvm.deadlines import Deadline
from meshvm.recipe import waits
from meshvm.seams import Kube, Result, VmShell

SECRETS_URL = "127.0.0.1:15000/config_dump?resource=dynamic_active_secrets"
PLAIN_NS = "meshvm-plaintext"
DENIED = (403, "RBAC: access denied")
NO_CERTIFICATE = "the VM's Envoy has no workload certificate (SDS secret `default`)"


# -- the VM's identity ---------------------------------------------------------------------------


def vm_workload_chain(vm: VmShell) -> list[x509.Certificate]:
    """The certificate chain of the VM Envoy's SDS secret `default` ([] while it has none)."""
    r = vm.run(f"curl -sS -m 10 '{SECRETS_URL}'", step="the VM Envoy's secrets", check=False, timeout=20)
    try:
        dump = json.loads(r.stdout) if r.ok else {}
    except ValueError:  # Envoy not answering JSON yet: as good as no certificate
        return []
    for secret in _secrets(dump):
        if secret.get("name") == "default" and "tls_certificate" in secret:
            pem = base64.b64decode(secret["tls_certificate"]["certificate_chain"]["inline_bytes"])
            return x509.load_pem_x509_certificates(pem)
    return []


def _secrets(dump: Any) -> list[dict]:
    """Every Secret in a config dump, whichever way Envoy nests it."""
    if isinstance(dump, dict):
        own = [dump] if "tls_certificate" in dump or "validation_context" in dump else []
        return own + [s for v in dump.values() for s in _secrets(v)]
    if isinstance(dump, list):
        return [s for v in dump for s in _secrets(v)]
    return []


def mesh_roots(kube: Kube, namespace: str = "ratings") -> list[x509.Certificate]:
    """The mesh's roots (more than one while a root rotates)."""
    cm = kube.get("v1", "ConfigMap", "istio-ca-root-cert", namespace) or {}
    return x509.load_pem_x509_certificates(str((cm.get("data") or {}).get("root-cert.pem", "")).encode())


def identity_problems(chain: list[x509.Certificate], roots: list[x509.Certificate], want: str) -> list[str]:
    if not chain:
        return [NO_CERTIFICATE]
    leaf = chain[0]
    try:
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    problems = [] if uris == [want] else [f"the VM's certificate names {uris}, expected [{want!r}]"]
    if not _chains_to(chain, roots):
        problems.append("the VM's certificate is not signed by the mesh root (istio-ca-root-cert)")
    return problems


def _chains_to(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> bool:
    """The leaf, through the chain's intermediates in order (a plugged-in CA's; istiod's own self-signed CA
    signs leaves directly), issued by one of the roots."""
    for child, parent in zip(chain, chain[1:], strict=False):
        if any(_issued_by(child, root) for root in roots):
            return True
        if not _issued_by(child, parent):
            return False
    return any(_issued_by(chain[-1], root) for root in roots)


def _issued_by(leaf: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- policies --------------------------------------------------------------------------------------


def apply_policy(kube: Kube, name: str) -> None:
    kube.apply(manifests.text(name, TRUST_DOMAIN=telemetry.TRUST_DOMAIN))


def remove_policy(kube: Kube, name: str, deadline: Deadline) -> None:
    for doc in manifests.docs(name, TRUST_DOMAIN=telemetry.TRUST_DOMAIN):
        kube.delete(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], doc["metadata"]["namespace"],
                    deadline=deadline)


# -- a client outside the mesh ---------------------------------------------------------------------


def deploy_plain_client(kube: Kube, deadline: Deadline) -> str:
    """Istio's curl sample in a namespace without injection; its pod's name. A pod that has a proxy anyway (a
    cluster injecting by default) would speak mutual TLS, and STRICT could never refuse it: refused here."""
    kube.apply(manifests.text("plaintext-client"))
    waits.rollout(kube, PLAIN_NS, "curl", deadline)
    pods = [p for p in kube.list("v1", "Pod", PLAIN_NS, label_selector="app=curl")
            if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    if not pods:
        raise RuntimeError(f"plaintext client: no Running pod of Deployment {PLAIN_NS}/curl")
    spec = pods[0].get("spec") or {}
    if any(c.get("name") == "istio-proxy" for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])):
        raise RuntimeError(f"plaintext client: pod {PLAIN_NS}/{pods[0]['metadata']['name']} was injected: it is in "
                           "the mesh (does the cluster inject by default?)")
    return str(pods[0]["metadata"]["name"])


def remove_plain_client(kube: Kube, deadline: Deadline) -> None:
    kube.delete("v1", "Namespace", PLAIN_NS, deadline=deadline)


def status_body(r: Result) -> tuple[int, str]:
    """(HTTP status, body) of `curl -w '\\n%{http_code}'`; status 0 with curl's error when no HTTP answer came."""
    body, _, code = r.stdout.rpartition("\n")
    status = int(code) if code.strip().isdigit() else 0
    return (status, body) if status else (0, r.stderr.strip()[-200:] or f"curl exited {r.rc}")


def refused(answer: tuple[int, str]) -> bool:
    """No HTTP answer because the server closed the connection: what a sidecar does to a client no filter
    chain takes (it closes the socket with the request still unread, so Linux answers with a reset: curl 56,
    "Connection reset by peer"; "Empty reply from server", 52, if the close came first). A timeout or a
    refused connection is something else (the VM's proxy down)."""
    return answer[0] == 0 and ("reset by peer" in answer[1] or "Empty reply" in answer[1])


def http_call(kube: Kube, namespace: str, pod: str, url: str) -> tuple[int, str]:
    return status_body(kube.exec(namespace, pod, ["curl", "-sS", "-m", "10", "-w", "\n%{http_code}", url],
                                 container="curl", timeout=30))


def vm_call(vm: VmShell, url: str) -> tuple[int, str]:
    return status_body(vm.run(f"curl -sS -m 10 -w '\\n%{{http_code}}' {url}", step="a call from the VM", check=False,
                              timeout=20))
