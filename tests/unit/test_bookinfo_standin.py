"""The BookInfo app stand-in (meshvm/lab/standins/bookinfo.py), run as the lab runs it: one process
per app, configured by env. The oracle for the page is the suite's own reader, meshvm.productpage."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from meshvm import productpage, retry
from meshvm.deadlines import Deadline
from meshvm.lab.standins import bookinfo

SCRIPT = Path(bookinfo.__file__)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, timeout: float = 15) -> tuple[int, bytes]:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


class App:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}"


Launch = Callable[..., App]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start `bookinfo.py <app> --port 0` with exactly the given env; the port it took is in its log."""
    apps: list[App] = []

    def start(app: str, **env: str) -> App:
        log = tmp_path / f"{app}-{len(apps)}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen([sys.executable, str(SCRIPT), app, "--port", "0"], stdout=subprocess.DEVNULL,
                                    stderr=err, env={"PATH": os.environ.get("PATH", ""), **env})

        def port() -> int:
            if proc.poll() is not None:
                raise AssertionError(f"{app} exited {proc.returncode}: {log.read_text()}")
            m = re.search(r"listening on (\d+)", log.read_text())
            return int(m.group(1)) if m else 0

        started = App(proc, retry.until(f"{app} stand-in listening", port, Deadline.after(15, app), initial=0.05))
        apps.append(started)
        return started

    yield start
    for a in apps:
        if a.proc.poll() is None:
            a.proc.terminate()
        try:
            a.proc.wait(10)
        except subprocess.TimeoutExpired:
            a.proc.kill()
            a.proc.wait(5)


class FakeRatings:
    """ratings v1's documented answer; `hold` makes it keep requests waiting until `release`."""

    def __init__(self, hold: bool = False) -> None:
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.arrived = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.arrived += 1
                owner.release.wait(20)
                n = int(self.path.rsplit("/", 1)[1])
                body = json.dumps({"id": n, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def ratings() -> Iterator[FakeRatings]:
    r = FakeRatings()
    yield r
    r.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def reviews_env(version: str, ratings_port: int) -> dict[str, str]:
    return {"STANDIN_VERSION": version, "RATINGS_HOSTNAME": "127.0.0.1", "RATINGS_SERVICE_PORT": str(ratings_port),
            "HOSTNAME": f"reviews-{version}-abc12"}


def page_env(details: App | int, reviews: App | int) -> dict[str, str]:
    def port(x: App | int) -> str:
        return str(x.port if isinstance(x, App) else x)
    return {"DETAILS_HOSTNAME": "127.0.0.1", "DETAILS_SERVICE_PORT": port(details),
            "REVIEWS_HOSTNAME": "127.0.0.1", "REVIEWS_SERVICE_PORT": port(reviews)}


def test_service_urls_follow_the_env_of_the_real_apps() -> None:
    assert bookinfo.service_url({}, "ratings") == "http://ratings:9080"
    assert bookinfo.service_url({"SERVICES_DOMAIN": "ratings"}, "ratings") == "http://ratings.ratings:9080"
    assert bookinfo.service_url({"RATINGS_HOSTNAME": "ratings.ratings"}, "ratings") == "http://ratings.ratings:9080"
    assert bookinfo.service_url({"DETAILS_HOSTNAME": "10.0.0.1", "DETAILS_SERVICE_PORT": "9081"},
                                "details") == "http://10.0.0.1:9081"


def test_details_answers_the_documented_json(launch: Launch) -> None:
    details = launch("details")
    status, body = get(f"{details.url}/details/7")
    assert status == 200 and json.loads(body) == {
        "id": 7, "author": "William Shakespeare", "year": 1595, "type": "paperback", "pages": 200,
        "publisher": "PublisherA", "language": "English", "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}
    assert get(f"{details.url}/details/x")[0] == 400
    assert get(f"{details.url}/health")[0] == 200


@pytest.mark.parametrize(("version", "color"), [("v2", "black"), ("v3", "red")])
def test_reviews_with_ratings(launch: Launch, ratings: FakeRatings, version: str, color: str) -> None:
    reviews = launch("reviews", **reviews_env(version, ratings.port))
    status, body = get(f"{reviews.url}/reviews/0")
    doc = json.loads(body)
    assert status == 200 and [r["reviewer"] for r in doc["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert [r["rating"] for r in doc["reviews"]] == [{"stars": 5, "color": color}, {"stars": 4, "color": color}]
    assert ratings.arrived == 1


def test_reviews_v1_never_calls_ratings(launch: Launch, ratings: FakeRatings) -> None:
    reviews = launch("reviews", **reviews_env("v1", ratings.port))
    doc = json.loads(get(f"{reviews.url}/reviews/0")[1])
    assert [r["reviewer"] for r in doc["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert all("rating" not in r for r in doc["reviews"]) and ratings.arrived == 0


def test_reviews_services_domain_is_appended(launch: Launch, ratings: FakeRatings) -> None:
    # RATINGS_HOSTNAME=127.0.0 + SERVICES_DOMAIN=1 only works if the domain is appended with a dot
    env = {**reviews_env("v2", ratings.port), "RATINGS_HOSTNAME": "127.0.0", "SERVICES_DOMAIN": "1"}
    reviews = launch("reviews", **env)
    doc = json.loads(get(f"{reviews.url}/reviews/0")[1])
    assert doc["reviews"][0]["rating"] == {"stars": 5, "color": "black"}


def test_reviews_ratings_down(launch: Launch, closed_port: int) -> None:
    reviews = launch("reviews", **reviews_env("v3", closed_port))
    doc = json.loads(get(f"{reviews.url}/reviews/0")[1])
    assert [r["rating"] for r in doc["reviews"]] == [{"error": bookinfo.UNAVAILABLE}] * 2


def test_reviews_v3_gives_up_at_2_5s_v2_waits_longer(launch: Launch) -> None:
    slow = FakeRatings(hold=True)
    try:
        v2 = launch("reviews", **reviews_env("v2", slow.port))
        v3 = launch("reviews", **reviews_env("v3", slow.port))
        with ThreadPoolExecutor(1) as pool:
            pending_v2 = pool.submit(get, f"{v2.url}/reviews/0")
            retry.until("v2 waiting on ratings", lambda: slow.arrived >= 1, Deadline.after(10, "v2"), initial=0.05)
            started = time.monotonic()
            doc3 = json.loads(get(f"{v3.url}/reviews/0")[1])  # held: only v3's own timeout ends it
            took = time.monotonic() - started
            assert doc3["reviews"][0]["rating"] == {"error": bookinfo.UNAVAILABLE}
            assert 2.0 <= took < 6.0
            assert not pending_v2.done()  # v2 started first and still waits (10 s timeout)
            slow.release.set()
            doc2 = json.loads(pending_v2.result(timeout=15)[1])
        assert doc2["reviews"][1]["rating"] == {"stars": 4, "color": "black"}
    finally:
        slow.close()


@pytest.mark.parametrize(("version", "stars"), [("v1", 0), ("v2", 9), ("v3", 9)])
def test_productpage_read_by_the_suite(launch: Launch, ratings: FakeRatings, version: str, stars: int) -> None:
    details = launch("details")
    reviews = launch("reviews", **reviews_env(version, ratings.port))
    page = launch("productpage", **page_env(details, reviews))
    status, body = get(f"{page.url}/productpage")
    reading = productpage.read(body.decode())
    assert status == 200 and reading.title_ok
    assert (reading.full_stars, reading.version) == (stars, version)
    assert not reading.unavailable and not reading.reviews_error
    assert "PublisherA" in body.decode() and f"reviews-{version}-abc12" in body.decode()
    assert get(f"{page.url}/health")[0] == 200


def test_productpage_ratings_unavailable(launch: Launch, closed_port: int) -> None:
    details = launch("details")
    reviews = launch("reviews", **reviews_env("v2", closed_port))
    page = launch("productpage", **page_env(details, reviews))
    reading = productpage.read(get(f"{page.url}/productpage")[1].decode())
    assert reading.unavailable and reading.full_stars == 0 and not reading.reviews_error and reading.title_ok


def test_productpage_reviews_down(launch: Launch, closed_port: int) -> None:
    details = launch("details")
    page = launch("productpage", **page_env(details, closed_port))
    status, body = get(f"{page.url}/productpage")
    reading = productpage.read(body.decode())
    assert status == 200 and reading.reviews_error and reading.full_stars == 0 and reading.title_ok
    assert "PublisherA" in body.decode()  # details still shown


def test_sigterm_exits_cleanly(launch: Launch) -> None:
    details = launch("details")
    details.proc.terminate()
    assert details.proc.wait(10) == 0
