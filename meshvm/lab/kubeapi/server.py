"""The Kubernetes API stand-in's HTTPS server: routing, bearer tokens, watch streams, exec.

In-process: `KubeApiStandIn(...).start()` serves on a daemon thread (ThreadingHTTPServer, TLS
handshake in the connection's thread) until `stop()`. Thread-safe: one lock in the object store.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

from meshvm import redact
from meshvm.lab.kubeapi import kinds
from meshvm.lab.kubeapi.objects import Store
from meshvm.lab.kubeapi.routes import route
from meshvm.lab.kubeapi.selectors import ApiError
from meshvm.lab.kubeapi.tls import make_server_tls
from meshvm.lab.kubeapi.tokens import TokenIssuer
from meshvm.lab.kubeapi.wsexec import ExecBackend

log = logging.getLogger(__name__)


def local_exec(prefix: Sequence[str] = ()) -> ExecBackend:
    """An exec backend running `prefix + argv` on this machine (e.g. ["ip", "netns", "exec", NS])."""
    def spawn(argv: Sequence[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*prefix, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    return spawn


EXEC_WAIT_S = 10.0  # how long exec waits for the lab kubelet's sandbox of a Running pod

class KubeApiStandIn:
    """A Kubernetes API STAND-IN (see the package docstring for what it models)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, history: int = 1000,
                 token_check: Callable[[str], bool] | None = None):
        """`token_check` lets an owner accept tokens it issues itself (the local Google Cloud's
        access tokens, as GKE accepts Google's), besides those of `issue_token`."""
        self.host, self.port = host, port
        self._token_check = token_check
        self.store = Store(history=history)
        self.tls = make_server_tls(host)
        self.ca_pem = self.tls.ca_pem
        self._tokens: dict[str, float] = {}
        self.service_account_tokens = TokenIssuer()
        self._exec: dict[tuple[str, str], ExecBackend] = {}
        self._logs: list[Callable[[str, str], Callable[[], str] | None]] = []
        self._lock = threading.Lock()
        self._exec_set = threading.Condition()  # guards _exec; notified when a backend is set
        self._httpd: _Server | None = None
        for ns in ("default", "kube-system", "kube-public"):
            self.store.write(_NS, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                             "stand-in", mode="create")

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> str:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files only
            cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert.write_text(self.tls.cert_pem)
            key.touch(mode=0o600)
            key.write_text(self.tls.key_pem)
            ctx.load_cert_chain(cert, key)
        self._httpd = _Server((self.host, self.port), _Handler, self, ctx)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                         name=f"kubeapi-standin-{self.port}", daemon=True).start()
        log.info("Kubernetes API stand-in serving on %s", self.endpoint)
        return self.endpoint

    def stop(self) -> None:
        if self._httpd:
            self._httpd.stopping = True
            with self.store.cond:
                self.store.cond.notify_all()  # wake the watch streams so they end
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def issue_token(self, ttl_s: float) -> str:
        """A bearer token accepted for ttl_s seconds (then 401), registered for redaction."""
        token = secrets.token_urlsafe(32)
        redact.register(token)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl_s
        return token

    def review_token(self, token: str) -> dict | None:
        """TokenReview: the claims of a live service-account token this API issued, else None."""
        return self.service_account_tokens.review(token)

    def token_valid(self, token: str) -> bool:
        if self._token_check and self._token_check(token):
            return True
        with self._lock:
            return self._tokens.get(token, 0.0) > time.monotonic()

    def set_exec_backend(self, namespace: str, pod: str, backend: ExecBackend | None) -> None:
        with self._exec_set:
            if backend is None:
                self._exec.pop((namespace, pod), None)
            else:
                self._exec[(namespace, pod)] = backend
                self._exec_set.notify_all()

    def exec_backend(self, namespace: str, pod: str, wait_s: float = EXEC_WAIT_S) -> ExecBackend | None:
        """The pod's exec backend; waits up to wait_s for one: the lab's controllers mark a pod Running
        a moment before the lab's kubelet (pods.py) has its sandbox, where a real kubelet's Running
        comes after its containers started."""
        with self._exec_set:
            self._exec_set.wait_for(lambda: (namespace, pod) in self._exec, timeout=wait_s)
            return self._exec.get((namespace, pod))

    def add_log_source(self, source: Callable[[str, str], Callable[[], str] | None]) -> None:
        """`source(namespace, pod)`: a function giving that pod's log text, or None (not its pod)."""
        with self._lock:
            self._logs.append(source)

    def log_source(self, namespace: str, pod: str) -> Callable[[], str] | None:
        with self._lock:
            sources = list(self._logs)
        return next((f for s in sources if (f := s(namespace, pod)) is not None), None)

    def compact(self, keep: int = 0) -> None:
        """Drop the watch history: watches from older resourceVersions get 410 Expired."""
        self.store.compact(keep)


_FOUND = kinds.find("", "v1", "namespaces")
assert _FOUND is not None, "the stand-in's kinds lack Namespace"
_NS: kinds.Kind = _FOUND
assert _NS is not None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stopping = False

    def __init__(self, addr: tuple[str, int], handler: type, owner: KubeApiStandIn, ctx: ssl.SSLContext):
        self.owner, self.ctx = owner, ctx
        super().__init__(addr, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 600  # idle keep-alive connections end eventually
    server: _Server

    def setup(self) -> None:
        self.request.settimeout(10)  # TLS handshake, in this connection's thread
        self.request = self.server.ctx.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("kubeapi %s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._body()
        try:
            auth = self.headers.get("Authorization", "")
            if not (auth.startswith("Bearer ") and self.server.owner.token_valid(auth[7:].strip())):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            route(self, method, url.path, query, parse_qs(url.query), body)
        except ApiError as e:
            self.send_json(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def parse_body(self, body: bytes) -> dict:
        ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if not (ctype.endswith("json") or ctype.endswith("yaml")):  # protobuf and CBOR are not modelled
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")
        try:
            doc = yaml.safe_load(body.decode() or "{}")  # JSON is YAML
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ApiError(400, "BadRequest", f"the body could not be decoded: {e}") from None
        if not isinstance(doc, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        return doc

    def send_json(self, code: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunks(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
