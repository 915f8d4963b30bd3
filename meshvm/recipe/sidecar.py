"""Recipe: "VM configuration recipe", in two steps: install and configure; then start and be ready.

The commands are the recipe's (from istio.io's VM install page), with three deliberate changes:
the package is installed with apt-get so its dependencies resolve (dpkg -i does not pull them); the
istiod line in /etc/hosts is replaced, never appended twice; the uploaded copies (the token among
them) are removed from the user's home once installed. And one step the recipe lacks, so that a
rebooted VM comes back into the mesh (`enable_at_boot`; the VM lifecycle's reboot exercise proves it).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.recipe.ratings import apt_get, home
from meshvm.seams import VmShell

ISTIOD_HOST = "istiod.istio-system.svc"  # revisions.istiod_host(""): the recipe's
ISTIOD_LINE = re.compile(r"\S+ istiod(-[a-z0-9-]+)?\.istio-system\.svc")  # any revision's
VM_FILES = ("cluster.env", "mesh.yaml", "hosts", "root-cert.pem", "istio-token")
OWNED_BY_PROXY = ("/etc/certs", "/var/run/secrets", "/var/lib/istio", "/etc/istio/config", "/etc/istio/proxy")
READY_URL = "http://localhost:15021/healthz/ready"


class VmFilesInvalid(Exception):
    pass


def hosts_line(vm_files: Path) -> str:
    """The one `<east-west IP> istiod...` line (a canary revision's: `istiod-<rev>...`); istioctl writes an
    empty file when it ran too soon."""
    lines = [ln.strip() for ln in (vm_files / "hosts").read_text().splitlines() if ln.strip()]
    if len(lines) != 1 or not ISTIOD_LINE.fullmatch(lines[0]):
        raise VmFilesInvalid(f"{vm_files / 'hosts'} should hold one '<east-west IP> {ISTIOD_HOST}' line (a "
                             "revision's: istiod-<rev>), "
                             f"holds {lines!r} (generated before the east-west gateway had an address?)")
    return lines[0]


def install_sidecar(vm: VmShell, vm_files: Path, deb: Path, deadline: Deadline) -> None:
    """VM configuration recipe, part 1: certs, token, package, cluster.env, mesh, hosts, ownership."""
    missing = [f for f in VM_FILES if not (vm_files / f).is_file()]
    if missing:
        raise VmFilesInvalid(f"{vm_files} lacks {', '.join(missing)}")
    line = hosts_line(vm_files)
    h = home(vm)
    src, pkg = f"{h}/vm_files", f"{h}/istio-sidecar.deb"
    vm.upload(vm_files, src, mode=0o600)
    vm.upload(deb, pkg, mode=0o644)
    try:
        _configure(vm, src, pkg, line, deadline)
    finally:
        vm.run(["rm", "-rf", src, pkg], step="sidecar: remove uploaded copies", check=False)


def _configure(vm: VmShell, src: str, pkg: str, line: str, deadline: Deadline) -> None:
    def root(step: str, command: str) -> None:
        vm.run(command, sudo=True, step=f"sidecar: {step}", timeout=deadline.cap(120))

    root("root cert", f"mkdir -p /etc/certs && cp {src}/root-cert.pem /etc/certs/root-cert.pem")
    root("token", "mkdir -p /var/run/secrets/tokens && "
         f"install -m 0600 {src}/istio-token /var/run/secrets/tokens/istio-token")
    # --allow-downgrades: dpkg orders a pre-release's package above its final release's (release_of_package),
    # so an upgrade from 1.31.0-rc.0 to 1.31.0 is a downgrade to apt; the run checks the version installed
    apt_get(vm, f"install --no-install-recommends --allow-downgrades {shlex.quote(pkg)}", deadline,
            "sidecar: install package")
    root("cluster.env", f"cp {src}/cluster.env /var/lib/istio/envoy/cluster.env")
    root("mesh", f"cp {src}/mesh.yaml /etc/istio/config/mesh")
    root("hosts", "grep -Ev '[[:space:]]istiod(-[a-z0-9-]+)?\\.istio-system\\.svc$' /etc/hosts > /etc/hosts.meshvm; "
         f"echo {shlex.quote(line)} >> /etc/hosts.meshvm && cat /etc/hosts.meshvm > /etc/hosts && "
         "rm -f /etc/hosts.meshvm")
    root("proxy dir", "mkdir -p /etc/istio/proxy")
    root("ownership", f"chown -R istio-proxy {' '.join(OWNED_BY_PROXY)}")
    enable_at_boot(vm)


def enable_at_boot(vm: VmShell) -> None:
    """Beyond the recipe, for a reboot: the unit enabled (the recipe only starts it; the package does not
    enable it). The token under /var/run is gone after a reboot, and need not be back: the agent then
    presents the workload certificate it keeps in /etc/certs (docs/facts.md section 6)."""
    vm.run("systemctl enable istio", sudo=True, step="sidecar: enable istio at boot (beyond the recipe)")


def package_release(vm: VmShell) -> str:
    """The release of the installed istio-sidecar package, from dpkg's version of it."""
    out = vm.run("dpkg-query -W -f '${Version}' istio-sidecar", step="sidecar: package version").stdout.strip()
    return release_of_package(out)


def release_of_package(version: str) -> str:
    """Istio packages release R as version R with its first '-' removed (PACKAGE_VERSION in
    tools/packaging/packaging.mk at 1.30.3: 1.31.0-rc.0 is 1.31.0rc.0; a final release is unchanged):
    the '-' put back before the pre-release's name."""
    return re.sub(r"^(\d+\.\d+\.\d+)(?=[a-z])", r"\1-", version)


def proxy_version(vm: VmShell) -> str:
    """The installed agent's own answer (`pilot-agent version -o json`), not the package's label."""
    out = vm.run("/usr/local/bin/pilot-agent version -o json", step="sidecar: proxy version").stdout
    return str(json.loads(out)["clientVersion"]["version"])


def restart_count(vm: VmShell) -> int:
    out = vm.run("systemctl show -p NRestarts --value istio", step="sidecar: restarts").stdout.strip()
    return int(out or 0)


def readiness(vm: VmShell) -> tuple[bool, int, str]:
    """(ready, restarts, what the agent said) in one look."""
    r = vm.run(f"curl -sS -m 3 -o /dev/null -w '%{{http_code}}' {READY_URL}", step="sidecar: readiness",
               check=False, timeout=10)
    code = r.stdout.strip() or r.stderr.strip()
    return code == "200", restart_count(vm), code


def start_sidecar(vm: VmShell, deadline: Deadline, settle: float = 3.0) -> None:
    """VM configuration recipe, part 2: `systemctl start istio`, then wait until ready."""
    vm.run("systemctl start istio", sudo=True, step="sidecar: start")
    wait_ready(vm, deadline, settle)


def wait_ready(vm: VmShell, deadline: Deadline, settle: float = 3.0) -> None:
    """Ready = the agent's readiness endpoint answers 200 twice, `settle` s apart, with no restart
    in between: the real unit restarts forever, so "active" alone proves nothing."""
    first: dict[str, float] = {}

    def look() -> tuple[bool, int, str]:
        ready, restarts, code = readiness(vm)
        if not ready or first.get("restarts") != restarts:
            first.clear()
            if ready:
                first.update(restarts=restarts, at=time.monotonic())
            return False, restarts, code
        return time.monotonic() - first["at"] >= settle, restarts, code

    retry.until("the VM's istio agent ready (15021) with a stable restart count", look, deadline,
                accept=lambda seen: seen[0], initial=0.5, ceiling=2)


def remove_sidecar(vm: VmShell, deadline: Deadline) -> None:
    """The inverse, for teardown: stop the agent and remove the package."""
    vm.run("systemctl stop istio || true", sudo=True, step="sidecar: stop")
    apt_get(vm, "remove istio-sidecar", deadline, "sidecar: remove package")


# What to look at when a test failed, beside the cleanup above: file name -> (command, timeout).
VM_DUMP = {
    "systemctl-status-istio.txt": ("systemctl status istio --no-pager -l", 20),
    "journal-istio.txt": ("journalctl -u istio --no-pager -n 500", 20),
    "var-log-istio.txt": ("for f in /var/log/istio/*.log; do [ -e \"$f\" ] || { echo '(no /var/log/istio/*.log)'; "
                          "continue; }; echo \"== $f\"; tail -c 200000 \"$f\"; done", 20),
    "cluster.env": ("cat /var/lib/istio/envoy/cluster.env", 10),
    "iptables-save.txt": ("iptables-save", 20),
    "etc-hosts.txt": ("cat /etc/hosts", 10),
    "agent-ready.txt": (f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' {READY_URL}", 15),
    "config_dump.json": ("curl -s -m 10 localhost:15000/config_dump", 20),
    "stats.txt": ("curl -s -m 10 localhost:15000/stats", 20),
    "istio-metrics.txt": ("curl -s -m 10 localhost:15020/stats/prometheus | grep -E '^(# TYPE )?istio_'", 20),
    "systemctl-status-ratings.txt": ("systemctl status ratings --no-pager -l", 20),
}


def vm_dump(vm: VmShell) -> dict[str, Callable[[], str]]:
    """The VM's side of a failure dump (run as root): the agent's unit, journal and logs, its files,
    the node's packet rules, readiness, the proxy's config dump and stats."""
    def look(command: str, timeout: float) -> Callable[[], str]:
        def run() -> str:
            r = vm.run(command, sudo=True, step="diagnostics", check=False, timeout=timeout)
            status = "" if r.ok else f"\n[exit {r.rc}] {r.stderr.strip()[-2000:]}\n"
            return f"$ {command}\n{r.stdout}{status}"
        return run

    return {name: look(command, timeout) for name, (command, timeout) in VM_DUMP.items()}
