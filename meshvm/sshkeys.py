"""The run's ephemeral SSH key: made for the run, registered as a secret, never in the artifacts."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from meshvm import redact


@dataclass(frozen=True)
class SshKey:
    private: paramiko.PKey
    public_line: str  # "ssh-ed25519 AAAA... <comment>", as GCE's ssh-keys metadata wants it
    path: Path


def run_key(folder: Path, comment: str) -> SshKey:
    """The key in `folder` if there is one (a kept run's, adopted by `--reuse`), else a new one."""
    path = folder / "id_ed25519"
    if not path.is_file():
        return new_key(folder, comment)
    pem = path.read_text()
    redact.register(pem)
    private = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
    return SshKey(private, f"{private.get_name()} {private.get_base64()} {comment}", path)


def new_key(folder: Path, comment: str) -> SshKey:
    """An ed25519 key in `folder` (0600); paramiko cannot generate ed25519 itself."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption()).decode()
    redact.register(pem)
    path = folder / "id_ed25519"
    path.touch(mode=0o600)
    path.write_text(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return SshKey(paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), f"{public} {comment}", path)
