"""Small host-side helpers of the lab: deadline polling, cgroup2 discovery, process lookups."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from meshvm import retry
from meshvm.deadlines import Deadline

T = TypeVar("T")
_POLL = 0.02
_CLONE_NEWNET = 0x40000000
LAB_CGROUP = "meshvm-lab"  # shared parent of every VM's cgroup2 subtree; left in place


def wait_until(check: Callable[[], T | None], deadline: float, what: str, interval: float = _POLL) -> T:
    """Poll `check` until it returns a truthy value or the monotonic `deadline` passes.

    A thin lab-side spelling of the suite's one retry policy (short, fixed-ish intervals: boots
    and links come up in milliseconds here).
    """
    return retry.until(what, check, Deadline(deadline, what), initial=interval, ceiling=interval * 5,
                       max_attempts=100_000)  # type: ignore[return-value]


def cgroup2_root() -> str:
    """Where the cgroup2 hierarchy is mounted: /sys/fs/cgroup (pure v2) or .../unified (hybrid)."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                mounts.append(pre.split()[4])
    for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if preferred in mounts:
            return preferred
    if not mounts:
        raise RuntimeError("no cgroup2 hierarchy mounted: a lab VM's systemd needs one")
    return mounts[0]


def remove_cgroup(path: str, deadline: float) -> None:
    """Remove a cgroup2 subtree once its last process is gone."""
    if not os.path.isdir(path):
        return

    def emptied() -> bool:
        with open(os.path.join(path, "cgroup.events")) as f:
            return "populated 0" in f.read()

    wait_until(emptied, deadline, f"cgroup {path} to empty")
    for root, dirs, _ in os.walk(path, topdown=False):
        for d in dirs:
            os.rmdir(os.path.join(root, d))
    os.rmdir(path)


def child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def entered_processes(pid1: int) -> Iterator[int]:
    """Processes of pid1's pid namespace whose parent lives outside it (started with nsenter).

    Their zombies are reaped by their outside parent, or by the host's init if that parent died
    first (slowly, here), and the VM's systemd waits for them at halt.
    """
    ns = pid_ns(pid1)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid1 or pid_ns(int(entry)) != ns:
            continue
        parent = parent_pid(int(entry))
        if parent is not None and pid_ns(parent) != ns:
            yield int(entry)


def run_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a short-lived thread that joined `netns`: its sockets live in that namespace.

    setns(CLONE_NEWNET) only affects the calling thread, so the rest of the process is untouched.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into netns {netns} failed")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as e:  # handed to the caller's thread
            error.append(e)

    t = threading.Thread(target=body, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]
