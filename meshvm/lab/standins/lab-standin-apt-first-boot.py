#!/usr/bin/python3
"""Lab stand-in for Ubuntu's first-boot apt run (runs inside a lab VM).

Takes the dpkg frontend lock and apt's package-lists lock the way apt and dpkg do (POSIX record
locks, fcntl F_SETLK(W) via lockf, not flock), tells systemd it holds them, keeps them for
LAB_STANDIN_DPKG_LOCK_HOLD seconds, exits. `DPkg::Lock::Timeout` waits for the first only: an
`apt-get update` meanwhile fails on the lists lock (docs/facts.md section 6), as on a new GCE VM.
"""

import fcntl
import os
import socket
import time

LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/apt/lists/lock")


def sd_notify(message: bytes) -> None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message, path)


def main() -> None:
    for lock in LOCKS:
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        fcntl.lockf(os.open(lock, os.O_RDWR | os.O_CREAT, 0o640), fcntl.LOCK_EX)
    sd_notify(b"READY=1")
    print(f"lab-standin apt first boot: holding {', '.join(LOCKS)}", flush=True)
    time.sleep(float(os.environ.get("LAB_STANDIN_DPKG_LOCK_HOLD", "3")))  # the modelled apt run
    print("lab-standin apt first boot: released them", flush=True)


if __name__ == "__main__":
    main()
