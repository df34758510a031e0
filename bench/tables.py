"""The comparison table in the documents' layout, from stored records only.

  Training Mode | Val Acc @ 1 epoch | Val Acc @ 5 epoch | Time per epoch | First epoch

A row is one configuration: the runs that share the whole resolved configuration (all but the suite name
and the repeat number) and the hardware, so records of other settings in the same folder never pool into
a row. Rows gather in blocks of one backbone x dataset x input size x weights x backend x precision;
where rows of one mode still differ (a stale record with other epochs, a second batch size), the block
splits by what differs and its title says so.

Each cell is the median of its samples with the interquartile range and n (stats.describe): one sample
per repeat for accuracy and the first epoch, one per steady epoch of every repeat for the time per epoch
and the throughput. "Time per epoch" is training plus validation, what Keras prints; epoch 1, which
carries tracing and compilation, is its own column.

Records the store left out as corrupt (store.scan) are listed under the table, so a printed or published
table says what it is missing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from .config import NOT_MATCHED, complete
from .environment import hardware_label
from .modes import MODES
from .stats import describe
from .store import atomic_write, epochs_frame

BLOCK_KEYS = ["backbone", "dataset", "input_size", "weights", "backend", "precision"]
STATS = ("median", "q1", "q3", "min", "max", "n")


def _order(mode: str, strategy: str | None, recipe: str | None) -> tuple:
    """Rows from least to most trained: a mode's plain form first, then its named variants; within one,
    the classic recipe, the modern one, then the variants of either (an ablation)."""
    names = ["frozen", "frozen-cached", "unfrozen", "scratch"]
    rank = {None: 0, "modern": 1}.get(recipe, 2)
    return (names.index(mode) if mode in names else len(names), mode, strategy is not None, strategy or "", rank,
            _natural(recipe or ""))


def kind(config: dict) -> str:
    """What a row, a line or a bar is named by: the suite's strategy or the mode, and a recipe other than
    the classic one ('unfrozen · modern')."""
    return (config.get("strategy") or config["mode"]) + (f" · {config['recipe']}" if config.get("recipe") else "")


def mode_label(mode: str) -> str:
    return MODES.get(mode).label if mode in MODES else mode


def default_epochs(ep: pd.DataFrame) -> list[int]:
    """Epoch 1 and the last epoch, as the documents' table (1 and 5); with runs of several lengths, each
    length's last epoch (a block shows the columns its runs have)."""
    if ep.empty:
        return [1]
    return sorted({1} | {int(n) for n in ep.groupby("run_id")["epoch"].max()})


def _natural(text: str) -> list:
    """'train_size=250' before 'train_size=1000'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def identity_fields(record: dict) -> dict[str, str]:
    """What makes a row: the resolved configuration (suite and repeat aside) and the hardware, as text."""
    cfg = {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
           for k, v in complete(record["config"]).items() if k not in NOT_MATCHED}
    return {**cfg, "hardware": hardware_label(record.get("environment") or {})}


def group_key(record: dict) -> str:
    """The key of a record's row: the same configuration on the same hardware."""
    return json.dumps(identity_fields(record), sort_keys=True)


def _variants(groups: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """group -> (variant, note). Within a block, a field that differs between groups of the SAME row kind
    (mode, or a suite's strategy) splits the block (variant: 'epochs=3'); a field that differs only between
    kinds (a suite's per-mode learning rate, a strategy's cut) is noted on the row."""
    out = {}
    blocks: dict[tuple, list[str]] = {}
    for g, f in groups.items():
        blocks.setdefault(tuple(f[k] for k in BLOCK_KEYS), []).append(g)
    for members in blocks.values():
        fields = sorted({k for g in members for k in groups[g]} - set(BLOCK_KEYS) - {"mode", "strategy", "recipe"})
        varies = [k for k in fields if len({groups[g].get(k) for g in members}) > 1]
        kinds = {g: (groups[g]["mode"], groups[g].get("strategy"), groups[g].get("recipe")) for g in members}
        within_mode = [k for k in varies if any(len({groups[g].get(k) for g in members if kinds[g] == m}) > 1
                                                 for m in set(kinds.values()))]
        for g in members:
            show = lambda keys: ", ".join(f"{k}={groups[g].get(k)}" for k in keys)  # noqa: E731
            # a strategy's own settings name it; the defaults (None) of the others would only clutter the row
            out[g] = (show(within_mode), show([k for k in varies if k not in within_mode and groups[g].get(k) != "None"]))
    return out


def _samples(records: list[dict], epochs: list[int]) -> dict[str, list[float]]:
    """Every sample of each metric over the given (finished) records."""
    out: dict[str, list[float]] = {f"val_acc_{n}": [] for n in epochs}
    out.update(steady_epoch_seconds=[], first_epoch_seconds=[], steady_images_per_second=[],
               host_peak_rss_gib=[], accelerator_peak_gib=[])
    for rec in records:
        by_epoch = {e["epoch"]: e for e in rec.get("epochs", [])}
        for n in epochs:
            if n in by_epoch:
                out[f"val_acc_{n}"].append(by_epoch[n].get("val_accuracy"))
        if 1 in by_epoch:
            out["first_epoch_seconds"].append(by_epoch[1]["epoch_seconds"])
        for e in by_epoch.values():
            if e.get("phase") == "steady":
                out["steady_epoch_seconds"].append(e["epoch_seconds"])
                if e.get("train_seconds"):
                    out["steady_images_per_second"].append(e["train_images"] / e["train_seconds"])
        memory = rec.get("memory") or {}
        for field, col in (("host_peak_rss_bytes", "host_peak_rss_gib"),
                           ("accelerator_peak_bytes", "accelerator_peak_gib")):
            if memory.get(field) is not None:
                out[col].append(memory[field] / 2**30)
    return out


def summarise(records: list[dict], epochs: list[int] | None = None) -> tuple[pd.DataFrame, list[int]]:
    """One row per configuration: median, quartiles, min, max and n of every metric over its samples."""
    epochs = epochs or default_epochs(epochs_frame(records))
    if not records:
        return pd.DataFrame(), epochs
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(group_key(rec), []).append(rec)
    fields = {g: identity_fields(recs[0]) for g, recs in groups.items()}
    variants = _variants(fields)
    rows = []
    for g, recs in groups.items():
        cfg = complete(recs[0]["config"])
        ok = [r for r in recs if r.get("status") == "ok"]
        variant, note = variants[g]
        row = {k: cfg.get(k) for k in BLOCK_KEYS + ["mode", "strategy", "recipe", "epochs", "batch_size",
                                                     "train_size", "val_size"]}
        row.update(group=g, variant=variant, hardware=fields[g]["hardware"], kind=kind(cfg),
                   label=(cfg["strategy"] or mode_label(cfg["mode"]))
                   + (f" · {cfg['recipe']}" if cfg["recipe"] else "") + (f" ({note})" if note else ""),
                   runs=len(recs), ok=len(ok), run_ids=" ".join(sorted(r["run_id"] for r in recs)),
                   status="ok" if len(ok) == len(recs) else ", ".join(sorted({r.get("status") for r in recs} - {"ok"})),
                   trainable_params=(recs[0].get("params") or {}).get("trainable"))
        for metric, values in _samples(ok, epochs).items():
            row.update({f"{metric}_{k}": v for k, v in describe(values).items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    order = sorted(range(len(table)), key=lambda i: (*table.loc[i, BLOCK_KEYS[:2]], _natural(table.loc[i, "variant"]),
                                                     _order(rows[i]["mode"], rows[i]["strategy"], rows[i]["recipe"])))
    return table.loc[order].reset_index(drop=True), epochs


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def secs(v: float) -> str:
    return f"{v:.1f} s" if v < 100 else f"{v:.0f} s"


def _bare(fmt, v: float) -> str:
    """A number as its formatter writes it, without the unit: the IQR after a median that carries it."""
    return fmt(v).removesuffix(" img/s").removesuffix(" s").removesuffix("%")


def cell(row, metric: str, fmt) -> str:
    """'86.3% [86.0–86.5] n=3': median [interquartile range] and the number of samples."""
    med, n = row[f"{metric}_median"], row[f"{metric}_n"]
    if pd.isna(med):
        return row["status"] if row["ok"] == 0 else "—"
    text = fmt(med)
    if n > 1:
        text += f" [{_bare(fmt, row[f'{metric}_q1'])}–{_bare(fmt, row[f'{metric}_q3'])}]"
    text += f" n={int(n)}"
    if row["ok"] < row["runs"]:
        text += f" ({row['runs'] - row['ok']} {row['status']})"
    return text


def block_title(row) -> str:
    title = (f"{row['backbone']} · {row['dataset']} · {int(row['input_size'])} px · weights {row['weights']}"
             f" · {row['backend']} · {row['precision']}")
    return title + (f" · {row['variant']}" if row.get("variant") else "")


NOTE = ("Cells: median [interquartile range] n = number of samples. Val Acc: one sample per run (repeat). "
        "Time per epoch: every steady-state epoch (2 onwards) of every run, training plus validation as Keras "
        "prints it. First epoch: one per run; it includes tracing and compilation.")


def markdown(table: pd.DataFrame, epochs: list[int]) -> str:
    if table.empty:
        return "_no runs recorded_\n"
    parts = []
    for _, block in table.groupby(BLOCK_KEYS + ["variant"], dropna=False, sort=False):
        first = block.iloc[0]
        shown = [n for n in epochs if block[f"val_acc_{n}_median"].notna().any() or n == epochs[0]]
        header = ["Training Mode"] + [f"Val Acc @ {n} epoch" for n in shown] + ["Time per epoch", "First epoch"]
        lines = [f"**{block_title(first)}**", "", f"_{first['hardware']}_", "",
                 "| " + " | ".join(header) + " |",
                 "|---|" + ":---:|" * len(shown) + "---:|---:|"]
        for _, row in block.iterrows():
            cells = [row["label"]] + [cell(row, f"val_acc_{n}", pct) for n in shown]
            cells += [cell(row, "steady_epoch_seconds", secs), cell(row, "first_epoch_seconds", secs)]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    note = NOTE + (f" {mode_label('frozen-cached')}: the head alone, on features computed once (the one-off "
                   "extraction is the records' `features.extract_seconds`)." if (table["mode"] == "frozen-cached").any()
                   else "")
    if table["recipe"].notna().any():
        note += (" A row names its recipe unless it is the documents' classic one (bench/recipes.py). In a two-stage "
                 "recipe epoch 1 trains the head alone, so its first epoch is the head's, and the first epoch of "
                 "stage 2, which compiles again, is not counted as steady.")
    return "\n\n".join(parts) + "\n\n" + note + "\n"


def left_out(lines: list[str]) -> str:
    """What reading the records left out or noticed, as the table, report and comparison state it."""
    return "**Left out or noted while reading the records:**\n\n" + "".join(f"- {line}\n" for line in lines)


def render(records: list[dict], epochs: list[int] | None = None, notes: list[str] = ()) -> tuple[str, pd.DataFrame]:
    """(the table as Markdown, with any notes under it; its numbers as a frame)."""
    table, epochs = summarise(records, epochs)
    text = markdown(table, epochs)
    return (text + "\n" + left_out(notes) if notes else text), table


def save(folder: Path, text: str, table: pd.DataFrame) -> list[Path]:
    paths = [Path(folder) / "table.md", Path(folder) / "table.csv"]
    atomic_write(paths[0], text)
    atomic_write(paths[1], table.drop(columns=["group"], errors="ignore").to_csv(index=False))
    return paths


def write(folder: Path, records: list[dict], epochs: list[int] | None = None, notes: list[str] = ()) -> str:
    text, table = render(records, epochs, notes)
    save(folder, text, table)
    return text


def run_values(record: dict, epochs: list[int]) -> dict[str, float]:
    """One run's value of each metric: the median of its own samples, the unit compare decides on."""
    return {m: describe(v)["median"] for m, v in _samples([record], epochs).items()}
