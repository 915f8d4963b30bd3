"""`nox -s mutations`: a clean lab run, then one lab run per mutation (tests/mutations/mutants.py).

A mutation is caught when every stage passed and the FIRST failing test is in the exercise module
that should catch it, with a message; every run must also leave nothing behind (cleanup.json).
Prints one line per mutation and the figure "N/9 caught"; exits 1 unless the baseline passed and
every mutation was caught.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.mutations.mutants import MUTATIONS

ROOT = Path(__file__).resolve().parents[2]
EXERCISE_DEADLINE = "30"  # a broken step never heals: the exercises need not wait 300 s to say so
RUN_TIMEOUT_S = 900


def run(name: str | None, out: Path) -> tuple[int, Path]:
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pytest", "tests/e2e", "--platform", "lab", "--artifacts-dir", str(out),
            "--exercise-deadline", EXERCISE_DEADLINE, "-p", "tests.mutations.mutants", "-q", "-p", "no:cacheprovider"]
    if name:
        argv += ["--mutation", name, "--maxfail=1"]
    with (out / "pytest.out").open("w") as log:
        rc = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S,
                            check=False).returncode
    return rc, out


def outcomes(junit: Path) -> list[tuple[str, str, str]]:
    """(module, test name, failure message or '') in run order."""
    rows = []
    for case in ET.parse(junit).iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        module = case.get("classname", "").rsplit(".", 1)[-1]
        rows.append((module, case.get("name", ""), "" if bad is None else (bad.get("message") or bad.text or "")))
    return rows


def leftovers(out: Path) -> list:
    cleanup = json.loads((out / "cleanup.json").read_text())
    return list(cleanup.get("remaining") or []) + list(cleanup.get("leftovers") or [])


def main() -> int:
    base = ROOT / "artifacts" / "mutations" / time.strftime("%Y%m%d-%H%M%S")
    rc, out = run(None, base / "baseline")
    rows = outcomes(out / "junit.xml")
    failed = [r for r in rows if r[2]]
    baseline_ok = rc == 0 and not failed and not leftovers(out)
    print(f"baseline: {'green' if baseline_ok else 'RED'} ({len(rows)} tests, exit {rc})", flush=True)
    caught = 0
    for name, (expected, _) in MUTATIONS.items():
        start = time.monotonic()
        rc, out = run(name, base / name)
        rows = outcomes(out / "junit.xml") if (out / "junit.xml").is_file() else []
        first = next((r for r in rows if r[2]), None)
        stages_ok = all(not r[2] for r in rows if r[0] == "test_stages")
        left = leftovers(out) if (out / "cleanup.json").is_file() else ["no cleanup.json"]
        ok = rc != 0 and stages_ok and first is not None and first[0] == expected and not left
        caught += ok
        seen = f"{first[0]}::{first[1]}: {first[2].splitlines()[0][:400]}" if first else f"nothing failed (exit {rc})"
        print(f"{'caught' if ok else 'MISSED'} {name} ({time.monotonic() - start:.0f} s): expected {expected}; "
              f"first failure {seen}{'; LEFT: ' + str(left) if left else ''}", flush=True)
    print(f"{caught}/{len(MUTATIONS)} caught; baseline {'green' if baseline_ok else 'RED'}; reports in {base}")
    return 0 if baseline_ok and caught == len(MUTATIONS) else 1


if __name__ == "__main__":
    sys.exit(main())
