"""Istio's standard metrics, as the exercises read them to prove a path went through the VM's proxy.

A real sidecar creates Envoy's per-cluster stats (`cluster.outbound|...upstream_rq_total`) only
when its stats matcher includes them, and by default it does not; Istio's own metrics exist by
default. So the exercises read `istio_requests_total` from pilot-agent's merged Prometheus endpoint
on the VM (`:15020/stats/prometheus`, all interfaces; `pilot/cmd/pilot-agent/status/server.go` at
1.30.3) before and after their calls, and look at the series that grew (docs/facts.md section 6).

Labels (istio/proxy `source/extensions/filters/http/istio_stats/istio_stats.cc` at 1.30.3):
`reporter` is `source` on the caller's proxy and `destination` on the server's; only the
destination reporter sets `connection_security_policy` (`mutual_tls`, else `none`); an unknown peer
is `unknown`. Identities are SPIFFE: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`
(`pkg/spiffe/spiffe.go`), trust domain `cluster.local` unless the mesh config sets another.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.seams import Result, VmShell

METRIC = "istio_requests_total"
STATS_URL = "http://localhost:15020/stats/prometheus"
TRUST_DOMAIN = "cluster.local"
Labels = frozenset[tuple[str, str]]
_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def spiffe(namespace: str, service_account: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def parse(text: str, metric: str = METRIC) -> dict[Labels, float]:
    """The series of one metric in Prometheus' text format: labels -> value."""
    out: dict[Labels, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m or m["name"] != metric:
            continue
        labels = {k: re.sub(r"\\[\\\"n]", lambda e: _UNESCAPE[e.group(0)], v)
                  for k, v in _LABEL.findall(m["labels"] or "")}
        try:
            out[frozenset(labels.items())] = float(m["value"])
        except ValueError:
            continue
    return out


def grown(before: Mapping[Labels, float], after: Mapping[Labels, float]) -> list[tuple[dict[str, str], float]]:
    """The series that grew, with how much (a series new since `before` grew from 0)."""
    return [(dict(k), v - before.get(k, 0.0)) for k, v in sorted(after.items(), key=lambda kv: sorted(kv[0]))
            if v > before.get(k, 0.0)]


def count(rows: list[tuple[dict[str, str], float]], **want: str) -> float:
    """How much the series whose labels have all of `want` grew together."""
    return sum(d for labels, d in rows if all(labels.get(k) == v for k, v in want.items()))


SHOWN = ("reporter", "source_workload", "source_principal", "destination_service", "destination_principal",
         "response_code", "connection_security_policy")


def describe(rows: list[tuple[dict[str, str], float]]) -> str:
    """The grown series, one per line with the labels that tell a path apart; or that none grew."""
    if not rows:
        return f"no {METRIC} series grew"
    return "\n".join(f"  +{d:g} {{{', '.join(f'{k}={labels.get(k, chr(63))!r}' for k in SHOWN)}}}"
                     for labels, d in rows)


def _scrape(vm: VmShell) -> Result:
    return vm.run(f"curl -sS -m 5 {STATS_URL}", step="istio_requests_total on the VM", check=False, timeout=15)


def vm_requests(vm: VmShell) -> dict[Labels, float]:
    """`istio_requests_total` on the VM's proxy; empty (not an error) while it does not answer yet."""
    r = _scrape(vm)
    return parse(r.stdout) if r.ok else {}


class MetricsUnanswered(Exception):
    """The VM's proxy did not serve its metrics."""


def baseline(vm: VmShell, deadline: Deadline) -> dict[Labels, float]:
    """`istio_requests_total` before a check's calls, read until the proxy answers: an empty `before` would
    count every earlier request (the counters live as long as the proxy) as grown by the check's calls."""
    def read() -> dict[Labels, float]:
        r = _scrape(vm)
        if not r.ok:
            raise MetricsUnanswered(f"curl {STATS_URL} exited {r.rc}: {r.stderr.strip()[-200:]}")
        return parse(r.stdout)
    return retry.until("the VM proxy's istio_requests_total before the calls", read, deadline,
                       transient=(MetricsUnanswered,), accept=lambda _: True, ceiling=2)  # none yet is an answer


def settle(read: Callable[[], dict[Labels, float]], before: Mapping[Labels, float], want: Mapping[str, str],
           n: float, deadline: Deadline) -> list[tuple[dict[str, str], float]]:
    """The grown series once `want`'s series grew by `n` (a proxy records a request when its stream
    ends, a moment after the caller has its answer), or as they stand at the deadline."""
    rows: list[tuple[dict[str, str], float]] = []

    def check() -> bool:
        rows[:] = grown(before, read())
        return count(rows, **want) >= n

    try:
        retry.until(f"{METRIC}{dict(want)} to grow by {n:g}", check, deadline, ceiling=2)
    except retry.WaitFailed:
        pass  # the caller asserts on the rows, naming every series that did grow
    return rows
