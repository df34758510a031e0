"""Recipes side by side: the classic against the modern recipe per mode, and an ablation that attributes the gap.

A family is the runs whose whole configuration is the same but for the recipe (tables.identity_fields: one
backbone, dataset, mode, every setting, one hardware), so nothing pools across settings. In a family:

  gap       the modern recipe against the classic one, at epoch 1 and at the last epoch (validation
            accuracy, points) and in steady seconds per epoch (a ratio)
  ablation  every variant of a recipe (`classic+batchnorm=frozen`: one component switched) against classic,
            and against its own base; the component that moves epoch-1 accuracy most is named, with
            whether its interval excludes no change

Differences in points with the 95 % interval of study.versus (Welch over runs; none below 2 runs a side).
Components measured alone need not add up to the modern recipe's gap: they interact.

  RESULTS/recipes.md, recipes.csv, figures/recipes_ablation.{png,svg}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import plots, recipes, tables
from .config import complete
from .stats import describe, ratio
from .store import atomic_write
from .study import beyond, versus

FIGURE = "recipes_ablation"
NOTE = ("Val Acc: validation accuracy, one sample per run: median [interquartile range] n. Differences: in points, "
        "the mean over runs of one side minus the other's, with the 95 % interval (Welch, over runs; "
        "bench.stats.difference) when both sides have at least 2 runs; ✱ marks an interval that excludes 0. Steady "
        "time: each run's median steady epoch, the ratio of the two sides' geometric means. In a two-stage recipe "
        "(head_epochs ≥ 1) epoch 1 trains the head alone: the backbone has not moved yet.")


@dataclass
class Arm:
    """One recipe's runs in a family."""

    recipe: str  # the canonical name; 'classic' for None
    runs: list[dict]

    def acc(self, epoch: int) -> list[float]:
        return [e["val_accuracy"] for r in self.runs for e in r["epochs"] if e["epoch"] == epoch]

    def steady(self) -> list[float]:
        return [v for r in self.runs if np.isfinite(v := tables.run_values(r, [])["steady_epoch_seconds"])]


@dataclass
class Family:
    title: str  # block and mode: what is held fixed
    mode: str
    hardware: str
    epochs: list[int]  # 1 and the last
    arms: dict[str, Arm] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return [name for name in self.arms if "+" in name]


def find(records: list[dict]) -> list[Family]:
    """Families holding the classic and the modern recipe, or a recipe and a variant of it."""
    groups: dict[str, Family] = {}
    for rec in (r for r in records if r.get("status") == "ok"):
        fields = tables.identity_fields(rec)
        stored = fields.pop("recipe")
        recipe = recipes.name(None if stored == "None" else stored)
        key = json.dumps(fields, sort_keys=True)
        cfg = complete(rec["config"])
        if key not in groups:
            row = pd.Series({**cfg, "variant": ""})
            groups[key] = Family(f"{tables.block_title(row)} · {cfg['strategy'] or tables.mode_label(cfg['mode'])}",
                                 cfg["mode"], fields["hardware"], sorted({1, cfg["epochs"]}))
        groups[key].arms.setdefault(recipe, Arm(recipe, [])).runs.append(rec)
    out = [f for f in groups.values() if len(f.arms) > 1 and "classic" in f.arms]
    return sorted(out, key=lambda f: (f.title.split(" · ")[:-1], tables.mode_order({"mode": f.mode})))


def _acc(arm: Arm, epoch: int) -> str:
    d = describe(arm.acc(epoch))
    if not d["n"]:
        return "—"
    spread = f" [{100 * d['q1']:.1f}–{100 * d['q3']:.1f}]" if d["n"] > 1 else ""
    return f"{100 * d['median']:.1f}%{spread} n={d['n']}"


def effect(base: Arm, other: Arm, epoch: int) -> tuple[float, str]:
    """(other - base in points, the cell that says it with its interval)."""
    b, o = base.acc(epoch), other.acc(epoch)
    if not b or not o:
        return float("nan"), "—"
    iv, _ = versus(b, o)
    est = 100 * (np.mean(o) - np.mean(b))
    if iv is None:
        return est, f"{est:+.1f} (n={min(len(b), len(o))})"
    return est, f"{est:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}]" + (" ✱" if beyond(iv) else "")


def _time_ratio(base: Arm, other: Arm) -> str:
    b, o = base.steady(), other.steady()
    if not b or not o:
        return "—"
    iv = ratio(b, o)
    if min(len(b), len(o)) < 2:
        return f"×{iv.estimate:.2f} (n=1)"
    return f"×{iv.estimate:.2f} [{iv.low:.2f}, {iv.high:.2f}]" + (" ✱" if iv.low > 1 or iv.high < 1 else "")


def gaps(families: list[Family]) -> str:
    """Per mode: the modern recipe against the classic one."""
    rows = [f for f in families if "modern" in f.arms]
    if not rows:
        return ""
    last = max(rows[0].epochs)
    header = ["Mode"]
    for n in sorted({1, last}):
        header += [f"Val Acc @ {n}: classic", "modern", "modern − classic (pts)"]
    header += ["Steady s/epoch: modern / classic"]
    body = []
    for f in rows:
        c, m = f.arms["classic"], f.arms["modern"]
        cells = [f.title.split(" · ")[-1]]
        for n in f.epochs:
            cells += [_acc(c, n), _acc(m, n), effect(c, m, n)[1]]
        body.append(cells + [_time_ratio(c, m)])
    return tables.markdown_table(pd.DataFrame(body, columns=header), "l" + "c" * (len(header) - 1))


def verdicts(families: list[Family]) -> str:
    """One sentence per mode: is the modern recipe ahead of the classic one, at epoch 1 and at the last epoch."""
    out = []
    for f in (f for f in families if "modern" in f.arms):
        c, m = f.arms["classic"], f.arms["modern"]
        said = []
        for n in f.epochs:
            iv, _ = versus(c.acc(n), m.acc(n))
            est, cell = effect(c, m, n)
            est = round(est, 1)
            side = (f"ahead of the classic recipe by {est:.1f} points" if est > 0 else
                    f"behind the classic recipe by {-est:.1f} points" if est < 0 else "level with the classic recipe")
            how = ("beyond noise" if beyond(iv) else "within noise" if iv is not None else "one run a side, no verdict")
            said.append(f"at epoch {n} {side} ({how}; {cell})")
        out.append(f"**{f.title.split(' · ')[-1]}**: the modern recipe is " + "; ".join(said) + ".")
    return " ".join(out)


def _base(name: str) -> str:
    return name.split("+")[0]


def ablation(f: Family) -> str:
    """The recipes of one family against classic, most helpful at epoch 1 first; a variant of another base
    (`modern+augment=none`: one component left out) also against that base."""
    c, last = f.arms["classic"], max(f.epochs)
    others = sorted((a for a in f.arms.values() if a is not c),
                    key=lambda a: (a.recipe == "modern", -np.nan_to_num(effect(c, a, 1)[0])))
    own = [a for a in others if "+" in a.recipe and _base(a.recipe) in f.arms and _base(a.recipe) != "classic"]
    header = ["Recipe", "Val Acc @ 1", "vs classic @ 1 (pts)", f"Val Acc @ {last}", f"vs classic @ {last} (pts)"]
    header += [f"vs its base @ 1 / @ {last} (pts)"] if own else []
    header += ["Steady s/epoch vs classic"]
    rows = [["classic", _acc(c, 1), "", _acc(c, last), ""] + [""] * (len(header) - 5)]
    for a in others:
        cells = [a.recipe, _acc(a, 1), effect(c, a, 1)[1], _acc(a, last), effect(c, a, last)[1]]
        if own:
            base = f.arms[_base(a.recipe)] if a in own else None
            cells += [f"{effect(base, a, 1)[1]} / {effect(base, a, last)[1]}" if base else ""]
        rows.append(cells + [_time_ratio(c, a)])
    return tables.markdown_table(pd.DataFrame(rows, columns=header), "l" + "c" * (len(header) - 1))


def attribution(f: Family) -> str:
    """Which single component moves the mode's accuracy most (either way) and which helps most, at epoch 1 and at
    the last epoch, beside the whole modern recipe's gap."""
    c = f.arms["classic"]
    singles = [a for name, a in f.arms.items() if _base(name) == "classic" and name.count("+") == 1]
    if not singles:
        return ""

    def said(a: Arm, n: int) -> str:
        iv, _ = versus(c.acc(n), a.acc(n))
        sure = ("beyond noise" if beyond(iv) else "within noise: the measurement cannot tell it from no change"
                if iv is not None else "one run a side: no interval, not a verdict")
        return f"**{a.recipe.split('+', 1)[1]}**, {effect(c, a, n)[1]} points ({sure})"

    out = []
    for n in f.epochs:
        moved = max(singles, key=lambda a: abs(np.nan_to_num(effect(c, a, n)[0])))
        helped = max(singles, key=lambda a: np.nan_to_num(effect(c, a, n)[0], nan=-np.inf))
        text = (f"At epoch {n}, of the {len(singles)} components switched on alone, {said(moved, n)} moves the "
                "accuracy most")
        if helped is not moved and effect(c, helped, n)[0] > 0:
            text += f"; the most helpful is {said(helped, n)}"
        text += "."
        if "modern" in f.arms:
            text += f" The whole modern recipe: {effect(c, f.arms['modern'], n)[1]}."
        out.append(text)
    return " ".join(out) + " Effects measured alone need not add up to the whole recipe's: components interact."


def csv(families: list[Family]) -> str:
    rows = []
    for f in families:
        c = f.arms["classic"]
        for a in f.arms.values():
            row = {"family": f.title, "hardware": f.hardware, "recipe": a.recipe, "runs": len(a.runs)}
            for n in f.epochs:
                d = describe(a.acc(n))
                row.update({f"val_acc_{n}_median": d["median"], f"val_acc_{n}_n": d["n"],
                            f"vs_classic_{n}_points": effect(c, a, n)[0] if a is not c else 0.0})
            row["steady_epoch_seconds_median"] = describe(a.steady())["median"]
            rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False)


def figure(families: list[Family]):
    """Per family with an ablation and per reported epoch: each recipe's difference from classic, with its interval."""
    panels = [(f, n) for f in families if f.variants for n in f.epochs]
    fig, axes = plots.figure(len(panels), "Recipe components against the classic recipe",
                             "Bars: mean difference in validation accuracy from the classic recipe, in points; "
                             "whiskers: 95 % interval (Welch, over runs) where both sides have 2 runs or more.\n"
                             "In a two-stage recipe epoch 1 trains the head alone. "
                             + plots.environment_line([r for f in families for a in f.arms.values() for r in a.runs]),
                             ncols=2, panel_size=(6.4, 0.5 * max(len(f.arms) for f, _ in panels) + 1.6))
    for ax, (f, n) in zip(axes, panels):
        c = f.arms["classic"]
        names = [a for a in f.arms if a != "classic"]
        values, lows, highs = [], [], []
        for name in names:
            est, _ = effect(c, f.arms[name], n)
            iv, _ = versus(c.acc(n), f.arms[name].acc(n))
            values.append(est)
            lows.append(est - iv.low if iv else 0.0)
            highs.append(iv.high - est if iv else 0.0)
        y = np.arange(len(names))
        colors = ["#1f77b4" if name == "modern" else "#ff7f0e" if v < 0 else "#2ca02c"
                  for name, v in zip(names, values)]
        ax.barh(y, values, xerr=[lows, highs], color=colors, capsize=3)
        ax.set_yticks(y, [name.replace("classic+", "+ ") for name in names], fontsize=8)
        ax.axvline(0, color="#333333", linewidth=0.8)
        ax.invert_yaxis()
        ax.set(title=plots.panel_title(f"{f.title} · epoch {n}"), xlabel="Difference from classic (points)")
        ax.title.set_fontsize(9)
        ax.grid(axis="x", alpha=0.3)
    return fig


def markdown(families: list[Family], level: int = 1) -> str:
    h = "#" * level
    parts = [f"{h} Recipes: the classic recipe of the Udacity lab against a modern one", "",
             "The modern recipe (bench/recipes.py cites each choice): "
             + "; ".join(f"{k} {v}" for k, v in vars(recipes.RECIPES["modern"]).items()) + ".", ""]
    table = gaps(families)
    if table:
        parts += [f"{h}# The gap per mode", "", f"_{families[0].hardware}_", "", table, "", verdicts(families), ""]
    for f in (f for f in families if f.variants):
        parts += [f"{h}# Ablation: {f.title}", "", ablation(f), "", attribution(f), ""]
    parts += [NOTE, ""]
    if any(f.variants for f in families):
        parts += [f"![Recipe components against the classic recipe](figures/{FIGURE}.png)", ""]
    return "\n".join(parts)


def write(folder: Path, records: list[dict]) -> list[Path]:
    """recipes.md, recipes.csv and the ablation figure when the records compare recipes; else nothing."""
    families = find(records)
    if not families:
        return []
    folder = Path(folder)
    atomic_write(folder / "recipes.md", markdown(families))
    atomic_write(folder / "recipes.csv", csv(families))
    figs = {FIGURE: figure(families)} if any(f.variants for f in families) else {}
    return [folder / "recipes.md", folder / "recipes.csv"] + plots.save(figs, folder / "figures")


def section(records: list[dict]) -> str:
    """The report's section (the figure as written by `write` into the same folder)."""
    families = find(records)
    return markdown(families, level=2) if families else ""
