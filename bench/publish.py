"""`tlbench publish`: every results folder beneath some roots as one static site, readable from disk, offline.

  index.html                 one card per suite folder x machine: what ran where, its comparison table, a figure
  suite-<folder>--<machine>.html   that comparison table with its diagnostics, the headline figures, the
                             documents' reference table where the suite names one, its configurations, its records
  config-<hash>.html         one configuration (config.match_key) across every folder, machine and commit: the
                             history of steady s/epoch, throughput and final accuracy, compare's verdict between
                             consecutive points of one machine, the machines side by side
  records/<folder>/...       the record files themselves, as found: every number links to the ones it came from
  figures/*.png              drawn by matplotlib (plots.py), nothing fetched at view time

A point of a history is the records of one source (a folder's current runs, its superseded/ ones, a baseline
save), machine and commit. Gathering (`gather`) only reads, so what a page shows can be tested without drawing;
`write` renders (site_pages.py) into a temporary folder and swaps it in, so that a reader never sees half a site,
and it replaces only a folder that an earlier `publish` made (MARKER). The same records give the same bytes.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from matplotlib.figure import Figure

from . import baseline, compare, plots, store, tables
from .config import match_key
from .errors import SuiteErrors, UserError

MARKER = ".tlbench-site"
HEADLINE = ("accuracy", "epoch_time")  # the figures a suite page leads with
METRICS = (("time", "steady_epoch_seconds"), ("throughput", "steady_images_per_second"))
DPI = 100  # a site's figures are read on a screen: a third of the bytes of the folders' 150 dpi copies


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


@dataclass(frozen=True)
class Entry:
    """One record file as found, and where its copy sits in the site."""

    record: dict
    path: Path
    source: str  # current, superseded, baseline save N
    folder: str  # the suite folder's name in the site: its path from the root's parent

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    @property
    def copy(self) -> str:
        return f"records/{self.folder}/{self.path.parent.name}/{self.path.name}"

    @property
    def commit(self) -> str:
        git = self.record["environment"].get("git") or {}
        return (git.get("commit") or "unknown")[:7] + ("+dirty" if git.get("dirty") else "")

    @property
    def machine(self) -> str:
        return baseline.machine_id(self.record["environment"])

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


def titled(entries: list[Entry]) -> str:
    """What a number's hover says: the runs it came from and their commits."""
    return f"runs: {' '.join(e.run_id for e in entries)} · commit {', '.join(sorted({e.commit for e in entries}))}"


@dataclass
class Suite:
    """One index card and suite page: one folder's current records of one machine."""

    name: str
    folder: str
    found: store.Results
    entries: list[Entry]

    @property
    def page(self) -> str:
        return f"suite-{slug(self.folder.replace('/', '--'))}--{self.entries[0].machine}.html"

    @property
    def records(self) -> list[dict]:
        return [e.record for e in self.entries]

    @cached_property
    def table(self):
        """(the comparison table as Markdown, its frame), as `tlbench table` prints it."""
        return tables.render(self.records, None, self.found.lines())

    def rows(self) -> list:
        """The frame's rows in the order the Markdown lists them."""
        return [row for block in tables.blocks(self.table[1]) for _, row in block.iterrows()]


@dataclass
class Point:
    """One source x machine x commit of a configuration: a history point."""

    source: str
    folder: str
    machine: str
    commit: str
    entries: list[Entry]
    verdicts: dict[str, tuple[str, str]] = field(default_factory=dict)  # metric -> (verdict, why) vs the previous

    @property
    def started(self) -> str:
        return min(str(e.record.get("started") or "") for e in self.entries)

    @property
    def dates(self) -> str:
        days = sorted(str(e.record.get("finished") or e.record.get("started") or "unknown")[:10] for e in self.entries)
        return days[0] if days[0] == days[-1] else f"{days[0]} to {days[-1]}"

    def row(self, final: int):
        """The comparison table's row of these records, at the final epoch."""
        return tables.summarise([e.record for e in self.entries], [final])[0].iloc[0]


@dataclass
class Configuration:
    key: str
    label: str
    entries: list[Entry]
    points: list[Point]

    @property
    def page(self) -> str:
        return f"config-{hashlib.sha256(self.key.encode()).hexdigest()[:12]}.html"

    @property
    def config(self) -> dict:
        return self.entries[0].record["config"]

    @property
    def final(self) -> int:
        return int(self.config.get("epochs") or 1)

    def machines(self) -> dict[str, list[dict]]:
        """machine -> its current records, for the machines side by side."""
        out: dict[str, list[dict]] = {}
        for e in self.entries:
            if e.source == "current":
                out.setdefault(e.machine, []).append(e.record)
        return dict(sorted(out.items()))


@dataclass
class Site:
    suites: list[Suite]
    configs: dict[str, Configuration]
    entries: list[Entry]
    notes: list[str]
    damaged: bool

    def config_of(self, run_id: str, folder: str) -> Configuration:
        entry = next(e for e in self.entries if e.run_id == run_id and e.folder == folder and e.source == "current")
        return self.configs[match_key(entry.record)]


# --- gathering: reading only ---------------------------------------------------------------------

def suite_folders(roots: list[Path]) -> list[tuple[Path, str]]:
    """(folder, its name in the site) for every folder holding runs/ beneath the roots."""
    out = []
    for root in roots:
        if not root.is_dir():
            raise UserError(f"'{root}' is not a folder; give results folders (e.g. results, or results/published)")
        base = root.resolve().parent
        out += [(f, "/".join(slug(p) for p in f.resolve().relative_to(base).parts))
                for f in store.results_folders(root, deep=True)]
    if not out:
        raise UserError(f"no results beneath {', '.join(map(repr, map(str, roots)))}: no folder holds a runs/ "
                        "folder; run a suite first (tlbench run SUITE) or give the folder it wrote to")
    names = [n for _, n in out]
    return [(f, n if names.count(n) == 1 else f"{n}-{i}") for i, (f, n) in enumerate(out)]


def _source(folder: Path) -> str:
    """A baseline save (baseline.py) is a numbered folder beside machine.json; anything else is a results folder."""
    if re.match(r"\d{4}_", folder.name) and (folder / "machine.json").is_file():
        return f"baseline save {int(folder.name[:4])}"
    return "current"


def superseded(folder: Path) -> tuple[list[tuple[dict, Path]], list[str]]:
    """The records in folder/superseded/ (named <run_id>.<finished>.json by store.supersede), and the files
    left out as unreadable, each with why."""
    out, notes = [], []
    for path in sorted((folder / "superseded").glob("*.json")):
        try:
            out.append((store.read_record(path), path))
        except store.CorruptRecord as e:
            notes.append(f"left out {e}")
    return out, notes


def _read(folder: Path, name: str) -> tuple[store.Results, list[Entry], list[str]]:
    found = store.scan(folder)
    source = _source(folder)
    entries = [Entry(r, store.run_path(folder, r["run_id"]), source, name) for r in found.records]
    old, notes = superseded(folder)
    entries += [Entry(r, path, "superseded", name) for r, path in old]
    return found, entries, [f"{folder}: {line}" for line in found.lines()] + notes


def _suites(found: store.Results, entries: list[Entry]) -> list[Suite]:
    names = [str(r.get("suite") or r["config"]["suite"]) for r in found.records]
    name = found.suite.get("name") if isinstance(found.suite.get("name"), str) else None
    name = name or (max(sorted(set(names)), key=names.count) if names else found.folder.name)
    current = [e for e in entries if e.source == "current"]
    machines = sorted({e.machine for e in current})
    return [Suite(name, current[0].folder, found, [e for e in current if e.machine == m]) for m in machines]


def _thresholds(folder: Path) -> tuple[dict, list[str]]:
    """The suite's `regression:` block, which compare's rule reads, from the copy beside the records."""
    path = folder / "suite.yaml"
    try:
        return (compare.load_regression(path) if path.is_file() else {}), []
    except SuiteErrors as e:
        return {}, [f"{path}: regression thresholds unreadable ({e}); history verdicts use compare's defaults"]


def _points(entries: list[Entry]) -> list[Point]:
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.source, e.folder, e.machine, e.commit), []).append(e)
    points = [Point(*key, entries=sorted(es, key=lambda e: e.run_id)) for key, es in groups.items()]
    return sorted(points, key=lambda p: (p.started, p.source, p.folder, p.machine))


def judge(before: Point, after: Point, final: int, thresholds: dict) -> dict[str, tuple[str, str]]:
    """compare's verdict (its rule, its thresholds) on each metric from one point to the next of one machine."""
    epochs = [final]
    sides = [[e.record for e in p.entries if e.ok] for p in (before, after)]
    values = [[tables.run_values(r, epochs) for r in side] for side in sides]
    loads = (compare.side_load(sides[0]), compare.side_load(sides[1]))
    out = {}
    for metric, col in (*METRICS, ("accuracy", f"val_acc_{final}")):
        b, c = ([v[col] for v in side if v[col] == v[col]] for side in values)
        if b and c:
            _, verdict, why = compare.judge(metric, b, c, thresholds[metric][0], loads)
            out[metric] = (verdict, f"{verdict} against the previous point of this machine: {why}")
    return out


def _configuration(key: str, label: str, entries: list[Entry], suite_regression: dict) -> Configuration:
    conf = Configuration(key, label, entries, _points(entries))
    thresholds = compare.resolve_thresholds(conf.config, suite_regression, {})
    last: dict[str, Point] = {}
    for point in conf.points:
        if point.machine in last:
            point.verdicts = judge(last[point.machine], point, conf.final, thresholds)
        last[point.machine] = point
    return conf


def gather(roots: list[Path]) -> Site:
    """Everything the site shows, read from the roots' suite folders; writes nothing."""
    suites, entries, notes, damaged, regression = [], [], [], False, {}
    for folder, name in suite_folders([Path(r) for r in roots]):
        found, found_entries, said = _read(folder, name)
        entries += found_entries
        notes += said
        damaged |= found.damaged
        if _source(folder) == "current" and found.records:
            suites += _suites(found, found_entries)
        thresholds, said = _thresholds(folder)
        notes += said
        regression.update({match_key(e.record): thresholds for e in found_entries if e.source == "current"})
    by_key = compare.by_config([e.record for e in entries])
    labels = compare.config_labels({k: recs[0]["config"] for k, recs in by_key.items()})
    grouped: dict[str, list[Entry]] = {}
    for e in entries:
        grouped.setdefault(match_key(e.record), []).append(e)
    configs = {k: _configuration(k, labels[k], es, regression.get(k, {})) for k, es in sorted(grouped.items())}
    suites.sort(key=lambda s: (s.name, s.folder, s.entries[0].machine))
    return Site(suites, configs, entries, notes, damaged)


# --- writing -------------------------------------------------------------------------------------

def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=DPI, metadata=plots.METADATA["png"])
    return f"figures/{path.name}"


def history_figure(conf: Configuration) -> Figure:
    """Steady s/epoch, throughput and final accuracy per point, one line per machine (medians, IQR bars). A plain
    layout: a site may draw hundreds, and constrained layout would triple the time."""
    final, points = conf.final, conf.points
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.24, wspace=0.25)
    rows = [p.row(final) for p in points]
    ticks = [f"{p.commit}\n{p.dates[:10]}\n{p.source}" for p in points]
    for ax, (metric, what) in zip(axes, [("steady_epoch_seconds", "Steady s/epoch"),
                                         ("steady_images_per_second", "Images/s (steady)"),
                                         (f"val_acc_{final}", f"Val acc @ epoch {final}")]):
        for i, machine in enumerate(sorted({p.machine for p in points})):
            at = [(x, r) for x, (p, r) in enumerate(zip(points, rows))
                  if p.machine == machine and r[f"{metric}_median"] == r[f"{metric}_median"]]
            if at:
                ys = [r[f"{metric}_median"] for _, r in at]
                err = [[y - r[f"{metric}_q1"] for y, (_, r) in zip(ys, at)],
                       [r[f"{metric}_q3"] - y for y, (_, r) in zip(ys, at)]]
                ax.errorbar([x for x, _ in at], ys, yerr=err, capsize=3, label=machine,
                            color=plots.COLOURS[i % len(plots.COLOURS)], marker=plots.MARKERS[i % len(plots.MARKERS)])
        ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
        ax.set_xlim(-0.5, len(ticks) - 0.5)
        ax.set_title(f"{what}: median, interquartile bars", fontsize=9)
        ax.grid(alpha=0.3)
    plots.percent_axis(axes[2])
    axes[0].legend(fontsize=7)
    return fig


def draw(site: Site, out: Path) -> dict[str, list[str]]:
    """page -> the figures it shows (site-relative paths)."""
    (out / "figures").mkdir()
    shown: dict[str, list[str]] = {}
    for s in site.suites:
        figs = plots.figures([(None, s.records)], s.found.footnote())
        stem = s.page.removesuffix(".html")
        shown[s.page] = [_save(figs[n], out / "figures" / f"{stem}-{n}.png") for n in HEADLINE if n in figs]
    for conf in site.configs.values():
        stem, shown[conf.page] = conf.page.removesuffix(".html"), []
        if len(conf.points) > 1:
            shown[conf.page].append(_save(history_figure(conf), out / "figures" / f"{stem}-history.png"))
        if len(machines := conf.machines()) > 1:  # the `plot A B --label` view
            figs = plots.figures(list(machines.items()))
            shown[conf.page] += [_save(figs[n], out / "figures" / f"{stem}-machines-{n}.png") for n in HEADLINE]
    return shown


def _fill(site: Site, out: Path) -> None:
    from . import site_pages

    for e in site.entries:
        (out / e.copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(e.path, out / e.copy)
    for name, text in site_pages.pages(site, draw(site, out)).items():
        (out / name).write_text(text, encoding="utf-8")
    (out / MARKER).write_text("a site written by tlbench publish: the next publish to this folder replaces it\n")


def _refuse(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file, not a folder; give the folder the site goes to")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()):
        raise UserError(f"--out '{out}' exists and is not a site tlbench published (it has no {MARKER}); nothing "
                        "was written: give a new or empty folder, or the folder of an earlier publish")


def write(site: Site, out: Path) -> Path:
    """The site into `out`, built beside it and swapped in; refused where `out` holds anything else."""
    out = Path(out)
    _refuse(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".publishing", dir=out.parent))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a site is meant to be served
            _fill(site, tmp)
            old = tmp.with_suffix(".old")
            if out.exists():
                out.rename(old)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(tmp.with_suffix(".old"), ignore_errors=True)
    except OSError as e:
        raise store.StorageError(out, e) from None
    return out
