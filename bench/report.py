"""A publishable report of one results folder, from stored records only.

  RESULTS/report.md     Markdown, figures linked by relative path (RESULTS/figures/)
  RESULTS/report.html   one self-contained file: figures embedded as base64 PNG

Holds the suite's name and description, the environment, the measured comparison table and,
where the suite names a reference (`reference: udacity-lab`), the documents' numbers beside ours;
where the runs sweep the training-set size for several strategies, the study (study.py). Records left out
as corrupt, and a suite file that could not be read, are listed under the table.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd
import yaml

from . import ablation, plots, store, study, tables
from .errors import UserError, unknown
from .store import atomic_write
from .suite import REFERENCES, reference_names

FIGURE_TITLES = {"accuracy": "Validation accuracy per epoch", "epoch_time": "Seconds per epoch",
                 "tradeoff": "Validation accuracy against training time"}


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
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def _costs(table: pd.DataFrame) -> str:
    """What each configuration took besides time: parameters that train, peak memory, steady throughput."""
    if table.empty:
        return "_no runs recorded_\n"
    lines = ["| Configuration | Trainable parameters | Peak host memory (RSS) | Peak accelerator memory "
             "| Steady throughput |", "|---|---:|---:|---:|---:|"]
    for _, row in table.iterrows():
        gib = lambda m: "—" if pd.isna(row[f"{m}_median"]) else f"{row[f'{m}_median']:.2f} GiB"  # noqa: E731
        params = "—" if pd.isna(row["trainable_params"]) else f"{int(row['trainable_params']):,}"
        lines.append(f"| {tables.block_title(row)} · {row['label']} | {params} | {gib('host_peak_rss_gib')} | "
                     f"{gib('accelerator_peak_gib')} | {tables.cell(row, 'steady_images_per_second', _rate)} |")
    return "\n".join(lines) + ("\n\nMemory: median over runs of each run's peak. Throughput: images per second "
                               "of the training pass, every steady epoch a sample.\n")


def _rate(v: float) -> str:
    return f"{v:.0f} img/s"


# --- the documents' table beside ours ----------------------------------------------------------

def _points(ours: float, doc: float) -> str:
    return "—" if pd.isna(ours) else f"{100 * (ours - doc):+.1f} pts"


def _ratio(ours: float, doc: float) -> str:
    if pd.isna(ours):
        return "—"
    r = ours / doc
    return f"{r:.0f}×" if r >= 10 else f"{r:#.2g}×"  # two significant digits, trailing zero kept (0.10×)


def _differences(ref: dict, block: pd.Series) -> list[str]:
    setup = ref.get("setup", {})
    diff = [f"{k.replace('_', ' ')} (documents: {v}, ours: {block[k]})" for k, v in setup.items()
            if k in block and str(block[k]) != str(v)]
    return diff + [f"hardware (documents: {ref['hardware']}, ours: {block['device']})"]


def _comparison(ref: dict, records: list[dict]) -> str:
    """Per block: each reference cell, ours, and the difference; then the gaps between modes, doc vs ours."""
    ep = store.epochs_frame(records)
    last = tables.default_epochs(ep)[-1]
    # Where our runs stop before the documents' epoch, compare with our last epoch and say so.
    at = {n: min(n, last) for n in ref["epochs"]}
    table, _ = tables.summarise(records, sorted(set(at.values())))
    if table.empty:
        return "_no runs recorded_\n"
    device = plots.environment(records)["device"]
    parts = []
    for _, block in table.groupby(tables.BLOCK_KEYS + ["variant"], dropna=False, sort=False):
        # the documents' protocol: each plain mode under the classic recipe
        ours = block[block["kind"] == block["mode"]].set_index("mode")
        first = block.iloc[0]
        diff = _differences(ref, pd.concat([first, pd.Series({"device": device})]))
        header = ["Training Mode"]
        for n in ref["epochs"]:
            name = f"Val Acc @ {n} epoch" + (f" (ours @ {at[n]})" if at[n] != n else "")
            header += [f"{name}: documents", "ours", "difference"]
        header += ["Time per epoch: documents", "ours (steady state)", "ratio ours / documents"]
        differs = "Differs from the documents in: " + "; ".join(diff) + "."
        if len(diff) == 1:  # the hardware alone
            differs += (" The protocol is the documents' own: accuracies compare directly (up to seed and library "
                        "version noise); times only as ratios between modes.")
        lines = [f"**{tables.block_title(first)}**", "", differs,
                 "", "| " + " | ".join(header) + " |",
                 "|---|" + ":---:|" * (len(header) - 1)]
        for mode, doc in ref["rows"].items():
            row = ours.loc[mode] if mode in ours.index else None
            cells = [tables.mode_label(mode)]
            for n in ref["epochs"]:
                v = row[f"val_acc_{at[n]}_median"] if row is not None else float("nan")
                cells += [tables.pct(doc["val_acc"][n]), _or_status(row, v, tables.pct), _points(v, doc["val_acc"][n])]
            v = row["steady_epoch_seconds_median"] if row is not None else float("nan")
            cells += [tables.secs(doc["epoch_seconds"]), _or_status(row, v, tables.secs),
                      _ratio(v, doc["epoch_seconds"])]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n\nThe shape: each mode against "
                     f"{tables.mode_label(next(iter(ref['rows'])))}, in the documents and in ours (accuracy gap in "
                     "points, time per epoch as a ratio).\n\n" + _gaps(ref, ours, at))
    return "\n\n".join(parts) + "\n"


def _or_status(row, v: float, fmt) -> str:
    if row is None:
        return "not run"
    return row["status"] if pd.isna(v) else fmt(v)


def _gaps(ref: dict, ours: pd.DataFrame, at: dict) -> str:
    """The shape of the table: each mode against the documents' first mode (frozen), theirs and ours."""
    base, *others = list(ref["rows"])
    header = ["Against " + tables.mode_label(base)]
    for n in ref["epochs"]:
        header += [f"Val Acc @ {n} epoch gap: documents", "ours"]
    header += ["Time per epoch ratio: documents", "ours"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + ":---:|" * (len(header) - 1)]
    doc = ref["rows"]

    def measured(mode, col):
        return ours.loc[mode, col] if mode in ours.index else float("nan")

    for mode in others:
        cells = [tables.mode_label(mode)]
        for n in ref["epochs"]:
            col = f"val_acc_{at[n]}_median"
            cells += [_points(doc[mode]["val_acc"][n], doc[base]["val_acc"][n]),
                      _points(measured(mode, col), measured(base, col))]
        col = "steady_epoch_seconds_median"
        cells += [_ratio(doc[mode]["epoch_seconds"], doc[base]["epoch_seconds"]),
                  _ratio(measured(mode, col), measured(base, col))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _reference_section(name: str, records: list[dict]) -> str:
    ref = load_reference(name)
    return (f"## The documents' table beside ours: {ref['title']}\n\n"
            f"Source: {ref['source']}\n\nDocuments' hardware: {ref['hardware']}. Protocol: {ref['protocol']}\n\n"
            f"{ref.get('time_note', '')} Ours: median of the steady-state epochs (2 onwards), training plus "
            "validation; accuracy differences in percentage points, times as the ratio ours / documents.\n\n"
            "**Read this comparison for its shape only.** Where backbone, data or hardware differ from the "
            "documents (listed with each table), absolute accuracies and times are not comparable; what is "
            "comparable is which mode is ahead and by how much, in accuracy points and in time ratio.\n\n"
            + _comparison(ref, records))


# --- assembly -----------------------------------------------------------------------------------

def markdown(found: store.Results, figures: list[Path], out: Path, study_files: list[Path] = (),
             recipe_files: list[Path] = ()) -> str:
    """The report of a folder's readable records; what reading them left out is stated under the table.
    The suite file beside them (found.suite; {} when it is missing or unreadable) gives title and reference."""
    suite, records = found.suite, found.records
    table, epochs = tables.summarise(records)
    parts = [f"# tlbench report: {suite.get('name') or found.folder.name}", ""]
    if suite.get("description"):
        parts += [str(suite["description"]), ""]
    parts += ["## Environment", "", _environment(records), "## Measured", "", tables.markdown(table, epochs)]
    if found.lines():
        parts += [tables.left_out(found.lines())]
    parts += ["## Cost per run", "", _costs(table)]
    if suite.get("reference"):
        parts += [_reference_section(suite["reference"], records)]
    if study_files:  # a training-set size study (study.py); its figures sit in OUT/figures beside the others
        parts += [study.section(records)]
    if recipe_files:  # recipes compared (ablation.py); its figure sits in OUT/figures too
        parts += [ablation.section(records)]
    parts += ["## Figures", ""]
    for path in figures:
        if path.suffix == ".png":
            parts += [f"![{FIGURE_TITLES.get(path.stem, path.stem)}]({path.relative_to(out).as_posix()})", ""]
    return "\n".join(parts)


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _table(lines: list[str]) -> str:
    def cells(line):
        return [c.strip() for c in line.strip().strip("|").split("|")]

    align = ["center" if a.startswith(":") and a.endswith(":") else "right" if a.endswith(":") else "left"
             for a in cells(lines[1])]
    head = "".join(f'<th style="text-align:{a}">{_inline(c)}</th>' for c, a in zip(cells(lines[0]), align))
    body = "".join("<tr>" + "".join(f'<td style="text-align:{a}">{_inline(c)}</td>'
                                    for c, a in zip(cells(line), align)) + "</tr>\n" for line in lines[2:])
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def to_html(md: str, base: Path) -> str:
    """The few Markdown constructs the report uses: headings, paragraphs, tables, images (embedded)."""
    out = []
    for chunk in re.split(r"\n\s*\n", md.strip()):
        lines = chunk.splitlines()
        if m := re.fullmatch(r"(#{1,6}) (.*)", chunk):
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.fullmatch(r"!\[(.*)\]\((.*)\)", chunk):
            data = base64.b64encode((base / m.group(2)).read_bytes()).decode()
            out.append(f'<figure><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_inline(m.group(1))}</figcaption></figure>")
        elif len(lines) > 1 and all(line.startswith("|") for line in lines):
            out.append(_table(lines))
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    title = re.search(r"^# (.*)$", md, re.M)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title.group(1) if title else 'tlbench report')}</title>\n<style>{STYLE}</style>\n"
            "</head>\n<body>\n" + "\n".join(out) + "\n</body>\n</html>\n")


STYLE = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}"
         "table{border-collapse:collapse;margin:0.5rem 0 1rem}th,td{border:1px solid #bbb;padding:0.25rem 0.6rem}"
         "th{background:#f0f0f0}figure{margin:1rem 0}img{max-width:100%}figcaption{font-size:0.9rem;color:#555}")


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
