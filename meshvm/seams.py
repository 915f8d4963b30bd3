"""The seams the recipe runs over. One implementation each; a platform only says where the far side is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Result:
    """What a command on the VM did."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class CommandFailed(Exception):
    """A VM command exited non-zero where success was needed: step, command, rc, stderr tail."""

    def __init__(self, step: str, command: str, result: Result):
        self.step, self.command, self.result = step, command, result
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        super().__init__(f"{step}: `{command}` exited {result.rc}: {tail or '(no output)'}")


class VmShell(Protocol):
    def run(self, command: str | Sequence[str], *, step: str, sudo: bool = False, timeout: float = 60,
            check: bool = True, env: Mapping[str, str] | None = None) -> Result:
        """Run a command (argv, quoted here; or a shell snippet) with a timeout."""
        ...

    def upload(self, local: Path, remote: str, *, mode: int | None = None) -> None:
        """Copy a file or a folder (recursively) to a path on the VM (relative: the user's home)."""
        ...
