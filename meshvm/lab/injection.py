"""Which control plane injects a pod's proxy, as Istio's injection webhooks select it
(`manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml` at 1.30.3, docs/facts.md
section 6): a namespace labelled `istio-injection=enabled` gets the revisionless control plane
(`default`); one with `istio.io/rev=<rev>` and no `istio-injection` label gets that revision; any other
gets none, except a pod that asks for it itself (the webhooks' object selectors, used by a gateway
rendered for injection, `gateways/istio-ingress/templates/injected-deployment.yaml`): its label
`istio.io/rev=<rev>` selects that revision, `sidecar.istio.io/inject=true` without it the revisionless one.
A pod labelled `sidecar.istio.io/inject=false` is never injected. The injected pod records its revision in
the annotation `istio.io/rev` (`files/injection-template.yaml`, `files/gateway-injection-template.yaml`)."""

from __future__ import annotations

from collections.abc import Mapping

from meshvm import revisions

REV = revisions.LABEL
INJECT = "sidecar.istio.io/inject"
TEMPLATES = "inject.istio.io/templates"  # a pod rendered for the gateway template: image `auto` until injected


def revision(namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str] | None = None) -> str | None:
    """The injecting revision (`default`: the revisionless one), or None: no injection."""
    pod = pod_labels or {}
    if pod.get(INJECT) == "false":
        return None
    if namespace_labels.get("istio-injection") == "enabled":
        return revisions.DEFAULT
    if "istio-injection" in namespace_labels:
        return None
    if namespace_labels.get(REV):
        return namespace_labels[REV]
    if pod.get(REV):
        return pod[REV]
    return revisions.DEFAULT if pod.get(INJECT) == "true" else None


def injector_configmap(rev: str) -> str:
    """The revision's injector values (`global.hub`, `global.tag`: the injected proxy's image)."""
    return revisions.injector(rev)
