"""The janitor: finds what killed runs left behind and, with --yes, removes it.

    python -m meshvm.janitor [--platform lab|gcp] [--run-id ID] [--yes]
        gcp: --gcp-project P [--gcp-access-token-file F] [--compute-endpoint U] [--container-endpoint U]

Dry run by default. A run whose process is still alive is never touched. Exit 0 when nothing is
left (or, in a dry run, nothing was found), 1 when something remains, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from meshvm.naming import RUN_ID_RE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s cleanup --", description=__doc__.splitlines()[0])
    parser.add_argument("--platform", choices=("lab", "gcp"), default="lab")
    parser.add_argument("--run-id", help="only this run (default: every run whose process is gone)")
    parser.add_argument("--yes", action="store_true", help="delete (default: only list)")
    gcp_args = parser.add_argument_group("gcp (runs whose e2e-expires label has passed; --run-id: that run "
                                         "whatever its expiry)")
    gcp_args.add_argument("--gcp-project")
    gcp_args.add_argument("--gcp-access-token-file", type=Path, help="default: Application Default Credentials")
    gcp_args.add_argument("--compute-endpoint")
    gcp_args.add_argument("--container-endpoint")
    args = parser.parse_args(argv)
    if args.run_id and not RUN_ID_RE.fullmatch(args.run_id):
        parser.error(f"--run-id {args.run_id!r} is not a run id (lowercase letters, digits and '-')")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.platform == "gcp":
        return gcp(args)
    return lab(args.run_id, args.yes)


def gcp(args: argparse.Namespace) -> int:
    from meshvm.gcp import janitor as gcp_janitor  # the google clients load only when needed
    from meshvm.gcp.credentials import CredentialsMissing

    target = gcp_janitor.Target(args.gcp_project, args.compute_endpoint, args.container_endpoint,
                                args.gcp_access_token_file)
    bad = gcp_janitor.problems(target)
    if bad:
        print("\n".join(f"meshvm janitor: {p}" for p in bad), file=sys.stderr)
        return 2
    try:
        rc = gcp_janitor.run(target, args.run_id, args.yes)
        if rc == 0 and args.run_id and args.yes:
            _secrets(args.run_id)
        return rc
    except CredentialsMissing as e:
        print(f"meshvm janitor: {e}", file=sys.stderr)
        return 2


def _secrets(run_id: str) -> None:
    from meshvm.secretdir import remove_leftovers

    for d in remove_leftovers(run_id):
        print(f"  removed the run's secret dir {d}")


def command(platform: str, run_id: str, gcp_project: str | None = None, compute_endpoint: str | None = None,
            container_endpoint: str | None = None) -> str:
    """The exact command that removes a run's resources (what a kept or interrupted run tells its user)."""
    args = ["nox", "-s", "cleanup", "--"]
    if platform == "gcp":
        args += ["--platform", "gcp", "--gcp-project", str(gcp_project)]
        args += [a for flag, url in (("--compute-endpoint", compute_endpoint),
                                     ("--container-endpoint", container_endpoint)) if url for a in (flag, url)]
    return shlex.join([*args, "--run-id", run_id, "--yes"])


def lab(run_id: str | None, delete: bool) -> int:
    from meshvm.lab import addressing  # the lab only: never loaded on the gcp path

    with addressing.allocation_lock():  # no run claims a block while its claims are judged and swept
        return _lab(run_id, delete)


def _lab(run_id: str | None, delete: bool) -> int:
    from meshvm.lab import addressing, leaks, netsafety, sweep

    remaining = 0
    for claim in netsafety.read_claims():
        if run_id and claim.get("run_id") != run_id:
            continue
        tag, path = str(claim.get("tag", "")), str(claim["path"])
        if not addressing.claim_is_stale(path):
            print(f"run {claim.get('run_id')} (tag {tag}) is still running (pid {claim.get('pid')}): skipped")
            continue
        found = leaks.find_leftovers(tag) if tag else [f"claim {path} (unreadable)"]
        print(f"run {claim.get('run_id')} (tag {tag or '?'}): {len(found)} thing(s) left")
        for line in found:
            print(f"  {line}")
        if delete:
            left = sweep.sweep(tag) if tag else sweep.drop_claim(path)
            if not left and claim.get("run_id"):
                _secrets(str(claim["run_id"]))
            print(f"  removed; {len(left)} remain" + "".join(f"\n  still: {x}" for x in left))
            remaining += len(left)
        else:
            remaining += len(found)
    if remaining and not delete:
        print("dry run: nothing deleted; add --yes to remove the above")
    return 1 if remaining else 0


if __name__ == "__main__":
    sys.exit(main())
