"""lab STAND-IN network pieces (not Envoy: every proxy of the lab is Envoy) for the node's kube-proxy
and cluster DNS and for the VM's agent. Standard library only: it is also shipped inside the stand-in
sidecar package.

- the mesh table (mesh_registry.py): services with a virtual IP, ports and endpoints; `names()` gives
  the DNS names a resolver answers for it;
- DNS: A answers from that table, as Istio's DNS proxy (and kube-dns) give a Service's VIP;
- kube-proxy's part for a pod without a sidecar: the original destination of a REDIRECTed connection
  (SO_ORIGINAL_DST), round robin over the Service port's endpoints, the bytes spliced;
- relay: bytes both ways over a long-lived stream (the VM agent's xDS relay).
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import NamedTuple

SO_ORIGINAL_DST = 80
DOMAIN = "svc.cluster.local"
IDLE_S = 30.0  # a spliced connection with no byte either way for this long is closed


# -- the mesh table ------------------------------------------------------------------------------
# {"services": [{"name", "namespace", "host" (FQDN), "vip", "ports": [{"port", "targetPort",
#   "endpoints": ["ip:port", ...], "principals": {endpoint of TLS mode `istio`: its SPIFFE name}}]}]}


def names(svc: dict, own_namespace: str = "") -> list[str]:
    """The names a Service answers to: FQDN, <name>.<ns>.svc, <name>.<ns>, and <name> in its namespace."""
    n, ns = svc["name"], svc["namespace"]
    out = [f"{n}.{ns}.{DOMAIN}", f"{n}.{ns}.svc", f"{n}.{ns}"]
    return out + [n] if ns == own_namespace else out


def name_table(table: dict, own_namespace: str = "") -> dict[str, str]:
    return {name.lower(): s["vip"] for s in table.get("services") or [] for name in names(s, own_namespace)}


class Route(NamedTuple):
    key: str  # `<port>||<host>`: the round robin's key
    endpoints: list[str]


def route(table: dict, ip: str, port: int) -> Route | None:
    """Where a connection to a Service VIP and port goes."""
    for s in table.get("services") or []:
        if s["vip"] != ip:
            continue
        for p in s["ports"]:
            if p["port"] == port:
                return Route(f"{port}||{s['host']}", list(p["endpoints"]))
    return None


# -- DNS -----------------------------------------------------------------------------------------

_A, _AAAA, _IN = 1, 28, 1


def dns_answer(query: bytes, lookup: Callable[[str], str | None]) -> bytes | None:
    """The reply to one DNS query: A from `lookup`; a known name's other types get no records;
    an unknown name NXDOMAIN. None for a packet that is not a standard query."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0xF800 or qdcount != 1:  # a response, or an opcode other than QUERY
        return None
    labels, i = [], 12
    while i < len(query) and query[i]:
        n = query[i]
        labels.append(query[i + 1:i + 1 + n].decode(errors="replace"))
        i += 1 + n
    if i + 5 > len(query):
        return None
    qtype, qclass = struct.unpack("!HH", query[i + 1:i + 5])
    question = query[12:i + 5]
    ip = lookup(".".join(labels).lower().rstrip("."))
    rcode = 3 if ip is None else 0
    answers = b""
    if ip is not None and qtype == _A and qclass == _IN:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", _A, _IN, 5, 4) + socket.inet_aton(ip)
    head = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, 1 if answers else 0, 0, 0)
    return head + question + answers


def serve_dns(sock: socket.socket, lookup: Callable[[str], str | None], stop: threading.Event) -> None:
    """Answer queries on a bound UDP socket until `stop` is set; the socket is closed on return."""
    try:
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(1500)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = dns_answer(query, lookup)
            if reply:
                sock.sendto(reply, peer)
    finally:
        sock.close()


# -- capture and proxying ------------------------------------------------------------------------


def original_dst(conn: socket.socket) -> tuple[str, int]:
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(packed), port


class RoundRobin:
    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def order(self, key: str, endpoints: list[str]) -> list[str]:
        """The endpoints starting with this key's next one."""
        if not endpoints:
            return []
        with self._lock:
            i = self._next.get(key, 0) % len(endpoints)
            self._next[key] = i + 1
        return endpoints[i:] + endpoints[:i]


def splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until both sides closed (or IDLE_S without a byte); closes both."""
    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(IDLE_S)
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join(IDLE_S)
    a.close()
    b.close()


def relay(a: socket.socket, b: socket.socket, poll_s: float = 1.0) -> None:
    """Copy bytes both ways in one thread until either side ends, with no idle limit (an xDS stream may
    be quiet for hours); a TLS socket is never read and written at once (OpenSSL's rule). Closes both."""
    pair: dict[socket.socket, socket.socket] = {a: b, b: a}
    try:
        for s in pair:
            s.settimeout(None)
        while True:
            ready: list[socket.socket] = [s for s in pair if isinstance(s, ssl.SSLSocket) and s.pending()]
            if not ready:
                ready = select.select(list(pair), [], [], poll_s)[0]
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                pair[src].sendall(data)
    except OSError:
        pass
    finally:
        a.close()
        b.close()


def bound(host: str, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket bound to (host, port), listening when TCP: the listeners of every stand-in proxy."""
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    if kind == socket.SOCK_STREAM:
        s.listen(128)
    return s


def serve_tcp(listener: socket.socket, handle: Callable[[socket.socket], None], stop: threading.Event) -> None:
    """Accept on a listening socket until `stop`, each connection handled in its own thread; the
    listener is closed on return, so a stopped server frees its port."""
    try:
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=_guarded, args=(handle, conn), daemon=True).start()
    finally:
        listener.close()


def _guarded(handle: Callable[[socket.socket], None], conn: socket.socket) -> None:
    try:
        handle(conn)
    except Exception:  # noqa: BLE001 (one bad connection must not leave its socket open)
        conn.close()


def forward(conn: socket.socket, endpoints: list[str], connect: Callable[[str, int], socket.socket]) -> str | None:
    """Splice `conn` to the first endpoint that accepts (the next one when a connect fails); the endpoint,
    or None when none accepted (`conn` closed: the caller sees a reset)."""
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        try:
            upstream = connect(host, int(port))
        except OSError:
            continue
        splice(conn, upstream)
        return ep
    conn.close()
    return None
