"""Run identity: the run id, the labels every resource carries, and every name derived from the id.

Names are built here only, so teardown, `--reuse` and the janitor find exactly what a run made.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SUITE = "meshvm"
PREFIX = "mvm"  # short: GKE cluster names are limited to 40 characters
RUN_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


def new_run_id(now: datetime | None = None) -> str:
    """Time first (sortable, readable in a console listing), then randomness (unique per machine)."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dt%H%M%S}-{secrets.token_hex(2)}"


def expiry_label(now: datetime, hours: int) -> str:
    """Label values allow only [a-z0-9_-]: a UTC timestamp the janitor compares as text."""
    return f"{now + timedelta(hours=hours):%Y%m%dt%H%M}z"


@dataclass(frozen=True)
class Names:
    run_id: str
    cluster: str
    vm: str

    @classmethod
    def derive(cls, run_id: str, cluster: str | None = None, vm: str | None = None) -> Names:
        base = f"{PREFIX}-{run_id}"
        return cls(run_id=run_id, cluster=cluster or base, vm=vm or f"{base}-vm")

    @property
    def base(self) -> str:
        return f"{PREFIX}-{self.run_id}"

    @property
    def network(self) -> str:
        return f"{self.base}-net"

    @property
    def subnetwork(self) -> str:
        return f"{self.base}-subnet"

    @property
    def vm_tag(self) -> str:
        """The recipe's `--tags=mesh-vm`, made unique per run."""
        return f"{self.base}-mesh-vm"

    @property
    def firewall_prefix(self) -> str:
        """Firewall rules carry no labels: the janitor finds them by this prefix."""
        return f"{self.base}-fw-"

    def firewall(self, purpose: str) -> str:
        return f"{self.firewall_prefix}{purpose}"

    def labels(self, expires: str) -> dict[str, str]:
        return {"e2e-suite": SUITE, "e2e-run": self.run_id, "e2e-expires": expires}
