"""lab STAND-IN, the wire of istiod's stand-in (meshvm/lab/istiod_standin.py): the TLS server on
15012 and one proxy connection on it (connect, heartbeats, or an agent's relayed xDS stream). What it
models, with its sources, is said in istiod_standin.py; this module only carries the requests to it."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshvm.lab.meshca import KeyPair
from meshvm.lab.standins import meshwire
from meshvm.lab.standins.agentplane import PREAMBLE as XDS_PREAMBLE

if TYPE_CHECKING:
    from meshvm.lab.istiod_standin import IstiodStandIn, Session

log = logging.getLogger("meshvm.lab.istiod_standin")
IDLE_S = 5.0  # no request on a proxy's connection for this long ends it


class Rejected(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


def server_context(pair: KeyPair, workdir: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:  # ssl loads a key pair from files only
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_text(pair.cert_pem)
        key.touch(0o600)
        key.write_text(pair.key_pem)
        ctx.load_cert_chain(cert, key)
    return ctx


class WireServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_port = True  # beside the east-west gateway's 0.0.0.0:15012 in the node's network namespace
    tls: ssl.SSLContext | None = None

    def __init__(self, addr: tuple[str, int], handler: type, owner: IstiodStandIn):
        self.owner = owner
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        super().__init__(addr, handler)

    def close_connections(self) -> None:
        with self.open_lock:
            for sock in self.open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class ProxyConnection(BaseHTTPRequestHandler):
    """One proxy connection: connect once, then heartbeats; its end is the proxy's disconnect."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_S
    server: WireServer
    session: Session | None = None

    def setup(self) -> None:
        super().setup()
        with self.server.open_lock:
            self.server.open.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.open_lock:
                self.server.open.discard(self.connection)
            if self.connection is not self.request:  # the TLS socket: socketserver closes only the plain one,
                self.connection.close()  # which wrap_socket detached
            if self.session is not None:
                try:
                    self.server.owner.disconnect(self.session)
                except Exception as e:  # the API may be stopping with the lab
                    log.warning("istiod stand-in: disconnect of %s: %s", self.session.ip, e)

    def handle(self) -> None:
        """TLS first (when configured), then the proxy's requests."""
        if self.server.tls is not None:
            try:
                wrapped = self.server.tls.wrap_socket(self.connection, server_side=True)
            except (OSError, ssl.SSLError) as e:
                log.info("istiod stand-in: TLS handshake with %s failed: %s", self.client_address[0], e)
                return
            with self.server.open_lock:  # the plain socket is detached now: stop() shuts the TLS one
                self.server.open.discard(self.connection)
                self.server.open.add(wrapped)
            self.connection = wrapped
            self.rfile, self.wfile = wrapped.makefile("rb"), wrapped.makefile("wb")
            if self.server.owner.xds_socket is not None and self.rfile.peek(len(XDS_PREAMBLE)).startswith(XDS_PREAMBLE):
                return self._relay_xds(self.server.owner.xds_socket)
        super().handle()

    def _relay_xds(self, path: Path) -> None:
        """An agent's relayed xDS (or SDS) stream: `LAB-XDS <istio-token>`, answered `OK`, then the
        bytes go both ways between it and the VM proxies' gRPC server (envoy/vmxds.py)."""
        token = self.rfile.readline(8192)[len(XDS_PREAMBLE):].strip().decode(errors="replace")
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.server.owner.check_stream(token, self._peer_identity())
            upstream.connect(str(path))
        except (Rejected, OSError) as e:
            upstream.close()
            reason = getattr(e, "reason", str(e))
            self.server.owner.rejections.append(f"{self.client_address[0]} (xDS relay): {reason}")
            self.wfile.write(f"ERROR {reason}\n".encode())
            self.wfile.flush()
            return
        self.wfile.write(b"OK\n")
        self.wfile.flush()
        meshwire.relay(self.connection, upstream)

    def _peer_identity(self) -> str | None:
        """The URI SAN of the client certificate TLS verified against the mesh root, if one was sent."""
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        sans: Any = (cert or {}).get("subjectAltName", ())
        return next((str(v) for k, v in sans if k == "URI"), None)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a heartbeat a second would drown run.log; connects, rejections and changes are logged

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            return self._send(400, {"error": "request body is not JSON"})
        owner = self.server.owner
        try:
            if self.path == "/v1/connect" and self.session is None:
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
                self.session = owner.connect(token, body, self.client_address[0], self._peer_identity())
                return self._send(200, {"accepted": True, "workloadEntry": self.session.entry,
                                        "certificate": owner.certificate(self.session), **owner.push()})
            if self.path == "/v1/heartbeat" and self.session is not None:
                owner.heartbeat(self.session, body.get("health"))
                return self._send(200, {"ok": True, **owner.push()})
            return self._send(404, {"error": f"no {self.path} on this connection"})
        except Rejected as e:
            self.close_connection = True
            return self._send(e.code, {"error": e.reason})
        except Exception as e:  # an API error: the proxy sees it and retries
            log.warning("istiod stand-in: %s %s: %s", self.path, self.client_address[0], e)
            self.close_connection = True
            return self._send(500, {"error": f"istiod: {type(e).__name__}: {e}"})

    def _send(self, code: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
