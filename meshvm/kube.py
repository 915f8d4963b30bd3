"""The Kube seam on the official kubernetes client (the real target: GKE; the lab: its API stand-in).

A Configuration we own (host, CA file, a bearer token refreshed before expiry and once more on a
401), server-side apply through the dynamic client and discovery (field manager `meshvm`, strict
field validation, conflicts surfaced, never forced), watches that survive 410 Expired by relisting,
and exec over the websocket streaming protocol. Every request carries a timeout.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.kube_auth import TokenProvider, TokenSource, configuration, write_kubeconfig
from meshvm.kube_errors import ApplyConflict, KubeError, TransientKubeError, message_of, refused
from meshvm.kube_exec import ExecLines, run_exec
from meshvm.kube_watch import watch_events
from meshvm.seams import Result

log = logging.getLogger(__name__)
T = TypeVar("T")
FIELD_MANAGER = "meshvm"


class _TimedApiClient(client.ApiClient):
    """Every request gets a timeout, including the dynamic client's discovery calls that set none."""

    def __init__(self, cfg: client.Configuration, timeout: float):
        super().__init__(cfg)
        self.default_timeout = timeout

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["_request_timeout"] = kwargs.get("_request_timeout") or self.default_timeout
        return super().call_api(*args, **kwargs)


class KubeClient:
    """meshvm.seams.Kube on the kubernetes client. `ca_file` is a PEM file; `token` gives fresh tokens."""

    def __init__(self, host: str, ca_file: Path, token: TokenProvider, *, call_timeout: float = 30.0,
                 refresh_margin_s: float = 300.0, cache_dir: Path | None = None):
        self.host, self.ca_file, self.call_timeout = host.rstrip("/"), ca_file, call_timeout
        self._tokens = TokenSource(token, refresh_margin_s)
        self._cfg = configuration(self.host, ca_file, self._tokens)
        self._api = _TimedApiClient(self._cfg, call_timeout)
        # Discovery cache: not ~/.kube, not shared; a run passes a folder of its own that teardown removes.
        self._cache_dir = cache_dir or Path(tempfile.mkdtemp(prefix="meshvm-discovery-"))
        if cache_dir is None:  # a folder of its own: gone with the client, closed or not
            weakref.finalize(self, shutil.rmtree, self._cache_dir, True)
        self._dyn: DynamicClient | None = None

    def close(self) -> None:
        self._api.close()
        shutil.rmtree(self._cache_dir, ignore_errors=True)

    # ---- plumbing
    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One request; a 401 (token expired early or revoked) gets a fresh token and one more try."""
        try:
            try:
                return fn(*args, **kwargs)
            except ApiException as e:
                if e.status != 401 and not (e.status == 0 and "401" in str(e.reason)):
                    raise
                log.info("Kubernetes API said 401: refreshing the token and retrying once")
                self._cfg.api_key["BearerToken"] = self._tokens.current(force=True)
                return fn(*args, **kwargs)
        except urllib3.exceptions.HTTPError as e:  # connection refused/reset, timed out
            raise TransientKubeError(f"Kubernetes API at {self.host} unreachable: {e}") from None

    @property
    def dyn(self) -> DynamicClient:
        if self._dyn is None:
            self._dyn = self.call(DynamicClient, self._api, cache_file=str(self._cache_dir / "discovery.json"))
        return self._dyn

    def resource(self, api_version: str, kind: str) -> Any:
        try:
            return self.dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:  # a CRD installed after our discovery (Istio's): look again
            self.call(self.dyn.resources.invalidate_cache)
            try:
                return self.dyn.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise KubeError(f"the cluster serves no {kind} in {api_version}") from None

    # ---- the seam
    def apply(self, manifest: str, *, namespace: str | None = None) -> list[dict]:
        docs = [d for d in yaml.safe_load_all(manifest) if d]
        return [self.apply_object(d, namespace=namespace) for d in docs]

    def apply_object(self, doc: dict, *, namespace: str | None = None) -> dict:
        res = self.resource(doc["apiVersion"], doc["kind"])
        name = doc.get("metadata", {}).get("name", "?")
        ns = (doc.get("metadata", {}).get("namespace") or namespace) if res.namespaced else None
        what = f"{doc['kind']} {ns + '/' if ns else ''}{name}"
        try:
            obj = self.call(self.dyn.server_side_apply, res, body=doc, namespace=ns, field_manager=FIELD_MANAGER,
                            query_params=[("fieldValidation", "Strict")], _request_timeout=self.call_timeout)
        except ApiException as e:
            if e.status == 409:
                fields = [c.get("field", "?") for c in (json.loads(e.body or "{}").get("details") or {}).get("causes", [])]
                raise ApplyConflict(what, fields, message_of(e)) from None
            raise refused(f"apply {what}", e) from None
        log.info("applied %s", what)
        return obj.to_dict()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        res = self.resource(api_version, kind)
        try:
            return self.call(self.dyn.get, res, name=name, namespace=namespace,
                             _request_timeout=self.call_timeout).to_dict()
        except ApiException as e:
            if e.status == 404:
                return None
            raise refused(f"get {kind} {name}", e) from None

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict]:
        res = self.resource(api_version, kind)
        try:
            data = self.call(self.dyn.get, res, namespace=namespace, label_selector=label_selector,
                             _request_timeout=self.call_timeout).to_dict()
        except ApiException as e:
            raise refused(f"list {kind}", e) from None
        return [{"apiVersion": api_version, "kind": kind, **item} for item in data.get("items") or []]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               deadline: Deadline | None = None) -> None:
        res = self.resource(api_version, kind)
        try:
            self.call(self.dyn.delete, res, name=name, namespace=namespace,
                      body={"propagationPolicy": "Background"}, _request_timeout=self.call_timeout)
        except ApiException as e:
            if e.status != 404:
                raise refused(f"delete {kind} {name}", e) from None
        if deadline is not None:
            where = f"{namespace}/{name}" if namespace else name
            retry.until(f"{kind} {where} deleted (finalizers included)",
                        lambda: self.get(api_version, kind, name, namespace) is None, deadline,
                        transient=(TransientKubeError,))

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: dict) -> dict:
        res = self.resource(api_version, kind)
        try:
            obj = self.call(self.dyn.patch, res, body=body, name=name, namespace=namespace,
                            content_type="application/merge-patch+json", _request_timeout=self.call_timeout)
        except ApiException as e:
            raise refused(f"patch {kind} {name}", e) from None
        log.info("patched %s %s%s", kind, f"{namespace}/" if namespace else "", name)
        return obj.to_dict()

    def watch(self, api_version: str, kind: str, namespace: str | None, *,
              deadline: Deadline) -> Iterator[tuple[str, dict]]:
        return watch_events(self, self.resource(api_version, kind), api_version, kind, namespace, deadline)

    def exec(self, namespace: str, pod: str, command: Sequence[str], *, container: str | None = None,
             timeout: float = 60) -> Result:
        api = client.ApiClient(self._cfg)  # its own: stream() swaps the transport of the client it uses
        try:
            return self.call(run_exec, api, namespace, pod, command, container, timeout)
        finally:
            api.close()

    def exec_lines(self, namespace: str, pod: str, command: Sequence[str], *, container: str | None = None,
                   deadline: Deadline) -> ExecLines:
        api = client.ApiClient(self._cfg)  # its own, closed with the lines (see exec)
        try:
            return self.call(ExecLines, api, namespace, pod, command, container, deadline)
        except BaseException:
            api.close()
            raise

    def server_version(self) -> str:
        """The API server's gitVersion (e.g. v1.33.2-gke.100)."""
        return str(self.call(client.VersionApi(self._api).get_code, _request_timeout=self.call_timeout).git_version)

    def logs(self, namespace: str, pod: str, *, container: str | None = None, tail_lines: int = 500,
             timeout: float = 30) -> str:
        core = client.CoreV1Api(self._api)
        return str(self.call(core.read_namespaced_pod_log, pod, namespace, tail_lines=tail_lines,
                             _request_timeout=timeout, **({"container": container} if container else {})))

    # ---- more than the seam: namespaces, service accounts, waits, kubeconfig
    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict:
        meta: dict = {"name": name, **({"labels": labels} if labels else {})}
        return self.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})

    def ensure_service_account(self, namespace: str, name: str) -> dict:
        return self.apply_object({"apiVersion": "v1", "kind": "ServiceAccount",
                                  "metadata": {"name": name, "namespace": namespace}})

    def write_kubeconfig(self, directory: Path, credential: Sequence[str] = ()) -> Path:
        """A 0600 kubeconfig for istioctl/kubectl: with `credential`, an exec credential plugin that gives
        them a fresh token whenever theirs expires; else a token fresh for at least the refresh margin."""
        return write_kubeconfig(directory, self.host, self.ca_file, "" if credential else self._tokens.current(),
                                credential=credential)


__all__ = ["ApplyConflict", "KubeClient", "KubeError", "TransientKubeError"]
