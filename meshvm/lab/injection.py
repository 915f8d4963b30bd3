"""Which control plane injects a pod's proxy, as Istio's injection webhooks select it
(`manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml` at 1.30.3, docs/facts.md
section 6): a namespace labelled `istio-injection=enabled` gets the revisionless control plane
(`default`); one with `istio.io/rev=<rev>` and no `istio-injection` label gets that revision; any other
gets none (the lab models no pod-level injection labels: the suite's workloads use none). The injected
pod records its revision in the annotation `istio.io/rev` (`files/injection-template.yaml`)."""

from __future__ import annotations

from collections.abc import Mapping

from meshvm import revisions

REV = revisions.LABEL


def revision(namespace_labels: Mapping[str, str]) -> str | None:
    """The injecting revision (`default`: the revisionless one), or None: no injection."""
    if namespace_labels.get("istio-injection") == "enabled":
        return "default"
    if "istio-injection" not in namespace_labels and namespace_labels.get(REV):
        return namespace_labels[REV]
    return None


def injector_configmap(rev: str) -> str:
    """The revision's injector values (`global.hub`, `global.tag`: the injected proxy's image)."""
    return revisions.injector(rev)
