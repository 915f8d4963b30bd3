"""The mesh VM: a GCE instance as the recipe makes it, waited for with our own operation loop,
then RUNNING, its IPs, and its SSH host keys from the guest attributes (to pin)."""

from __future__ import annotations

from google.cloud import compute_v1

from meshvm import retry
from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import adopt, errors
from meshvm.gcp.clients import Clients, insert, not_found
from meshvm.gcp.operations import delete_and_wait, exists, wait_compute
from meshvm.ledger import Entry, Ledger
from meshvm.seams import NetworkInfo, VmInfo

IMAGE_PROJECT = "ubuntu-os-cloud"
BOOT_DISK_GB = 20


def body(cfg: Config, network: NetworkInfo, zone: str, ssh_user: str, ssh_public_key: str) -> compute_v1.Instance:
    key = ssh_public_key.strip()
    metadata = {
        "ssh-keys": f"{ssh_user}:{key}",  # the run's ephemeral key only
        "block-project-ssh-keys": "TRUE",  # project-wide keys must not reach the VM
        "enable-oslogin": "FALSE",  # project-level OS Login would silently ignore ssh-keys
        "enable-guest-attributes": "TRUE",  # host keys published for pinning; set before first boot
    }
    return compute_v1.Instance(
        name=cfg.names.vm, machine_type=f"zones/{zone}/machineTypes/{cfg.vm_machine_type}",
        description=f"meshvm e2e run {cfg.run_id}: the mesh VM", labels=dict(cfg.labels),
        tags=compute_v1.Tags(items=[cfg.names.vm_tag]),
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, type_="PERSISTENT",
                                       initialize_params=compute_v1.AttachedDiskInitializeParams(
                                           source_image=f"projects/{IMAGE_PROJECT}/global/images/family/"
                                                        f"{cfg.vm_image_family}",
                                           disk_size_gb=BOOT_DISK_GB, labels=dict(cfg.labels)))],
        network_interfaces=[compute_v1.NetworkInterface(
            network=network.network, subnetwork=network.subnetwork,
            access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]),
        service_accounts=[],  # no service account: the VM needs no Google API access
    )


def create(c: Clients, cfg: Config, network: NetworkInfo, zone: str, ssh_user: str, ssh_public_key: str,
           ledger: Ledger, deadline: Deadline) -> VmInfo:
    what = f"creating VM {cfg.names.vm} in {zone}"
    op = insert(c, what, c.instances.insert, deadline,
                lambda: ledger.record("instance", cfg.names.vm, f"{c.project}/{zone}"),
                project=c.project, zone=zone, instance_resource=body(cfg, network, zone, ssh_user, ssh_public_key))
    wait_compute(c, op, what, deadline, zone=zone)
    return describe(c, cfg.names.vm, zone, deadline)


def adopt_kept(c: Clients, cfg: Config, zone: str, ssh_user: str, ssh_public_key: str, ledger: Ledger,
               deadline: Deadline) -> VmInfo | None:
    """--reuse: the kept run's VM in `zone` (recorded in this run's ledger, then read as `create` does), or
    None. Its `ssh-keys` metadata must hold the run's key, the one kept in the run's secret dir."""
    name = cfg.names.vm
    got = adopt.find(c, f"reading VM {name}", c.instances.get, deadline, project=c.project, zone=zone, instance=name)
    if got is None:
        return None
    adopt.record(cfg, ledger, "instance", name, f"{c.project}/{zone}", got.labels)
    adopt.extend_expiry(c, cfg, "instance", name, zone, got, deadline)
    keys = next((i.value for i in got.metadata.items if i.key == "ssh-keys"), "")
    if f"{ssh_user}:{' '.join(ssh_public_key.split()[:2])}" not in keys:
        raise errors.CloudError("not-usable", f"{adopt.FLAG}: the kept VM {name} does not accept the run's SSH key "
                                f"(kept in its secret dir) for user {ssh_user}; it cannot be reused")
    return describe(c, name, zone, deadline)


def describe(c: Clients, name: str, zone: str, deadline: Deadline) -> VmInfo:
    def get() -> compute_v1.Instance:
        return c.call_retrying(f"reading VM {name}", c.instances.get, deadline, project=c.project, zone=zone,
                               instance=name)

    inst = retry.until(f"VM {name} to be RUNNING", get, deadline, accept=lambda i: i.status == "RUNNING",
                       initial=0.5, ceiling=5.0)
    nic = inst.network_interfaces[0]
    external = nic.access_configs[0].nat_i_p if nic.access_configs else ""
    return VmInfo(name, zone, nic.network_i_p, external, host_keys(c, name, zone, deadline))


def host_keys(c: Clients, name: str, zone: str, deadline: Deadline) -> dict[str, str]:
    """{key type: base64} from guest attributes `hostkeys/`; 404 until the guest agent publishes them."""
    def read() -> dict[str, str]:
        try:
            got = c.call(f"reading host keys of {name}", c.instances.get_guest_attributes, deadline,
                         request=compute_v1.GetGuestAttributesInstanceRequest(
                             project=c.project, zone=zone, instance=name, query_path="hostkeys/"))
        except errors.CloudError as e:
            if not_found(e):
                raise errors.Transient(f"host keys of {name} not published yet") from e
            raise
        return {i.key: i.value for i in got.query_value.items if i.namespace == "hostkeys"}

    return retry.until(f"SSH host keys of VM {name} (guest attributes hostkeys/)", read, deadline,
                       transient=(errors.Transient,), initial=1.0, ceiling=5.0)


def delete(c: Clients, entry: Entry, deadline: Deadline) -> None:
    zone = entry.where.split("/")[1]
    delete_and_wait(c, f"deleting VM {entry.name}", c.instances.delete, deadline, zone=zone, instance=entry.name)


def instance_exists(c: Clients, entry: Entry, deadline: Deadline) -> bool:
    return exists(c, c.instances.get, deadline, zone=entry.where.split("/")[1], instance=entry.name)
