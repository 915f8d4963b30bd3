"""The drift report: the suite's manifests against a release's samples, object by object and field by field.

The release's samples here are the suite's own rendering with one change each, so every difference
the report lists is one the test made (and one it did not make would fail it).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from meshvm import drift, manifests

VALUES = {"IMAGE_PREFIX": "docker.io/istio/examples-bookinfo", "IMAGE_TAG": "1.20.3"}


def suite_docs(sample: drift.Sample) -> list[dict[str, Any]]:
    return [d for m in sample.suite for d in manifests.docs(m, **VALUES)]


def release_like_the_suite(folder: Path) -> Path:
    """A samples/ folder holding exactly what the suite applies (the script prints its YAML)."""
    for s in drift.SAMPLES:
        path = folder / s.path
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump_all(suite_docs(s))
        path.write_text(f"#!/bin/bash\ncat <<'EOF'\n{text}EOF\n" if s.args else text)
    return folder


def sample(name: str) -> drift.Sample:
    return next(s for s in drift.SAMPLES if s.path == name)


def rewrite(folder: Path, name: str, change) -> None:
    docs = copy.deepcopy(suite_docs(sample(name)))
    change(docs)
    (folder / name).write_text(yaml.safe_dump_all(docs))


def container(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    d = next(x for x in docs if x["kind"] == "Deployment" and x["metadata"]["name"] == deployment)
    return d["spec"]["template"]["spec"]["containers"][0]


def test_the_suites_own_manifests_have_no_drift(tmp_path):
    report = drift.report(release_like_the_suite(tmp_path), "1.31.1", VALUES)
    assert [s["sample"] for s in report["samples"]] == list(drift.PATHS)
    assert all(s["error"] is None and s["differences"] == [] for s in report["samples"])
    assert report["unexplained"] == 0
    assert report["summary"] == "drift against Istio 1.31.1's samples: 0 differences, 0 without a known reason"


def test_a_changed_field_and_a_new_object_are_news_and_a_pinned_hub_is_explained(tmp_path):
    folder = release_like_the_suite(tmp_path)
    book = "bookinfo/platform/kube/bookinfo.yaml"

    def change(docs):
        container(docs, "details-v1")["image"] = "docker.io/istio/examples-bookinfo-details-v1:1.20.4"
        container(docs, "productpage-v1")["image"] = "registry.istio.io/release/examples-bookinfo-productpage-v1:1.20.3"
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new-in-release"}})
    rewrite(folder, book, change)
    report = drift.report(folder, "1.31.1", VALUES)
    found = {(d["object"], d["field"]): d for s in report["samples"] for d in s["differences"]}
    field = "spec.template.spec.containers[{}].image"
    assert set(found) == {("Deployment/details-v1", field.format("details")), ("ConfigMap/new-in-release", ""),
                          ("Deployment/productpage-v1", field.format("productpage"))}
    tag = found[("Deployment/details-v1", field.format("details"))]
    assert (tag["release"], tag["suite"], tag["why"]) == (
        "docker.io/istio/examples-bookinfo-details-v1:1.20.4", "docker.io/istio/examples-bookinfo-details-v1:1.20.3", "")
    assert found[("ConfigMap/new-in-release", "")]["suite"] == drift.ABSENT
    assert found[("Deployment/productpage-v1", field.format("productpage"))]["why"] == drift.HUB_WHY
    assert report["unexplained"] == 2


def test_the_recipes_own_changes_carry_their_reason(tmp_path):
    folder = release_like_the_suite(tmp_path)

    def as_istio_ships_it(docs):  # ratings in default, reviews without SERVICES_DOMAIN
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ratings-v1"}})
        container(docs, "reviews-v2")["env"] = [e for e in container(docs, "reviews-v2")["env"]
                                                if e["name"] != "SERVICES_DOMAIN"]
    rewrite(folder, "bookinfo/platform/kube/bookinfo.yaml", as_istio_ships_it)
    report = drift.report(folder, "1.31.1", VALUES)
    diffs = [d for s in report["samples"] for d in s["differences"]]
    assert len(diffs) == 2 and all(d["why"] for d in diffs) and report["unexplained"] == 0


def test_a_missing_sample_or_a_failing_script_is_reported_and_the_rest_still_compared(tmp_path):
    folder = release_like_the_suite(tmp_path)
    (folder / "curl/curl.yaml").unlink()
    (folder / "multicluster/gen-eastwest-gateway.sh").write_text("echo 'Error: Unsupported flag' >&2; exit 1\n")
    report = drift.report(folder, "1.31.1", VALUES)
    errors = {s["sample"]: s["error"] for s in report["samples"] if s["error"]}
    assert set(errors) == {"curl/curl.yaml", "multicluster/gen-eastwest-gateway.sh"}
    assert "not in the release's samples/" in errors["curl/curl.yaml"]
    assert "exited 1: Error: Unsupported flag" in errors["multicluster/gen-eastwest-gateway.sh"]
    assert report["summary"].endswith("not compared: curl/curl.yaml, multicluster/gen-eastwest-gateway.sh")
    written = json.loads(drift.write(report, tmp_path).read_text())
    assert {s["sample"]: s["error"] for s in written["samples"] if s["error"]} == errors
    assert written["summary"] == report["summary"]


def test_the_east_west_script_is_run_with_the_recipes_flag(tmp_path):
    folder = release_like_the_suite(tmp_path)
    script = folder / "multicluster/gen-eastwest-gateway.sh"
    script.write_text('[ "$1" = --single-cluster ] || exit 3\n' + script.read_text().split("\n", 1)[1])
    report = drift.report(folder, "1.31.1", VALUES)
    assert report["samples"][-1] == {"sample": "multicluster/gen-eastwest-gateway.sh", "error": None,
                                     "suite": ["manifests/eastwest-gateway.yaml"], "differences": []}


def test_an_upgrade_run_writes_the_report_of_its_target_or_says_why_there_is_none(tmp_path):
    from types import SimpleNamespace

    from fixtures.upgrade import drift_of

    cfg = SimpleNamespace(artifacts_dir=tmp_path, bookinfo_image_prefix=VALUES["IMAGE_PREFIX"],
                          bookinfo_image_tag=VALUES["IMAGE_TAG"])
    samples = release_like_the_suite(tmp_path / "samples")
    gcp = SimpleNamespace(cfg=cfg, platform=SimpleNamespace(name="gcp", release_samples=lambda v: samples))
    assert drift_of(gcp, "1.31.1") == {"release": "1.31.1", "unexplained": 0, "report": "drift.json", "summary":
                                       "drift against Istio 1.31.1's samples: 0 differences, 0 without a known reason"}
    assert json.loads((tmp_path / "drift.json").read_text())["release"] == "1.31.1"
    lab = SimpleNamespace(cfg=cfg, platform=SimpleNamespace(name="lab", release_samples=lambda v: None))
    assert drift_of(lab, "1.31.1")["summary"] == "no drift report: the lab platform has no release archive"
