"""The VM half of the recipe, run for real over SSH (SshShell, paramiko) against a lab VM."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import logging
import os
import resource
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from meshvm import redact
from meshvm.deadlines import Deadline
from meshvm.lab.envoy import xds
from meshvm.lab.hostsys import run_in_netns
from meshvm.lab.meshca import MeshCa
from meshvm.lab.netsafety import assert_local_route, run_ip
from meshvm.lab.router import FirewallRule, Router
from meshvm.lab.sidecar_deb import build_sidecar_deb
from meshvm.lab.standins import meshwire
from meshvm.lab.standins.agentplane import PREAMBLE as XDS_PREAMBLE
from meshvm.lab.vmhost import VmHost
from meshvm.recipe import ratings, sidecar
from meshvm.retry import WaitFailed
from meshvm.seams import CommandFailed
from meshvm.ssh import AuthFailed, CommandTimeout, HostKeyRejected, SshShell
from tests.lab._helpers import BLOCKED, SSH_USER, tcp_try
from tests.lab.conftest import BOOT_TIMEOUT, VM_TAG

pytestmark = pytest.mark.lab

STANDIN_RATINGS = Path(__file__).resolve().parents[2] / "meshvm" / "lab" / "standins" / "ratings"
MESH_TAG = "mesh-vm"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.lab-test-token.c2ln"


@pytest.fixture(scope="module")
def vm(lab_router: Router, ssh_key: Path, host_numbers: Iterator[int],
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmHost]:
    pub = ssh_key.with_suffix(".pub").read_text().strip()
    host = VmHost(lab_router, "recipe-vm", str(lab_router.addrs.vm_ip(next(host_numbers))),
                  str(tmp_path_factory.mktemp("recipe-vm")), metadata={"ssh-keys": f"{SSH_USER}:{pub}"},
                  tags=(VM_TAG, MESH_TAG))
    try:
        host.boot(time.monotonic() + BOOT_TIMEOUT)
        yield host
    finally:
        host.halt()


def shell_for(vm: VmHost, key: Path, host_keys: dict[str, str] | None = None) -> SshShell:
    return SshShell(vm.ip, SSH_USER, paramiko.Ed25519Key.from_private_key_file(str(key)),
                    host_keys or vm.host_keys(), before_connect=assert_local_route)


@pytest.fixture(scope="module")
def shell(vm: VmHost, ssh_key: Path) -> Iterator[SshShell]:
    s = shell_for(vm, ssh_key)
    s.connect(Deadline.after(30, "ssh"))  # the guest agent creates the user ~2 s after sshd starts
    yield s
    s.close()


def test_pinned_key_connects_once_the_user_exists(shell: SshShell):
    assert shell.run("id -un", step="whoami").stdout.strip() == SSH_USER
    assert shell.run("id -un", step="whoami", sudo=True).stdout.strip() == "root"


def test_a_wrong_host_key_is_refused_not_retried(vm: VmHost, ssh_key: Path, tmp_path: Path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True,
                   timeout=10)
    other = (tmp_path / "other.pub").read_text().split()[1]
    with pytest.raises(HostKeyRejected):  # final at once: a retried error would end in WaitFailed
        shell_for(vm, ssh_key, {"ssh-ed25519": other}).connect(Deadline.after(30, "ssh"))


def test_a_key_the_vm_never_accepts_fails_after_the_boot_window(vm: VmHost, shell: SshShell, tmp_path: Path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True,
                   timeout=10)
    stranger = SshShell(vm.ip, SSH_USER, paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "k")),
                        vm.host_keys(), before_connect=assert_local_route)
    with pytest.raises(AuthFailed, match="key refused for 1s"):
        stranger.connect(Deadline.after(30, "ssh"), auth_window=1.0)


def test_a_failing_command_names_step_command_and_stderr(shell: SshShell):
    with pytest.raises(CommandFailed) as e:
        shell.run(["ls", "/no/such dir"], step="probe: list", sudo=True)
    assert str(e.value).startswith("probe: list: `sudo -n -- sh -c 'ls '\"'\"'/no/such dir'\"'\"''` exited 2:")
    assert "No such file or directory" in str(e.value)


def test_a_command_past_its_timeout_is_cut(shell: SshShell):
    with pytest.raises(CommandTimeout, match="no exit after its timeout"):
        shell.run("echo started; sleep 30", step="probe: hang", timeout=1)


def test_commands_run_while_the_process_holds_more_than_1024_descriptors(shell: SshShell):
    """A long session holds many sockets: waiting on a channel must not depend on select()'s limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), max(hard, 2048)))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        assert shell.run("sleep 0.2; printf %s done", step="probe: many fds").stdout == "done"
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_upload_copies_a_folder_recursively(shell: SshShell, vm: VmHost, tmp_path: Path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f.txt").write_text("payload")
    shell.upload(tmp_path / "d", "uploaded", mode=0o600)
    assert Path(vm.root_path(f"/home/{SSH_USER}/uploaded/sub/f.txt")).read_text() == "payload"
    assert shell.run("stat -c %a uploaded/sub/f.txt", step="mode").stdout.strip() == "600"


# -- Install ratings app on the VM; allow POD-to-VM traffic on port 9080 ------------------------------


def get_from(netns: str, src: str, dst: str, path: str) -> object:
    """An HTTP GET from a pod address inside a netns: the parsed JSON, or BLOCKED."""
    assert_local_route(dst)

    def get() -> object:
        conn = http.client.HTTPConnection(dst, ratings.PORT, timeout=1, source_address=(src, 0))
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        except TimeoutError:
            return BLOCKED
        finally:
            conn.close()

    return run_in_netns(netns, get)


def test_ratings_answers_on_the_vm_and_to_pods_only_through_a_rule(shell: SshShell, vm: VmHost,
                                                                    lab_router: Router,
                                                                    host_numbers: Iterator[int]):
    ratings.install_ratings(shell, STANDIN_RATINGS, SSH_USER, Deadline.after(120, "ratings"))
    assert ratings.ask(shell) == ratings.EXPECTED
    assert "active" in shell.run("systemctl is-active ratings", step="unit").stdout
    addrs = lab_router.addrs
    node = lab_router.attach("rcp-node", str(addrs.vm_ip(next(host_numbers))), tags=("gke-node",),
                             alias_ranges=(str(addrs.pod_range),))
    pod = str(addrs.pod_range.network_address + 9)
    rule = FirewallRule("test-pods-to-vm", (str(addrs.pod_range),), (MESH_TAG,), (("tcp", ("9080",)),))
    wrong = FirewallRule("test-pods-to-other", (str(addrs.pod_range),), ("other-tag",), (("tcp", ("9080",)),))
    try:
        run_ip("addr", "add", f"{pod}/32", "dev", "lo", netns=node.netns)
        assert tcp_try(node.netns, pod, vm.ip, ratings.PORT) == BLOCKED
        lab_router.add_rule(wrong)
        assert tcp_try(node.netns, pod, vm.ip, ratings.PORT) == BLOCKED
        lab_router.add_rule(rule)
        assert get_from(node.netns, pod, vm.ip, "/ratings/123") == ratings.EXPECTED
        lab_router.delete_rule(rule.name)
        assert tcp_try(node.netns, pod, vm.ip, ratings.PORT) == BLOCKED
    finally:
        for r in (rule, wrong):
            if r.name in {x.name for x in lab_router.rules()}:
                lab_router.delete_rule(r.name)
        lab_router.detach("rcp-node")


def test_stopped_ratings_is_seen_and_restarted(shell: SshShell):
    ratings.stop_ratings(shell)
    assert str(ratings.ask(shell)).startswith("curl exited 7")
    ratings.start_ratings(shell, Deadline.after(30, "ratings"))


# -- VM configuration recipe --------------------------------------------------------------------------


class _AcceptingIstiod(http.server.BaseHTTPRequestHandler):
    """A test double of the lab istiod stand-in's wire (meshvm/lab/istiod_standin.py) that accepts every
    proxy: the agent is ready only once istiod accepted it. This module is about the VM's recipe
    steps; registration itself is tests/lab/test_registration_standin.py."""

    protocol_version = "HTTP/1.1"
    xds: Path  # an ADS server with nothing to say: Envoy's first LDS and CDS answers are empty

    def handle(self) -> None:
        """A relayed xDS stream (standins/agentplane.py) goes to the ADS server, as istiod's stand-in does."""
        if not self.rfile.peek(len(XDS_PREAMBLE)).startswith(XDS_PREAMBLE):
            return super().handle()
        self.rfile.readline()
        self.wfile.write(b"OK\n")
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(str(self.xds))
        meshwire.relay(self.connection, upstream)
        return None

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"accepted": True, "workloadEntry": None}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


MESH_CA = MeshCa()


@pytest.fixture(scope="module")
def istiod(lab_router: Router, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The accepting double on the host machine's lab address, port 15012 (the hosts line below), over
    TLS with a certificate for istiod.istio-system.svc from MESH_CA (the agent verifies it)."""
    server = http.server.ThreadingHTTPServer((lab_router.external_source, 15012), _AcceptingIstiod)
    server.daemon_threads = True
    pair, d = MESH_CA.serving(["istiod.istio-system.svc"]), tmp_path_factory.mktemp("istiod-tls")
    (d / "cert.pem").write_text(pair.cert_pem)
    (d / "key.pem").write_text(pair.key_pem)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(d / "cert.pem", d / "key.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    ads = xds.AdsServer(lambda node: {}, d / "XDS").start()
    _AcceptingIstiod.xds = ads.path
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    yield lab_router.external_source
    server.shutdown()
    server.server_close()
    ads.stop()


@pytest.fixture
def vm_files(tmp_path: Path, vm: VmHost, istiod: str) -> Path:
    """Files shaped like `istioctl x workload entry configure` output (docs/facts.md section 1)."""
    d = tmp_path / "vm_files"
    d.mkdir(mode=0o700)
    (d / "cluster.env").write_text("CANONICAL_SERVICE='ratings'\nPOD_NAMESPACE='ratings'\n"
                                   "SERVICE_ACCOUNT='bookinfo-ratings'\nISTIO_META_CLUSTER_ID='Kubernetes'\n")
    (d / "mesh.yaml").write_text("defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n")
    (d / "hosts").write_text(f"{istiod} istiod.istio-system.svc\n")
    (d / "root-cert.pem").write_text(MESH_CA.root_pem)
    (d / "istio-token").write_text(TOKEN)
    return d


def host_dpkg_state() -> str:
    return hashlib.sha256(Path("/var/lib/dpkg/status").read_bytes()).hexdigest()


def test_sidecar_installs_configures_starts_and_is_ready(shell: SshShell, vm: VmHost, vm_files: Path,
                                                         tmp_path: Path):
    before = host_dpkg_state()
    deb = build_sidecar_deb("1.30.3", tmp_path)
    deadline = Deadline.after(180, "sidecar")
    sidecar.install_sidecar(shell, vm_files, deb, deadline)
    sidecar.install_sidecar(shell, vm_files, deb, deadline)  # twice: still one istiod line
    sidecar.start_sidecar(shell, deadline, settle=2.0)

    upper = Path(vm.root_path("/"))
    assert (upper / "etc/certs/root-cert.pem").read_text() == (vm_files / "root-cert.pem").read_text()
    assert (upper / "var/lib/istio/envoy/cluster.env").read_text() == (vm_files / "cluster.env").read_text()
    assert (upper / "var/lib/istio/config/mesh").read_text() == (vm_files / "mesh.yaml").read_text()
    hosts = (upper / "etc/hosts").read_text().splitlines()
    assert [h for h in hosts if h.endswith("istiod.istio-system.svc")] == [(vm_files / "hosts").read_text().strip()]
    token = shell.run("stat -c '%U %a' /var/run/secrets/tokens/istio-token", step="token", sudo=True)
    assert token.stdout.split() == ["istio-proxy", "600"]
    assert not shell.run("ls vm_files istio-sidecar.deb", step="home copies", check=False).ok
    assert "1.30.3" in shell.run("dpkg-query -W istio-sidecar", step="pkg").stdout
    assert host_dpkg_state() == before and not Path("/etc/certs/root-cert.pem").exists()
    assert not Path("/var/lib/istio/envoy/cluster.env").exists()


def test_without_the_ownership_step_the_agent_never_gets_ready(shell: SshShell, istiod: str, monkeypatch):
    """Break one recipe step (chown of /var/run/secrets): the readiness wait must fail, not pass."""
    shell.run("systemctl stop istio && chown -R root /var/run/secrets", step="break", sudo=True)
    shell.run("systemctl start istio", step="sidecar: start", sudo=True)
    with pytest.raises(WaitFailed, match=r"ready \(15021\).*last seen: \(False"):
        sidecar.wait_ready(shell, Deadline.after(6, "sidecar"), settle=1.0)
    shell.run("chown -R istio-proxy /var/run/secrets && systemctl restart istio", step="mend", sudo=True)
    sidecar.wait_ready(shell, Deadline.after(30, "sidecar"), settle=1.0)


def test_sidecar_removal_stops_and_uninstalls(shell: SshShell):
    sidecar.remove_sidecar(shell, Deadline.after(60, "remove"))
    assert not shell.run("dpkg-query -W istio-sidecar", step="pkg", check=False).ok or \
        "deinstall" in shell.run("dpkg-query -W -f '${Status}' istio-sidecar", step="pkg", check=False).stdout
    assert shell.run("systemctl is-active istio", step="unit", check=False).stdout.strip() != "active"


def test_output_is_streamed_to_the_log_with_secrets_masked(shell: SshShell, caplog):
    redact.register(TOKEN)
    redact.install_log_scrubbing()
    try:
        with caplog.at_level(logging.DEBUG, logger="meshvm.ssh"):
            result = shell.run(f"echo first; echo {TOKEN}", step="stream")
        assert "[stream] out| first" in caplog.text and "[stream] out| [REDACTED]" in caplog.text
        assert TOKEN not in caplog.text and TOKEN in result.stdout  # the caller still gets the output
    finally:
        redact.clear()


def test_a_dropped_connection_is_reconnected_once_with_the_same_pinned_key(vm: VmHost, ssh_key: Path):
    """The one connection of a run idles for minutes: keepalives on it, and if a network drops it
    anyway, the next command reconnects (pinned key unchanged) instead of failing the run."""
    s = shell_for(vm, ssh_key)
    s.connect(Deadline.after(30, "ssh"))
    try:
        assert s.client.get_transport().packetizer._Packetizer__keepalive_interval == 30  # paramiko keeps it there
        s.client.get_transport().sock.close()  # the network dropped it: the transport dies
        assert s.run("id -un", step="after the drop").stdout.strip() == SSH_USER
        s.client.get_transport().close()
        assert s.run("echo again", step="after a close").stdout.strip() == "again"
    finally:
        s.close()
