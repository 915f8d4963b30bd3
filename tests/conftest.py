"""Self-tests reach nothing outside this machine: Istio's release listing is the lab's local stand-in
for every run they start (a minor --istio-version, the default, is resolved from it)."""

import os

from meshvm.config import LAB_RELEASE_LISTING

os.environ.setdefault("E2E_ISTIO_RELEASE_LISTING", LAB_RELEASE_LISTING)
