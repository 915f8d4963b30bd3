"""lab STAND-IN data-plane pieces shared by the VM's agent stand-in and the cluster node's pod
sidecars (not Envoy). Standard library only: it is also shipped inside the stand-in sidecar package.

- the mesh table istiod pushes (the lab's small xDS): services with a virtual IP, ports and
  endpoints; `names()` gives the DNS names a proxy answers for it;
- DNS: A answers from that table, as Istio's DNS proxy (and kube-dns) give a Service's VIP;
- capture: the original destination of a REDIRECTed connection (SO_ORIGINAL_DST);
- proxying: round robin over a port's endpoints, byte splicing (the first bytes each way are kept:
  what the proxy saw of the request and the response), and counters under the names Envoy uses
  (`cluster.outbound|<port>||<host>.upstream_rq_total`, ...), created only where the proxy's stats
  matcher keeps them (istiostats.StatsMatcher: by default it does not, as on a real sidecar).
  A counter counts connections: every call the exercises make is one request on its own connection.
"""

from __future__ import annotations

import re
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
#   "endpoints": ["ip:port", ...], "mtls": [the endpoints of TLS mode `istio`, a subset]}]}]}


def names(svc: dict, own_namespace: str = "") -> list[str]:
    """The names a Service answers to: FQDN, <name>.<ns>.svc, <name>.<ns>, and <name> in its namespace."""
    n, ns = svc["name"], svc["namespace"]
    out = [f"{n}.{ns}.{DOMAIN}", f"{n}.{ns}.svc", f"{n}.{ns}"]
    return out + [n] if ns == own_namespace else out


def name_table(table: dict, own_namespace: str = "") -> dict[str, str]:
    return {name.lower(): s["vip"] for s in table.get("services") or [] for name in names(s, own_namespace)}


class Route(NamedTuple):
    stat: str  # Envoy's cluster stat prefix, `cluster.outbound|<port>||<host>`
    endpoints: list[str]
    service: dict  # the table's entry
    mtls: frozenset[str]  # the endpoints of TLS mode `istio`: the caller's sidecar speaks mTLS to them


def route(table: dict, ip: str, port: int) -> Route | None:
    """Where a connection to a Service VIP and port goes."""
    for s in table.get("services") or []:
        if s["vip"] != ip:
            continue
        for p in s["ports"]:
            if p["port"] == port:
                return Route(f"cluster.outbound|{port}||{s['host']}", list(p["endpoints"]), s,
                             frozenset(p.get("mtls") or ()))
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


class Counters:
    """Envoy stats; `keeps` is the bootstrap's stats matcher (a stat it rejects is never created)."""

    def __init__(self, keeps: Callable[[str], bool] = lambda name: True) -> None:
        self._values: dict[str, int] = {}
        self._lock = threading.Lock()
        self._keeps = keeps

    def add(self, name: str, n: int = 1) -> None:
        if not self._keeps(name):
            return
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def text(self, pattern: str = "") -> str:
        """Envoy's /stats text format (`name: value` lines), filtered by a regex as `?filter=` does."""
        rx = re.compile(pattern)
        with self._lock:
            return "".join(f"{k}: {v}\n" for k, v in sorted(self._values.items()) if rx.search(k))


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


HEAD = 4096  # how much of each direction's first bytes splice() keeps


def splice(a: socket.socket, b: socket.socket) -> tuple[bytes, bytes]:
    """Copy bytes both ways until both sides closed; closes both. Returns the first bytes a sent and
    the first bytes b sent (up to HEAD each)."""
    heads = {a: b"", b: b""}

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(IDLE_S)
            while data := src.recv(65536):
                if len(heads[src]) < HEAD:
                    heads[src] += data[:HEAD - len(heads[src])]
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
    return heads[a], heads[b]


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


class Spliced(NamedTuple):
    endpoint: str | None  # the endpoint that took the connection; None when none accepted
    request: bytes = b""  # the first bytes the caller sent
    response: bytes = b""  # the first bytes that came back


def forward(conn: socket.socket, endpoints: list[str], connect: Callable[[str, int], socket.socket],
            counters: Counters, stat: str, hello: Callable[[str], bytes] | None = None) -> Spliced:
    """Splice `conn` to the first endpoint that accepts (Envoy retries connect failures elsewhere),
    after `hello(endpoint)`'s bytes (the stand-in's mTLS line, istiostats.peer_hello) where given.
    Counts `<stat>.upstream_rq_total` on success, `<stat>.upstream_cx_connect_fail` per failure and
    closes `conn` when none accepts (no healthy upstream: the caller sees a reset)."""
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        try:
            upstream = connect(host, int(port))
        except OSError:
            counters.add(f"{stat}.upstream_cx_connect_fail")
            continue
        try:
            if hello is not None and (line := hello(ep)):
                upstream.sendall(line)
        except OSError:
            upstream.close()
            counters.add(f"{stat}.upstream_cx_connect_fail")
            continue
        counters.add(f"{stat}.upstream_rq_total")
        return Spliced(ep, *splice(conn, upstream))
    counters.add(f"{stat}.upstream_cx_none_healthy")
    conn.close()
    return Spliced(None)
