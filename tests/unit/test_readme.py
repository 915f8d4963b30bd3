"""The README documents every setting with its variable and default, and both set-up commands."""

from pathlib import Path

import pytest

from meshvm.settings import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_has_a_readme_row(setting):
    row = next((line for line in README.splitlines() if line.startswith(f"| `{setting.option}` |")), "")
    assert f"`{setting.env}`" in row, f"README lacks a row for {setting.option}"
    if setting.default and setting.kind != "flag":
        assert f"`{setting.default}`" in row, f"README shows another default for {setting.option}"


def test_both_commands_are_shown():
    assert "nox -s e2e" in README and "nox -s tests" in README
