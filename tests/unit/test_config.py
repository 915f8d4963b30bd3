"""Settings: one name scheme, defaults, and one clear line for each bad value."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from meshvm.config import ConfigError, gather, resolve
from meshvm.settings import SETTINGS

GOOD = {"gcp_project": "demo-project", "ssh_source_ranges": ["203.0.113.7/32"]}
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def creds(tmp_path: Path) -> dict[str, str]:
    token = tmp_path / "token"
    token.write_text("ya29.not-a-real-token")
    return {"E2E_GCP_ACCESS_TOKEN_FILE": str(token)}


def problems(options: dict, environ: dict[str, str], **kw) -> list[str]:
    try:
        resolve(gather({**GOOD, **options}, environ), environ, NOW, **kw)
    except ConfigError as e:
        return e.problems
    return []


def test_defaults_resolve_with_project_ssh_and_credentials(creds):
    cfg = resolve(gather(GOOD, creds), creds, NOW)
    assert cfg.platform == "gcp" and cfg.zones == ("us-central1-a",) and cfg.region == "us-central1"
    assert cfg.keep == "never" and cfg.istio_version == "1.31" and cfg.istio_hub == "docker.io/istio"
    assert cfg.sidecar_base_url == "https://blob.istio.io/istio-release/releases" and cfg.sidecar_fallback_urls == ()
    assert cfg.labels == {"e2e-suite": "meshvm", "e2e-run": cfg.run_id, "e2e-expires": "20261126t2000z"}  # NOW + 8 h
    assert cfg.artifacts_dir == Path("artifacts", cfg.run_id).absolute()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_reads_the_same_from_option_and_environment(setting):
    sample = {"flag": True, "list": ["a", "b"], "map": ["cluster=60"], "int": "3"}.get(setting.kind, "x")
    env_text = {"flag": "1", "list": "a,b", "map": "cluster=60"}.get(setting.kind, str(sample))
    assert setting.env == "E2E_" + setting.option[2:].upper().replace("-", "_")
    by_option = gather({setting.field: sample}, {})[setting.field]
    by_env = gather({}, {setting.env: env_text})[setting.field]
    assert by_option == by_env == sample


def test_option_wins_over_environment():
    assert gather({"zone": ["europe-west1-b"]}, {"E2E_ZONE": "us-east1-c"})["zone"] == ["europe-west1-b"]


def test_every_version_fetches_the_sidecar_from_blob_istio_io(creds):
    for version in ("1.29.6", "1.30.3", "1.31.0-rc.0"):
        cfg = resolve(gather({**GOOD, "istio_version": version}, creds), creds, NOW)
        assert cfg.sidecar_urls() == [f"https://blob.istio.io/istio-release/releases/{version}/deb/istio-sidecar.deb"]


BAD = [
    # (options, the setting named, a phrase of the reason)
    ({"platform": "aws"}, "--platform / E2E_PLATFORM", "not one of: gcp, lab"),
    ({"gcp_project": "Demo_Project"}, "--gcp-project", "not a project id"),
    ({"zone": ["us-central1"]}, "--zone", "not a zone"),
    ({"zone": ["us-central1-a", "europe-west1-b"]}, "--zone", "one region"),
    ({"istio_version": "1.30.x"}, "--istio-version", "X.Y.Z"),
    ({"expires_hours": "2"}, "--expires-hours", "not longer than the run's worst case"),
    ({"istio_hub": "Docker.io/Istio"}, "--istio-hub", "image hub"),
    ({"istio_release_listing": "http://example.com/releases"}, "--istio-release-listing", "https"),
    ({"sidecar_fallback_urls": ["ftp://mirror/x"]}, "--sidecar-fallback-urls", "https"),
    ({"istio_version": "1.31", "cluster_version": "1.37"}, "--cluster-version", "1.32-1.36"),
    ({"istio_version": "1.29.6", "cluster_version": "1.36"}, "--cluster-version", "1.31-1.35"),
    ({"istio_version": "1.9.5"}, "--istio-version", "older than 1.10"),
    ({"cluster_name": "c" * 41}, "--cluster-name", "at most 40"),
    ({"cluster_name": "Cluster"}, "--cluster-name", "lowercase"),
    ({"vm_name": "1vm"}, "--vm-name", "start with a letter"),
    ({"vm_name": "v" * 64}, "--vm-name", "at most 63"),
    ({"run_id": "Run_1"}, "--run-id", "run id"),
    ({"network": "net-", "subnetwork": "sub"}, "--network", "not end with '-'"),
    ({"subnetwork": "sub"}, "--subnetwork", "needs --network"),
    ({"pod_range": "10.16.0.1/14"}, "--pod-range", "not a CIDR"),
    ({"pod_range": "8.8.0.0/16"}, "--pod-range", "RFC 1918"),
    ({"service_range": "10.16.0.0/20"}, "--service-range", "overlaps --pod-range"),
    ({"ssh_source_ranges": ["0.0.0.0/0"]}, "--ssh-source-ranges", "--allow-ssh-from-anywhere"),
    ({"ssh_source_ranges": ["0.0.0.0/1", "10.0.0.0/8"]}, "--ssh-source-ranges", "wider than /8"),
    ({"ssh_source_ranges": ["203.0.113.300/32"]}, "--ssh-source-ranges", "not a CIDR"),
    ({"compute_endpoint": "http://compute.example.com"}, "--compute-endpoint", "only for loopback or lab"),
    ({"container_endpoint": "ftp://127.0.0.1"}, "--container-endpoint", "https://"),
    ({"istio_release_url": "http://mirror.example.com"}, "--istio-release-url", "use https"),
    ({"release_channel": "beta"}, "--release-channel", "not one of"),
    ({"cluster_version": "latest"}, "--cluster-version", "GKE version"),
    ({"cluster_version": "1.31"}, "--cluster-version", "Istio 1.31 supports (1.32-1.36)"),
    ({"node_service_account": "nodes@"}, "--node-service-account", "service account email"),
    ({"node_count": "0"}, "--node-count", "between 1 and 20"),
    ({"node_disk_gb": "lots"}, "--node-disk-gb", "whole number"),
    ({"vm_machine_type": "N1_STANDARD"}, "--vm-machine-type", "machine type"),
    ({"bookinfo_image_prefix": "Docker.io/Istio"}, "--bookinfo-image-prefix", "image prefix"),
    ({"eastwest_lb": "public"}, "--eastwest-lb", "not one of: internal, external"),
    ({"wg_probe": "yes"}, "--wg-probe", "not one of: on, off"),
    ({"token_duration": "60"}, "--token-duration", "between 600 and 86400"),
    ({"keep": "sometimes"}, "--keep", "not one of: never, on-failure, always"),
    ({"expires_hours": "0"}, "--expires-hours", "between 1 and 168"),
    ({"until": "install"}, "--until", "not one of: network"),
    ({"fail_at": "everything"}, "--fail-at", "not one of: network"),
    ({"deadline": ["clusterr=60"]}, "--deadline", "names no stage"),
    ({"deadline": ["cluster=forever"]}, "--deadline", "whole number"),
    ({"reuse": "20260101t000000-abcd"}, "--reuse", "no kept run 20260101t000000-abcd: no secret dir"),
    ({"reuse": "Kept_Run"}, "--reuse", "a run id"),
    ({"reuse": "kept-1", "run_id": "other-1"}, "--run-id", "differs from --reuse kept-1"),
    ({"platform": "lab", "reuse": "kept-1"}, "--reuse", "no kept run to reuse"),
    ({"ratings_source": "/nonexistent/ratings"}, "--ratings-source", "ratings.js and package.json"),
    ({"artifacts_dir": __file__ + "/reports"}, "--artifacts-dir", "not writable"),
    ({"platform": "lab", "compute_endpoint": "http://127.0.0.1:1"}, "--compute-endpoint", "not supported on --platform lab"),
    ({"platform": "lab", "keep": "always"}, "--keep", "only 'never'"),
    ({"platform": "lab", "lab_timing": "gcp:2"}, "--lab-timing", "0 < FACTOR <= 1"),
    ({"platform": "lab", "lab_timing": "slow"}, "--lab-timing", "fast, gcp or gcp:FACTOR"),
    ({"lab_timing": "gcp"}, "--lab-timing", "for --platform lab only"),
]


@pytest.mark.parametrize(("options", "setting", "reason"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_each_bad_value_gets_one_line_naming_the_setting(options, setting, reason, creds):
    lines = problems(options, creds, is_root=True)
    assert len(lines) == 1, lines
    assert lines[0].startswith(setting) and reason in lines[0], lines[0]


def test_lab_needs_root():
    assert problems({"platform": "lab"}, {}, is_root=False) == [
        "--platform / E2E_PLATFORM: 'lab' needs root (network namespaces, systemd VMs); run as root"]


def test_gcp_without_project_ranges_or_credentials_lists_each(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    lines = problems({"gcp_project": None, "ssh_source_ranges": None}, {"HOME": str(tmp_path), "CI": "1"})
    assert [line.split(":")[0] for line in lines] == [
        "--gcp-project / E2E_GCP_PROJECT", "--ssh-source-ranges / E2E_SSH_SOURCE_RANGES", "Google credentials"]
    assert "--platform lab" in lines[0]


def test_plan_lists_what_is_missing_instead_of_failing(tmp_path):
    cfg = resolve(gather({"plan": True}, {"HOME": str(tmp_path)}), {"HOME": str(tmp_path)}, NOW)
    assert len(cfg.missing) == 3 and cfg.missing[0].startswith("--gcp-project")


def test_ssh_from_anywhere_with_explicit_opt_in(creds):
    cfg = resolve(gather({**GOOD, "ssh_source_ranges": ["0.0.0.0/0"], "allow_ssh_from_anywhere": True},
                         creds), creds, NOW)
    assert cfg.ssh_source_ranges == ("0.0.0.0/0",)


def test_config_is_frozen(creds):
    cfg = resolve(gather(GOOD, creds), creds, NOW)
    with pytest.raises(AttributeError):
        cfg.platform = "lab"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.deadlines["cluster"] = 1  # type: ignore[index]


def test_the_istio_token_must_outlive_the_worst_case_to_the_agents_first_connection(creds):
    # vm_files, sidecar, ratings_service, bookinfo_gateway: 1500 s of deadlines, then exercise 1: 300 s
    assert [p for p in problems({"token_duration": "900"}, creds) if "--token-duration" in p] == [
        "--token-duration / E2E_TOKEN_DURATION: '900' is shorter than the worst case from the istio-token's "
        "creation (stage vm_files) to the agent's first connection (exercise 1): 1800 s of stage deadlines "
        "and --exercise-deadline; raise it or lower those deadlines"]

    def cfg(**options: object):  # noqa: ANN202
        return resolve(gather({**GOOD, "token_duration": "3600", **options}, creds), creds, NOW)
    assert cfg(exercise_deadline="60", deadline=["sidecar=180"]).token_window() == 300 + 180 + 300 + 300 + 60
    assert cfg(until="vm").token_window() == 0
    assert cfg(until="sidecar").token_window() == 300 + 600  # no exercise under --until


def kept_secret_dir(base: Path, run_id: str) -> Path:
    """What a kept run leaves outside its artifacts: its 0700 secret dir with the SSH key its VM accepts."""
    d = base / f"meshvm-{run_id}-abc12345"
    (d / "ssh").mkdir(parents=True)
    (d / "ssh" / "id_ed25519").write_text("key")
    return d


def test_reuse_on_gcp_adopts_the_kept_run_id_and_reports_beside_it(creds, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**creds, "XDG_RUNTIME_DIR": str(tmp_path)}
    kept_secret_dir(tmp_path, "kept-1")
    cfg = resolve(gather({**GOOD, "reuse": "kept-1"}, env), env, NOW)
    assert cfg.reuse and cfg.run_id == "kept-1" and cfg.labels["e2e-run"] == "kept-1"
    assert cfg.names.cluster == "mvm-kept-1" and cfg.names.vm == "mvm-kept-1-vm"
    assert cfg.artifacts_dir == (tmp_path / "artifacts" / "kept-1-reuse-20261126t120000").absolute()
    assert resolve(gather({**GOOD, "reuse": "kept-1", "run_id": "kept-1"}, env), env, NOW).run_id == "kept-1"


def test_reuse_of_a_run_that_was_not_kept_is_one_line(creds, tmp_path):
    env = {**creds, "XDG_RUNTIME_DIR": str(tmp_path)}
    (tmp_path / "meshvm-gone-1-xyz").mkdir()  # a secret dir without the SSH key is no kept run
    lines = problems({"reuse": "gone-1"}, env)
    assert lines == [f"--reuse / E2E_REUSE: no kept run gone-1: no secret dir meshvm-gone-1-* with its SSH key "
                     f"under {tmp_path} (was it run here with --keep, and not cleaned up since?)"]
    assert "\n" not in lines[0]


def test_plan_with_reuse_says_which_stages_adopt(creds, tmp_path):
    from meshvm.plan import render

    text = render(resolve(gather({**GOOD, "reuse": "kept-1", "plan": True}, creds), creds, NOW))
    assert "reuses kept run kept-1" in text
    lines = text.splitlines()
    adopting = [ln.split()[1] for ln, nxt in zip(lines, lines[1:], strict=False)
                if ln[:2].strip().isdigit() and "adopts or creates:" in nxt]
    assert adopting == ["network", "firewall", "cluster", "vm"], text


@pytest.mark.parametrize(("text", "cluster_s"), [("fast", 0.5), ("gcp", 33.0), ("gcp:0.5", 165.0), ("gcp:1", 330.0)])
def test_lab_timing_scales_gcps_latencies(creds, text, cluster_s):
    from meshvm.lab import timing

    cfg = resolve(gather({"platform": "lab", "lab_timing": text}, creds), creds, NOW, is_root=True)
    parsed = timing.parse(cfg.lab_timing)
    assert parsed is not None and parsed.cluster_s == cluster_s
    assert timing.parse("gcp:0") is None and timing.parse("gcp:x") is None
