"""A Kubernetes API STAND-IN for the lab and the self-tests (not a Kubernetes API server).

It models only what the suite depends on (discovery, CRUD, watch with resourceVersion expiry,
server-side apply with field ownership, finalizers, ownerReference cascade, namespaces, structural
schemas of the Istio kinds the recipe applies, bearer tokens that expire, and pod exec over the
websocket streaming protocol). It runs no controllers: pod and Service status are set by its
owner through the /status subresource. In-process: a ThreadingHTTPServer on a daemon thread.
"""

from meshvm.lab.kubeapi.server import ExecBackend, KubeApiStandIn, local_exec

__all__ = ["ExecBackend", "KubeApiStandIn", "local_exec"]
