"""Figures from stored records (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")


def write(folder: Path, records: list[dict]) -> list[Path]:
    return []
