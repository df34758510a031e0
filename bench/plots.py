"""Figures from stored records (matplotlib, headless), never from a live run.

  accuracy    validation accuracy per epoch: median over runs, interquartile band
  epoch_time  seconds per epoch: first epoch (tracing, compilation) and steady state apart; bars are
              medians, error bars the interquartile range, each labelled with its n
  tradeoff    validation accuracy against cumulative wall time

One panel per block of the comparison table (tables.summarise: configurations never pool), one colour
and marker per mode, one line style or hatch per result set. Figures are built as Figure objects first
so that tests read what they show.
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
        self.mode_labels = {r["kind"]: r["label"].replace(" ", "\n", 1) for r in rows}  # two lines under a bar
        self.footnote = self._footnote(notes + list(left_out))

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

    def label(self, set_index: int, row) -> str:
        """'Frozen weights (n=3)': the line's configuration and the runs behind it."""
        text = row["label"]
        if self.multi:
            text += f" · {self.sets[set_index][0]}"
        notes = [f"n={row['ok']}"]
        if row["ok"] < row["runs"]:
            notes.append(f"{row['runs'] - row['ok']} of {row['runs']} runs {row['status']}")
        return f"{text} ({'; '.join(notes)})"

    def rows(self, panel: str):
        """(set index, summary row) for each line of a panel, in mode order then set order."""
        found = [(s, row) for s, t in enumerate(self.tables) for _, row in t.iterrows() if block_title(row) == panel]
        return sorted(found, key=lambda sr: (self.modes.index(sr[1]["kind"]), sr[0]))


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


def figure(n_panels: int, title: str, footnote: str, ncols: int = 3, panel_size=(5.2, 4.6)) -> tuple:
    ncols = min(ncols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    width = panel_size[0] * ncols
    # Wrapped here rather than by matplotlib, so the strip kept for it below has the right height
    # (constrained layout does not make room for free text).
    footnote = "\n".join(textwrap.fill(line, int(width * 17), subsequent_indent="  ")
                         for line in footnote.splitlines())
    foot_in = 0.13 * (footnote.count("\n") + 1) + 0.15
    fig = Figure(figsize=(width, panel_size[1] * nrows + foot_in), layout="constrained")
    fig.get_layout_engine().set(rect=(0, foot_in / fig.get_figheight(), 1, 1 - foot_in / fig.get_figheight()))
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.text(0.01, 0.01, footnote, ha="left", va="bottom", fontsize=7, color="#333333", gid="footnote")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
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
                        "over those runs (none for a single run).")
    for ax, panel in zip(axes, d.panels):
        for s, row in d.rows(panel):
            points = [(n, row[f"val_acc_{n}_median"], row[f"val_acc_{n}_q1"], row[f"val_acc_{n}_q3"])
                      for n in d.epochs if row[f"val_acc_{n}_median"] == row[f"val_acc_{n}_median"]]
            if not points:  # every repeat failed: named in the footnote
                continue
            x, med, lo, hi = zip(*points)
            st = d.style(s, row["kind"])
            ax.plot(x, med, label=d.label(s, row), linewidth=2, markersize=6, **st)
            if row["ok"] > 1:
                ax.fill_between(x, lo, hi, color=st["color"], alpha=0.18, linewidth=0)
        ax.set(title=panel_title(panel), xlabel="Epoch", ylabel="Validation accuracy (%)")
        ax.title.set_fontsize(9)
        ax.xaxis.get_major_locator().set_params(integer=True)
        percent_axis(ax)
        ax.grid(alpha=0.3)
        legend_below(ax)
    return fig


def legend_below(ax) -> None:
    if not ax.get_legend_handles_labels()[0]:
        ax.text(0.5, 0.5, "no run of this block finished\n(see the footnote)", transform=ax.transAxes,
                ha="center", va="center", color="#555555")
        return
    # Below the axes: lines can run anywhere inside, and a legend on top of them hides data.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=1, frameon=False)


def epoch_time_figure(d: _Data) -> Figure:
    fig, axes = figure(2 * len(d.panels), "Seconds per epoch: first epoch and steady state",
                        d.footnote + "\nBars: median of n samples (first epoch: one per run; steady state: every "
                        "epoch from 2 on of every run); error bars: interquartile range. Training plus validation.",
                        ncols=2)
    width = 0.8 / len(d.sets)
    for i, panel in enumerate(d.panels):
        for ax, metric, what in ((axes[2 * i], "first_epoch_seconds", "First epoch (includes tracing and compilation)"),
                                 (axes[2 * i + 1], "steady_epoch_seconds", "Steady-state epoch (median of epochs 2+)")):
            for s, row in d.rows(panel):
                med = row[f"{metric}_median"]
                if med != med:
                    continue
                x = d.modes.index(row["kind"]) + (s - (len(d.sets) - 1) / 2) * width
                n = int(row[f"{metric}_n"])
                err = [[med - row[f"{metric}_q1"]], [row[f"{metric}_q3"] - med]] if n > 1 else None
                bars = ax.bar(x, med, width * 0.9, yerr=err, capsize=4, color=d.style(s, row["kind"])["color"],
                              hatch=HATCHES[s % len(HATCHES)], edgecolor="black", linewidth=0.6,
                              label=d.label(s, row))
                ax.bar_label(bars, labels=[f"{secs(med)}\nn={n}"], padding=2, fontsize=7)
            ax.set_xticks(range(len(d.modes)), [d.mode_labels[m] for m in d.modes], fontsize=8)
            ax.set(title=f"{panel_title(panel)}\n{what}", ylabel="Seconds per epoch, training + validation")
            ax.title.set_fontsize(9)
            ax.margins(y=0.15)
            ax.grid(axis="y", alpha=0.3)
            if d.multi:  # colour already names the mode under each bar; the hatch names the result set
                ax.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=HATCHES[s % len(HATCHES)],
                                         label=str(label)) for s, (label, _) in enumerate(d.sets)], fontsize=8)
    return fig


def tradeoff_figure(d: _Data) -> Figure:
    fig, axes = figure(len(d.panels), "Validation accuracy against training time",
                        d.footnote + "\nTime: cumulative wall seconds of the epochs (training plus validation), "
                        "median over repeats; one marker per epoch.")
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
            ax.plot(x, y, label=d.label(s, row), linewidth=2, markersize=6, **d.style(s, row["kind"]))
            ax.annotate(f"epoch {epoch[-1]}", (x[-1], y[-1]), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)
        ax.set(title=panel_title(panel), xlabel="Cumulative training time (s, wall clock)", ylabel="Validation accuracy (%)")
        ax.title.set_fontsize(9)
        percent_axis(ax)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        legend_below(ax)
    return fig


def figures(sets: ResultSets, left_out: list[str] = ()) -> dict[str, Figure]:
    """The default figures of one or several result sets ((label, records) pairs), not yet saved; `left_out`
    says in the footnote what reading the records left out."""
    if not any(recs for _, recs in sets):
        return {}
    d = _Data(sets, left_out)
    return dict(zip(NAMES, (accuracy_figure(d), epoch_time_figure(d), tradeoff_figure(d))))


def save(figs: dict[str, Figure], out: Path) -> list[Path]:
    out = Path(out)
    paths = []
    for name, fig in figs.items():
        for ext in ("png", "svg"):
            path = out / f"{name}.{ext}"
            try:
                out.mkdir(parents=True, exist_ok=True)
                # No date in the metadata: figures redrawn from the same records stay byte-identical.
                fig.savefig(path, dpi=150, metadata={"Date": None} if ext == "svg" else None)
            except OSError as e:
                raise StorageError(path, e) from None
            paths.append(path)
    return paths


def write_sets(out: Path, sets: ResultSets, left_out: list[str] = ()) -> list[Path]:
    return save(figures(sets, left_out), out)


def write(folder: Path, records: list[dict]) -> list[Path]:
    """The default figures of one results folder, into FOLDER/figures/ as PNG and SVG."""
    return write_sets(Path(folder) / "figures", [(None, records)])
