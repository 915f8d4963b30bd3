"""The lab's data plane, counted once the exercises are done and before teardown: every proxy of the
run (the gateways and the pods' sidecars on the node, each VM's sidecar), what its admin port says it is
(`/server_info`: Envoy and its version) and its resident memory, with the machine's memory in use.
Written to the run's `lab-dataplane.json` (LabPlatform.report); the lab's self-tests assert on it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from meshvm.lab.envoy.proxy import Envoy
from meshvm.lab.hostsys import pid_ns
from meshvm.lab.vmhost import VmHost

log = logging.getLogger(__name__)
ADMIN = "http://127.0.0.1:15000/server_info"


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0.0
    return round(kb / 1024, 1)


def _version(info: dict[str, Any]) -> str:
    return str(info.get("version", "")).split("/")[1] if info.get("version", "").count("/") >= 2 else ""


def node_proxy(where: str, envoy: Envoy) -> dict[str, Any]:
    try:
        info = envoy.server_info()
    except Exception as e:  # noqa: BLE001 (a proxy that does not answer is reported as such)
        return {"proxy": where, "error": f"{type(e).__name__}: {e}"}
    pid = envoy.proc.pid if envoy.proc else 0
    return {"proxy": where, "admin": envoy.admin_address, "version": _version(info), "state": info.get("state"),
            "rss_mib": rss_mib(pid)}


def vm_proxy(name: str, vm: VmHost) -> dict[str, Any]:
    r = vm.run(["curl", "-sS", "-m", "3", ADMIN], timeout=10)
    if r.returncode != 0:
        return {"proxy": f"vm/{name}", "error": (r.stderr or r.stdout).strip()[-300:]}
    info = json.loads(r.stdout)
    pid1 = vm.pid1
    ns = pid_ns(pid1) if pid1 else None
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and ns and pid_ns(int(p)) == ns and _comm(int(p)) == "envoy"]
    return {"proxy": f"vm/{name}", "admin": "127.0.0.1:15000", "version": _version(info), "state": info.get("state"),
            "rss_mib": round(sum(rss_mib(p) for p in pids), 1)}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def machine_used_gib() -> float:
    with open("/proc/meminfo") as f:
        kb = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return round((kb["MemTotal"] - kb["MemAvailable"]) / 2**20, 2)


def census(node_proxies: Iterable[tuple[str, Envoy]], vms: Iterable[tuple[str, VmHost]]) -> dict[str, Any]:
    proxies = [node_proxy(w, e) for w, e in node_proxies] + [vm_proxy(n, v) for n, v in vms]
    return {"proxies": proxies, "envoy_processes": len([p for p in proxies if "error" not in p]),
            "envoy_rss_mib": round(sum(p.get("rss_mib", 0) for p in proxies), 1),
            "machine_used_gib": machine_used_gib()}
