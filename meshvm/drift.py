"""Drift: the YAML the suite applies, object by object, against the samples of a release's archive.

The suite keeps its own copies of the recipe's samples (manifests/: BookInfo without ratings, the
east-west gateway, expose-istiod, the gateway of BookInfo, the curl client). A new release may change
the originals; this says how. A report, not a failure: a difference that breaks a step fails that
step, and the report beside it says what changed. Its source is the archive the run already fetched
for istioctl (`istio-<V>-linux-amd64.tar.gz`, checked against its .sha256): its `samples/` folder.

Each difference names the object (`Kind/name`), the field, the release's value and the suite's, and
why the suite differs when that is on purpose (WHY); one without a reason is news to read.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshvm import manifests, redact

SCRIPT_TIMEOUT_S = 30
ABSENT = "(absent)"


@dataclass(frozen=True)
class Sample:
    path: str  # under the archive's samples/
    suite: tuple[str, ...]  # the manifests the suite applies in its place
    args: tuple[str, ...] = ()  # a script: its output (run with these) is the sample


SAMPLES = (
    Sample("bookinfo/platform/kube/bookinfo.yaml",
           ("bookinfo-rest", "bookinfo-reviews", "bookinfo-ratings", "ratings-namespace")),
    Sample("bookinfo/networking/bookinfo-gateway.yaml", ("bookinfo-gateway",)),
    Sample("curl/curl.yaml", ("curl-client",)),
    Sample("multicluster/expose-istiod.yaml", ("expose-istiod",)),
    Sample("multicluster/gen-eastwest-gateway.sh", ("eastwest-gateway",), ("--single-cluster",)),
)
PATHS = tuple(s.path for s in SAMPLES)
# What the suite changes on purpose: (object, field prefix) -> why.
WHY = {
    ("Deployment/ratings-v1", ""): "ratings runs on the VM (the recipe deploys BookInfo without it)",
    ("Service/ratings", "metadata.namespace"): "the recipe's Service for ratings lives in `ratings`, in front of the VM",
    ("ServiceAccount/bookinfo-ratings", ""): "the VM's identity, in `ratings` (the WorkloadGroup's service account)",
    ("Namespace/ratings", ""): "the VM's namespace (the recipe)",
    ("Deployment/productpage-v1", "spec.template.metadata.annotations"): "no Prometheus in the recipe",
    ("Service/curl", ""): "the client only calls: nothing calls it",
    ("Deployment/curl", "spec.template.spec.volumes"): "the client sends no TLS client certificate",
    ("Deployment/curl", "spec.template.spec.containers[curl].volumeMounts"): "the client sends no TLS client certificate",
    ("Deployment/reviews-v2", "spec.template.spec.containers[reviews].env[SERVICES_DOMAIN]"):
        "the recipe: reviews call ratings.ratings, the Service in front of the VM",
    ("Deployment/reviews-v3", "spec.template.spec.containers[reviews].env[SERVICES_DOMAIN]"):
        "the recipe: reviews call ratings.ratings, the Service in front of the VM",
}
HUB_WHY = "the suite pins the image hub (--bookinfo-image-prefix): the samples' registry.istio.io goes away " \
          "with Google's hosting (docs/facts.md section 6)"
_IMAGE = re.compile(r"^(?P<hub>.+)/(?P<repo>[^/:]+):(?P<tag>[^/]+)$")


def report(samples: Path, version: str, values: dict[str, str]) -> dict[str, Any]:
    """Every sample of SAMPLES in `samples` (the archive's folder) against the suite's rendering."""
    out = [_compare(samples, s, values) for s in SAMPLES]
    news = sum(1 for s in out for d in s["differences"] if not d["why"])
    return {"release": version, "source": f"istio-{version}-linux-amd64.tar.gz samples/", "samples": out,
            "unexplained": news, "summary": summary_line(version, out, news)}


def summary_line(version: str, samples: list[dict[str, Any]], news: int) -> str:
    total = sum(len(s["differences"]) for s in samples)
    missing = [s["sample"] for s in samples if s.get("error")]
    text = f"drift against Istio {version}'s samples: {total} differences, {news} without a known reason"
    return text + (f"; not compared: {', '.join(missing)}" if missing else "")


def _compare(samples: Path, sample: Sample, values: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"sample": sample.path, "suite": [f"manifests/{m}.yaml" for m in sample.suite],
                             "differences": [], "error": None}
    try:
        release = _objects(_read(samples / sample.path, sample.args))
        suite = _objects([d for m in sample.suite for d in manifests.docs(m, **values)])
    except (OSError, ValueError, yaml.YAMLError, subprocess.SubprocessError) as e:
        entry["error"] = f"{type(e).__name__}: {e}"
        return entry
    entry["differences"] = differences(release, suite)
    return entry


def _read(path: Path, args: Sequence[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"not in the release's samples/ (renamed or removed?): {path.name}")
    if not args:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]
    p = subprocess.run(["bash", str(path), *args], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S,
                       env={"PATH": "/usr/bin:/bin"}, check=False)
    if p.returncode:
        raise ValueError(f"{path.name} {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[:200]}")
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def _objects(docs: list[Any]) -> dict[str, dict[str, Any]]:
    """Kind/name -> object (a document that is no object is left out)."""
    return {f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}": d for d in docs if isinstance(d, dict)}


def differences(release: dict[str, dict[str, Any]], suite: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in sorted(set(release) | set(suite)):
        if name not in suite or name not in release:
            side = "release" if name in release else "suite"
            out.append(_entry(name, "", "present" if side == "release" else ABSENT,
                              "present" if side == "suite" else ABSENT))
            continue
        found: list[tuple[str, Any, Any]] = []
        _walk("", release[name], suite[name], found.append)
        out.extend(_entry(name, field, r, s) for field, r, s in found)
    return out


def _walk(path: str, release: Any, suite: Any, found: Callable[[tuple[str, Any, Any]], None]) -> None:
    if isinstance(release, dict) and isinstance(suite, dict):
        for k in sorted(set(release) | set(suite), key=str):
            _walk(f"{path}.{k}" if path else str(k), release.get(k, ABSENT), suite.get(k, ABSENT), found)
    elif isinstance(release, list) and isinstance(suite, list) and _named(release) and _named(suite):
        r, s = {i["name"]: i for i in release}, {i["name"]: i for i in suite}
        for k in sorted(set(r) | set(s)):
            _walk(f"{path}[{k}]", r.get(k, ABSENT), s.get(k, ABSENT), found)
    elif isinstance(release, list) and isinstance(suite, list) and len(release) == len(suite):
        for i, (a, b) in enumerate(zip(release, suite, strict=True)):
            _walk(f"{path}[{i}]", a, b, found)
    elif release != suite:
        found((path, release, suite))


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _entry(name: str, field: str, release: Any, suite: Any) -> dict[str, Any]:
    return {"object": name, "field": field, "release": _short(release), "suite": _short(suite),
            "why": _why(name, field, release, suite)}


def _why(name: str, field: str, release: Any, suite: Any) -> str:
    if field == "metadata.namespace" and release == ABSENT:
        return "the suite names the namespace it applies to"
    for (obj, prefix), why in WHY.items():
        if obj == name and field.startswith(prefix):
            return why
    if field.endswith(".imagePullPolicy") and release == "IfNotPresent" and suite == ABSENT:
        return "Kubernetes' default for an image with a tag"
    if field.endswith(".image") and isinstance(release, str) and isinstance(suite, str):
        a, b = _IMAGE.match(release), _IMAGE.match(suite)
        if a and b and a["hub"] != b["hub"] and (a["repo"], a["tag"]) == (b["repo"], b["tag"]):
            return HUB_WHY
    return ""


def _short(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def write(data: dict[str, Any], folder: Path) -> Path:
    path = folder / "drift.json"
    path.write_text(redact.scrub(json.dumps(data, indent=2)) + "\n")
    return path
