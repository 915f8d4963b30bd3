"""The janitor: finds what killed runs left behind and, with --yes, removes it.

    python -m meshvm.janitor [--platform lab|gcp] [--run-id ID] [--yes]

Dry run by default. A run whose process is still alive is never touched. Exit 0 when nothing is
left (or, in a dry run, nothing was found), 1 when something remains, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys

from meshvm.lab import addressing, leaks, sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s cleanup --", description=__doc__.splitlines()[0])
    parser.add_argument("--platform", choices=("lab", "gcp"), default="lab")
    parser.add_argument("--run-id", help="only this run (default: every run whose process is gone)")
    parser.add_argument("--yes", action="store_true", help="delete (default: only list)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.platform == "gcp":
        print("meshvm janitor: --platform gcp: not available yet (it comes with the GCP platform); "
              "list leftovers with: gcloud compute instances list --filter=labels.e2e-suite=meshvm",
              file=sys.stderr)
        return 2
    return lab(args.run_id, args.yes)


def lab(run_id: str | None, delete: bool) -> int:
    remaining = 0
    for claim in addressing.read_claims():
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
            print(f"  removed; {len(left)} remain" + "".join(f"\n  still: {x}" for x in left))
            remaining += len(left)
        else:
            remaining += len(found)
    if remaining and not delete:
        print("dry run: nothing deleted; add --yes to remove the above")
    return 1 if remaining else 0


if __name__ == "__main__":
    sys.exit(main())
