import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite file from YAML text; returns its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def golden(tmp_path) -> Path:
    """A writable copy of tests/data/golden: crafted records with round, hand-checkable numbers."""
    return Path(shutil.copytree(DATA / "golden", tmp_path / "golden"))


def tlbench(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """The real command, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def unmarked(text: str) -> str:
    """A table without its diagnostics' footnote marks: the cells' values alone."""
    return re.sub("⁽[⁰¹²³⁴⁵⁶⁷⁸⁹]+⁾", "", text)
