"""The project is self-contained: it cites no document outside itself, and every section of
docs/facts.md it cites exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"FACTS\.md|FACTS section|\.\./shared|LAB-NOTES|istio-vm-recipe\.md")
CITED = re.compile(r"docs/facts\.md section (\d+)")


def tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    return [ROOT / p for p in out.stdout.splitlines() if (ROOT / p).is_file() and p != "tests/unit/test_docs.py"]


def test_no_file_cites_a_document_outside_the_project():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in tracked() for i, line in
            enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []


def test_every_cited_section_of_the_facts_exists():
    sections = set(re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "facts.md").read_text(), re.MULTILINE))
    cited = {n for p in tracked() for n in CITED.findall(p.read_text(errors="replace"))}
    assert cited and cited <= sections, f"cited {sorted(cited)}, present {sorted(sections)}"
