"""The VM lifecycle checks' readings (meshvm/lifecycle.py): a caller's Envoy /clusters, a pod's call."""

from __future__ import annotations

from meshvm import lifecycle
from meshvm.seams import Result

VM = "10.128.0.7"
CLUSTER = "outbound|9080||ratings.ratings.svc.cluster.local"


class Exec:
    def __init__(self, result: Result):
        self.result, self.calls = result, []

    def exec(self, namespace, pod, command, *, container=None, timeout=60):
        self.calls.append((namespace, pod, container, command))
        return self.result


def clusters(*lines: str) -> Exec:
    return Exec(Result(0, "\n".join([f"{CLUSTER}::default_priority::max_connections::4294967295", *lines]) + "\n", ""))


def test_the_vm_as_a_healthy_endpoint_of_ratings():
    kube = clusters(f"{CLUSTER}::{VM}:9080::health_flags::healthy", f"{CLUSTER}::{VM}:9080::cx_active::0")
    assert lifecycle.caller_endpoint(kube, "curl-0", VM) == "healthy"
    assert kube.calls == [("default", "curl-0", "istio-proxy", ["curl", "-sS", "-m", "5", "localhost:15000/clusters"])]


def test_sent_unhealthy_shows_envoys_eds_flag_and_gone_is_absent():
    assert lifecycle.caller_endpoint(clusters(f"{CLUSTER}::{VM}:9080::health_flags::/failed_eds_health"),
                                     "curl-0", VM) == "/failed_eds_health"
    other = "outbound|9080||details.default.svc.cluster.local"
    assert lifecycle.caller_endpoint(clusters(f"{other}::{VM}:9080::health_flags::healthy"), "curl-0", VM) == "absent"


def test_an_unreadable_proxy_is_never_taken_for_absent():
    seen = lifecycle.caller_endpoint(Exec(Result(7, "", "curl: (7) Failed to connect")), "curl-0", VM)
    assert seen.startswith("unread: curl exited 7") and seen != "absent"


def test_a_pod_call_is_its_status_or_how_curl_failed():
    assert lifecycle.pod_call_code(Exec(Result(0, "no healthy upstream\n503", "")), "curl-0") == lifecycle.NO_ENDPOINT
    assert lifecycle.pod_call_code(Exec(Result(0, "upstream connect error or disconnect/reset before headers\n503", "")),
                                   "curl-0") != lifecycle.NO_ENDPOINT  # the VM's Envoy (or none) answered
    assert lifecycle.pod_call_code(Exec(Result(28, "000", "curl: (28) timed out")), "curl-0").startswith("curl exited 28")


def test_the_probe_budget_is_threshold_periods_plus_a_timeout_plus_istiods_push():
    probe = {"periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3}
    assert lifecycle.probe_budget(probe) == 5 * 3 + 3 + lifecycle.SETTLE_S
    assert lifecycle.probe_budget({}) == 10 * 1 + 1 + lifecycle.SETTLE_S  # the agent's defaults, not Kubernetes'
    assert lifecycle.probe_budget({"periodSeconds": 5, "timeoutSeconds": 3}) == 5 + 3 + lifecycle.SETTLE_S
    assert lifecycle.probe_budget({**probe, "successThreshold": 2}, healthy=True) == 5 * 2 + 3 + lifecycle.SETTLE_S
