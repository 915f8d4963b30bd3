"""Recipe: "Install ratings app on the VM" (node and npm, the app, run it, test it).

The recipe's `node ratings.js 9080 &` dies with the SSH session; a systemd unit keeps it running and
lets the negative control stop and start it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.seams import CommandFailed, VmShell

PORT = 9080
UNIT = "ratings"
# The documented answer of ratings v1 for product 123 (docs/facts.md section 2).
EXPECTED = {"id": 123, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
LISTS_LOCK = "/var/lib/apt/lists/lock"


class ListsLocked(Exception):
    """apt's package-lists lock is held (first boot's apt run): `DPkg::Lock::Timeout` does not wait for it."""


def apt_get(vm: VmShell, args: str, deadline: Deadline, step: str) -> None:
    """apt-get that waits for the dpkg lock (held by Ubuntu's first-boot apt runs) within the deadline,
    and tries again while the package-lists lock is held (docs/facts.md section 6)."""
    def attempt() -> None:
        wait = int(deadline.remaining())
        command = f"apt-get -q -y -o DPkg::Lock::Timeout={wait} {args}"
        r = vm.run(command, sudo=True, env=APT_ENV, step=step, timeout=deadline.cap(wait + 60), check=False)
        if r.ok:
            return
        if LISTS_LOCK in r.stderr + r.stdout:
            raise ListsLocked(f"{step}: {LISTS_LOCK} is held")
        raise CommandFailed(step, command, r)

    retry.until(step, attempt, deadline, transient=(ListsLocked,), accept=lambda _: True, initial=1.0, ceiling=5.0)


def first_boot_done(vm: VmShell, deadline: Deadline) -> None:
    """Wait for cloud-init's first boot to finish (it runs apt) where the image has cloud-init;
    `status --wait` exits 2 when it finished with recoverable errors, which is done too."""
    wait = int(deadline.remaining())
    vm.run(f"command -v cloud-init >/dev/null || exit 0; timeout {wait} cloud-init status --wait; rc=$?; "
           "[ $rc -eq 0 ] || [ $rc -eq 2 ]", sudo=True, step="ratings: wait for cloud-init", timeout=deadline.cap(wait + 30))


def ensure_node(vm: VmShell, deadline: Deadline) -> None:
    """`sudo apt-get install nodejs npm`, unless both are already there."""
    if vm.run("command -v node && command -v npm", step="ratings: find node", check=False).ok:
        return
    first_boot_done(vm, deadline)
    apt_get(vm, "update", deadline, "ratings: apt-get update")
    apt_get(vm, "install --no-install-recommends nodejs npm", deadline, "ratings: install nodejs npm")


def home(vm: VmShell) -> str:
    return vm.run('printf %s "$HOME"', step="find home").stdout.strip()


def unit_text(user: str, app_dir: str) -> str:
    return "\n".join([
        "[Unit]", "Description=BookInfo ratings (meshvm)", "After=network.target", "",
        "[Service]", f"User={user}", f"WorkingDirectory={app_dir}",
        f"ExecStart=/usr/bin/env node ratings.js {PORT}", "Restart=on-failure", "RestartSec=2", "",
        "[Install]", "WantedBy=multi-user.target", "",
    ])


def install_ratings(vm: VmShell, source_dir: Path, user: str, deadline: Deadline) -> None:
    """Install ratings app on the VM: copy it, `npm install`, run it as a unit, test it."""
    ensure_node(vm, deadline)
    app_dir = f"{home(vm)}/ratings"
    vm.upload(source_dir, app_dir)
    vm.run(f"cd {shlex.quote(app_dir)} && npm install --no-audit --no-fund", step="ratings: npm install",
           timeout=deadline.cap(600))
    path = f"/etc/systemd/system/{UNIT}.service"
    vm.run(f"printf %s {shlex.quote(unit_text(user, app_dir))} > {path}", sudo=True,
           step="ratings: write unit")
    vm.run(f"systemctl daemon-reload && systemctl enable {UNIT} && systemctl restart {UNIT}",
           sudo=True, step="ratings: start unit")
    wait_answering(vm, deadline)


def ask(vm: VmShell) -> object:
    """`curl http://localhost:9080/ratings/123` on the VM: the parsed answer, or what came instead."""
    return vm.run(f"curl -sS -m 5 http://localhost:{PORT}/ratings/123", step="ratings: test it", check=False,
                  timeout=15).answer()


def wait_answering(vm: VmShell, deadline: Deadline) -> None:
    retry.until(f"ratings on the VM to answer {EXPECTED}", lambda: ask(vm), deadline,
                accept=lambda answer: answer == EXPECTED, initial=0.3, ceiling=3)


def stop_ratings(vm: VmShell) -> None:
    vm.run(f"systemctl stop {UNIT}", sudo=True, step="ratings: stop")


def start_ratings(vm: VmShell, deadline: Deadline) -> None:
    vm.run(f"systemctl start {UNIT}", sudo=True, step="ratings: start")
    wait_answering(vm, deadline)
