"""`nox -s mutations`: a clean lab run and one lab run per mutation (tests/mutations/mutants.py), JOBS at a time.

The baseline is green when pytest exits 0 and each of the four exercise modules has tests that all
passed (a skip is not green). A mutation is caught when pytest exits 1, the FIRST failure is a failed
check (not an error) of exactly the test that should catch it, every stage before it passed (for an
exercise: every stage), and the mutation's regex matches that failure's message or its diagnostics
(it is caught for its own reason). Every run must also leave nothing behind (cleanup.json and the
lab's own leftovers). Prints one line per mutation and the figure "N/M caught"; exits 1 unless the
baseline passed and every mutation was caught.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from meshvm.lab.leaks import find_leftovers
from meshvm.lab.netsafety import TAG_PATTERN
from tests.mutations.mutants import EXERCISE_MODULES, MUTATIONS, UPGRADE_FROM, UPGRADE_TO

ROOT = Path(__file__).resolve().parents[2]
EXERCISE_DEADLINE = "15"  # a broken step never heals: the exercises need not wait 300 s to say so (the lab's
                          # policies and endpoints reach its Envoys within 2 s)
RUN_TIMEOUT_S = 900
TEARDOWN_GRACE_S = 300
JANITOR_TIMEOUT_S = 300
# Lab runs at once (MESHVM_MUTATION_JOBS): each mostly waits on its lab; five fit a 2-core machine (26 runs in
# 574 s, all judged as with four, which took 671 s for 27).
JOBS = max(1, int(os.environ.get("MESHVM_MUTATION_JOBS", "5")))


CANARY_BASELINE = "baseline-canary"  # the canary upgrade's clean run (its mutations' baseline)


def canary(name: str | None) -> bool:
    return name == CANARY_BASELINE or (name or "").startswith("canary-")


def tests_of(name: str | None) -> list[str]:
    """The baseline runs every exercise, then the upgrade's phases in place (after a run of every exercise,
    where `nox -s upgrade` runs the recipe's four: a longer run before the same phases, one lab run less);
    the canary baseline, the stages and the canary's phases; a mutation's run, the stages and only the
    module that must catch it (each exercise runs on its own, as a user may run one; the upgrade's phases
    start the VM's agent themselves): a mistake of a late step is not waited for through the exercises
    before it."""
    if not name:
        return ["tests/e2e", "tests/upgrade"]
    if name == CANARY_BASELINE:
        return ["tests/e2e/test_stages.py", "tests/upgrade"]
    module = MUTATIONS[name][0][0]
    folder = "upgrade" if module == "test_upgrade" else "e2e"
    return list(dict.fromkeys(["tests/e2e/test_stages.py", f"tests/{folder}/{module}.py"]))


def upgrade_args(name: str | None) -> list[str]:
    upgrade = name is None or canary(name) or MUTATIONS[name][0][0] == "test_upgrade"
    return [*(["--from", UPGRADE_FROM, "--to", UPGRADE_TO] if upgrade else []),
            *(["--strategy", "canary"] if canary(name) else [])]


def run(name: str | None, out: Path) -> tuple[int, str]:
    """One lab run; a run past its timeout is interrupted (teardown runs), then swept by the janitor."""
    out.mkdir(parents=True, exist_ok=True)
    run_id = f"mut-{secrets.token_hex(3)}"
    argv = [sys.executable, "-m", "pytest", *tests_of(name), "--platform", "lab", "--artifacts-dir", str(out),
            "--run-id", run_id, "--exercise-deadline", EXERCISE_DEADLINE, "-p", "tests.mutations.mutants",
            "-q", "-p", "no:cacheprovider", *upgrade_args(name)]
    if name and name != CANARY_BASELINE:
        argv += ["--mutation", name, "--maxfail=1"]
    with (out / "pytest.out").open("w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            return proc.wait(RUN_TIMEOUT_S), run_id
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(TEARDOWN_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
            subprocess.run([sys.executable, "-m", "meshvm.janitor", "--run-id", run_id, "--yes"], cwd=ROOT,
                           stdout=log, stderr=subprocess.STDOUT, timeout=JANITOR_TIMEOUT_S, check=False)
            return -1, run_id


def outcomes(junit: Path) -> list[tuple[str, str, str, str]]:
    """(module, test name, 'failure' | 'error' | 'skipped' | '', message) in run order."""
    rows = []
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        kind, bad = next(((k, b) for k in ("failure", "error", "skipped") if (b := case.find(k)) is not None),
                         ("", None))
        rows.append((module, case.get("name", ""), kind,  # the message, then the whole report (all its lines)
                     "" if bad is None else "\n".join(filter(None, (bad.get("message"), bad.text)))))
    return rows


def leftovers(out: Path) -> list[str]:
    if not (out / "cleanup.json").is_file():
        return ["no cleanup.json"]
    cleanup = json.loads((out / "cleanup.json").read_text())
    left = [str(x) for x in (cleanup.get("remaining") or []) + (cleanup.get("leftovers") or [])]
    log = (out / "run.log").read_text(errors="replace") if (out / "run.log").is_file() else ""
    tags = set(re.findall(rf"lab router ({TAG_PATTERN})-rt up", log))
    if not tags:
        left.append("run.log names no lab router: its leftovers cannot be checked")
    for tag in tags:
        left += find_leftovers(tag)
    return left


def effect_seen(out: Path, effect: tuple[str, str, bool]) -> tuple[bool, str]:
    """(whether the run's own artifact shows the mutation took effect, that artifact's name)."""
    glob, regex, present = effect
    files = sorted(p for p in out.glob(glob) if p.is_file())
    if not files:
        return False, f"{glob} (missing)"
    hit = next((p for p in files if re.search(regex, p.read_text(errors="replace"))), None)
    shown = str((hit or files[0]).relative_to(out))
    return (hit is not None) == present, f"{shown} {'shows' if present else 'lacks'} /{regex}/"


def evidence(out: Path, message: str) -> str:
    """The failure message and the diagnostics (under --maxfail=1, the failed test's only)."""
    files = sorted((out / "diagnostics").glob("*/*"))
    return "\n".join([message, *(f.read_text(errors="replace") for f in files if f.is_file())])


def judge_baseline(out: Path, rc: int, name: str = "baseline") -> tuple[bool, str]:
    """Green: every exercise module (the canary baseline: none) and every phase of the upgrade passed (a
    skip is not green), the upgrade's reports written, nothing left."""
    rows = outcomes(out / "junit.xml") if (out / "junit.xml").is_file() else []
    left = leftovers(out)
    modules = {"test_upgrade", *(() if name == CANARY_BASELINE else EXERCISE_MODULES)}
    green = {m for m in modules if [r for r in rows if r[0] == m] and all(not r[2] for r in rows if r[0] == m)}
    reports = [f for f in ("upgrade.json", "traffic.png") if not (out / f).is_file()]
    ok = rc == 0 and green == modules and not [r for r in rows if r[2]] and not reports and not left
    what = "the canary upgrade's phases" if name == CANARY_BASELINE else "every exercise and the upgrade's phases"
    return ok, (f"{name}: {'green' if ok else 'RED'} ({len(rows)} tests, {what}, exit {rc}"
                f"{', missing ' + ', '.join(reports) if reports else ''}{', LEFT: ' + str(left) if left else ''})")


def passed_or_stopped_by(row: tuple[str, str, str, str], first: tuple[str, str, str, str] | None) -> bool:
    """A stage before the first failure passed; or, when that failure is a stage's, it was running beside
    it and that failure stopped it (the stage graph stops every running stage: fixtures/gating.py)."""
    failed = re.fullmatch(r"test_stage\[(\w+)\]", first[1]) if first and first[0] == "test_stages" else None
    return not row[2] or (row[2] == "skipped" and failed is not None
                          and f"was stopped: stage {failed.group(1)} failed" in row[3])


def judge(name: str, out: Path, rc: int, took_s: float) -> tuple[bool, str]:
    """Caught, for its own reason, by exactly its check; and the line that says so."""
    expected, reason, _, effect = MUTATIONS[name]
    rows = outcomes(out / "junit.xml") if (out / "junit.xml").is_file() else []
    first = next((r for r in rows if r[2] and r[2] != "skipped"), None)
    before = rows[:rows.index(first)] if first else rows
    stages_ok = all(passed_or_stopped_by(r, first) for r in before if r[0] == "test_stages")
    left = leftovers(out)
    why = first is not None and re.search(reason, evidence(out, first[3])) is not None
    took, artifact = effect_seen(out, effect)
    ok = rc == 1 and stages_ok and first is not None and first[:3] == (*expected, "failure") and why and took \
        and not left
    seen = f"{first[0]}::{first[1]} ({first[2]}): {first[3].splitlines()[0][:300]}" if first else \
        f"nothing failed (exit {rc})"
    return ok, (f"{'caught' if ok else 'MISSED'} {name} ({took_s:.0f} s): expected {'::'.join(expected)} "
                f"because /{reason}/{'' if why else ' (NOT FOUND)'}; first failure {seen}"
                f"; effect: {artifact}{'' if took else ' (NOT SO)'}{'; LEFT: ' + str(left) if left else ''}")


def timed_run(name: str | None, out: Path) -> tuple[int, float]:
    start = time.monotonic()
    rc, _ = run(name, out)
    return rc, time.monotonic() - start


def main(names: list[str]) -> int:
    """The baseline and every mutation (or those named), JOBS lab runs at a time: each is a lab of its
    own (its own address block, router, cluster and VM), as two concurrent runs are (tests/lab)."""
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        print(f"no such mutation: {', '.join(unknown)}; there are: {', '.join(MUTATIONS)}", file=sys.stderr)
        return 2
    # The longest runs first (the baseline, then those caught latest in the run), so none is left alone at the end.
    order = {module: i for i, module in enumerate((*EXERCISE_MODULES, "test_upgrade"))}  # the upgrade's: longest
    chosen = sorted((n for n in MUTATIONS if not names or n in names), key=lambda n: -order.get(MUTATIONS[n][0][0], -1))
    base = ROOT / "artifacts" / "mutations" / time.strftime("%Y%m%d-%H%M%S")
    started, verdicts = time.monotonic(), {}
    baselines = [None, *([CANARY_BASELINE] if any(canary(n) for n in chosen) else [])]
    with ThreadPoolExecutor(JOBS) as pool:
        runs = {pool.submit(timed_run, name, base / (name or "baseline")): name for name in [*baselines, *chosen]}
        for done in as_completed(runs):
            name, (rc, took_s) = runs[done], done.result()
            verdicts[name] = judge(name, base / name, rc, took_s) if name in MUTATIONS else \
                judge_baseline(base / (name or "baseline"), rc, name or "baseline")
            print(verdicts[name][1], flush=True)
    baseline_ok, caught = all(verdicts[b][0] for b in baselines), sum(verdicts[n][0] for n in chosen)
    print(f"{caught}/{len(chosen)} caught; {'baselines' if len(baselines) > 1 else 'baseline'} "
          f"{'green' if baseline_ok else 'RED'}; {len(chosen) + len(baselines)} lab runs, {JOBS} at a time, in "
          f"{time.monotonic() - started:.0f} s; reports in {base}")
    return 0 if baseline_ok and caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
