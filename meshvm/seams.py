"""The seams the recipe runs over. One implementation each; a platform only says where the far side is."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from meshvm.deadlines import Deadline


@dataclass(frozen=True)
class Result:
    """What a command on the VM did."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def answer(self) -> object:
        """A curl's JSON answer, or what came instead (for "last seen" in a failed wait)."""
        if not self.ok:
            return f"curl exited {self.rc}: {self.stderr.strip()[-200:]}"
        try:
            return json.loads(self.stdout)
        except ValueError:
            return self.stdout[:200]


class TransientError(Exception):
    """What a seam raises for a condition worth waiting out (e.g. the cluster's API throttling, or resizing
    itself): the recipe's waits retry it, whichever adapter raised it."""


class CommandFailed(Exception):
    """A VM command exited non-zero where success was needed: step, command, rc, stderr tail."""

    def __init__(self, step: str, command: str, result: Result):
        self.step, self.command, self.result = step, command, result
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        super().__init__(f"{step}: `{command}` exited {result.rc}: {tail or '(no output)'}")


class Lines(Protocol):
    """A long-running remote command's output lines as they arrive. Iterating ends when the command
    ends, its deadline passes or close() is called (from any thread, within a fraction of a second); the
    command's end is the caller's part (a loop bounded by its own deadline, stopped by a closed pipe)."""

    def __iter__(self) -> Iterator[str]: ...

    def close(self) -> None: ...


class VmShell(Protocol):
    def run(self, command: str | Sequence[str], *, step: str, sudo: bool = False, timeout: float = 60,
            check: bool = True, env: Mapping[str, str] | None = None) -> Result:
        """Run a command (argv, quoted here; or a shell snippet) with a timeout."""
        ...

    def upload(self, local: Path, remote: str, *, mode: int | None = None) -> None:
        """Copy a file or a folder (recursively) to a path on the VM (relative: the user's home)."""
        ...

    def lines(self, command: str, *, step: str, deadline: Deadline) -> Lines:
        """Run a long-running command; its stdout lines as they arrive."""
        ...


class Kube(Protocol):
    """The cluster's API. Objects are plain dicts as the API returns them."""

    def apply(self, manifest: str, *, namespace: str | None = None) -> list[dict]:
        """Server-side apply of a multi-document YAML manifest (core and custom kinds)."""
        ...

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        ...

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict]:
        ...

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               deadline: Deadline | None = None) -> None:
        """Delete (NotFound is done); with a deadline, wait until it is gone (finalizers included)."""
        ...

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: dict) -> dict:
        """A JSON merge patch of one object (as `kubectl patch --type merge`); it owns no fields."""
        ...

    def watch(self, api_version: str, kind: str, namespace: str | None, *,
              deadline: Deadline) -> Iterator[tuple[str, dict]]:
        """(event type, object) until the deadline; survives expiry (410 Gone -> relist)."""
        ...

    def exec(self, namespace: str, pod: str, command: Sequence[str], *, container: str | None = None,
             timeout: float = 60) -> Result:
        ...

    def logs(self, namespace: str, pod: str, *, container: str | None = None, tail_lines: int = 500,
             timeout: float = 30) -> str:
        """The last lines of a pod's (container's) log."""
        ...

    def exec_lines(self, namespace: str, pod: str, command: Sequence[str], *, container: str | None = None,
                   deadline: Deadline) -> Lines:
        """Exec a long-running command in a pod; its stdout lines as they arrive."""
        ...


class Istioctl(Protocol):
    def run(self, args: Sequence[str], *, step: str, timeout: float = 300, stdin: str | None = None,
            check: bool = True) -> Result:
        """istioctl with the cluster's temporary kubeconfig and an allowlisted environment."""
        ...

    def version(self) -> str:
        ...


@dataclass(frozen=True)
class NetworkInfo:
    """The run's VPC network and subnetwork (self links) in the run's region."""

    network: str
    subnetwork: str
    region: str
    created: bool  # False: an existing --network/--subnetwork
    pods_range_name: str | None = None  # secondary range names when the subnetwork is the run's
    services_range_name: str | None = None


@dataclass(frozen=True)
class ClusterInfo:
    name: str
    zone: str
    endpoint: str  # host or host:port of the API server (https)
    ca_pem: str
    pod_range: str


@dataclass(frozen=True)
class VmInfo:
    name: str
    zone: str
    internal_ip: str
    external_ip: str
    host_keys: Mapping[str, str]  # key type -> base64, to pin


class Cloud(Protocol):
    """Create, describe and delete the run's cloud resources; list what carries the run's labels."""

    def preflight(self, deadline: Deadline) -> None:
        """Read-only checks before anything is created; one line per problem."""
        ...

    def create_network(self, deadline: Deadline) -> NetworkInfo:
        ...

    def create_firewall_rules(self, network: NetworkInfo, deadline: Deadline) -> tuple[str, ...]:
        ...

    def create_cluster(self, network: NetworkInfo, deadline: Deadline) -> ClusterInfo:
        ...

    def create_vm(self, network: NetworkInfo, ssh_user: str, ssh_public_key: str,
                  deadline: Deadline) -> VmInfo:
        ...

    def teardown(self, report: Path) -> dict[str, object]:
        """Delete what the ledger holds, in reverse, verify, write the report."""
        ...

    def leftovers(self) -> list[str]:
        """Everything that still carries the run's labels or name prefix."""
        ...
