"""The comparison table in the Udacity lab's layout, from stored records only.

  Training Mode | Val Acc @ 1 epoch | Val Acc @ 5 epoch | Time per epoch | First epoch

The accuracy columns are epoch 1 and each block's last epoch, or the epochs asked for (`--epochs`), which
must be epochs some run reached.

A row is one configuration: the runs that share the whole resolved configuration (all but the suite name
and the repeat number) and the hardware, so records of other settings in the same folder never pool into
a row. Rows gather in blocks of one backbone x dataset x input size x weights x backend x precision;
where rows of one mode still differ (a stale record with other epochs, a second batch size), the block
splits by what differs and its title says so.

Each cell is the median of its samples with the interquartile range and n (stats.describe): one sample
per repeat for accuracy and the first epoch, one per steady epoch of every repeat for the time per epoch
and the throughput. "Time per epoch" is training plus validation, what Keras prints; epoch 1, which
carries tracing and compilation, is its own column.

A cell a diagnostic concerns (diagnostics.py: noisy timing, a run at chance, ...) carries its footnote
mark, ⁽¹⁾, and the numbered footnotes under the table say what was found and the numbers behind it; the CSV
names each row's diagnostics. Records the store left out as corrupt (store.scan) are listed under the table,
so a printed or published table says what it is missing. Every Markdown table of tlbench is written by `markdown_table`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from . import diagnostics
from .config import NOT_MATCHED, complete
from .environment import hardware_label
from .errors import UserError
from .modes import MODES
from .stats import describe
from .store import atomic_write, model_size

BLOCK_KEYS = ["backbone", "dataset", "input_size", "weights", "backend", "precision"]
STATS = ("median", "q1", "q3", "min", "max", "n")


def mode_order(config: dict) -> tuple:
    """Rows from least to most trained, as the MODES registry describes each mode (pretrained weights, weights
    that train), an unknown mode last; a mode's plain form first, then its named variants; within one, the
    classic recipe, the modern one, then the variants of either (an ablation)."""
    mode, strategy, recipe = config["mode"], config.get("strategy"), config.get("recipe")
    trained = (0, MODES.get(mode).trainable, not MODES.get(mode).pretrained) if mode in MODES else (1,)
    rank = {None: 0, "modern": 1}.get(recipe, 2)
    return trained, mode, strategy is not None, strategy or "", rank, _natural(recipe or "")


def kind(config: dict) -> str:
    """What a row, a line or a bar is named by: the suite's strategy or the mode, and a recipe other than
    the classic one ('unfrozen · modern')."""
    return (config.get("strategy") or config["mode"]) + (f" · {config['recipe']}" if config.get("recipe") else "")


def mode_label(mode: str, weights: str | None = None) -> str:
    """The documents' name of a mode; a mode meant for pre-trained weights that ran on `weights: none` says
    so, or its row would claim a transfer that did not happen."""
    if mode not in MODES:
        return mode
    m = MODES.get(mode)
    return m.label + (" · random init" if weights == "none" and m.pretrained else "")


def row_label(config: dict) -> str:
    """What a row is called: the suite's strategy or the mode's name, and a recipe other than the classic one."""
    cfg = complete(config)
    return (cfg["strategy"] or mode_label(cfg["mode"], cfg["weights"])) + (f" · {cfg['recipe']}" if cfg["recipe"] else "")


def default_epochs(ep: pd.DataFrame) -> list[int]:
    """Epoch 1 and every epoch a run ended at: the figures draw up to the last of them (the table's default is
    per block: summarise)."""
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


# Settings whose unset value ("None": identity_fields holds text) has a plain meaning a reader should see instead.
_UNSET_MEANS = {"devices": "1"}


def _shown(key: str, value: str | None) -> str:
    return _UNSET_MEANS.get(key, value) if value == "None" else value


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
            show = lambda keys: ", ".join(f"{k}={_shown(k, groups[g].get(k))}" for k in keys)  # noqa: E731
            # a strategy's own settings name it; the defaults (None) of the others would only clutter the row
            out[g] = (show(within_mode),
                      show([k for k in varies if k not in within_mode and groups[g].get(k) != "None"]))
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


def row_diagnostics(records: list[dict]) -> list[tuple[str, diagnostics.Diagnostic]]:
    """A row's findings: (run id, diagnostic) for each of its runs, then ('over its runs', diagnostic) for the
    row's repeats together."""
    return ([(r["run_id"], d) for r in records for d in diagnostics.for_record(r)]
            + [("over its runs", d) for d in diagnostics.for_group(records)])


def _block_last(groups: dict[str, list[dict]], fields: dict[str, dict], variants: dict) -> dict[str, int | None]:
    """group -> the last epoch any run of its block (one table section) reached; None where none has one."""
    block = {g: (*(fields[g][k] for k in BLOCK_KEYS), variants[g][0]) for g in groups}
    reached: dict[tuple, int] = {}
    for g, recs in groups.items():
        for n in (e["epoch"] for r in recs for e in r["epochs"]):
            reached[block[g]] = max(reached.get(block[g], n), n)
    return {g: reached.get(block[g]) for g in groups}


def summarise(records: list[dict], epochs: list[int] | None = None) -> tuple[pd.DataFrame, list[int]]:
    """One row per configuration: median, quartiles, min, max and n of every metric over its samples, at the
    epochs asked for or, by default, at epoch 1 and the last epoch of each block (`last_epoch`)."""
    if not records:
        return pd.DataFrame(), epochs or [1]
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(group_key(rec), []).append(rec)
    fields = {g: identity_fields(recs[0]) for g, recs in groups.items()}
    variants = _variants(fields)
    last = _block_last(groups, fields, variants)
    epochs = epochs or sorted({1} | {n for n in last.values() if n})
    rows = []
    for g, recs in groups.items():
        cfg = complete(recs[0]["config"])
        ok = [r for r in recs if r.get("status") == "ok"]
        variant, note = variants[g]
        row = {k: cfg.get(k) for k in BLOCK_KEYS + ["mode", "strategy", "recipe", "epochs", "batch_size",
                                                     "train_size", "val_size"]}
        row.update(group=g, variant=variant, hardware=fields[g]["hardware"], kind=kind(cfg),
                   label=row_label(cfg) + (f" ({note})" if note else ""),
                   runs=len(recs), ok=len(ok), run_ids=" ".join(sorted(r["run_id"] for r in recs)),
                   status="ok" if len(ok) == len(recs) else ", ".join(sorted({r.get("status") for r in recs} - {"ok"})),
                   last_epoch=last[g], dataset_type=cfg["dataset_params"].get("type"),
                   devices=(recs[0].get("devices") or {}).get("count", 1),
                   diagnostics=" ".join(dict.fromkeys(d.name for _, d in row_diagnostics(recs))),
                   **model_size(next((r for r in recs if r.get("params")), recs[0])))
        for metric, values in _samples(ok, epochs).items():
            row.update({f"{metric}_{k}": v for k, v in describe(values).items()})
        rows.append(row)
    table = _scaling(pd.DataFrame(rows), fields)
    order = sorted(range(len(table)), key=lambda i: (*table.loc[i, BLOCK_KEYS[:2]], _natural(table.loc[i, "variant"]),
                                                     mode_order(rows[i])))
    return table.loc[order].reset_index(drop=True), epochs


def _scaling(table: pd.DataFrame, fields: dict[str, dict]) -> pd.DataFrame:
    """Steady images/s per device, and the efficiency of a data-parallel row: its images/s over N times those of
    the same configuration on one device (the row whose fields differ in `devices` alone); NaN without one."""
    def twin(g: str) -> str:
        return json.dumps({k: v for k, v in fields[g].items() if k != "devices"}, sort_keys=True)

    ips = table["steady_images_per_second_median"]
    one = {twin(g): v for g, v, n in zip(table["group"], ips, table["devices"]) if n == 1}
    table["images_per_second_per_device"] = ips / table["devices"]
    table["scaling_efficiency"] = [v / one.get(twin(g), float("nan")) if n > 1 else float("nan")
                                   for g, v, n in zip(table["group"], table["images_per_second_per_device"],
                                                      table["devices"])]
    return table


def check_epochs(records: list[dict], epochs: list[int]) -> None:
    """Epochs asked for must be epochs some run reached: another would print a column of '—' as a measurement."""
    reached = sorted({e["epoch"] for r in records for e in r["epochs"]})
    missing = [n for n in epochs if n not in reached]
    if missing:
        raise UserError(f"--epochs: no run reached epoch {', '.join(map(str, missing))}; the runs have "
                        + (f"epochs {_spans(reached)}" if reached else "no epochs recorded"))


def _spans(numbers: list[int]) -> str:
    """'1–5, 8' for 1, 2, 3, 4, 5, 8."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][-1] + 1:
            spans[-1].append(n)
        else:
            spans.append([n])
    return ", ".join(f"{s[0]}–{s[-1]}" if len(s) > 1 else f"{s[0]}" for s in spans)


def rate(v: float) -> str:
    return f"{v:.0f} img/s"


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


ALIGN = {"l": "---", "c": ":---:", "r": "---:"}


def markdown_table(table: pd.DataFrame, align: str = "") -> str:
    """Every Markdown table tlbench writes: the frame's columns as the header, `align` one letter a column
    (l, c, r; left by default). A '|' in a cell is escaped and a line break joined, so that text from a record
    (an error, a path, a setting) stays in its cell; an empty cell (None, NaN) is left blank."""
    align = align or "l" * len(table.columns)
    if len(align) != len(table.columns):
        raise ValueError(f"align '{align}' for {len(table.columns)} columns")
    lines = [_markdown_row(table.columns), "|" + "|".join(ALIGN[a] for a in align) + "|"]
    return "\n".join(lines + [_markdown_row(row) for row in table.itertuples(index=False, name=None)])


def _markdown_row(cells) -> str:
    text = ["" if pd.api.types.is_scalar(c) and pd.isna(c) else " ".join(str(c).splitlines()) for c in cells]
    return "| " + " | ".join(t.replace("|", "\\|") for t in text) + " |"


def _shown_epochs(block: pd.DataFrame, epochs: list[int] | None) -> list[int]:
    """A block's accuracy columns: by default epoch 1 and the last epoch its runs reached; else the epochs asked
    for that its runs have (the first one always, so that the block says it lacks it)."""
    if epochs is None:
        last = block["last_epoch"].max()
        return sorted({1} | ({int(last)} if pd.notna(last) else set()))
    return [n for n in epochs if block[f"val_acc_{n}_median"].notna().any() or n == epochs[0]]


def blocks(table: pd.DataFrame):
    """The table's sections, in its order: one backbone x dataset x input size x weights x backend x precision,
    split by what else differs (the variant)."""
    return (block for _, block in table.groupby(BLOCK_KEYS + ["variant"], dropna=False, sort=False))


def _row_cells(row, shown: list[int], marks: diagnostics.Footnotes, scaling: bool) -> list[str]:
    """A row's label and cells, each cell followed by the marks of the diagnostics that concern it."""
    metrics = [(f"val_acc_{n}", pct, diagnostics.accuracy_cell(n)) for n in shown]
    metrics += [("steady_epoch_seconds", secs, diagnostics.SECONDS), ("first_epoch_seconds", secs, diagnostics.FIRST)]
    cells = [cell(row, metric, fmt) + marks.mark(row["group"], name) for metric, fmt, name in metrics]
    return [row["label"]] + cells + ([scaling_cell(row)] if scaling else [])


SCALING = "Per device (scaling)"


def scaling_cell(row) -> str:
    """'40 img/s on 2 devices (83 %)': steady images/s per device and the efficiency against one device."""
    per = row["images_per_second_per_device"]
    if pd.isna(per):
        return "—"
    if row["devices"] == 1:
        return rate(per)
    efficiency = "—" if pd.isna(row["scaling_efficiency"]) else f"{100 * row['scaling_efficiency']:.0f} %"
    return f"{rate(per)} on {row['devices']} devices ({efficiency})"


def markdown(table: pd.DataFrame, epochs: list[int] | None = None,
             footnotes: diagnostics.Footnotes | None = None) -> str:
    """The table, a section per block; `epochs` as summarise was given them (None: its default); `footnotes`
    (diagnostics.markers of the same records) mark the cells and follow the table."""
    if table.empty:
        return "_no runs recorded_\n"
    marks = footnotes or diagnostics.Footnotes([], {})
    scaling = bool((table["devices"] > 1).any())  # a column only where some row ran data parallel
    parts = []
    for block in blocks(table):
        first = block.iloc[0]
        shown = _shown_epochs(block, epochs)
        rows = [_row_cells(row, shown, marks, scaling) for _, row in block.iterrows()]
        header = (["Training Mode"] + [f"Val Acc @ {n} epoch" for n in shown] + ["Time per epoch", "First epoch"]
                  + [SCALING] * scaling)
        parts.append(f"**{block_title(first)}**\n\n_{first['hardware']}_\n\n"
                     + markdown_table(pd.DataFrame(rows, columns=header), "l" + "c" * len(shown) + "r" * (2 + scaling)))
    note = NOTE + (f" {mode_label('frozen-cached')}: the head alone, on features computed once (the one-off "
                   "extraction is the records' `features.extract_seconds`)." if (table["mode"] == "frozen-cached").any()
                   else "")
    if scaling:
        note += (f" {SCALING}: steady images/s per device, and in brackets the efficiency, images/s on N devices over "
                 "N times the same configuration's on one device (— without a one-device row). The global batch is "
                 "batch_size, split over the devices.")
    if table["recipe"].notna().any():
        note += (" A row names its recipe unless it is the classic one, the Udacity lab's (bench/recipes.py). In a "
                 "two-stage recipe epoch 1 trains the head alone, so its first epoch is the head's, and the first "
                 "epoch of stage 2, which compiles again, is not counted as steady.")
    if marks.notes:
        parts.append("**Diagnostics**, numbered as the marks on the cells they concern:\n\n"
                     + "\n".join(f"{n}. {line}" for n, line in enumerate(marks.notes, 1)))
    return "\n\n".join(parts) + "\n\n" + note + "\n"


def left_out(lines: list[str]) -> str:
    """What reading the records left out or noticed, as the table, report and comparison state it."""
    return "**Left out or noted while reading the records:**\n\n" + "".join(f"- {line}\n" for line in lines)


def render(records: list[dict], epochs: list[int] | None = None, notes: list[str] = ()) -> tuple[str, pd.DataFrame]:
    """(the table as Markdown, with any notes under it; its numbers as a frame). Epochs asked for must be
    epochs some run reached (UserError, before anything is written)."""
    if epochs:
        check_epochs(records, epochs)
    table, _ = summarise(records, epochs)
    text = markdown(table, epochs, diagnostics.markers(records))
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
