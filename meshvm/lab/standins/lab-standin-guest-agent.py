#!/usr/bin/python3
"""Lab stand-in for the GCE guest agent's account manager (runs inside a lab VM).

Reads the instance metadata the lab wrote to /etc/lab-standin/metadata.json and, for each line
`user:<key-type> <base64> [comment]` of `ssh-keys`, creates the user (home, bash), adds them to
`google-sudoers` (passwordless sudo, as GCE does) and writes ~/.ssh/authorized_keys (0600).
"""

import grp
import json
import os
import pwd
import subprocess
import time

METADATA = "/etc/lab-standin/metadata.json"
SUDO_GROUP = "google-sudoers"


def parse_ssh_keys(value: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in value.splitlines():
        user, sep, key = line.strip().partition(":")
        if sep and user and key.strip():
            keys.setdefault(user, []).append(key.strip())
    return keys


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, timeout=30)


def ensure_sudo_group() -> None:
    try:
        grp.getgrnam(SUDO_GROUP)
    except KeyError:
        run("groupadd", SUDO_GROUP)
    path = "/etc/sudoers.d/google_sudoers"
    with open(path + ".tmp", "w") as f:
        f.write(f"%{SUDO_GROUP} ALL=(ALL:ALL) NOPASSWD:ALL\n")
    os.chmod(path + ".tmp", 0o440)
    os.replace(path + ".tmp", path)


def ensure_user(user: str, keys: list[str]) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        run("useradd", "-m", "-s", "/bin/bash", "-G", SUDO_GROUP, user)
    pw = pwd.getpwnam(user)
    ssh_dir = os.path.join(pw.pw_dir, ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    os.chown(ssh_dir, pw.pw_uid, pw.pw_gid)
    tmp = os.path.join(ssh_dir, "authorized_keys.tmp")
    with open(tmp, "w") as f:
        f.write("".join(k + "\n" for k in keys))
    os.chmod(tmp, 0o600)
    os.chown(tmp, pw.pw_uid, pw.pw_gid)
    os.replace(tmp, os.path.join(ssh_dir, "authorized_keys"))  # sshd never sees half a file


def main() -> None:
    time.sleep(float(os.environ.get("LAB_STANDIN_AGENT_DELAY", "2")))  # the modelled lag, not a wait
    with open(METADATA) as f:
        metadata = json.load(f)
    users = parse_ssh_keys(metadata.get("ssh-keys", ""))
    ensure_sudo_group()
    for user, keys in users.items():
        ensure_user(user, keys)
        print(f"lab-standin guest agent: created user {user} ({len(keys)} key(s))", flush=True)


if __name__ == "__main__":
    main()
