"""The demo's live table (loadtest/demo.py): redrawn in place on a terminal, appended to a log
otherwise; and the packaging details a newcomer sees while the Quick start installs."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

from loadtest import demo

REPO = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_table_redraws_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _Terminal()
    monkeypatch.setattr("sys.stdout", out)
    drawn = demo._draw(["head", "row 1"], 0)
    drawn = demo._draw(["head", "row 1", "row 2"], drawn)
    # The second table moves up over the first (2 lines) and erases to the end of the screen.
    assert out.getvalue() == "head\nrow 1\n\x1b[2F\x1b[Jhead\nrow 1\nrow 2\n"
    assert drawn == 3


def test_the_table_is_appended_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    demo._draw(["a"], demo._draw(["a"], 0))
    assert out.getvalue() == "\na\n\na\n"


def test_the_license_is_an_spdx_string() -> None:
    """A TOML table made setuptools print its deprecation banner three times per install."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert project["build-system"]["requires"] == ["setuptools>=77"]
