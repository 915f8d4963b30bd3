"""meshwire, the lab's shared data-plane stand-in pieces: DNS answers read back as a resolver reads
them, routing by VIP and port, round robin, Envoy-style counters, and forward() over real local
sockets (127.0.0.1). original_dst needs iptables REDIRECT: the lab tests cover it."""

from __future__ import annotations

import errno
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from meshvm.lab.standins import meshwire

VIP = "172.29.3.200"
TABLE = {"services": [
    {"name": "details", "namespace": "default", "host": "details.default.svc.cluster.local", "vip": VIP,
     "ports": [{"port": 9080, "targetPort": 9080, "endpoints": ["10.0.0.1:9080", "10.0.0.2:9080"]}]},
    {"name": "ratings", "namespace": "ratings", "host": "ratings.ratings.svc.cluster.local", "vip": "172.29.3.201",
     "ports": [{"port": 9080, "targetPort": 9080, "endpoints": []}]},
]}
A, AAAA, IN = 1, 28, 1


def query(name: str, qtype: int = A, qid: int = 0x1234, edns: bool = False) -> bytes:
    """A standard query with recursion desired, as glibc's resolver sends it (EDNS optional)."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0) + qname + struct.pack("!HH", qtype, IN)
    if edns:
        msg += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)  # OPT pseudo-record
    return msg


def parse(reply: bytes, sent: bytes) -> tuple[int, int, list[tuple[int, int, bytes]]]:
    """(flags, rcode, [(type, class, rdata)]) after the checks a stub resolver makes."""
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    assert qid == struct.unpack("!H", sent[:2])[0], "reply id differs from the query's"
    assert flags & 0x8000, "QR bit not set: not a response"
    assert qd == 1 and ns == 0 and ar == 0
    end = sent.index(b"\x00", 12) + 5
    assert reply[12:end] == sent[12:end], "the question is not echoed"
    i, answers = end, []
    for _ in range(an):
        assert reply[i:i + 2] == b"\xc0\x0c", "answer name should point at the question"
        rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", reply[i + 2:i + 12])
        assert ttl > 0
        answers.append((rtype, rclass, reply[i + 12:i + 12 + rdlen]))
        i += 12 + rdlen
    assert i == len(reply), "trailing bytes after the answers"
    return flags, flags & 0x000F, answers


def lookup(name: str) -> str | None:
    return meshwire.name_table(TABLE, "default").get(name)


@pytest.mark.parametrize("name", ["details.default.svc", "details.default.svc.cluster.local", "details.default",
                                  "details", "DETAILS.Default.SVC"])
def test_a_answer_is_the_vip(name: str):
    q = query(name)
    flags, rcode, answers = parse(meshwire.dns_answer(q, lookup) or b"", q)
    assert rcode == 0 and flags & 0x0100, "NOERROR with RD copied"
    assert answers == [(A, IN, socket.inet_aton(VIP))]


def test_a_query_with_edns_is_answered_without_the_opt_record():
    q = query("details.default.svc", edns=True)
    _, rcode, answers = parse(meshwire.dns_answer(q, lookup) or b"", q[:-11])
    assert rcode == 0 and answers == [(A, IN, socket.inet_aton(VIP))]


def test_unknown_name_is_nxdomain():
    q = query("reviews.default.svc")
    _, rcode, answers = parse(meshwire.dns_answer(q, lookup) or b"", q)
    assert rcode == 3 and answers == []


def test_short_name_only_in_own_namespace():
    q = query("ratings")
    _, rcode, _ = parse(meshwire.dns_answer(q, lookup) or b"", q)
    assert rcode == 3
    assert meshwire.name_table(TABLE, "ratings")["ratings"] == "172.29.3.201"


def test_aaaa_for_a_known_name_is_empty_noerror():
    q = query("details.default.svc", AAAA)
    _, rcode, answers = parse(meshwire.dns_answer(q, lookup) or b"", q)
    assert rcode == 0 and answers == []


def test_not_a_query_gets_no_answer():
    q = query("details.default.svc")
    assert meshwire.dns_answer(q[:8], lookup) is None
    response = q[:2] + struct.pack("!H", 0x8100) + q[4:]
    assert meshwire.dns_answer(response, lookup) is None


def test_serve_dns_answers_on_a_udp_socket():
    stop = threading.Event()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    t = threading.Thread(target=meshwire.serve_dns, args=(server, lookup, stop), daemon=True)
    t.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            q = query("details.default", qid=77)
            c.sendto(q, server.getsockname())
            _, rcode, answers = parse(c.recv(1500), q)
        assert rcode == 0 and answers == [(A, IN, socket.inet_aton(VIP))]
    finally:
        stop.set()
        t.join(5)
        server.close()


def test_route_by_vip_and_port():
    found = meshwire.route(TABLE, VIP, 9080)
    assert found == ("9080||details.default.svc.cluster.local", ["10.0.0.1:9080", "10.0.0.2:9080"])
    assert meshwire.route(TABLE, VIP, 9081) is None
    assert meshwire.route(TABLE, "10.0.0.1", 9080) is None
    assert meshwire.route({"services": []}, VIP, 9080) is None


def test_round_robin_rotates_per_key():
    rr = meshwire.RoundRobin()
    eps = ["a", "b", "c"]
    assert [rr.order("k", eps)[0] for _ in range(4)] == ["a", "b", "c", "a"]
    assert rr.order("k", eps) == ["b", "c", "a"]
    assert rr.order("other", eps) == ["a", "b", "c"]
    assert rr.order("k", []) == []


# -- forward() over local sockets -----------------------------------------------------------------


@pytest.fixture
def echo() -> Iterator[str]:
    """An upstream that answers each connection with 'echo:' + what it read."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                got = b""
                while len(got) < 100 and (chunk := c.recv(100)):  # to the client's end of writing
                    got += chunk
                c.sendall(b"echo:" + got)

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


_HELD: list[socket.socket] = []


def refused() -> str:
    """An address that refuses connections: bound, never listening, and held for the session, so no
    other test's socket can take the port meanwhile."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return f"127.0.0.1:{s.getsockname()[1]}"


def proxied(endpoints: list[str], payload: bytes = b"hello") -> tuple[bytes, str | None]:
    """A client connection forwarded to `endpoints`: (what the client got back, forward's endpoint);
    a connection closed with the client's bytes unread reads as b"<reset>"."""
    lst = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lst.getsockname(), timeout=5)
    conn, _ = lst.accept()
    lst.close()
    result: list[str | None] = []

    def connect(host: str, port: int) -> socket.socket:
        return socket.create_connection((host, port), timeout=2)

    t = threading.Thread(target=lambda: result.append(meshwire.forward(conn, endpoints, connect)))
    t.start()
    with client:
        got = b""
        try:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            while chunk := client.recv(100):
                got += chunk
        except (ConnectionResetError, BrokenPipeError):
            got += b"<reset>"
        except OSError as e:  # forward may close first: shutdown then finds the connection gone
            if e.errno != errno.ENOTCONN:
                raise
            got += b"<reset>"
    t.join(10)
    assert not t.is_alive()
    return got, result[0]


def test_forward_skips_a_failing_endpoint(echo: str):
    assert proxied([refused(), echo]) == (b"echo:hello", echo)


def test_forward_with_no_endpoint_accepting_closes_the_client():
    got, done = proxied([refused()])
    assert done is None and got in (b"", b"<reset>")  # closed, nothing from any upstream


def test_relay_copies_both_ways_until_one_side_ends():
    envoy, relay_in = socket.socketpair()
    relay_out, istiod = socket.socketpair()
    t = threading.Thread(target=meshwire.relay, args=(relay_in, relay_out), daemon=True)
    t.start()
    for s in (envoy, istiod):
        s.settimeout(5)
    envoy.sendall(b"request")
    assert istiod.recv(100) == b"request"
    istiod.sendall(b"push")
    assert envoy.recv(100) == b"push"
    envoy.close()
    assert istiod.recv(100) == b"", "the other side is closed when one side ends"
    t.join(5)
    assert not t.is_alive()
