"""The layers, as imports: the recipe runs over the seams only (never an adapter: the Kubernetes client,
SSH, istioctl, Google Cloud or the lab), and nothing on the gcp path imports the lab."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE_MAY = ("meshvm.seams", "meshvm.deadlines", "meshvm.retry", "meshvm.manifests", "meshvm.revisions",
              "meshvm.recipe")
ADAPTERS = ("meshvm.kube", "meshvm.ssh", "meshvm.istioctl", "meshvm.gcp", "meshvm.lab", "kubernetes", "paramiko",
            "google")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)} if node.module == "meshvm" \
                else {node.module}
    return found


@pytest.mark.parametrize("module", sorted((ROOT / "meshvm" / "recipe").glob("*.py")), ids=lambda p: p.stem)
def test_the_recipe_imports_the_seams_and_no_adapter(module):
    ours = {name for name in imports(module) if name.startswith("meshvm")}
    assert [n for n in ours if not n.startswith(RECIPE_MAY) and n != "meshvm"] == []
    assert [n for n in imports(module) if n.startswith(ADAPTERS)] == []


@pytest.mark.parametrize("module", sorted((ROOT / "meshvm" / "gcp").glob("*.py")), ids=lambda p: p.stem)
def test_the_gcp_path_never_imports_the_lab(module):
    assert [n for n in imports(module) if n.startswith("meshvm.lab")] == []
