"""The VM proxy's istio_requests_total before a check's calls (meshvm.telemetry.baseline): read until the
proxy answers; an answer with no series yet is a baseline, a failed read never is (an empty `before` would
let every earlier request count as grown by the check's calls)."""

from __future__ import annotations

import pytest

from meshvm import retry, telemetry
from meshvm.deadlines import Deadline
from meshvm.seams import Result

SERIES = ('istio_requests_total{reporter="destination",destination_service="ratings.ratings.svc.cluster.local",'
          'response_code="200"} 7\n')


class Vm:
    def __init__(self, *answers: Result):
        self.answers = list(answers)

    def run(self, command, *, step, sudo=False, check=True, timeout=60, env=None):  # noqa: ANN001, ANN201
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_a_failed_read_is_read_again_and_none_yet_is_a_baseline():
    vm = Vm(Result(7, "", "Failed to connect"), Result(0, "# no series yet\n", ""))
    assert telemetry.baseline(vm, Deadline.after(5, "baseline")) == {}
    vm = Vm(Result(7, "", "Failed to connect"), Result(0, SERIES, ""))
    assert list(telemetry.baseline(vm, Deadline.after(5, "baseline")).values()) == [7.0]


def test_a_proxy_that_never_answers_gives_no_baseline():
    with pytest.raises(retry.WaitFailed, match="istio_requests_total before the calls"):
        telemetry.baseline(Vm(Result(7, "", "Failed to connect")), Deadline.after(1, "baseline"))
