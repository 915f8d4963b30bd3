"""The GCP half of the janitor: suite resources of runs whose `e2e-expires` has passed, listed, and with
--yes deleted. Without --run-id an unexpired run is never touched; a run named with --run-id is
cleaned whether or not it has expired (what a kept run's `--keep` message tells its user to do).
Only what carries the suite's labels, or is attributed to a run through its labelled cluster or
network (load-balancer leftovers), is ever touched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshvm import validate
from meshvm.deadlines import Deadline
from meshvm.gcp import credentials, sweep
from meshvm.gcp.clients import Clients
from meshvm.ledger import Entry
from meshvm.naming import SUITE

JANITOR_SECONDS = 3600


@dataclass(frozen=True)
class Target:
    gcp_project: str | None
    compute_endpoint: str | None = None
    container_endpoint: str | None = None
    gcp_access_token_file: Path | None = None


def problems(t: Target) -> list[str]:
    out = [] if t.gcp_project else ["--gcp-project: required with --platform gcp"]
    for flag, url in (("--compute-endpoint", t.compute_endpoint), ("--container-endpoint", t.container_endpoint)):
        why = validate.url(url) if url else None
        if why:
            out.append(f"{flag} {url}: {why}")
    return out


def run(t: Target, run_id: str | None, delete: bool) -> int:
    """Print what expired runs (or the named run) left; delete it with `delete`. 0 nothing left, 1 something remains."""
    c = Clients(t, credentials.load(t))
    deadline = Deadline.after(JANITOR_SECONDS, "gcp janitor")
    found = find(c, run_id, deadline)
    print(f"gcp project {t.gcp_project}: " + (f"{len(found)} suite resource(s) of run {run_id} (expired or not)"
                                              if run_id else f"{len(found)} expired suite resource(s)"))
    for e in found:
        print(f"  {e.key}  (run {e.extra.get('e2e-run', '?')}, expires {e.extra.get('e2e-expires', '?')})")
    if not delete:
        if found:
            print("dry run: nothing deleted; add --yes to remove the above")
        return 1 if found else 0
    failures = sweep.delete_all(c, found, deadline)
    left = find(c, run_id, deadline)
    print(f"  removed; {len(left)} remain" + "".join(f"\n  still: {e.key}" for e in left)
          + "".join(f"\n  error: {f}" for f in failures))
    return 1 if left or failures else 0


def find(c: Clients, run_id: str | None, deadline: Deadline) -> list[Entry]:
    """Expired runs' resources; a named run's whatever its expiry. A firewall rule found by the run's
    name prefix alone (no suite labels in its description) is left alone: it may not be the suite's."""
    found = sweep.find(c, run_id=run_id, only_expired=not run_id, deadline=deadline)
    return [e for e in found if not _unlabelled_rule(e)]


def _unlabelled_rule(e: Entry) -> bool:
    return e.kind == "firewall" and not e.name.startswith(sweep.GKE_PREFIXES) and e.extra.get("e2e-suite") != SUITE
