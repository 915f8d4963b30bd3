"""The API stand-in's own contract, through the plain kubernetes client (raw API)."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.lab.kubeapi import KubeApiStandIn
from tests.contract.kube_fixtures import *  # noqa: F403

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "namespace": "default"}}


def test_expired_token_is_refused_with_401(standin: KubeApiStandIn, raw: client.ApiClient) -> None:
    token = standin.issue_token(3.0)  # long enough for the first call on a loaded machine
    raw.configuration.api_key["BearerToken"] = token
    client.CoreV1Api(raw).list_namespace(_request_timeout=5)  # accepted while fresh
    retry.until("token expired", lambda: not standin.token_valid(token), Deadline.after(10, "expiry"), initial=0.2)
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(raw).list_namespace(_request_timeout=5)
    assert e.value.status == 401


def test_server_side_apply_requires_a_field_manager(raw: client.ApiClient) -> None:
    dyn = DynamicClient(raw)
    res = dyn.resources.get(api_version="v1", kind="ConfigMap")
    with pytest.raises(ApiException) as e:
        dyn.server_side_apply(res, body=CM, namespace="default", _request_timeout=5)
    assert e.value.status == 400 and "fieldManager" in json.loads(e.value.body)["message"]
    dyn.server_side_apply(res, body=CM, namespace="default", field_manager="t", _request_timeout=5)


def test_apply_conflict_is_409_naming_the_field(raw: client.ApiClient) -> None:
    dyn = DynamicClient(raw)
    res = dyn.resources.get(api_version="v1", kind="ConfigMap")
    dyn.server_side_apply(res, body={**CM, "data": {"k": "1"}}, field_manager="first", _request_timeout=5)
    with pytest.raises(ApiException) as e:
        dyn.server_side_apply(res, body={**CM, "data": {"k": "2"}}, field_manager="second", _request_timeout=5)
    status = json.loads(e.value.body)
    assert e.value.status == 409 and status["reason"] == "Conflict"
    assert [c["field"] for c in status["details"]["causes"]] == [".data.k"] and '"first"' in status["message"]
    forced = dyn.server_side_apply(res, body={**CM, "data": {"k": "2"}}, field_manager="second",
                                   force_conflicts=True, _request_timeout=5)
    assert forced.data.k == "2"


def test_create_in_a_missing_namespace_is_404(raw: client.ApiClient) -> None:
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(raw).create_namespaced_config_map("nowhere", {"metadata": {"name": "x"}},
                                                           _request_timeout=5)
    assert e.value.status == 404 and "nowhere" in json.loads(e.value.body)["message"]


def test_istio_schema_violation_is_422_naming_the_field(raw: client.ApiClient) -> None:
    body = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
            "spec": {"selector": {"istio": "eastwestgateway"},
                     "servers": [{"port": {"number": "15012", "name": "tls", "protocol": "TLS"}, "hosts": ["*"]}]}}
    api = client.CustomObjectsApi(raw)
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object("networking.istio.io", "v1", "default", "gateways", body,
                                            _request_timeout=5)
    status = json.loads(e.value.body)
    assert e.value.status == 422 and status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "spec.servers[0].port.number"
    body["spec"]["servers"][0]["port"]["number"] = 15012
    api.create_namespaced_custom_object("networking.istio.io", "v1", "default", "gateways", body,
                                        _request_timeout=5)


def test_unknown_istio_field_rejected_when_strict_pruned_otherwise(raw: client.ApiClient) -> None:
    body = {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadGroup", "metadata": {"name": "wg"},
            "spec": {"template": {"serviceAccount": "sa", "adress": "10.0.0.1"}}}
    api = client.CustomObjectsApi(raw)
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object("networking.istio.io", "v1", "default", "workloadgroups", body,
                                            field_validation="Strict", _request_timeout=5)
    assert e.value.status == 400 and "spec.template.adress" in json.loads(e.value.body)["message"]
    made = api.create_namespaced_custom_object("networking.istio.io", "v1", "default", "workloadgroups", body,
                                               _request_timeout=5)
    assert made["spec"]["template"] == {"serviceAccount": "sa"}  # pruned, as a structural CRD does


def test_watch_resumes_after_a_resource_version(raw: client.ApiClient) -> None:
    standin_rv = client.CoreV1Api(raw).list_namespaced_config_map("default", _request_timeout=5)
    core = client.CoreV1Api(raw)
    for i in range(3):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}}, _request_timeout=5)
    events = list(watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=1,
                                       resource_version=standin_rv.metadata.resource_version))
    assert [e["object"].metadata.name for e in events] == ["c0", "c1", "c2"]


def test_watch_from_compacted_history_gets_410(standin: KubeApiStandIn, raw: client.ApiClient) -> None:
    core = client.CoreV1Api(raw)
    rv = core.list_namespaced_config_map("default", _request_timeout=5).metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}}, _request_timeout=5)
    standin.compact()
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=1,
                                  resource_version=rv))
    assert e.value.status == 410 and "Expired" in str(e.value.reason)


def test_pod_status_is_set_through_the_status_subresource(raw: client.ApiClient) -> None:
    core = client.CoreV1Api(raw)
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]},
           "status": {"phase": "Running"}}
    made = core.create_namespaced_pod("default", pod, _request_timeout=5)
    assert made.status is None or made.status.phase is None  # a create never sets status
    core.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Running", "podIP": "10.1.2.3"}},
                                     _request_timeout=5)
    core.patch_namespaced_pod("p", "default", {"status": {"phase": "Failed"}}, _request_timeout=5)
    got = core.read_namespaced_pod("p", "default", _request_timeout=5)
    assert (got.status.phase, got.status.pod_ip) == ("Running", "10.1.2.3")


def test_token_request_below_ten_minutes_is_invalid_as_on_a_real_api(kube, raw: client.ApiClient) -> None:
    kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: ratings}\n")
    kube.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: bookinfo-ratings, namespace: ratings}\n")
    core = client.CoreV1Api(raw)

    def request(seconds: int) -> client.AuthenticationV1TokenRequest:
        body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=["istio-ca"], expiration_seconds=seconds))
        return core.create_namespaced_service_account_token("bookinfo-ratings", "ratings", body, _request_timeout=10)

    with pytest.raises(client.ApiException) as e:
        request(599)
    assert e.value.status == 422 and "may not specify a duration less than 10 minutes" in e.value.body
    assert request(600).status.token
