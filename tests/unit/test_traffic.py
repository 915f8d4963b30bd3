"""Background traffic for the upgrade run: recorded per request, judged per phase (success rate and
the longest stretch without a success), drawn per second."""

from __future__ import annotations

import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from meshvm import retry, traffic
from meshvm.deadlines import Deadline
from meshvm.traffic import Phase, Recorder, Request
from meshvm.traffic_picture import ALL_FAILED, ALL_OK, NONE, SOME_FAILED, draw, second_colours


def steady(path: str, start: float, end: float, ok: bool = True) -> list[Request]:
    return [Request(round(start + i * 0.2, 3), path, ok, "200" if ok else "503")
            for i in range(int(round((end - start) / 0.2)))]


def test_steady_traffic_passes_every_phase():
    reqs = steady("ingress", 0, 20)
    rows, problems = traffic.judge(reqs, [Phase("before", 0, 10), Phase("control plane", 10, 20)], ["ingress"])
    assert problems == []
    assert [(r["phase"], r["requests"], r["success_rate"]) for r in rows] == [("before", 51, 1.0), ("control plane", 50, 1.0)]
    assert max(r["longest_gap_s"] for r in rows) <= 0.21


def test_an_outage_fails_its_phase_by_rate_and_by_gap_and_only_that_phase():
    reqs = steady("vm->details", 0, 10) + steady("vm->details", 10, 16, ok=False) + steady("vm->details", 16, 30)
    rows, problems = traffic.judge(reqs, [Phase("before", 0, 9.9), Phase("vm", 10, 30)], ["vm->details"])
    assert len(problems) == 2 and all(p.startswith("vm: vm->details: ") for p in problems), problems
    assert "success rate 0.700 < 0.99 (70 of 100)" in problems[0] and "6.0 s without a success" in problems[1]  # from the phase start


def test_a_stalled_path_is_an_outage_and_a_silent_phase_a_failure():
    reqs = steady("pod->ratings", 0, 4)  # the loop stopped answering at 4 s
    _, problems = traffic.judge(reqs, [Phase("before", 0, 4), Phase("after", 4.5, 12)], ["pod->ratings"])
    assert problems == ["after: pod->ratings: success rate 0.000 < 0.99 (0 of 0)",
                        "after: pod->ratings: 7.5 s without a success (> 5.0 s)"]


def test_curl_loop_lines():
    assert traffic.http_status_line("200\n") == (True, "200")
    assert traffic.http_status_line("503") == (False, "503")
    assert traffic.http_status_line("000") == (False, "000")  # curl's own failure: timeout, refused
    assert traffic.http_status_line("Defaulted container \"curl\"") is None


class _Toggle(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Toggle)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    _Toggle.status = 200


def test_a_probe_records_every_period_and_its_outage_shows(server: ThreadingHTTPServer):
    url = f"http://127.0.0.1:{server.server_address[1]}/productpage"

    def call() -> tuple[bool, str]:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200, str(r.status)
        except urllib.error.HTTPError as e:
            return False, str(e.code)

    rec = Recorder()
    rec.probe("ingress", call, period_s=0.05)

    def requests_after(n: int) -> None:
        retry.until(f"{n} more requests", lambda: len(rec.snapshot()[0]) >= n, Deadline.after(10, "t"), initial=0.05)

    with rec.phase("healthy"):
        requests_after(10)
    with rec.phase("broken"):
        _Toggle.status = 503
        requests_after(len(rec.snapshot()[0]) + 10)
        _Toggle.status = 200
    assert rec.stop(Deadline.after(5, "stop")) == []
    reqs, phases = rec.snapshot()
    rows, problems = traffic.judge(reqs, phases, ["ingress"], max_gap_s=60)
    assert [p.name for p in phases] == ["healthy", "broken"]
    assert rows[0]["success_rate"] == 1.0 and rows[0]["requests"] >= 10
    assert problems and problems[0].startswith("broken: ingress: success rate")
    assert "503" in {r.detail for r in reqs}
    assert len(reqs) <= (reqs[-1].t - reqs[0].t) / 0.05 + 2  # one per period: a late call is not caught up


def test_a_stream_is_stamped_on_arrival_and_a_source_left_open_is_named():
    rec = Recorder()
    rec.stream("vm->details", iter(["200", "junk", "000", "200"]), traffic.http_status_line)
    open_source: queue.Queue[str] = queue.Queue()
    rec.stream("pod->ratings", iter(open_source.get, None), traffic.http_status_line)
    open_source.put("200")
    retry.until("four results", lambda: len(rec.snapshot()[0]) == 4, Deadline.after(5, "t"), initial=0.02)
    assert rec.stop(Deadline.after(0.5, "stop")) == ["pod->ratings"]  # its channel was never closed
    open_source.put(None)  # type: ignore[arg-type]
    reqs, _ = rec.snapshot()
    assert sorted((r.path, r.detail) for r in reqs) == [("pod->ratings", "200"), ("vm->details", "000"),
                                                        ("vm->details", "200"), ("vm->details", "200")]


def test_the_picture_colours_each_second_by_its_outcomes(tmp_path: Path):
    reqs = [Request(0.1, "a", True, "200"), Request(1.2, "a", True, "200"), Request(1.5, "a", False, "503"),
            Request(2.3, "a", False, "000"), Request(4.1, "a", True, "200")]
    assert second_colours(reqs, "a", 5) == [ALL_OK, SOME_FAILED, ALL_FAILED, NONE, ALL_OK]
    out = draw(reqs, [Phase("before", 0, 2), Phase("after", 2, 5)], ["a", "b"], tmp_path / "traffic.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
    assert draw([], [], ["a"], tmp_path / "none.png") is None
