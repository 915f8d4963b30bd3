"""The upgrade run's pieces that need no lab: its settings, its plan, the release each layer must run after
each phase, how layers are read, how the traffic is judged, and how phases gate each other. The lab run
itself (nox -s upgrade -- --platform lab) is the baseline of `nox -s mutations`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshvm import plan, traffic, upgrade_phases, versions
from meshvm.config import ConfigError, gather, resolve
from meshvm.config_checks import upgrade_problem
from meshvm.deadlines import Deadline
from meshvm.lab import sidecar_deb
from meshvm.recipe import sidecar
from meshvm.seams import Result
from meshvm.traffic import Phase, Request
from meshvm.upgrade import UpgradeBook, curl_loop
from tests.unit.test_config import GOOD, NOW

ROOT = Path(__file__).resolve().parents[2]


ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("ya29.not-a-real-token")
    ENV["E2E_GCP_ACCESS_TOKEN_FILE"] = str(tmp_path / "token")


def config(options: dict, upgrade_run: bool = True):
    return resolve(gather({**GOOD, **options}, ENV), ENV, NOW, upgrade_run=upgrade_run)


def problems(options: dict, upgrade_run: bool = True) -> list[str]:
    try:
        config(options, upgrade_run)
    except ConfigError as e:
        return e.problems
    return []


def test_an_upgrade_run_needs_to_and_an_exercise_run_refuses_it():
    assert problems({}) == ["--upgrade-to / --to / E2E_UPGRADE_TO: '' is required by an upgrade run: the release to "
                            "move to, e.g. --to 1.31"]
    assert problems({"upgrade_to": "1.31"}, upgrade_run=False) == [
        "--upgrade-to / --to / E2E_UPGRADE_TO: '1.31' is for an upgrade run only (nox -s upgrade, which runs tests/upgrade)"]
    cfg = config({"upgrade_to": "1.31.1", "istio_version": "1.30.3"})
    assert (cfg.istio_version, cfg.upgrade_to, cfg.upgrade_strategy) == ("1.30.3", "1.31.1", "in-place")


def test_until_and_a_bad_release_are_refused_in_one_line_each():
    found = problems({"upgrade_to": "1.31.x", "upgrade_strategy": "canary", "until": "infra"})
    assert found == ["--upgrade-to / --to / E2E_UPGRADE_TO: '1.31.x' is not an Istio release: X.Y.Z, a pre-release "
                     "such as 1.31.0-rc.0, or a minor such as 1.30"]
    found = problems({"upgrade_to": "1.31", "upgrade_strategy": "canary", "until": "infra"})
    assert found == ["--until / E2E_UNTIL: 'vm' stops before the exercises, which an upgrade run needs at every phase; "
                     "leave it out"]
    assert problems({"upgrade_to": "1.31", "upgrade_strategy": "blue-green"}) == [
        "--upgrade-strategy / --strategy / E2E_UPGRADE_STRATEGY: 'blue-green' is not one of: in-place, canary"]


@pytest.mark.parametrize(("first", "second", "problem"), [
    ("1.30.3", "1.31.1", None),
    ("1.30.3", "1.30.5", None),
    ("1.31.0-rc.0", "1.31.0", None),
    ("1.31.1", "1.31.1", "'1.31.1' is not newer than '1.31.1' (--from)"),
    ("1.31.1", "1.30.5", "'1.30.5' is not newer than '1.31.1' (--from)"),
    ("1.29.4", "1.31.1", "'1.31.1' is more than one minor after '1.29.4' (--from); upgrade one minor at a time"),
])
def test_the_releases_move_forward_by_at_most_one_minor(first, second, problem):
    found = upgrade_problem(config({"upgrade_to": second, "istio_version": first}))
    assert found == (None if problem is None else f"--upgrade-to / --to / E2E_UPGRADE_TO: {problem}")


def test_the_plan_shows_both_releases_resolved_and_every_phase_with_its_worst_case(tmp_path):
    listing = tmp_path / "releases.json"
    listing.write_text('[{"tag_name": "1.30.5"}, {"tag_name": "1.31.1"}, {"tag_name": "1.31.2", "prerelease": true}]')
    r = subprocess.run([sys.executable, "-m", "pytest", "tests/upgrade", "--plan", "--gcp-project", "demo-project",
                        "--from", "1.30", "--to", "1.31", "--exercise-deadline", "100"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                    "E2E_ISTIO_RELEASE_LISTING": listing.as_uri()})
    assert r.returncode == 0, r.stderr
    assert "Istio 1.30.5: the newest 1.30.x" in r.stdout
    assert "Then the upgrade to Istio 1.31.1 (the newest 1.31.x), in-place" in r.stdout
    for phase in upgrade_phases.phases("in-place"):  # its deadline plus its exercise waits of 100 s each
        worst = phase.deadline + 100 * phase.exercise_waits
        assert f" {phase.name:<18} {plan._mins(worst):>7}  {phase.does}" in r.stdout
    assert "releases/1.31.1/deb/istio-sidecar.deb" in r.stdout
    assert "/<V>/istio-<V>-linux-amd64.tar.gz (checked against its .sha256; bin/istioctl and samples/)" in r.stdout
    assert "drift.json: 1.31.1's samples/ against the suite's manifests (a report, not a check)" in r.stdout
    canary = subprocess.run([sys.executable, "-m", "pytest", "tests/upgrade", "--plan", "--gcp-project", "demo-project",
                             "--from", "1.30.3", "--to", "1.31.1", "--strategy", "canary"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert canary.returncode == 0, canary.stderr
    assert "Then the upgrade to Istio 1.31.1, canary, phase by phase" in canary.stdout
    for phase in upgrade_phases.phases("canary"):
        assert f" {phase.name:<18} " in canary.stdout and phase.does in canary.stdout
    r = subprocess.run([sys.executable, "-m", "pytest", "tests/upgrade", "--plan", "--gcp-project", "demo-project",
                        "--from", "1.31.1", "--to", "1.30.5"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 4 and r.stderr.strip() == ("meshvm: --upgrade-to / --to / E2E_UPGRADE_TO: '1.30.5' is not "
                                                       "newer than '1.31.1' (--from)")


def test_each_phase_moves_its_layers_and_keeps_the_rest():
    want = {p: upgrade_phases.expected("in-place", p, "old", "new") for p in ("before", "control_plane", "vm", "bookinfo")}
    assert set(want["before"].values()) == {"old"}
    assert {k for k, v in want["control_plane"].items() if v == "new"} == {"istiod", "ingress_gateway", "eastwest_gateway"}
    assert {k for k, v in want["vm"].items() if v == "old"} == {"bookinfo_proxies", "client_proxy"}  # the skew
    assert set(want["bookinfo"].values()) == {"new"}
    assert set(upgrade_phases.layers("in-place")) == {*versions.POD_LAYERS, *versions.VM_LAYERS}


def test_a_canary_starts_its_istiod_beside_the_old_one_which_ends_last():
    names = [p.name for p in upgrade_phases.phases("canary")]
    assert names == ["before", "control_plane", "bookinfo", "vm", "old_revision", "verdict"]
    want = {p: upgrade_phases.expected("canary", p, "old", "new") for p in names}
    none = upgrade_phases.NONE
    assert want["before"] == {**dict.fromkeys(upgrade_phases.layers("in-place"), "old"), "istiod_canary": none}
    assert {k: v for k, v in want["control_plane"].items() if v != "old"} == {
        "istiod_canary": "new", "ingress_gateway": "new", "eastwest_gateway": "new"}
    assert want["bookinfo"]["bookinfo_proxies"] == want["bookinfo"]["client_proxy"] == "new"
    assert want["bookinfo"]["vm_proxy"] == "old"
    assert want["vm"] == {**dict.fromkeys(upgrade_phases.layers("canary"), "new"), "istiod": "old"}
    assert want["old_revision"] == {**dict.fromkeys(upgrade_phases.layers("canary"), "new"), "istiod": none}
    assert set(upgrade_phases.layers("canary")) == {*versions.pod_layers("1-31-1"), *versions.VM_LAYERS}
    assert versions.problems({"istiod": {"istiod-abc": "1.30.3"}, "istiod_canary": {}},
                             {"istiod": none, "istiod_canary": none}) == [
        "istiod: expected none running, found istiod-abc on 1.30.3"]


def test_a_layer_is_read_from_what_runs():
    assert versions.release("docker.io/istio/proxyv2:1.31.1-distroless") == "1.31.1"
    assert versions.release("registry:5000/istio/pilot:1.30.3") == "1.30.3"
    assert versions.release("docker.io/istio/pilot") == ""

    def pod(name, image, phase="Running", deleting=False, init=False):
        box = {"name": "istio-proxy", "image": image}
        meta = {"name": name, **({"deletionTimestamp": "2026-12-06T00:00:00Z"} if deleting else {})}
        spec = {"initContainers": [box], "containers": [{"name": "app", "image": "app:9"}]} if init else \
            {"containers": [box]}
        return {"metadata": meta, "spec": spec, "status": {"phase": phase}}

    class Kube:
        def list(self, api_version, kind, namespace=None, label_selector=None):
            return [pod("a", "hub/proxyv2:1.31.1"), pod("b", "hub/proxyv2:1.30.3", init=True),
                    pod("c", "hub/proxyv2:1.30.3", deleting=True), pod("d", "hub/proxyv2:1.30.3", phase="Pending")]

    found = versions.pod_versions(Kube(), "default", "app", "istio-proxy")
    assert found == {"a": "1.31.1", "b": "1.30.3"}  # a native sidecar too; not the going or the pending
    assert versions.problems({"bookinfo_proxies": found, "istiod": {}}, {"bookinfo_proxies": "1.31.1", "istiod": "1.31.1"}) == [
        "bookinfo_proxies: expected 1.31.1, found b on 1.30.3", "istiod: nothing running, expected 1.31.1"]


def test_the_vms_running_proxy_is_read_from_its_envoy_not_from_the_package():
    class Vm:
        def __init__(self, out, rc=0):
            self.out, self.rc = out, rc

        def run(self, command, **kwargs):
            assert command == versions.SERVER_INFO
            return Result(self.rc, self.out, "")

    info = {"state": "LIVE", "node": {"id": "sidecar~10.0.0.1~vm.ratings~ratings.svc.cluster.local",
                                      "metadata": {"ISTIO_VERSION": "1.30.3", "NAMESPACE": "ratings"}}}
    assert versions.running_proxy_version(Vm(json.dumps(info))) == "1.30.3"
    assert versions.running_proxy_version(Vm("", rc=7)) == "(no answer: curl exited 7)"


def steady(path: str, start: float, end: float, ok: bool = True) -> list[Request]:
    return [Request(round(start + i * 0.2, 3), path, ok, "200" if ok else "000") for i in range(int((end - start) / 0.2))]


def test_an_announced_disruption_is_not_counted_in_the_rate_but_its_length_is_in_the_gap():
    phase = [Phase("vm", 0, 100)]
    requests = steady("vm->details", 0, 50) + steady("vm->details", 50, 52, ok=False) + steady("vm->details", 52, 100)
    assert traffic.judge(requests, phase, ["vm->details"])[1] == [
        "vm: vm->details: success rate 0.980 < 0.99 (490 of 500)"]
    rows, found = traffic.judge(requests, phase, ["vm->details"], disruptions=[Phase("restart", 49.9, 52.5)])
    assert found == [] and rows[0]["counted"] < rows[0]["requests"] == 500
    recorder = traffic.Recorder(clock=iter([0.0, 10.0, 12.0, 12.0]).__next__)
    with recorder.disruption("pods replaced", tail_s=5):
        pass
    assert recorder.disruptions() == [Phase("pods replaced", 10.0, 17.0)]  # the rollout's end, then its drain
    rows, found = traffic.judge(steady("vm->details", 0, 10, ok=False) + steady("vm->details", 10, 20), [Phase("vm", 0, 20)],
                                ["vm->details"], disruptions=[Phase("all of it", 0, 100)])
    assert found == ["vm: vm->details: 10.0 s without a success (> 5.0 s)"] and rows[0]["success_rate"] is None
    long = steady("vm->details", 0, 50) + steady("vm->details", 50, 57, ok=False) + steady("vm->details", 57, 100)
    assert traffic.judge(long, phase, ["vm->details"], disruptions=[Phase("restart", 49, 58)])[1] == [
        "vm: vm->details: 7.2 s without a success (> 5.0 s)"]


def test_an_announced_outage_is_left_out_of_the_gap_but_what_follows_it_is_not():
    """A single VM's agent restart: nothing serves until it is back (the outage's block waits for that), so
    the stretch inside it is reported, not judged; a path still down 5 s after it ends is."""
    phase = [Phase("vm", 0, 100)]
    long = steady("vm->details", 0, 50) + steady("vm->details", 50, 57, ok=False) + steady("vm->details", 57, 100)
    rows, found = traffic.judge(long, phase, ["vm->details"], disruptions=[Phase("restart", 49, 56, outage=True)])
    assert found == [] and rows[0]["longest_gap_s"] == 7.2 and rows[0]["longest_gap_outside_outages_s"] == 1.0
    late = steady("vm->details", 0, 50) + steady("vm->details", 50, 63, ok=False) + steady("vm->details", 63, 100)
    assert traffic.judge(late, phase, ["vm->details"], disruptions=[Phase("restart", 49, 56, outage=True)])[1] == [
        "vm: vm->details: success rate 0.927 < 0.99 (430 of 464, 36 more inside announced disruptions)",
        "vm: vm->details: 7.0 s without a success (> 5.0 s) outside announced outages"]
    recorder = traffic.Recorder(clock=iter([0.0, 10.0, 12.0]).__next__)
    with recorder.disruption("the VM's agent restarts", outage=True):
        pass
    assert recorder.disruptions() == [Phase("the VM's agent restarts", 10.0, 12.0, outage=True)]


def test_a_phase_runs_only_after_the_one_before_it_passed(tmp_path):
    book = UpgradeBook(tmp_path, {"from": "1.30.3", "to": "1.31.1"}, "in-place")
    assert book.blocked("control_plane") == "phase before did not run"
    with book.phase("before"):
        pass
    assert book.blocked("control_plane") is None
    with pytest.raises(RuntimeError), book.phase("control_plane"):
        raise RuntimeError("istiod did not roll out")
    assert book.blocked("vm") == "phase control_plane failed"
    data = json.loads((tmp_path / "upgrade.json").read_text())
    assert [(p["name"], p["outcome"]) for p in data["phases"]] == [("before", "passed"), ("control_plane", "failed")]
    assert data["phases"][1]["error"] == "RuntimeError: istiod did not roll out"
    with pytest.raises(KeyboardInterrupt), book.phase("vm"):
        raise KeyboardInterrupt("received SIGTERM")
    assert book.records["vm"].outcome == "interrupted" and book.blocked("bookinfo") == "phase vm interrupted"
    assert book.finish(Deadline.after(1, "stop")) == ["the background traffic never started"]


def test_a_curl_loop_ends_by_itself_and_prints_one_status_per_request():
    loop = curl_loop("127.0.0.1:9/nothing", 1)
    r = subprocess.run(["sh", "-c", loop], capture_output=True, text=True, timeout=30)
    lines = r.stdout.split()
    assert r.returncode == 0 and lines and set(lines) == {"000"}  # nothing listens on port 9: curl's own failure


def test_the_mutations_baseline_goes_on_with_the_upgrade_and_its_mutations_run_only_the_phases():
    from tests.mutations import run

    assert run.tests_of(None) == ["tests/e2e", "tests/upgrade"]
    assert run.upgrade_args(None) == ["--from", "1.30.3", "--to", "1.31.1"]
    assert run.tests_of("upgrade-without-agent-restart") == ["tests/e2e/test_stages.py", "tests/upgrade/test_upgrade.py"]
    assert run.upgrade_args("upgrade-without-agent-restart") == ["--from", "1.30.3", "--to", "1.31.1"]
    assert run.tests_of("no-workloadgroup") == ["tests/e2e/test_stages.py", "tests/e2e/test_vm_registration.py"]
    assert run.upgrade_args("no-workloadgroup") == []


@pytest.mark.parametrize(("release", "package"), [
    ("1.30.3", "1.30.3"), ("1.31.0-rc.0", "1.31.0rc.0"), ("1.31.0-beta.1", "1.31.0beta.1"), ("1.31.0-alpha.0", "1.31.0alpha.0"),
])
def test_the_vms_package_version_is_read_back_as_its_release(release, package):
    """Istio's build drops the first '-' from a pre-release's package version (packaging.mk); the lab's package
    is built so, and the suite reads dpkg's version back as the release."""
    assert sidecar_deb.package_version(release) == package
    assert sidecar.release_of_package(package) == release
