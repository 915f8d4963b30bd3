"""The whole conformance run on the lab (`nox -s e2e -- --platform lab`): green, reports written,
nothing left; and, as a benchmark, its wall time and each stage's share of it.

Target: the whole lab run under 3 minutes on this machine (2 cores); measured, not asserted. With
`--lab-timing gcp` the run answers with Google Cloud's latencies (x 0.1), once with the stages
overlapped and once sequential: phases.json's wall / critical path of each is what the overlap saves.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.lab.test_e2e_infra import no_lab_leftovers, suite

pytestmark = pytest.mark.lab
EXERCISE_MODULES = ["test_vm_registration", "test_vm_to_mesh", "test_pod_to_vm", "test_productpage_ratings"]


RUNS = [  # (minor, its newest patch, --lab-timing, the stages one after another)
    ("1.31", "1.31.1", "gcp", False),  # GCP's latencies (x 0.1): what the stage graph's overlap saves...
    ("1.31", "1.31.1", "gcp", True),  # ...against the same run sequential (figures: wall / critical path)
    ("1.30", "1.30.5", "fast", False),
]


@pytest.mark.parametrize(("minor", "patch", "timing", "sequential"), RUNS,
                         ids=[f"{m}-{t}{'-sequential' if s else ''}" for m, _, t, s in RUNS])
def test_lab_run_is_green_and_leaves_nothing(benchmark, tmp_path: Path, minor: str, patch: str, timing: str,  # type: ignore[no-untyped-def]
                                             sequential: bool) -> None:
    """On 1.31 and 1.30 alike; the minor is resolved to its newest patch from the (lab's) release
    listing. The stages overlap where the recipe allows (the cluster and the VM at least), or with
    --sequential-stages never."""
    out = tmp_path / "out"
    runs = []

    def whole_run() -> None:
        start = time.monotonic()
        # junit times of the calls only: the session's teardown would count in the last test
        runs.append(suite("--platform", "lab", "--artifacts-dir", str(out), "--istio-version", minor,
                          "--lab-timing", timing, *(["--sequential-stages"] if sequential else []),
                          "-o", "junit_duration_report=call"))
        runs[-1].wall = time.monotonic() - start  # type: ignore[attr-defined]

    benchmark.pedantic(whole_run, rounds=1, iterations=1)
    r = runs[0]
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    cases = list(ET.parse(out / "junit.xml").iter("testcase"))
    modules = [c.get("classname", "").rsplit(".", 1)[-1] for c in cases]
    assert [m for m in dict.fromkeys(modules) if m.startswith("test_") and m != "test_stages"] == EXERCISE_MODULES
    assert not [c for c in cases if c.find("failure") is not None or c.find("error") is not None
                or c.find("skipped") is not None]
    cleanup = json.loads((out / "cleanup.json").read_text())
    assert cleanup["remaining"] == [] and cleanup["leftovers"] == []
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["istiod"] == metadata["vm_proxy"] == patch and metadata["istio_hub"] == "docker.io/istio"
    no_lab_leftovers(out)

    book = json.loads((out / "phases.json").read_text())
    phases = [p for p in book["phases"] if p["kind"] == "stage"]
    wall = r.wall  # type: ignore[attr-defined]
    shares = {p["name"]: round(100 * float(p.get("duration_s") or 0) / wall, 1) for p in phases}
    for module in EXERCISE_MODULES:  # each exercise module's checks, from junit
        spent = sum(float(c.get("time") or 0) for c, m in zip(cases, modules, strict=True) if m == module)
        shares[module] = round(100 * spent / wall, 1)
    shares["rest (lab start, fixtures, teardown)"] = round(100 - sum(shares.values()), 1)
    figures = book["figures"]  # from the first stage's start to the last exercise's end, as every run records
    assert figures["wall_over_critical_path"] >= 1.0 and (out / "timeline.png").stat().st_size > 1000
    spans = {p["name"]: (p["start_s"], p["end_s"]) for p in phases}
    overlapping = [(a, b) for a in spans for b in spans if a < b and max(spans[a][0], spans[b][0]) <
                   min(spans[a][1], spans[b][1])]
    assert (overlapping == []) if sequential else (("cluster", "vm") in overlapping), overlapping
    benchmark.extra_info.update({"wall_s": round(wall, 1), "share_percent": shares, "figures": figures,
                                 "lab_timing": timing, "sequential": sequential})
    print(f"\nlab run: {wall:.1f} s wall; shares (%): {shares}")
