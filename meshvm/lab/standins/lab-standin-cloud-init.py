#!/usr/bin/python3
"""Lab stand-in for `cloud-init status --wait` (runs inside a lab VM as /usr/local/bin/cloud-init):
waits until the first-boot apt stand-in has finished, then prints cloud-init's `status: done`."""

import subprocess
import sys
import time

FIRST_BOOT = "lab-standin-apt-first-boot.service"


def state() -> str:
    return subprocess.run(["systemctl", "show", "-p", "ActiveState", "--value", FIRST_BOOT], capture_output=True,
                          text=True, timeout=10, check=False).stdout.strip()


def main(argv: list[str]) -> int:
    if argv[:1] != ["status"]:
        print("lab stand-in: only `cloud-init status [--wait]` is modelled", file=sys.stderr)
        return 2
    while "--wait" in argv and state() in ("active", "activating", "reloading"):
        time.sleep(0.2)
    print("status: " + ("running" if state() in ("active", "activating") else "done"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
