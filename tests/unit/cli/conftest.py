"""What every CLI test shares: no ECOKIT_* (or load-test) variables from the caller's shell,
a fresh working directory, and `cli(...)` to run a command and get (code, stdout, stderr)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ecokit.cli import main

CliRunner = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def _clean_environment(no_caller_environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
