#!/usr/bin/python3
"""Lab stand-in for Ubuntu's first-boot apt run (runs inside a lab VM).

Takes the dpkg frontend lock the way apt and dpkg do (a POSIX record lock, fcntl F_SETLK(W) via
lockf, not flock), tells systemd it holds it, keeps it for LAB_STANDIN_DPKG_LOCK_HOLD seconds, exits.
"""

import fcntl
import os
import socket
import time

LOCK = "/var/lib/dpkg/lock-frontend"


def sd_notify(message: bytes) -> None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message, path)


def main() -> None:
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    sd_notify(b"READY=1")
    print(f"lab-standin apt first boot: holding {LOCK}", flush=True)
    time.sleep(float(os.environ.get("LAB_STANDIN_DPKG_LOCK_HOLD", "3")))  # the modelled apt run
    print(f"lab-standin apt first boot: released {LOCK}", flush=True)


if __name__ == "__main__":
    main()
