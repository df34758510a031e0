"""The comparison table in the documents' layout, from stored records only.

  Training Mode | Val Acc @ 1 epoch | Val Acc @ 5 epoch | Time per epoch | First epoch

one block per backbone x dataset (and anything else that differs between runs: input size,
weights, backend). "Time per epoch" is the median steady-state epoch (training plus
validation, what Keras prints); epoch 1, which carries tracing and compilation, is its own
column. With repeats, each cell is the median over repeats with the min-max range.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .modes import MODES
from .store import atomic_write, epochs_frame, runs_frame

BLOCK_KEYS = ["backbone", "dataset", "input_size", "weights", "backend", "precision"]


def _mode_order(mode: str) -> tuple:
    names = ["frozen", "frozen-cached", "unfrozen", "scratch"]
    return (names.index(mode) if mode in names else len(names), mode)


def mode_label(mode: str) -> str:
    return MODES.get(mode).label if mode in MODES else mode


def default_epochs(ep: pd.DataFrame) -> list[int]:
    """Epoch 1 and the last epoch, as the documents' table (1 and 5)."""
    if ep.empty:
        return [1]
    return sorted({1, int(ep.groupby("run_id")["epoch"].max().max())})


def per_run(records: list[dict], epochs: list[int]) -> pd.DataFrame:
    """One row per run: status, val accuracy at the chosen epochs, steady and first-epoch seconds."""
    ep = epochs_frame(records)
    runs = runs_frame(records)
    rows = []
    for _, run in runs.iterrows():
        e = ep[ep.run_id == run.run_id].set_index("epoch")
        steady = e[e.phase == "steady"]
        row = {k: run[k] for k in ["run_id", "repeat", "status", "steady_images_per_second"] + BLOCK_KEYS + ["mode"]}
        for n in epochs:
            row[f"val_acc_{n}"] = e.val_accuracy.get(n, np.nan)
        row["steady_epoch_seconds"] = steady.epoch_seconds.median() if len(steady) else np.nan
        row["first_epoch_seconds"] = e.epoch_seconds.get(1, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(records: list[dict], epochs: list[int] | None = None) -> tuple[pd.DataFrame, list[int]]:
    """One row per (block, mode): median, min and max over repeats of every metric."""
    epochs = epochs or default_epochs(epochs_frame(records))
    runs = per_run(records, epochs)
    metrics = [f"val_acc_{n}" for n in epochs] + ["steady_epoch_seconds", "first_epoch_seconds",
                                                  "steady_images_per_second"]
    rows = []
    if runs.empty:
        return pd.DataFrame(), epochs
    for key, g in runs.groupby(BLOCK_KEYS + ["mode"], dropna=False, sort=False):
        ok = g[g.status == "ok"]
        row = dict(zip(BLOCK_KEYS + ["mode"], key))
        row.update(label=mode_label(row["mode"]), runs=len(g), ok=len(ok),
                   status="ok" if len(ok) == len(g) else ", ".join(sorted(set(g.status) - {"ok"})))
        for m in metrics:
            v = pd.to_numeric(ok[m], errors="coerce").dropna()
            row.update({f"{m}_median": v.median() if len(v) else np.nan,
                        f"{m}_min": v.min() if len(v) else np.nan, f"{m}_max": v.max() if len(v) else np.nan})
        rows.append(row)
    table = pd.DataFrame(rows)
    table["_order"] = table["mode"].map(_mode_order)
    table = table.sort_values(BLOCK_KEYS[:2] + ["_order"], kind="stable").drop(columns="_order")
    return table.reset_index(drop=True), epochs


def _cell(row, metric: str, fmt) -> str:
    med = row[f"{metric}_median"]
    if pd.isna(med):
        return row["status"] if row["ok"] == 0 else "—"
    text = fmt(med)
    if row["ok"] > 1:
        text += f" ({fmt(row[f'{metric}_min'])}–{fmt(row[f'{metric}_max'])})"
    if row["ok"] < row["runs"]:
        text += f" [{row['runs'] - row['ok']} {row['status']}]"
    return text


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def secs(v: float) -> str:
    return f"{v:.1f} s" if v < 100 else f"{v:.0f} s"


def block_title(row) -> str:
    return (f"{row['backbone']} · {row['dataset']} · {int(row['input_size'])} px · weights {row['weights']}"
            f" · {row['backend']} · {row['precision']}")


def markdown(table: pd.DataFrame, epochs: list[int]) -> str:
    if table.empty:
        return "_no runs recorded_\n"
    header = (["Training Mode"] + [f"Val Acc @ {n} epoch" for n in epochs] + ["Time per epoch", "First epoch"])
    parts = []
    for _, block in table.groupby(BLOCK_KEYS, dropna=False, sort=False):
        lines = [f"**{block_title(block.iloc[0])}**", "",
                 "| " + " | ".join(header) + " |",
                 "|---|" + ":---:|" * len(epochs) + "---:|---:|"]
        for _, row in block.iterrows():
            cells = [row["label"]] + [_cell(row, f"val_acc_{n}", pct) for n in epochs]
            cells += [_cell(row, "steady_epoch_seconds", secs), _cell(row, "first_epoch_seconds", secs)]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    note = ("Time per epoch: median of the steady-state epochs (2 onwards; training plus validation, as Keras "
            "prints it). First epoch: includes tracing and compilation."
            + (" Repeats: median (min–max)." if (table["ok"] > 1).any() else "")
            + (f" {mode_label('frozen-cached')}: the head alone, on features computed once (the one-off extraction is "
               "the records' `features.extract_seconds`)." if (table["mode"] == "frozen-cached").any() else ""))
    return "\n\n".join(parts) + "\n\n" + note + "\n"


def write(folder: Path, records: list[dict], epochs: list[int] | None = None) -> str:
    table, epochs = summarise(records, epochs)
    text = markdown(table, epochs)
    atomic_write(Path(folder) / "table.md", text)
    atomic_write(Path(folder) / "table.csv", table.to_csv(index=False))
    return text
