"""The VM agent stand-in's count of istio_requests_total from Envoy's access-log lines (the stats filter's
stand-in: meshvm/lab/standins/agentplane.py, the lines' shape from envoy/sidecar.py stats_log)."""

from __future__ import annotations

import json

from meshvm import telemetry
from meshvm.lab.standins import agentplane

ENV = {"POD_NAMESPACE": "ratings", "SERVICE_ACCOUNT": "bookinfo-ratings", "ISTIO_META_WORKLOAD_NAME": "ratings"}
VM = "spiffe://cluster.local/ns/ratings/sa/bookinfo-ratings"
CALLER = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"


def counted(*lines: dict | str) -> list[dict[str, str]]:
    c = agentplane.RequestCounter(ENV)
    for line in lines:
        c.line(line if isinstance(line, str) else json.dumps(line))
    return [dict(labels) for labels in telemetry.parse(c.metrics.prometheus())]


def test_an_inbound_mtls_request_counts_with_both_identities() -> None:
    (row,) = counted({"istio_stats": "destination", "peer": CALLER, "code": "200", "cluster": "inbound|9080||",
                      "service": "ratings.ratings.svc.cluster.local"})
    assert (row["source_principal"], row["destination_principal"], row["connection_security_policy"]) == (
        CALLER, VM, "mutual_tls")
    assert (row["destination_service"], row["destination_service_name"], row["response_code"]) == (
        "ratings.ratings.svc.cluster.local", "ratings", "200")


def test_plaintext_is_unknown_and_none_and_outbound_names_the_cluster_service() -> None:
    plain, out = counted({"istio_stats": "destination", "peer": "-", "code": "403", "service": "ratings.ratings.svc.cluster.local"},
                         {"istio_stats": "source", "peer": "spiffe://cluster.local/ns/default/sa/bookinfo-details",
                          "code": "200", "cluster": "outbound|9080||details.default.svc.cluster.local"})
    assert (plain["source_principal"], plain["connection_security_policy"], plain["response_code"]) == (
        "unknown", "none", "403")
    assert (out["reporter"], out["destination_service"], out["source_principal"]) == (
        "source", "details.default.svc.cluster.local", VM)


def test_other_lines_count_nothing() -> None:
    assert counted("not json", {"istio_stats": "elsewhere"}, json.dumps([1, 2])) == []
