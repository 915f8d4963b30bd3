"""metadata.json: versions recorded as they become known; an Istio version other than the one
under test is an error."""

import json

import pytest

from meshvm.metadata import Metadata, VersionMismatch, image_tag


def test_versions_are_recorded_and_istio_ones_must_match(tmp_path):
    m = Metadata(tmp_path / "metadata.json", "1.30.3")
    m.istio("istioctl_client", "1.30.3")
    with pytest.raises(VersionMismatch, match="istiod is 1.30.2, the run tests Istio 1.30.3"):
        m.istio("istiod", "1.30.2")
    data = json.loads((tmp_path / "metadata.json").read_text())
    assert data["istioctl_client"] == "1.30.3" and data["istiod"] == "1.30.2"  # kept for triage
    assert len(data["suite_commit"]) in (40, len("unknown"))


def test_image_tag():
    assert image_tag("docker.io/istio/pilot:1.30.3") == "1.30.3"
    assert image_tag("localhost:5000/istio/pilot") == ""
