"""Checksummed downloads against a real HTTP server on loopback."""

from __future__ import annotations

import pytest

from meshvm.config import gather, resolve
from meshvm.downloads import DownloadFailed, bookinfo_ratings, fetch_verified
from tests.unit.conftest import publish

PAYLOAD = b"!<arch>\nnot really a deb, but bytes with a checksum\n"


def sidecar_urls(base: str, fallbacks: list[str], version: str, family: str = "ubuntu-2404-lts-amd64") -> list[str]:
    """The suite's own URL list for these settings (Config.sidecar_urls)."""
    raw = gather({"platform": "lab", "sidecar_base_url": base, "sidecar_fallback_urls": fallbacks,
                  "istio_version": version, "vm_image_family": family}, {})
    return resolve(raw, {}, is_root=True).sidecar_urls()


def test_sidecar_urls_by_version_and_architecture_with_explicit_fallbacks_only():
    blob = "https://blob.istio.io/istio-release/releases"
    for version in ("1.29.6", "1.30.3", "1.31.1"):  # one host for every version
        assert sidecar_urls(blob, [], version) == [f"{blob}/{version}/deb/istio-sidecar.deb"]
    assert sidecar_urls(blob, [], "1.30.3", "ubuntu-2404-lts-arm64") == [f"{blob}/1.30.3/deb/istio-sidecar-arm64.deb"]
    assert sidecar_urls(blob, ["https://mirror.example/r/"], "1.30.3")[1] == \
        "https://mirror.example/r/1.30.3/deb/istio-sidecar.deb"


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
