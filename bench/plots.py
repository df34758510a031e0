"""Figures from stored records (matplotlib, headless), never from a live run.

  accuracy    validation accuracy per epoch: median over runs, interquartile band
  epoch_time  time per epoch (training + validation): first epoch (tracing, compilation) and steady state
              apart; bars are medians, error bars the interquartile range, each labelled with its n
  tradeoff    validation accuracy against cumulative epoch time (training + validation)

One panel per block of the comparison table (tables.summarise: configurations never pool), one colour
and marker per mode, one line style or hatch per result set. The panels of a figure share one y scale;
each panel with a spread says what it is of and over how many samples; the subtitle gives what the times
depend on (images, batch size, hardware). A line or bar whose numbers a diagnostic concerns carries the
comparison table's footnote marker (bench.diagnostics), explained in one line in the figure's footnote.
Figures are built as Figure objects first so that tests read what they show, and saved byte for byte the
same from the same records, so re-plots do not churn git.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MultipleLocator, PercentFormatter  # noqa: E402

from . import diagnostics  # noqa: E402
from .config import match_key  # noqa: E402
from .errors import UserError  # noqa: E402
from .store import StorageError, epochs_frame  # noqa: E402
from .environment import hardware_label  # noqa: E402
from .tables import block_title, default_epochs, group_key, secs, summarise  # noqa: E402

# Okabe-Ito, ordered so the three documented modes get the pairs that stay apart for the common
# colour-vision deficiencies; markers and dashes carry the same information in greyscale print.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
HATCHES = ["", "//", "..", "xx"]
NAMES = ("accuracy", "epoch_time", "tradeoff")
MAX_NAMED = 3  # failed runs named in a footnote; more would crowd out the figure
# Diagnostics the figures state anyway, so they get no marker there: the first-epoch panel says it includes
# tracing and compilation, and every legend entry and bar gives its n.
SAID = ("compile-dominated", "too-few-samples")
LINE, TRADEOFF = "accuracy line", "tradeoff line"  # what a figure draws from several of the table's cells

ResultSets = list[tuple[str | None, list[dict]]]


def match(sets: ResultSets) -> tuple[ResultSets, list[str]]:
    """Keep the configurations every result set holds: lines side by side must be like for like."""
    if len(sets) < 2:
        return sets, []
    common = set.intersection(*({match_key(r) for r in recs} for _, recs in sets))
    if not common:
        raise UserError(f"the result sets {', '.join(str(label) for label, _ in sets)} share no run configuration "
                        "(compared without suite name and repeat number): nothing to set side by side")
    kept, notes = [], []
    for label, recs in sets:
        same = [r for r in recs if match_key(r) in common]
        if len(same) < len(recs):
            notes.append(f"{label}: {len(recs) - len(same)} run(s) with no counterpart in the other sets left out")
        kept.append((label, same))
    return kept, notes


def environment(records: list[dict]) -> dict[str, str]:
    """What produced the records, each item the distinct values found (a folder may mix machines)."""
    def distinct(get) -> str:
        return ", ".join(sorted({str(v) for v in map(get, records) if v not in (None, "")})) or "unknown"

    def env(r):
        return r.get("environment") or {}

    def git(r):
        g = env(r).get("git") or {}
        if not g.get("commit"):
            return None
        return g["commit"][:12] + {True: " (dirty)", False: " (clean)"}.get(g.get("dirty"), " (dirty: unknown)")

    dates = sorted(r["started"][:10] for r in records if r.get("started"))
    return {"device": distinct(lambda r: env(r).get("device")),
            "hardware": distinct(lambda r: hardware_label(env(r))),
            "tensorflow": distinct(lambda r: (env(r).get("versions") or {}).get("tensorflow")),
            "keras": distinct(lambda r: (env(r).get("versions") or {}).get("keras")),
            "backend": distinct(lambda r: env(r).get("keras_backend")),
            "git": distinct(git),
            "date": (dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}") if dates else "unknown"}


def environment_line(records: list[dict]) -> str:
    e = environment(records)
    return (f"{e['hardware']} · TensorFlow {e['tensorflow']} · Keras {e['keras']} · backend {e['backend']}"
            f" · runs of {e['date']}")


def _counts(values) -> str:
    """'250, 1,000' or 'all': the distinct counts in increasing order."""
    return ", ".join("all" if v is None else f"{v:,}" for v in sorted(set(values), key=lambda v: (v is None, v or 0)))


def setup_line(sets: ResultSets) -> str:
    """'1,000 training / 500 validation images · batch 32 · CPU: AMD EPYC, 2 cores': what the times depend
    on, with each result set's hardware when there are several (' · ' parts: where a long line may break)."""
    records = [r for _, recs in sets for r in recs]
    train = [diagnostics.images(r, "train") for r in records]
    val = [diagnostics.images(r, "val") for r in records]
    hardware = [(f"{label}: " if len(sets) > 1 else "") + environment(recs)["hardware"].replace(" · ", ", ")
                for label, recs in sets]
    return " · ".join([f"{_counts(train)} training / {_counts(val)} validation images",
                       f"batch {_counts(r['config']['batch_size'] for r in records)}", *hardware])


def spread(counts: list[int], unit: str) -> str:
    """What a panel draws around its medians, as drawn: 'median and interquartile range of n = 3 runs';
    one sample has no range, so none is drawn for it."""
    ns = sorted({int(n) for n in counts})
    if not ns:
        return "nothing finished"
    if ns[-1] == 1:
        return f"one {unit} each: no spread drawn"
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"median and interquartile range of n = {n} {unit}s" + (" (none drawn for n = 1)" if ns[0] == 1 else "")


class _Data:
    """Everything the three figures draw, computed once from the (matched) result sets."""

    def __init__(self, sets: ResultSets, left_out: list[str] = ()):
        self.sets, notes = match(sets)
        self.multi = len(self.sets) > 1
        last = max(default_epochs(epochs_frame(recs))[-1] for _, recs in self.sets)
        # Every epoch as a table column, so the lines are the comparison table's own numbers.
        self.tables = [summarise(recs, list(range(1, last + 1)))[0] for _, recs in self.sets]
        self.epochs = list(range(1, last + 1))
        self.cumulative = [self._cumulative(recs) for _, recs in self.sets]
        rows = [row for t in self.tables for _, row in t.iterrows()]
        self.panels = list(dict.fromkeys(block_title(r) for r in rows))
        self.modes = list(dict.fromkeys(r["kind"] for r in rows))
        self.footnote = self._footnote(notes + list(left_out))
        self.subtitle = setup_line(self.sets)
        # Numbered over each set's own records, as its comparison table numbers them (matching may leave some out).
        self.records = [recs for _, recs in sets]
        self.marks = [on_figures(diagnostics.markers(recs), self.epochs) for recs in self.records]

    @staticmethod
    def _cumulative(records: list[dict]) -> dict:
        """configuration (tables.group_key) -> median cumulative wall seconds at each epoch, over the runs
        that finished."""
        ep = epochs_frame(records)
        ep = ep[ep.status == "ok"].sort_values(["run_id", "epoch"]).copy()
        if ep.empty:
            return {}
        ep["cumulative"] = ep.groupby("run_id").epoch_seconds.cumsum()
        ep["group"] = ep.run_id.map({r["run_id"]: group_key(r) for r in records})
        med = ep.groupby(["group", "epoch"]).cumulative.median()
        return {g: s.droplevel(0) for g, s in med.groupby(level=0)}

    def _footnote(self, notes: list[str]) -> str:
        lines = []
        for label, recs in self.sets:
            lines.append((f"{label}: " if self.multi else "Environment: ") + environment_line(recs))
            failed = [r for r in recs if r.get("status") != "ok"]
            if failed:
                named = "; ".join(f"{r['run_id']} ({r.get('status')}: {r.get('error')})" for r in failed[:MAX_NAMED])
                more = f"; and {len(failed) - MAX_NAMED} more (runs.csv lists them)" if len(failed) > MAX_NAMED else ""
                lines.append((f"{label}: " if self.multi else "") + f"Left out {len(failed)} run(s) that did not "
                             f"finish: {named}{more}")
        return "\n".join(lines + notes)

    def style(self, set_index: int, mode: str) -> dict:
        i = self.modes.index(mode)
        return {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[i % len(MARKERS)],
                "linestyle": LINESTYLES[set_index % len(LINESTYLES)]}

    def name(self, set_index: int, row) -> str:
        """'Frozen weights', and ' · LABEL' with several result sets."""
        return row["label"] + (f" · {self.sets[set_index][0]}" if self.multi else "")

    def label(self, set_index: int, row, drawn: str = "") -> str:
        """'Frozen weights (n=3)⁽²⁾': the line's configuration, the runs behind it and the markers of the
        diagnostics that concern what it draws (`drawn`: LINE, TRADEOFF)."""
        notes = [f"n={row['ok']}"]
        if row["ok"] < row["runs"]:
            notes.append(f"{row['runs'] - row['ok']} of {row['runs']} runs {row['status']}")
        mark = self.marks[set_index].mark(row["group"], drawn) if drawn else ""
        return f"{self.name(set_index, row)} ({'; '.join(notes)}){mark}"

    def diagnosed(self, drawn: tuple[str, ...]) -> str:
        """The footnote lines of the marks a figure shows on what it draws (`drawn`: cells of on_figures), one
        line per diagnostic, numbered as the table lists them; '' when there is none."""
        shown = {(s, n): row for s, t in enumerate(self.tables) for _, row in t.iterrows() if row["ok"]
                 for cell in drawn for n in self.marks[s].cells.get((row["group"], cell), [])}
        lines = [self.explain(s, n, row) for (s, n), row in sorted(shown.items(), key=lambda item: item[0])]
        head = "Diagnostics marked above, numbered as in the comparison table (evidence: tlbench diagnose):"
        return "".join(f"\n{line}" for line in [head, *lines]) if lines else ""

    def explain(self, s: int, number: int, row) -> str:
        """'2. Unfrozen weights: noisy-timing (warning) in 1 of 2 runs: steady epochs vary ...'."""
        name = self.marks[s].notes[number - 1].split(" (", 1)[0]  # a note starts with its diagnostic's name
        runs = [r for r in self.records[s] if group_key(r) == row["group"]]
        per_run = [(r["run_id"], d) for r in runs for d in diagnostics.for_record(r) if d.name == name]
        first = per_run[0][1] if per_run else next(d for d in diagnostics.for_group(runs) if d.name == name)
        hit = len({run for run, _ in per_run})
        said = f" in {hit} of {len(runs)} runs" if hit and len(runs) > 1 else ""
        return (f"{number}. {self.name(s, row)}: {name} ({first.severity}){said}: "
                f"{'in the first, ' if hit > 1 else ''}{first.explanation}")

    def rows(self, panel: str):
        """(set index, summary row) for each line of a panel, in mode order then set order."""
        found = [(s, row) for s, t in enumerate(self.tables) for _, row in t.iterrows() if block_title(row) == panel]
        return sorted(found, key=lambda sr: (self.modes.index(sr[1]["kind"]), sr[0]))


def on_figures(footnotes: diagnostics.Footnotes, epochs: list[int]) -> diagnostics.Footnotes:
    """The table's footnotes, with its numbers, on what the figures draw: a bar is one of the table's time
    cells, an accuracy line (LINE) its epochs' cells, a tradeoff line (TRADEOFF) those and both times; less
    the diagnostics a figure states anyway (SAID)."""
    accuracy = [diagnostics.accuracy_cell(n) for n in epochs]
    drawn = {LINE: accuracy, TRADEOFF: [*accuracy, diagnostics.FIRST, diagnostics.SECONDS],
             diagnostics.FIRST: [diagnostics.FIRST], diagnostics.SECONDS: [diagnostics.SECONDS]}
    cells = {}
    for group in dict.fromkeys(g for g, _ in footnotes.cells):
        for what, among in drawn.items():
            numbers = sorted({n for cell in among for n in footnotes.cells.get((group, cell), [])
                              if not footnotes.notes[n - 1].startswith(SAID)})
            if numbers:
                cells[(group, what)] = numbers
    return diagnostics.Footnotes(footnotes.notes, cells)


def panel_title(panel: str, width: int = 48) -> str:
    """Block titles run long: break them between their ' · ' parts, never inside a name."""
    lines = [""]
    for part in panel.split(" · "):
        joined = f"{lines[-1]} · {part}" if lines[-1] else part
        if len(joined) > width and lines[-1]:
            lines.append(part)
        else:
            lines[-1] = joined
    return "\n".join(lines)


def figure(n_panels: int, title: str, footnote: str, ncols: int = 3, panel_size=(5.2, 4.6), subtitle: str = "",
           sharey: bool = False) -> tuple:
    """A figure of `n_panels` axes with a bold title, an optional subtitle under it and a footnote; `sharey`
    gives every panel one y scale (tick labels on the outer panels only)."""
    ncols = min(ncols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    width = panel_size[0] * ncols
    # Title, subtitle and footnote are wrapped here rather than by matplotlib and placed in strips kept for
    # them, so that the strips have the right height (constrained layout does not make room for free text).
    # Characters per inch: about 17 at 7 pt, 15 at 9 pt, 9.5 at 13 pt bold.
    footnote = "\n".join(textwrap.fill(line, int(width * 17), subsequent_indent="  ", break_on_hyphens=False)
                         for line in footnote.splitlines())
    subtitle = panel_title(subtitle, int(width * 15))
    title = textwrap.fill(title, int(width * 9.5), break_on_hyphens=False)
    title_in = 0.1 + 0.25 * (title.count("\n") + 1)
    foot_in = 0.13 * (footnote.count("\n") + 1) + 0.15
    head_in = title_in + 0.07 + (0.16 * (subtitle.count("\n") + 1) + 0.06 if subtitle else 0)
    fig = Figure(figsize=(width, panel_size[1] * nrows + foot_in + head_in), layout="constrained")
    height = fig.get_figheight()
    fig.get_layout_engine().set(rect=(0, foot_in / height, 1, 1 - (foot_in + head_in) / height))
    fig.suptitle(title, y=1 - 0.1 / height, va="top", fontsize=13, fontweight="bold", in_layout=False)
    if subtitle:
        fig.text(0.5, 1 - title_in / height, subtitle, ha="center", va="top", fontsize=9, gid="subtitle")
    fig.text(0.01, 0.01, footnote, ha="left", va="bottom", fontsize=7, color="#333333", gid="footnote")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def percent_axis(ax) -> None:
    """Ticks on whole percents (steps of 1, 2, 5, 10 or 20 points), so a 0-decimal label is exact."""
    lo, hi = ax.get_ylim()
    span = (hi - lo) * 100
    step = next((s for s in (1, 2, 5, 10, 20) if span / s <= 8), 20)
    ax.yaxis.set_major_locator(MultipleLocator(step / 100))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))


def accuracy_figure(d: _Data) -> Figure:
    fig, axes = figure(len(d.panels), "Validation accuracy per epoch",
                       d.footnote + "\nLines: median over the n runs in the legend; band: interquartile range "
                       "over those runs (none for a single run)." + d.diagnosed((LINE,)), subtitle=d.subtitle,
                       sharey=True)
    for ax, panel in zip(axes, d.panels):
        drawn = []
        for s, row in d.rows(panel):
            points = [(n, row[f"val_acc_{n}_median"], row[f"val_acc_{n}_q1"], row[f"val_acc_{n}_q3"])
                      for n in d.epochs if row[f"val_acc_{n}_median"] == row[f"val_acc_{n}_median"]]
            if not points:  # every repeat failed: named in the footnote
                continue
            x, med, lo, hi = zip(*points)
            st = d.style(s, row["kind"])
            ax.plot(x, med, label=d.label(s, row, LINE), linewidth=2, markersize=6, **st)
            if row["ok"] > 1:
                ax.fill_between(x, lo, hi, color=st["color"], alpha=0.18, linewidth=0)
            drawn.append(row["ok"])
        ax.set(title=f"{panel_title(panel)}\n{spread(drawn, 'run')}", xlabel="Epoch")
        ax.title.set_fontsize(9)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        legend_below(ax)
    shared_y(axes, "Validation accuracy (%)")
    percent_axis(axes[0])  # the scale every panel shares, once all have drawn
    return fig


def shared_y(axes, label: str) -> None:
    """The y label on the panels that show the shared scale's tick labels: the first column."""
    for ax in axes:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(label)


def legend_below(ax) -> None:
    if not ax.get_legend_handles_labels()[0]:
        ax.text(0.5, 0.5, "no run of this block finished\n(see the footnote)", transform=ax.transAxes,
                ha="center", va="center", color="#555555")
        return
    # Below the axes: lines can run anywhere inside, and a legend on top of them hides data.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=1, frameon=False)


TIME_PER_EPOCH = "Time per epoch (s), training + validation"
EPOCH_PANELS = (("first_epoch_seconds", "First epoch (includes tracing and compilation)", "run", diagnostics.FIRST),
                ("steady_epoch_seconds", "Steady-state epochs (2 onwards)", "steady epoch", diagnostics.SECONDS))


def epoch_time_figure(d: _Data) -> Figure:
    fig, axes = figure(2 * len(d.panels), "Time per epoch, training + validation: first epoch and steady state",
                       d.footnote + "\nBars: median of n samples (first epoch: one per run; steady state: every "
                       "epoch from 2 on of every run); error bars: interquartile range. Each epoch's wall time, "
                       "training plus validation, as Keras prints it."
                       + d.diagnosed(tuple(cell for *_, cell in EPOCH_PANELS)), ncols=2, subtitle=d.subtitle,
                       sharey=True)
    for i, panel in enumerate(d.panels):
        for ax, (metric, what, unit, cell) in zip(axes[2 * i:2 * i + 2], EPOCH_PANELS):
            drawn = [n for s, row in d.rows(panel) if (n := epoch_bar(ax, d, s, row, metric, cell))]
            shown = {d.modes.index(row["kind"]): tick_label(row["label"]) for _, row in d.rows(panel)}
            ax.set_xticks(list(shown), list(shown.values()), fontsize=8)
            ax.set_title(f"{panel_title(panel)}\n{what}\n{spread(drawn, unit)}")
            ax.title.set_fontsize(9)
            ax.margins(y=0.15)
            ax.grid(axis="y", alpha=0.3)
            if d.multi:  # colour already names the mode under each bar; the hatch names the result set
                ax.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=HATCHES[s % len(HATCHES)],
                                         label=str(label)) for s, (label, _) in enumerate(d.sets)], fontsize=8)
    shared_y(axes, TIME_PER_EPOCH)
    return fig


def tick_label(name: str) -> str:
    """Two lines under a bar: 'Frozen' over 'weights', 'Unfrozen weights' over 'modern'."""
    return name.replace(" · ", "\n", 1) if " · " in name else name.replace(" ", "\n", 1)


def epoch_bar(ax, d: _Data, s: int, row, metric: str, cell: str) -> int:
    """One bar of a row's median `metric`, with its interquartile range, n and the marks of the diagnostics
    that concern the table's `cell`; returns n (0: nothing to draw)."""
    med = row[f"{metric}_median"]
    if med != med:
        return 0
    width = 0.8 / len(d.sets)
    x = d.modes.index(row["kind"]) + (s - (len(d.sets) - 1) / 2) * width
    n = int(row[f"{metric}_n"])
    err = [[med - row[f"{metric}_q1"]], [row[f"{metric}_q3"] - med]] if n > 1 else None
    bars = ax.bar(x, med, width * 0.9, yerr=err, capsize=4, color=d.style(s, row["kind"])["color"],
                  hatch=HATCHES[s % len(HATCHES)], edgecolor="black", linewidth=0.6, label=d.label(s, row))
    ax.bar_label(bars, labels=[f"{secs(med)}{d.marks[s].mark(row['group'], cell)}\nn={n}"], padding=2, fontsize=7)
    return n


def tradeoff_figure(d: _Data) -> Figure:
    fig, axes = figure(len(d.panels), "Validation accuracy against time spent",
                       d.footnote + "\nTime: cumulative wall seconds of the epochs, training plus validation (as "
                       "Keras prints them); points: medians over the n runs in the legend, one per epoch; no spread "
                       "drawn (the accuracy and epoch time figures show it)." + d.diagnosed((TRADEOFF,)),
                       subtitle=d.subtitle, sharey=True)
    for ax, panel in zip(axes, d.panels):
        for s, row in d.rows(panel):
            cum = d.cumulative[s].get(row["group"])
            if cum is None:
                continue
            pts = [(n, cum[n], row[f"val_acc_{n}_median"]) for n in d.epochs
                   if n in cum.index and row[f"val_acc_{n}_median"] == row[f"val_acc_{n}_median"]]
            if not pts:  # no epoch with a validation accuracy
                continue
            epoch, x, y = zip(*pts)
            ax.plot(x, y, label=d.label(s, row, TRADEOFF), linewidth=2, markersize=6, **d.style(s, row["kind"]))
            ax.annotate(f"epoch {epoch[-1]}", (x[-1], y[-1]), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)
        ax.set(title=panel_title(panel), xlabel="Cumulative time (s, wall clock), training + validation")
        ax.title.set_fontsize(9)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        legend_below(ax)
    shared_y(axes, "Validation accuracy (%)")
    percent_axis(axes[0])
    return fig


def figures(sets: ResultSets, left_out: list[str] = ()) -> dict[str, Figure]:
    """The default figures of one or several result sets ((label, records) pairs), not yet saved; `left_out`
    says in the footnote what reading the records left out."""
    if not any(recs for _, recs in sets):
        return {}
    d = _Data(sets, left_out)
    return dict(zip(NAMES, (accuracy_figure(d), epoch_time_figure(d), tradeoff_figure(d))))


# Fixed ids and metadata: figures redrawn from the same records are byte-identical (no churn in git).
SVG_IDS = {"svg.hashsalt": "tlbench"}  # without it matplotlib salts every id with a random uuid
METADATA = {"svg": {"Date": None, "Creator": "tlbench"}, "png": {"Software": None}}


def save(figs: dict[str, Figure], out: Path) -> list[Path]:
    out = Path(out)
    paths = []
    for name, fig in figs.items():
        for ext in ("png", "svg"):
            path = out / f"{name}.{ext}"
            try:
                out.mkdir(parents=True, exist_ok=True)
                with matplotlib.rc_context(SVG_IDS):
                    fig.savefig(path, dpi=150, metadata=METADATA[ext])
            except OSError as e:
                raise StorageError(path, e) from None
            paths.append(path)
    return paths


def write_sets(out: Path, sets: ResultSets, left_out: list[str] = ()) -> list[Path]:
    return save(figures(sets, left_out), out)


def write(folder: Path, records: list[dict]) -> list[Path]:
    """The default figures of one results folder, into FOLDER/figures/ as PNG and SVG."""
    return write_sets(Path(folder) / "figures", [(None, records)])
