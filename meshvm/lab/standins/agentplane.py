"""lab STAND-IN for what pilot-agent does around Envoy on a VM (not Istio). Standard library only: the
stand-in sidecar package ships it beside pilot-agent, with meshwire, istiostats and envoyboot.

- Envoy: the package's /usr/local/bin/envoy (upstream Envoy, the lab's binary), started by the agent
  with the bootstrap pilot-agent writes (envoyboot.py) at /etc/istio/proxy/envoy-rev.json, from `/` (the
  bootstrap's socket paths are relative, as Istio's are), as the agent's user istio-proxy, so capture
  skips its own connections (istio-start.sh). Envoy owns 15000 (admin), 15001 and 15006.
- xDS and SDS: Envoy asks `./etc/istio/proxy/XDS` (ADS) and
  `./var/run/secrets/workload-spiffe-uds/socket` (SDS). The real agent answers both itself: it proxies
  ADS to istiod over mTLS, and serves SDS with the certificate it got by sending istiod's CA a CSR with
  the istio-token. The stand-in relays each of Envoy's connections byte for byte to istiod through the
  hosts line and the east-west gateway, over TLS verified against /etc/certs/root-cert.pem, after one
  preamble line carrying the istio-token (`LAB-XDS <token>`; istiod answers `OK` or `ERROR <why>`);
  istiod's side serves the gRPC (ADS and SDS) and signs the certificate of the token's identity. What
  differs: the workload's private key is made on istiod's side, not on the VM.
- `istio_requests_total` on 15020: the stats filter's stand-in. Upstream Envoy has no `istio.stats`, so
  the lab's model of istiod gives each HTTP connection manager a JSON access log on Envoy's stdout
  (envoy/sidecar.py stats_log), and the agent counts each line as the filter would count the request:
  the peer identity from the certificate Envoy saw, `connection_security_policy` mutual_tls when the
  caller presented one (destination reporter), the response code, the Service from the cluster name
  (source reporter) or from the inbound chain (destination reporter). Peers' workload names need
  Istio's metadata exchange, which upstream Envoy lacks: they are `unknown`.
- DNS on 127.0.0.1:15053 (pilot-agent's DNS proxy, not Envoy's): A records of the table's Services.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request

try:  # beside pilot-agent in the package; or in meshvm (the self-tests)
    from . import envoyboot, istiostats, meshwire
except ImportError:
    import envoyboot  # type: ignore[no-redef]
    import istiostats  # type: ignore[no-redef]
    import meshwire  # type: ignore[no-redef]

ENVOY = "/usr/local/bin/envoy"
BOOTSTRAP = "/etc/istio/proxy/envoy-rev.json"
XDS_PATH, SDS_PATH = "/" + envoyboot.XDS_SOCKET.removeprefix("./"), "/" + envoyboot.SDS_SOCKET.removeprefix("./")
PREAMBLE = b"LAB-XDS "
DNS_PORT = 15053
FLUSH_MS = 100  # Envoy writes access logs out every 10 s by default: the counts would lag that long
READY_URL = "http://127.0.0.1:15000/ready"


def say(text: str) -> None:
    print(f"pilot-agent stand-in: {text}", file=sys.stderr, flush=True)


class Relay:
    """Envoy's connections to `path`, each relayed to istiod (`dial()`: a verified TLS connection)."""

    def __init__(self, path: str, dial, token: str) -> None:  # noqa: ANN001
        self.path, self.dial, self.token = path, dial, token

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, 0o600)
        listener.listen(16)
        threading.Thread(target=meshwire.serve_tcp, args=(listener, self._one, threading.Event()), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            upstream = self.dial()
            upstream.sendall(PREAMBLE + self.token.encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < 4096:
                chunk = upstream.recv(1)
                if not chunk:
                    break
                answer += chunk
        except OSError as e:
            say(f"xDS relay for {self.path}: istiod unreachable: {e}")
            conn.close()
            return
        if answer != b"OK\n":
            say(f"xDS relay for {self.path}: istiod refused: {answer.decode(errors='replace').strip()}")
            conn.close()
            upstream.close()
            return
        meshwire.relay(conn, upstream)


class RequestCounter:
    """istio_requests_total from Envoy's access-log lines (the stats filter's stand-in)."""

    def __init__(self, env: dict) -> None:
        self.namespace = env.get("POD_NAMESPACE", "")
        self.workload = env.get("ISTIO_META_WORKLOAD_NAME", "") or istiostats.UNKNOWN
        self.principal = istiostats.spiffe(self.namespace, env.get("SERVICE_ACCOUNT", ""),
                                           env.get("TRUST_DOMAIN") or istiostats.TRUST_DOMAIN)
        self.metrics = istiostats.RequestMetrics()

    def line(self, text: str) -> None:
        try:
            e = json.loads(text)
        except ValueError:
            return
        if not isinstance(e, dict) or e.get("istio_stats") not in ("source", "destination"):
            return
        peer = str(e["peer"]) if e.get("peer") not in (None, "", "-") else istiostats.UNKNOWN
        mtls = peer != istiostats.UNKNOWN
        code = str(e.get("code") or "0")
        if e["istio_stats"] == "source":
            host = str(e.get("cluster") or "").rpartition("|")[2] or istiostats.UNKNOWN
            self.metrics.record(reporter="source", source_workload=self.workload,
                                source_workload_namespace=self.namespace, source_principal=self.principal,
                                destination_principal=peer, **_service(host), request_protocol="http",
                                response_code=code)
        else:
            self.metrics.record(reporter="destination", source_principal=peer, destination_workload=self.workload,
                                destination_workload_namespace=self.namespace,
                                destination_principal=self.principal if mtls else istiostats.UNKNOWN,
                                **_service(str(e.get("service") or istiostats.UNKNOWN)), request_protocol="http",
                                response_code=code, connection_security_policy="mutual_tls" if mtls else "none")


def _service(host: str) -> dict:
    name, _, rest = host.partition(".")
    return {"destination_service": host, "destination_service_name": name,
            "destination_service_namespace": rest.partition(".")[0]}


class EnvoyProcess:
    def __init__(self, env: dict, proxy_config: dict, counter: RequestCounter, istio_version: str = "") -> None:
        ip, ns = env.get("ISTIO_SVC_IP", ""), env.get("POD_NAMESPACE", "")
        name = socket.gethostname()
        labels = json.loads(env.get("ISTIO_METAJSON_LABELS") or "{}")
        workload = env.get("ISTIO_META_WORKLOAD_NAME", "") or name
        self.config = envoyboot.bootstrap(
            f"sidecar~{ip}~{name}.{ns}~{ns}.svc.cluster.local", f"{workload}.{ns}",
            # ISTIO_VERSION: the agent's own release, as pilot-agent writes it (SetIstioVersion in
            # pkg/bootstrap/config.go, Istio 1.30.3): Envoy's /server_info shows the running proxy's release.
            {"NAMESPACE": ns, "NAME": name, "LABELS": labels, "WORKLOAD_NAME": workload, "INSTANCE_IPS": ip,
             "ISTIO_VERSION": istio_version},
            envoyboot.XDS_SOCKET, sds=envoyboot.SDS_SOCKET, proxy_config=proxy_config)
        self.counter = counter
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(BOOTSTRAP, "w") as f:
            json.dump(self.config, f, indent=1)
        self.proc = subprocess.Popen([ENVOY, "-c", BOOTSTRAP, "--disable-hot-restart", "--concurrency", "1",  # noqa: S603
                                      "--log-level", "warning", "--drain-time-s", "1",
                                      "--file-flush-interval-msec", str(FLUSH_MS)],
                                     cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for text in self.proc.stdout:
            self.counter.line(text)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @staticmethod
    def live() -> bool:
        try:
            with urllib.request.urlopen(READY_URL, timeout=1) as r:  # noqa: S310
                return r.status == 200
        except OSError:
            return False


class Dns:
    """pilot-agent's DNS proxy: A records of the last table's Service names (own namespace short too)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.names: dict[str, str] = {}

    def update(self, table) -> None:  # noqa: ANN001
        if isinstance(table, dict) and isinstance(table.get("services"), list):
            self.names = meshwire.name_table(table, self.namespace)

    def start(self) -> None:
        stop = threading.Event()
        udp = meshwire.bound("127.0.0.1", DNS_PORT, socket.SOCK_DGRAM)
        tcp = meshwire.bound("127.0.0.1", DNS_PORT)
        threading.Thread(target=meshwire.serve_dns, args=(udp, self.names_get, stop), daemon=True).start()
        threading.Thread(target=meshwire.serve_tcp, args=(tcp, self._tcp, stop), daemon=True).start()

    def names_get(self, name: str):  # noqa: ANN201
        return self.names.get(name)

    def _tcp(self, conn: socket.socket) -> None:
        """DNS over TCP: each message has a two-byte length in front."""
        conn.settimeout(5)
        with conn:
            while True:
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                reply = meshwire.dns_answer(_recv_exact(conn, int.from_bytes(head, "big")) or b"", self.names_get)
                if not reply:
                    return
                conn.sendall(len(reply).to_bytes(2, "big") + reply)


def _recv_exact(conn: socket.socket, n: int):  # noqa: ANN202
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
