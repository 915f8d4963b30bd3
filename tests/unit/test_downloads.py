"""Checksummed downloads against a real HTTP server on loopback."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshvm.downloads import DownloadFailed, bookinfo_ratings, fetch_verified, sidecar_urls

PAYLOAD = b"!<arch>\nnot really a deb, but bytes with a checksum\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", root
    httpd.shutdown()
    thread.join(5)


def publish(root: Path, rel: str, data: bytes, checksum: str | None = None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = checksum or hashlib.sha256(data).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest} {path.name}\n")


def test_fetches_checks_and_caches(server, tmp_path):
    base, root = server
    publish(root, "mirror-b/1.30.3/deb/istio-sidecar.deb", PAYLOAD)
    urls = sidecar_urls(f"{base}/mirror-a", [f"{base}/mirror-b"], "1.30.3")
    dest = tmp_path / "cache" / "1.30.3" / "istio-sidecar.deb"
    assert fetch_verified(urls, dest).read_bytes() == PAYLOAD  # mirror-a 404s, mirror-b serves
    (root / "mirror-b/1.30.3/deb/istio-sidecar.deb").unlink()
    assert fetch_verified(urls, dest).read_bytes() == PAYLOAD  # from the cache now


def test_checksum_mismatch_is_an_infrastructure_error_and_caches_nothing(server, tmp_path):
    base, root = server
    publish(root, "m/1.31.0/deb/istio-sidecar.deb", PAYLOAD, checksum="0" * 64)
    dest = tmp_path / "cache" / "istio-sidecar.deb"
    with pytest.raises(DownloadFailed, match=r"^infrastructure: .*checksum mismatch"):
        fetch_verified(sidecar_urls(f"{base}/m", [], "1.31.0"), dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["istio-sidecar.deb.lock"]


def test_no_source_at_all_names_every_url_tried(server, tmp_path):
    base, _ = server
    urls = sidecar_urls(f"{base}/a", [f"{base}/b"], "1.30.3")
    with pytest.raises(DownloadFailed) as e:
        fetch_verified(urls, tmp_path / "x.deb")
    assert all(u in str(e.value) for u in urls) and "404" in str(e.value)


def test_bookinfo_ratings_comes_from_the_release_tag_and_is_cached(server, tmp_path):
    base, root = server
    for name, text in (("ratings.js", "// app"), ("package.json", "{}")):
        publish(root, f"1.30.3/samples/bookinfo/src/ratings/{name}", text.encode())
    folder = bookinfo_ratings("1.30.3", tmp_path / "cache", base=base)
    assert (folder / "ratings.js").read_text() == "// app"
    (root / "1.30.3/samples/bookinfo/src/ratings/ratings.js").unlink()
    assert bookinfo_ratings("1.30.3", tmp_path / "cache", base=base) == folder
    with pytest.raises(DownloadFailed, match="^infrastructure: could not fetch .*/1.31.0/.*404"):
        bookinfo_ratings("1.31.0", tmp_path / "cache", base=base)
