"""The checks across settings (meshvm.config.resolve calls them once every setting parsed): one line
per problem, and the required settings still missing, from local files only (never the network)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshvm import secretdir
from meshvm import validate as v
from meshvm.problems import Problems
from meshvm.settings import BY_FIELD

if TYPE_CHECKING:
    from meshvm.config import Config

def contradictions(p: Problems, cfg: Config, raw: Mapping[str, Any], environ: Mapping[str, str],
                   is_root: bool) -> list[str]:
    """Checks across settings; returns required settings still missing (errors unless --plan)."""
    if cfg.reuse and raw["run_id"] and raw["run_id"] != raw["reuse"]:
        p.add("run_id", raw["run_id"], f"differs from --reuse {raw['reuse']}: a reusing run carries the kept "
              "run's id (its names and labels); leave --run-id out")
    if cfg.cluster_version and not p.problems:
        _kubernetes_supported(p, cfg)
    if not p.problems and (window := cfg.token_window()) > cfg.token_duration:
        p.add("token_duration", str(cfg.token_duration), f"is shorter than the worst case from the istio-token's "
              f"creation (stage vm_files) to the agent's first connection (exercise 1): {window} s of stage "
              "deadlines and --exercise-deadline; raise it or lower those deadlines")
    if not p.problems and (hours := int(str(raw["expires_hours"]))) * 3600 <= cfg.worst_case_s():
        p.add("expires_hours", str(hours), f"is not longer than the run's worst case ({cfg.worst_case_s() // 60} min "
              "of stage deadlines, exercise waits and teardown): the janitor could delete the run while it runs; "
              "raise it or lower those deadlines")
    if cfg.upgrade_to is not None:
        _upgrade(p, cfg)
    if cfg.platform != "lab" and cfg.lab_timing != "fast":
        p.add("lab_timing", cfg.lab_timing, "is for --platform lab only (Google Cloud takes the time it takes)")
    if cfg.subnetwork and not cfg.network:
        p.add("subnetwork", cfg.subnetwork, "needs --network, the network it belongs to")
    if cfg.platform == "lab":
        for f in ("compute_endpoint", "container_endpoint", "network", "subnetwork"):  # IAM's, RM's: replaced
            if raw[f]:
                p.add(f, raw[f], "is not supported on --platform lab (the lab provides its own)")
        if cfg.reuse:
            p.add("reuse", raw["reuse"], "is not supported on --platform lab: lab hosts end with the run, "
                  "so there is no kept run to reuse")
        if cfg.keep != "never":
            p.add("keep", cfg.keep, "lab hosts end with the run; only 'never' is supported on the lab")
        if not is_root and not cfg.plan:
            p.add("platform", "lab", "needs root (network namespaces, systemd VMs); run as root")
        return []
    if cfg.reuse and not cfg.plan and not p.problems:
        _kept_run(p, cfg, environ)
    return _gcp_missing(p, cfg, environ)


def _upgrade(p: Problems, cfg: Config) -> None:
    if cfg.until:
        p.add("until", cfg.until, "stops before the exercises, which an upgrade run needs at every phase; leave it out")


def upgrade_problem(cfg: Config) -> str | None:
    """Once both releases are resolved: the run moves forward by at most one minor (at the skew point the
    proxies run one minor behind istiod). One line, or None."""
    if cfg.upgrade_to is None:
        return None
    a, b = v.release_key(cfg.istio_version), v.release_key(cfg.upgrade_to)
    if b <= a:
        return f"{BY_FIELD['upgrade_to'].label}: {cfg.upgrade_to!r} is not newer than {cfg.istio_version!r} (--from)"
    if b[0] != a[0] or b[1] - a[1] > 1:
        return (f"{BY_FIELD['upgrade_to'].label}: {cfg.upgrade_to!r} is more than one minor after "
                f"{cfg.istio_version!r} (--from); upgrade one minor at a time")
    return None


def _kept_run(p: Problems, cfg: Config, environ: Mapping[str, str]) -> None:
    """A kept run leaves its secret dir (with the SSH key its VM accepts); checked locally, before
    anything is created. The network stage then checks that the cloud still holds the run."""
    if secretdir.kept(cfg.run_id, environ) is None:
        p.problems.append(f"{BY_FIELD['reuse'].label}: no kept run {cfg.run_id}: no secret dir "
                          f"meshvm-{cfg.run_id}-* with its SSH key under {secretdir.base_dir(environ)} "
                          "(was it run here with --keep, and not cleaned up since?)")


def _kubernetes_supported(p: Problems, cfg: Config) -> None:
    """--cluster-version against the Kubernetes range the chosen Istio supports, where it is known."""
    span = v.ISTIO_KUBERNETES.get(v.istio_minor(cfg.istio_version))
    minor = int(str(cfg.cluster_version).split(".")[1])
    if span and not span[0] <= minor <= span[1]:
        p.add("cluster_version", cfg.cluster_version, f"is outside the Kubernetes versions Istio "
              f"{cfg.istio_version} supports (1.{span[0]}-1.{span[1]})")


def _gcp_missing(p: Problems, cfg: Config, environ: Mapping[str, str]) -> list[str]:
    missing = []
    if not cfg.gcp_project:
        missing.append("--gcp-project / E2E_GCP_PROJECT: required on --platform gcp "
                       "(to rehearse without Google Cloud: --platform lab)")
    elif not v.PROJECT.match(cfg.gcp_project):
        p.add("gcp_project", cfg.gcp_project, "is not a project id (6-30 lowercase letters, digits, '-')")
    if not cfg.ssh_source_ranges:
        missing.append("--ssh-source-ranges / E2E_SSH_SOURCE_RANGES: required on --platform gcp "
                       "(the runner's egress address, e.g. 203.0.113.7/32)")
    if credential_problem := _credentials(cfg, environ):
        missing.append(credential_problem)
    return missing


def _credentials(cfg: Config, environ: Mapping[str, str]) -> str | None:
    """Checked from local files only: --plan and validation never touch the network."""
    token = cfg.gcp_access_token_file
    if token:
        return None if token.is_file() and os.access(token, os.R_OK) else \
            f"--gcp-access-token-file / E2E_GCP_ACCESS_TOKEN_FILE: {token} is not a readable file"
    adc = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    candidates = [Path(adc)] if adc else [
        Path(environ.get("HOME", "~")).expanduser() / ".config/gcloud/application_default_credentials.json"]
    if any(c.is_file() for c in candidates) or _on_gce():
        return None
    return ("Google credentials: none found; set GOOGLE_APPLICATION_CREDENTIALS (Workload Identity "
            "Federation in CI) or --gcp-access-token-file / E2E_GCP_ACCESS_TOKEN_FILE")


def _on_gce() -> bool:
    try:
        return "Google" in Path("/sys/class/dmi/id/product_name").read_text()
    except OSError:
        return False
