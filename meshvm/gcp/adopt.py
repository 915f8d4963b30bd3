"""`--reuse`: a kept run's resource is adopted instead of created. Read it, check it is that run's
(its labels, or for networks and firewall rules the labels its description carries: meta.py),
record it in THIS run's ledger before anything uses it (so teardown deletes it), and use it.
Something with the run's name that is not the run's is never adopted: the run fails with one line."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.cloud import compute_v1, container_v1

from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import errors, meta
from meshvm.gcp.clients import Clients, not_found
from meshvm.gcp.operations import wait_compute, wait_gke
from meshvm.ledger import Ledger
from meshvm.naming import SUITE
from meshvm.settings import BY_FIELD

log = logging.getLogger(__name__)
T = TypeVar("T")
FLAG = BY_FIELD["reuse"].label


def find(c: Clients, what: str, fn: Callable[..., T], deadline: Deadline, **kw: Any) -> T | None:
    """The resource, or None when it does not exist."""
    try:
        return c.call(what, fn, deadline, **kw)
    except errors.CloudError as e:
        if not_found(e):
            return None
        raise


def record(cfg: Config, ledger: Ledger, kind: str, name: str, where: str, labels: Mapping[str, str]) -> None:
    """Record the kept run's `kind` `name` as this run's, once its labels say it is the kept run's."""
    if labels.get("e2e-suite") != SUITE or labels.get("e2e-run") != cfg.run_id:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k.startswith("e2e-")) or "none"
        raise errors.CloudError("not-ours", f"{FLAG}: {kind} {name} exists but is not kept run {cfg.run_id}'s "
                                f"(its suite labels: {shown}); refusing to adopt it")
    expires = labels.get("e2e-expires", "")
    ledger.record(kind, name, where, adopted="true", **({"e2e-expires": expires} if expires else {}))
    log.warning("%s: adopted %s %s of kept run %s (e2e-expires=%s)", "--reuse", kind, name, cfg.run_id,
                expires or "?")


def extend_expiry(c: Clients, cfg: Config, kind: str, name: str, location: str, got: Any, deadline: Deadline) -> None:
    """The adopted resource's `e2e-expires` becomes this run's when that is later (never earlier), so
    the janitor does not sweep a run in progress: labels on a VM (setLabels) and a cluster
    (setResourceLabels), the labels in a firewall rule's description (patch). A network's and a
    subnetwork's description cannot change after creation (Compute API): the janitor takes a run's
    expiry as the latest of all its resources' (sweep.py)."""
    labels = dict(got.labels if kind == "instance" else got.resource_labels if kind == "cluster"
                  else meta.labels_of(got.description))
    new = cfg.labels["e2e-expires"]
    if labels.get("e2e-expires", "") >= new:
        return
    labels["e2e-expires"], what = new, f"{FLAG}: extending the expiry of {kind} {name} to {new}"
    if kind == "instance":
        op = c.call_retrying(what, c.instances.set_labels, deadline, project=c.project, zone=location, instance=name,
                             instances_set_labels_request_resource=compute_v1.InstancesSetLabelsRequest(
                                 label_fingerprint=got.label_fingerprint, labels=labels))
        wait_compute(c, op, what, deadline, zone=location)
    elif kind == "cluster":
        op = c.call_retrying(what, c.container.set_labels, deadline, request=container_v1.SetLabelsRequest(
            name=f"projects/{c.project}/locations/{location}/clusters/{name}", resource_labels=labels,
            label_fingerprint=got.label_fingerprint))
        wait_gke(c, location, op, what, deadline)
    else:
        op = c.call_retrying(what, c.firewalls.patch, deadline, project=c.project, firewall=name,
                             firewall_resource=compute_v1.Firewall(description=meta.relabelled(got.description, labels)))
        wait_compute(c, op, what, deadline)
    log.info("%s", what)
