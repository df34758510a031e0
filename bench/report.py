"""A publishable report of one results folder, from stored records only.

  RESULTS/report.md     Markdown, figures linked by relative path (RESULTS/figures/)
  RESULTS/report.html   one self-contained file: figures embedded as base64 PNG (markdown-it-py)

Holds the suite's name and description, the environment, the measured comparison table, what each
configuration costs (parameters, FLOPs, peak memory, throughput) and, where the suite names a reference
(`reference: udacity-lab`), that published table's numbers beside ours; where the runs sweep the training-set
size for several strategies, the study (study.py). Records left out as corrupt, and a suite file that could
not be read, are listed under the table. The table's cells carry the diagnostics' marks and footnotes, and a
section lists each configuration's diagnostics (diagnostics.py). Every table and figure says what to look at.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd
import yaml
from markdown_it import MarkdownIt

from . import ablation, diagnostics, plots, store, study, tables
from .errors import UserError, unknown
from .store import atomic_write

# figure -> (title, what to look at in it)
FIGURES = {
    "accuracy": ("Validation accuracy per epoch",
                 "Look at epoch 1, what each mode knows before it has trained much, and at whether the lines still "
                 "climb at the last epoch: if they do, more epochs would pay."),
    "epoch_time": ("Time per epoch",
                   "Look at how many times a frozen head's epoch the modes that train the backbone take (the price "
                   "of fine-tuning), and at the first epoch's extra cost of tracing and compilation."),
    "tradeoff": ("Validation accuracy against time spent, training + validation",
                 "Look for the line that rises furthest left: the most accuracy for the least time. A mode whose "
                 "whole line sits below and right of another's is beaten on both counts."),
}


# Published tables kept as data: what a suite's `reference:` names, and the report sets beside its numbers.
REFERENCES = Path(__file__).resolve().parent / "references"


def reference_names() -> list[str]:
    return sorted(p.stem for p in REFERENCES.glob("*.yaml"))


def load_reference(name: str) -> dict:
    if name not in reference_names():
        raise UserError(unknown("reference", name, reference_names()))
    return yaml.safe_load((REFERENCES / f"{name}.yaml").read_text())


def _environment(records: list[dict]) -> str:
    e = plots.environment(records)
    failed = sum(r.get("status") != "ok" for r in records)
    rows = [("Hardware", e["hardware"]), ("TensorFlow", e["tensorflow"]), ("Keras", e["keras"]),
            ("Keras backend", e["backend"]), ("Git commit", e["git"]), ("Date of the runs", e["date"]),
            ("Runs", f"{len(records)}" + (f" ({failed} did not finish)" if failed else ""))]
    return tables.markdown_table(pd.DataFrame(rows, columns=["Setting", "Value"])) + "\n"


def _costs(table: pd.DataFrame) -> str:
    """What each configuration took besides time: parameters, FLOPs, peak memory, steady throughput."""
    if table.empty:
        return "_no runs recorded_\n"
    parts = ["What each configuration costs besides time. Look at how much more memory and arithmetic training "
             "the backbone takes than a frozen head, and at the throughput each sustains."]
    for block in tables.blocks(table):
        rows = [[row["label"], _params(row), _gflops(row), _gib(row, "host_peak_rss_gib"),
                 _gib(row, "accelerator_peak_gib"), tables.cell(row, "steady_images_per_second", tables.rate)]
                for _, row in block.iterrows()]
        frame = pd.DataFrame(rows, columns=["Training Mode", "Parameters: trainable / all",
                                            "GFLOPs per image: forward / training step", "Peak host memory (RSS)",
                                            "Peak accelerator memory", "Steady throughput"])
        if block["accelerator_peak_gib_median"].isna().all():
            frame = frame.drop(columns="Peak accelerator memory")
        parts.append(f"**{tables.block_title(block.iloc[0])}**\n\n"
                     + tables.markdown_table(frame, "l" + "r" * (len(frame.columns) - 1)))
    note = ("Parameters: of the model as its last training stage left it. GFLOPs: two per multiply-add of the "
            "convolutions and dense layers, per image (bench/flops.py); a training step counts three forward "
            "passes for the layers that train, one for those that do not.")
    if (table["mode"] == "frozen-cached").any():
        note += f" {tables.mode_label('frozen-cached')}: the head's alone, on the cached features."
    if table["forward_gflops_per_image"].isna().any():
        note += " —: records made before tlbench counted FLOPs."
    if table["accelerator_peak_gib_median"].isna().all():
        note += " No accelerator memory column: no run recorded an accelerator peak."
    return "\n\n".join(parts) + ("\n\n" + note + " Memory: median over runs of each run's peak. Throughput: images "
                                  "per second of the training pass, every steady epoch a sample.\n")


def _params(row) -> str:
    trainable, frozen = row["trainable_params"], row["non_trainable_params"]
    if pd.isna(trainable):
        return "—"
    return f"{int(trainable):,} / " + ("—" if pd.isna(frozen) else f"{int(trainable + frozen):,}")


def _gflops(row) -> str:
    if pd.isna(row["forward_gflops_per_image"]):
        return "—"
    return f"{row['forward_gflops_per_image']:.3g} / {row['train_gflops_per_image']:.3g}"


def _gib(row, metric: str) -> str:
    return "—" if pd.isna(row[f"{metric}_median"]) else f"{row[f'{metric}_median']:.2f} GiB"


# --- a published table beside ours ---------------------------------------------------------------

def _points(ours: float, doc: float) -> str:
    return "—" if pd.isna(ours) else f"{100 * (ours - doc):+.1f} pts"


def _ratio(ours: float, doc: float) -> str:
    if pd.isna(ours):
        return "—"
    r = ours / doc
    return f"{r:.0f}×" if r >= 10 else f"{r:#.2g}×"  # two significant digits, trailing zero kept (0.10×)


def _no_shape(block: pd.DataFrame, runs: list[dict]) -> str | None:
    """Why the gaps between this block's modes would mean nothing, or None when they can be read; `runs`: the
    finished runs of the modes compared."""
    said = "No shape comparison for this block: "
    if block.iloc[0]["dataset_type"] == "synthetic":
        return (said + "its data is synthetic (random class patterns, for testing the harness): the gaps between its "
                "modes say nothing about transfer learning.")
    stuck = [d.evidence for r in runs for d in diagnostics.did_not_learn(r)]  # one per run at chance at its end
    if runs and len(stuck) == len(runs):
        ceiling = max(e["ceiling"] for e in stuck)
        return (said + f"every run of its modes ends at chance (validation accuracy at most {tables.pct(ceiling)}, "
                f"within the binomial noise of guessing one of {round(1 / stuck[0]['chance'])} classes): the runs "
                "did not learn, so the gaps between modes are noise.")
    return None


def _comparison(ref: dict, records: list[dict]) -> str:
    """Per block: each reference cell, ours, and the difference; then the gaps between modes, theirs and ours."""
    reached = max((e["epoch"] for r in records for e in r["epochs"]), default=1)
    table, _ = tables.summarise(records, list(range(1, reached + 1)))
    if table.empty:
        return "_no runs recorded_\n"
    device = plots.environment(records)["device"]
    by_id = {r["run_id"]: r for r in records}
    parts = []
    for block in tables.blocks(table):
        # the published protocol: each plain mode under the classic recipe
        ours = block[block["kind"] == block["mode"]].set_index("mode")
        last = int(block["last_epoch"].max()) if block["last_epoch"].notna().any() else 1
        at = {n: min(n, last) for n in ref["epochs"]}  # a block that stops early compares its last epoch, said so
        runs = [by_id[i] for ids in ours["run_ids"] for i in ids.split() if by_id[i].get("status") == "ok"]
        parts.append(f"**{tables.block_title(block.iloc[0])}**\n\n{_differs(ref, block.iloc[0], device)}\n\n"
                     f"{_beside(ref, ours, at)}\n\n" + (_no_shape(block, runs) or _shape(ref, ours, at)))
    return "\n\n".join(parts) + "\n"


def _differs(ref: dict, block: pd.Series, device: str) -> str:
    """Where the block's setup differs from the published protocol's, the hardware always."""
    who = ref["short"]
    diff = [f"{k.replace('_', ' ')} ({who}: {v}, ours: {block[k]})" for k, v in ref.get("setup", {}).items()
            if k in block and str(block[k]) != str(v)]
    diff.append(f"hardware ({who}: {ref['hardware']}, ours: {device})")
    text = f"Differs from the {who} in: " + "; ".join(diff) + "."
    if len(diff) == 1:  # the hardware alone
        text += (f" The protocol is the {who}'s own: accuracies compare directly (up to seed and library "
                 "version noise); times only as ratios between modes.")
    return text


def _beside(ref: dict, ours: pd.DataFrame, at: dict) -> str:
    """The published table with our cell and the difference beside each of its cells."""
    who = ref["short"]
    header = ["Training Mode"]
    for n in ref["epochs"]:
        name = f"Val Acc @ {n} epoch" + (f" (ours @ {at[n]})" if at[n] != n else "")
        header += [f"{name}: {who}", "ours", "difference"]
    header += [f"Time per epoch: {who}", "ours (steady state)", f"ratio ours / {who}"]
    rows = []
    for mode, doc in ref["rows"].items():
        row = ours.loc[mode] if mode in ours.index else None
        cells = [tables.mode_label(mode)]
        for n in ref["epochs"]:
            v = row[f"val_acc_{at[n]}_median"] if row is not None else float("nan")
            cells += [tables.pct(doc["val_acc"][n]), _or_status(row, v, tables.pct), _points(v, doc["val_acc"][n])]
        v = row["steady_epoch_seconds_median"] if row is not None else float("nan")
        rows.append(cells + [tables.secs(doc["epoch_seconds"]), _or_status(row, v, tables.secs),
                             _ratio(v, doc["epoch_seconds"])])
    return tables.markdown_table(pd.DataFrame(rows, columns=header), "l" + "c" * (len(header) - 1))


def _or_status(row, v: float, fmt) -> str:
    if row is None:
        return "not run"
    return row["status"] if pd.isna(v) else fmt(v)


def _shape(ref: dict, ours: pd.DataFrame, at: dict) -> str:
    """The shape of the table: each mode against the published first mode (frozen), theirs and ours."""
    who = ref["short"]
    base, *others = list(ref["rows"])
    header = ["Against " + tables.mode_label(base)]
    for n in ref["epochs"]:
        header += [f"Val Acc @ {n} epoch gap: {who}", "ours"]
    header += [f"Time per epoch ratio: {who}", "ours"]
    doc = ref["rows"]

    def measured(mode, col):
        return ours.loc[mode, col] if mode in ours.index else float("nan")

    rows = []
    for mode in others:
        cells = [tables.mode_label(mode)]
        for n in ref["epochs"]:
            col = f"val_acc_{at[n]}_median"
            cells += [_points(doc[mode]["val_acc"][n], doc[base]["val_acc"][n]),
                      _points(measured(mode, col), measured(base, col))]
        col = "steady_epoch_seconds_median"
        rows.append(cells + [_ratio(doc[mode]["epoch_seconds"], doc[base]["epoch_seconds"]),
                             _ratio(measured(mode, col), measured(base, col))])
    return (f"The shape, which is what compares: each mode against {tables.mode_label(base)}, in the {who} and in "
            "ours (accuracy gap in points, time per epoch as a ratio). Look at whether the same mode leads, and by "
            "a similar margin.\n\n" + tables.markdown_table(pd.DataFrame(rows, columns=header),
                                                            "l" + "c" * (len(header) - 1)))


def reference_section(name: str, records: list[dict]) -> str:
    ref = load_reference(name)
    return (f"## The {ref['short']}'s table beside ours\n\n"
            f"{ref['title']}: {ref['source']}\n\n"
            f"Its hardware: {ref['hardware']}. Its protocol: {ref['protocol']}\n\n"
            f"{ref.get('time_note', '')} Ours: median of the steady-state epochs (2 onwards), training plus "
            "validation; accuracy differences in percentage points, times as the ratio ours / theirs.\n\n"
            f"Where backbone, data or hardware differ from the {ref['short']}'s (listed with each block), absolute "
            "accuracies and times do not compare; what does is the shape: which mode is ahead and by how much, in "
            "accuracy points and in time ratio.\n\n" + _comparison(ref, records))


# --- assembly -----------------------------------------------------------------------------------

MEASURED = ("Each block is one backbone, dataset, input size, weights, backend and precision on one machine. Read "
            "across a row for how far a mode gets from epoch 1 to its last epoch; down a column for what training "
            "the backbone, or starting without pretrained weights, buys in accuracy and costs per epoch.")
ERROR_SHOWN = 300  # characters of a failed run's error in the report; the record holds it whole


DIAGNOSED = ("What the numbers above must not be read as, per configuration: each diagnostic's severity (error: the "
             "number misleads; warning: read it with care; note: context), what it means, and the numbers behind it. "
             "`tlbench diagnose RESULTS` prints the same.")


def _diagnostics(table: pd.DataFrame, records: list[dict]) -> str:
    """Each configuration's diagnostics, block by block as the table; 'none' where it has none."""
    by_id = {r["run_id"]: r for r in records}
    found = {row["group"]: tables.row_diagnostics([by_id[i] for i in row["run_ids"].split()])
             for _, row in table.iterrows()}
    if not any(found.values()):
        return "None: no run, and no configuration over its repeats, has a diagnostic.\n"
    parts = [DIAGNOSED]
    for block in tables.blocks(table):
        items = []
        for _, row in block.iterrows():
            items.append(f"- {row['label']}:" + (" none" if not found[row["group"]] else "".join(
                f"\n  - {d.severity}, {d.name} ({who}): {d.explanation}. Evidence: {d.evidence.get('text')}"
                for who, d in found[row["group"]])))
        parts.append(f"**{tables.block_title(block.iloc[0])}**\n\n" + "\n".join(items))
    return "\n\n".join(parts) + "\n"


def _unfinished(records: list[dict]) -> str:
    """The runs that did not finish, with what their records say went wrong."""
    rows = [[r["run_id"], r["status"], _clip(r.get("error") or "")] for r in records if r.get("status") != "ok"]
    if not rows:
        return ""
    return ("Runs that did not finish, and why (their records hold the whole error):\n\n"
            + tables.markdown_table(pd.DataFrame(rows, columns=["Run", "Status", "Error"])) + "\n")


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_SHOWN else text[:ERROR_SHOWN] + "…"


def _figures(figures: list[Path], out: Path) -> list[str]:
    parts = []
    for path in (p for p in figures if p.suffix == ".png"):
        title, look = FIGURES.get(path.stem, (path.stem, ""))
        parts += [f"![{title}]({path.relative_to(out).as_posix()})", "", f"_{title}._ {look}".rstrip(), ""]
    return parts


def markdown(found: store.Results, figures: list[Path], out: Path, study_files: list[Path] = (),
             recipe_files: list[Path] = ()) -> str:
    """The report of a folder's readable records; what reading them left out is stated under the table.
    The suite file beside them (found.suite; {} when it is missing or unreadable) gives title and reference."""
    suite, records = found.suite, found.records
    table, _ = tables.summarise(records)
    parts = [f"# tlbench report: {suite.get('name') or found.folder.name}", ""]
    if suite.get("description"):
        parts += [str(suite["description"]), ""]
    parts += ["## Environment", "", _environment(records), "## Measured", "", MEASURED, "",
              tables.markdown(table, footnotes=diagnostics.markers(records))]
    parts += [part for part in (_unfinished(records), found.lines() and tables.left_out(found.lines())) if part]
    parts += ["## Diagnostics", "", _diagnostics(table, records)]
    parts += ["## Cost per run", "", _costs(table)]
    if suite.get("reference"):
        parts += [reference_section(suite["reference"], records)]
    if study_files:  # a training-set size study (study.py); its figures sit in OUT/figures beside the others
        parts += [study.section(records)]
    if recipe_files:  # recipes compared (ablation.py); its figure sits in OUT/figures too
        parts += [ablation.section(records)]
    parts += ["## Figures", "", *_figures(figures, out)]
    return "\n".join(parts)


def _embed(tokens, base: Path) -> None:
    """Each image's file becomes a data: URL, so that the page stands alone."""
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                data = base64.b64encode((base / child.attrGet("src")).read_bytes()).decode()
                child.attrSet("src", f"data:image/png;base64,{data}")


def to_html(md: str, base: Path) -> str:
    """The report as one HTML page: CommonMark with tables (markdown-it-py), raw HTML in the text escaped (it may
    come from a suite's description or a record's error), images embedded."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(md)
    _embed(tokens, base)
    title = next((tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h1"),
                 "tlbench report")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + parser.renderer.render(tokens, parser.options, {}) + "</body>\n</html>\n")


STYLE = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}"
         "table{border-collapse:collapse;margin:0.5rem 0 1rem}th,td{border:1px solid #bbb;padding:0.25rem 0.6rem}"
         "th{background:#f0f0f0}img{max-width:100%}")


def write(folder: Path, out: Path | None = None) -> list[Path]:
    """Write report.md, report.html and the figures they show into OUT (default: the results folder); what
    reading the records left out is said on stderr and in the report."""
    found = store.scan(folder)
    found.warn()
    return write_results(found, out)


def write_results(found: store.Results, out: Path | None = None) -> list[Path]:
    out = Path(out) if out else found.folder
    records = found.records
    figures = plots.write_sets(out / "figures", [(None, records)])  # the report itself lists what was left out
    study_files = study.write(out, records)
    recipe_files = ablation.write(out, records)
    md = markdown(found, figures, out, study_files, recipe_files)
    atomic_write(out / "report.md", md)
    atomic_write(out / "report.html", to_html(md, out))
    return figures + study_files + recipe_files + [out / "report.md", out / "report.html"]
