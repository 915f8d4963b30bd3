"""Diagnostics on failure: collectors with timeouts that never raise, capped and redacted files, and
what the VM's and the cluster's dumps look at."""

from __future__ import annotations

import threading

import pytest

from meshvm import diagnostics, redact
from meshvm.diagnostics import Dump, RunBudget, run_capped, sanitize
from meshvm.recipe import clusterdump, sidecar
from meshvm.seams import Result

SECRET = "eyJhbGciOiJIUzI1NiJ9.not-a-real-token-but-registered"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.fixture(autouse=True)
def registry():
    redact.clear()
    redact.register(SECRET)
    yield
    redact.clear()


def test_sanitize_makes_one_safe_folder_name():
    assert sanitize("tests/e2e/test_stages.py::test_stage[vm_files]") == "test_stages.py_test_stage_vm_files_"
    assert "/" not in sanitize("../../etc/passwd") and sanitize("") == "test"


def test_collectors_never_raise_and_time_out():
    release = threading.Event()
    assert run_capped(lambda: "ok", 1) == "ok"
    assert "collector failed: RuntimeError: boom" in run_capped(lambda: (_ for _ in ()).throw(RuntimeError("boom")), 1)
    assert "timed out after 0 s" in run_capped(lambda: str(release.wait(5)), 0.2)
    release.set()


def test_one_tests_dump_has_a_deadline_and_names_what_it_skipped(tmp_path):
    release = threading.Event()
    dump = Dump(tmp_path / "d", RunBudget(), seconds=0.3)
    dump.collect({"slow": lambda: str(release.wait(5)), "next": lambda: "never run"}, timeout=5)
    release.set()
    texts = {p.name: p.read_text() for p in dump.files}
    assert "timed out after 0 s" in texts["slow"]  # its timeout was what was left of the 0.3 s
    assert texts["next"] == "diagnostics: skipped, this test's dump ran out of time\n"


def test_files_are_redacted_and_capped_in_size_count_and_per_run(tmp_path):
    dump = Dump(tmp_path / "t", RunBudget(), file_cap=100, max_files=4)
    dump.collect({"a.txt": lambda: f"token {SECRET} key {KEY} end", "big.txt": lambda: "x" * 1000,
                  "c.txt": lambda: "c", "d.txt": lambda: "d"})
    dump.close(["index"])
    names = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert names == ["INDEX.txt", "a.txt", "big.txt", "c.txt"]
    a = (tmp_path / "t" / "a.txt").read_text()
    assert SECRET not in a and "PRIVATE KEY" not in a and a.count(redact.MASK) == 2
    big = (tmp_path / "t" / "big.txt").read_text()
    assert big.startswith("x" * 100) and "cut at 100 of 1000 bytes" in big
    assert "not written (over 4 files): d.txt" in (tmp_path / "t" / "INDEX.txt").read_text()

    budget = RunBudget(cap=300)
    for i in range(3):
        Dump(tmp_path / f"r{i}", budget).write("f.txt", "y" * 200)
    sizes = [(tmp_path / f"r{i}" / "f.txt").stat().st_size for i in range(3)]
    assert sizes[0] == 200 and sum(sizes) <= 300 + 2 * 80  # the run's cap, plus its notes at most


class FakeVm:
    def __init__(self):
        self.commands: list[tuple[str, bool]] = []

    def run(self, command, *, step, sudo=False, timeout=60, check=True, env=None):
        self.commands.append((command, sudo))
        if "cluster.env" in command:
            return Result(1, "", "cat: /var/lib/istio/envoy/cluster.env: No such file or directory")
        return Result(0, f"out of {command}", "")


def test_vm_dump_looks_at_what_the_issue_lists_as_root_and_records_failures():
    vm = FakeVm()
    dump = sidecar.vm_dump(vm)
    texts = {name: fn() for name, fn in dump.items()}
    ran = " | ".join(c for c, _ in vm.commands)
    for wanted in ("systemctl status istio", "journalctl -u istio --no-pager -n 500", "/var/log/istio/*.log",
                   "/var/lib/istio/envoy/cluster.env", "iptables-save", "/etc/hosts", "localhost:15021/healthz/ready",
                   "localhost:15000/config_dump", "localhost:15000/stats"):
        assert wanted in ran
    assert all(sudo for _, sudo in vm.commands)
    assert "[exit 1] cat: /var/lib/istio/envoy/cluster.env: No such file" in texts["cluster.env"]


class FakeKube:
    last_selector: str | None = None

    def list(self, api_version, kind, namespace=None, label_selector=None):
        self.last_selector = label_selector
        if kind == "Event":
            raise RuntimeError("events: 403")
        meta = {"name": f"{kind.lower()}-1", "managedFields": [{"manager": "x"}]}
        return [{"apiVersion": api_version, "kind": kind, "metadata": meta,
                 "status": {"phase": "Running", "containerStatuses": [{"restartCount": 0}]}}]

    def logs(self, namespace, pod, *, container=None, tail_lines=500, timeout=30):
        if "eastwest" in (self.last_selector or ""):
            raise RuntimeError("container is waiting to start")
        return f"line 1 of {pod}\nline 2 of {pod}\n"


class FailingIstioctl:
    def run(self, args, *, step, timeout=300, stdin=None, check=True):
        return Result(2, "", "unknown command proxy-status")


def test_cluster_dump_lists_the_mesh_with_pod_logs_and_says_what_is_missing(tmp_path):
    dump = Dump(tmp_path, RunBudget())
    dump.collect({**clusterdump.cluster_dump(FakeKube()), **clusterdump.proxy_status(FailingIstioctl(), FakeKube())})
    read = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert "kind: WorkloadEntry" in read["workloadentries.yaml"] and "managedFields" not in read["workloadentries.yaml"]
    assert "kind: WorkloadGroup" in read["workloadgroups.yaml"] and "kind: Pod" in read["pods.yaml"]
    assert "collector failed: RuntimeError: events: 403" in read["events.yaml"]
    assert "pod-1: Running [0]" in read["istiod-logs.txt"] and "line 2 of pod-1" in read["istiod-logs.txt"]
    assert "(no log: RuntimeError: container is waiting to start)" in read["eastwest-logs.txt"]
    assert "exited 2] unknown command proxy-status" in read["proxy-status.txt"]
    assert "$ istioctl proxy-status\n" in read["proxy-status.txt"]  # no revision label: istioctl's default
    assert diagnostics.FILE_CAP == 256 * 1024 and diagnostics.FILES_PER_TEST == 40


def test_proxy_status_asks_each_running_control_plane_by_its_revision(tmp_path):
    """In a canary upgrade two istiods run, and after the old one's removal istioctl's default (revision
    `default`) finds none: each revision that runs is asked by name."""
    class TwoRevisions:
        def list(self, api_version, kind, namespace=None, label_selector=None):
            assert (kind, namespace, label_selector) == ("Deployment", "istio-system", "app=istiod")
            return [{"metadata": {"labels": {"istio.io/rev": rev}}} for rev in ("1-31-1", "default")]

    class Recording:
        asked: list[list[str]] = []

        def run(self, args, *, step, timeout=300, stdin=None, check=True):
            self.asked.append(list(args))
            return Result(0, f"NAME ... ({args[-1]})\n", "")

    cli = Recording()
    text = clusterdump.proxy_status(cli, TwoRevisions())["proxy-status.txt"]()
    assert cli.asked == [["proxy-status", "--revision", "1-31-1"], ["proxy-status", "--revision", "default"]]
    assert "$ istioctl proxy-status --revision default\nNAME ... (default)" in text
