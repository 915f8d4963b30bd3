"""The GCP half of the janitor: suite resources of runs whose `e2e-expires` has passed (optionally one
run id), listed, and with --yes deleted. An unexpired run is never touched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshvm import validate
from meshvm.deadlines import Deadline
from meshvm.gcp import credentials, sweep
from meshvm.gcp.clients import Clients

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
    """Print what expired runs left; delete it with `delete`. 0 nothing left, 1 something remains."""
    c = Clients(t, credentials.load(t))
    deadline = Deadline.after(JANITOR_SECONDS, "gcp janitor")
    found = sweep.find(c, run_id=run_id, only_expired=True, deadline=deadline)
    print(f"gcp project {t.gcp_project}: {len(found)} expired suite resource(s)"
          + (f" of run {run_id}" if run_id else ""))
    for e in found:
        print(f"  {e.key}  (run {e.extra.get('e2e-run', '?')}, expires {e.extra.get('e2e-expires', '?')})")
    if not delete:
        if found:
            print("dry run: nothing deleted; add --yes to remove the above")
        return 1 if found else 0
    failures = sweep.delete_all(c, found, deadline)
    left = sweep.find(c, run_id=run_id, only_expired=True, deadline=deadline)
    print(f"  removed; {len(left)} remain" + "".join(f"\n  still: {e.key}" for e in left)
          + "".join(f"\n  error: {f}" for f in failures))
    return 1 if left or failures else 0
