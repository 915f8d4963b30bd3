"""The cluster's side of a failure dump, beside the cluster-side steps (workload.py, eastwest.py):
WorkloadEntries and WorkloadGroups as YAML, pods and events, the control plane's pods, and
`istioctl proxy-status`. Every collector returns text; meshvm.diagnostics writes it, capped and
redacted, and turns an error into a line."""

from __future__ import annotations

from collections.abc import Callable

import yaml

from meshvm import revisions
from meshvm.recipe.eastwest import SERVICE as EASTWEST
from meshvm.seams import Istioctl, Kube

NET = "networking.istio.io/v1"
LOG_LINES = 500


def _yaml(objects: list[dict]) -> str:
    for o in objects:
        (o.get("metadata") or {}).pop("managedFields", None)
    return yaml.safe_dump_all(objects, sort_keys=False) if objects else "# none\n"


def _pods_of(kube: Kube, namespace: str, selector: str) -> Callable[[], str]:
    def run() -> str:
        pods = kube.list("v1", "Pod", namespace, label_selector=selector)
        lines = [f"# pods in {namespace} with {selector}:"]
        for p in pods:
            status = p.get("status") or {}
            lines.append(f"#   {p['metadata']['name']}: {status.get('phase')} "
                         f"{[c.get('restartCount') for c in status.get('containerStatuses') or []]}")
        for p in pods:
            name = p["metadata"]["name"]
            try:
                text = kube.logs(namespace, name, tail_lines=LOG_LINES)
            except Exception as e:  # one pod's missing log does not hide the others'
                text = f"(no log: {type(e).__name__}: {str(e)[:300]})\n"
            lines.append(f"\n# --- {namespace}/{name}: last {LOG_LINES} log lines ---\n{text.rstrip()}")
        return "\n".join(lines) + "\n"
    return run


def cluster_dump(kube: Kube) -> dict[str, Callable[[], str]]:
    """What the cluster shows of the mesh: every namespace's WorkloadEntries, WorkloadGroups, pods,
    Deployments (images, env), Gateways, VirtualServices and events; istiod's and the east-west gateway's pods with their logs' last lines."""
    return {
        "workloadentries.yaml": lambda: _yaml(kube.list(NET, "WorkloadEntry")),
        "workloadgroups.yaml": lambda: _yaml(kube.list(NET, "WorkloadGroup")),
        "pods.yaml": lambda: _yaml(kube.list("v1", "Pod")),
        "deployments.yaml": lambda: _yaml(kube.list("apps/v1", "Deployment")),
        "gateways.yaml": lambda: _yaml(kube.list(NET, "Gateway")),
        "virtualservices.yaml": lambda: _yaml(kube.list(NET, "VirtualService")),
        "events.yaml": lambda: _yaml(kube.list("v1", "Event")),
        "istiod-logs.txt": _pods_of(kube, "istio-system", "app=istiod"),
        "eastwest-logs.txt": _pods_of(kube, "istio-system", f"istio={EASTWEST.removeprefix('istio-')}"),
    }


def proxy_status(istioctl: Istioctl, kube: Kube) -> dict[str, Callable[[], str]]:
    """`istioctl proxy-status` of each control plane that runs, by its revision (without `--revision` istioctl
    asks revision `default` only: none once a canary upgrade removed it, `istioctl/pkg/cli/context.go`
    RevisionOrDefault at 1.30.3); a failure is recorded, not raised."""
    def revisions_running() -> list[str]:
        try:
            found = kube.list("apps/v1", "Deployment", "istio-system", label_selector="app=istiod")
        except Exception:  # noqa: BLE001  (the dump goes on: istioctl's own default then)
            return [""]
        return sorted({(d["metadata"].get("labels") or {}).get(revisions.LABEL, "") for d in found}) or [""]

    def run() -> str:
        out = []
        for rev in revisions_running():
            args = ["proxy-status", *(["--revision", rev] if rev else [])]
            r = istioctl.run(args, step="diagnostics: proxy-status", timeout=30, check=False)
            status = "" if r.ok else f"\n[istioctl {' '.join(args)} exited {r.rc}] {r.stderr.strip()[-2000:]}\n"
            out.append(f"$ istioctl {' '.join(args)}\n{r.stdout}{status}")
        return "\n".join(out)
    return {"proxy-status.txt": run}
