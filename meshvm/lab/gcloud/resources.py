"""Per-kind behaviour of the stand-in's Compute objects: references that must exist, what blocks a
delete, and what a create or delete does to the lab (VMs booted/halted, router firewall rules)."""

from __future__ import annotations

import base64
import logging
import time

from meshvm.lab.gcloud.compute import MACHINE_CPUS, Compute
from meshvm.lab.gcloud.faults import ApiError, not_found

log = logging.getLogger(__name__)


def _name(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[-1]


def _invalid(field: str, value: str, why: str) -> ApiError:
    return ApiError(400, "invalid", f"Invalid value for field '{field}': '{value}'. {why}")


class Kinds:
    def __init__(self, c: Compute) -> None:
        self.c = c

    def _has(self, key: str) -> bool:
        with self.c.w.lock:
            return key in self.c.w.objects

    def _users(self, prefix: str, pred) -> list[str]:  # noqa: ANN001
        with self.c.w.lock:
            return [o["name"] for k, o in self.c.w.objects.items() if k.startswith(prefix) and pred(o)]

    def _settling(self, network: str, what: str) -> None:
        with self.c.w.lock:
            until = self.c.w.settling.get(network, 0.0)
        if time.monotonic() < until:
            raise ApiError(400, "resourceNotReady", f"The resource '{what}' is not ready")

    # networks ----------------------------------------------------------------------------------------
    def check_network_delete(self, net: dict) -> None:
        self._settling(net["name"], f"projects/{self.c.w.project}/global/networks/{net['name']}")
        users = [u for scope in ("regions/", "zones/", "global/firewalls/")  # also NEGs and instance groups
                 for u in self._users(scope, lambda o: _name(o.get("network", "")) == net["name"])]
        if users:
            raise ApiError(400, "resourceInUseByAnotherResource",
                           f"The network resource '{net['name']}' is already being used by '{users[0]}'")

    # subnetworks -------------------------------------------------------------------------------------
    def check_subnetwork(self, sub: dict) -> None:
        if not self._has(f"global/networks/{_name(sub.get('network', ''))}"):
            raise _invalid("resource.network", sub.get("network", ""), "The referenced network resource cannot be found.")
        if not sub.get("ipCidrRange"):
            raise _invalid("resource.ipCidrRange", "", "An IP range is required.")

    def check_subnetwork_delete(self, sub: dict) -> None:
        self._settling(_name(sub.get("network", "")), f"subnetworks/{sub['name']}")
        users = self._users("zones/", lambda o: _name(o.get("subnetwork", "")) == sub["name"] or any(
            _name(n.get("subnetwork", "")) == sub["name"] for n in o.get("networkInterfaces", [])))
        if users:
            raise ApiError(400, "resourceInUseByAnotherResource",
                           f"The subnetwork resource '{sub['name']}' is already being used by '{users[0]}'")

    # firewalls -----------------------------------------------------------------------------------------
    def check_firewall(self, fw: dict) -> None:
        if not self._has(f"global/networks/{_name(fw.get('network', 'default'))}"):
            raise _invalid("resource.network", fw.get("network", ""), "The referenced network resource cannot be found.")
        if not fw.get("sourceRanges") and not fw.get("sourceTags"):
            raise _invalid("resource.sourceRanges", "", "A source range or a source tag is required.")
        fw.setdefault("direction", "INGRESS")
        fw.setdefault("priority", 1000)

    def sync_firewall(self, _: dict | None = None) -> None:
        with self.c.w.lock:
            rules = [o for k, o in self.c.w.objects.items() if k.startswith("global/firewalls/")]
        self.c.backing.set_firewall(rules)

    def delete_firewall(self, fw: dict) -> None:
        with self.c.w.lock:
            self.c.w.objects.pop(f"global/firewalls/{fw['name']}", None)
        self.sync_firewall()

    # instances -------------------------------------------------------------------------------------------
    def check_instance(self, zone: str, inst: dict) -> None:
        mt = _name(inst.get("machineType", ""))
        if mt not in MACHINE_CPUS or f"zones/{zone}/" not in inst.get("machineType", ""):
            raise _invalid("resource.machineType", inst.get("machineType", ""), "Machine type not found in zone.")
        nics = inst.get("networkInterfaces") or [{}]
        if not self._has(f"global/networks/{_name(nics[0].get('network', 'default'))}"):
            raise _invalid("resource.networkInterfaces[0].network", nics[0].get("network", ""),
                           "The referenced network resource cannot be found.")
        image = (inst.get("disks") or [{}])[0].get("initializeParams", {}).get("sourceImage", "")
        if "/family/" in image:
            self.c.image_family(image.split("/")[1], _name(image))  # 404 for a retired family
        inst["status"] = "PROVISIONING"

    def boot_instance(self, inst: dict) -> None:
        inst["status"] = "STAGING"
        meta = {i["key"]: i.get("value", "") for i in inst.get("metadata", {}).get("items", [])}
        tags = inst.get("tags", {}).get("items", [])
        internal, external = self.c.backing.boot(inst["name"], tags, meta)
        nic = inst["networkInterfaces"][0]
        nic["networkIP"] = internal
        for ac in nic.get("accessConfigs", []):
            ac["natIP"] = external
        inst["status"] = "RUNNING"
        self.sync_firewall()

    def halt_instance(self, inst: dict) -> None:
        inst["status"] = "STOPPING"
        self.c.backing.halt(inst["name"])

    def guest_attributes(self, project: str, zone: str, name: str, query_path: str) -> dict:
        inst = self.c.get(project, f"zones/{zone}", "instances", name)
        meta = {i["key"]: i.get("value", "") for i in inst.get("metadata", {}).get("items", [])}
        keys = self.c.backing.host_keys(name) if meta.get("enable-guest-attributes", "").upper() == "TRUE" else None
        if not keys or query_path.rstrip("/") != "hostkeys":
            raise not_found(f"projects/{project}/zones/{zone}/instances/{name}/guestAttributes/{query_path}")
        items = [{"namespace": "hostkeys", "key": k, "value": v} for k, v in keys.items()]
        for v in keys.values():
            base64.b64decode(v, validate=True)  # only real keys are published
        return {"kind": "compute#guestAttributes", "queryPath": query_path, "queryValue": {"items": items}}
