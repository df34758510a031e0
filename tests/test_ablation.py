"""The recipe comparison and its ablation (bench/ablation.py), on crafted records with hand-checkable numbers."""
import json

import pandas as pd
import pytest

from bench import ablation, report
from conftest import DATA

GOLDEN = DATA / "golden" / "runs"


def _record(mode: str, recipe: str | None, repeat: int, acc: tuple[float, float, float], seconds: float = 20.0):
    src = next(GOLDEN.glob(f"*-{mode}-r0-*.json"))
    rec = json.loads(src.read_text())
    rec["config"].update(recipe=recipe, repeat=repeat)
    rec["run_id"] = f"{mode}-{recipe}-r{repeat}"
    for e, a in zip(rec["epochs"], acc):
        e.update(val_accuracy=a, epoch_seconds=seconds if e["phase"] == "steady" else 30.0)
    return rec


def _records():
    """Unfrozen: classic 0.40/0.80 at epochs 1/3, modern +10 points at 1, +4 at 3; batchnorm=frozen alone +8 at 1,
    head_epochs=1 alone -2 at 1 (both repeats), frozen and scratch with classic and modern only."""
    recs = []
    for r, jitter in ((0, -0.01), (1, 0.01)):
        recs += [_record("unfrozen", None, r, (0.40 + jitter, 0.6, 0.80 + jitter)),
                 _record("unfrozen", "modern", r, (0.50 + jitter, 0.7, 0.84 + jitter), seconds=22.0),
                 _record("unfrozen", "classic+batchnorm=frozen", r, (0.48 + jitter, 0.7, 0.81 + jitter)),
                 _record("unfrozen", "classic+head_epochs=1", r, (0.38 + jitter, 0.6, 0.80 + jitter)),
                 _record("frozen", None, r, (0.60 + jitter, 0.7, 0.70 + jitter)),
                 _record("frozen", "modern", r, (0.60 - jitter, 0.7, 0.70 - jitter)),
                 _record("scratch", None, r, (0.20 + jitter, 0.3, 0.40 + jitter))]
    return recs


def test_families_hold_one_configuration_each_recipe_an_arm():
    fams = ablation.find(_records())
    # scratch has the classic recipe alone: nothing to compare
    assert [f.mode for f in fams] == ["frozen", "unfrozen"]
    unfrozen = fams[1]
    assert sorted(unfrozen.arms) == ["classic", "classic+batchnorm=frozen", "classic+head_epochs=1", "modern"]
    assert sorted(unfrozen.variants) == ["classic+batchnorm=frozen", "classic+head_epochs=1"]
    assert unfrozen.epochs == [1, 3] and all(len(a.runs) == 2 for a in unfrozen.arms.values())


def test_families_follow_the_mode_registry_least_trained_first():
    recs = _records() + [_record("scratch", "modern", r, (0.3, 0.4, 0.5)) for r in (0, 1)]
    for recipe in (None, "modern"):
        rec = _record("frozen", recipe, 0, (0.6, 0.6, 0.6))
        rec["config"]["mode"], rec["run_id"] = "frozen-cached", rec["run_id"] + "-cached"
        recs.append(rec)
    assert [f.mode for f in ablation.find(recs)] == ["frozen", "frozen-cached", "unfrozen", "scratch"]


def test_gap_table_cells_are_the_differences_with_intervals():
    text = ablation.gaps(ablation.find(_records()))
    frozen, unfrozen = [line for line in text.splitlines() if line.startswith(("| Frozen", "| Unfrozen"))]
    cells = [c.strip() for c in unfrozen.strip("|").split("|")]
    assert cells[1] == "40.0% [39.5–40.5] n=2" and cells[2] == "50.0% [49.5–50.5] n=2"
    assert cells[3].startswith("+10.0 [") and cells[3].endswith("✱")  # beyond noise
    assert cells[6].startswith("+4.0 [")
    assert cells[7].startswith("×1.10")  # steady 22 s against 20 s
    # frozen: the two recipes' repeats mirror each other: no difference, within noise
    assert [c.strip() for c in frozen.strip("|").split("|")][3].startswith("+0.0 [") and "✱" not in frozen


def test_verdicts_say_which_recipe_is_ahead_and_whether_beyond_noise():
    text = ablation.verdicts(ablation.find(_records()))
    assert ("**Unfrozen weights**: the modern recipe is at epoch 1 ahead of the classic recipe by 10.0 points "
            "(beyond noise; +10.0 [") in text
    assert "; at epoch 3 ahead of the classic recipe by 4.0 points (within noise;" in text
    assert "**Frozen weights**: the modern recipe is at epoch 1 level with the classic recipe (within noise;" in text


def test_a_variant_of_the_modern_recipe_is_also_set_against_it():
    recs = _records() + [_record("unfrozen", "modern+augment=none", r, (0.53, 0.7, 0.83)) for r in (0, 1)]
    table = ablation.ablation(ablation.find(recs)[1]).splitlines()
    assert "vs its base @ 1 / @ 3 (pts)" in table[0]
    row = next(line for line in table if line.startswith("| modern+augment=none |"))
    assert "+3.0 [" in row.split("|")[6] and "-1.0 [" in row.split("|")[6]


def test_attribution_names_the_component_that_moves_epoch_1_most():
    unfrozen = ablation.find(_records())[1]
    text = ablation.attribution(unfrozen)
    assert ("At epoch 1, of the 2 components switched on alone, **batchnorm=frozen**, +8.0 [") in text
    assert "points (beyond noise) moves the accuracy most." in text and "The whole modern recipe: +10.0 [" in text
    table = ablation.ablation(unfrozen).splitlines()
    # most helpful first, the modern recipe last
    assert [line.split("|")[1].strip() for line in table[2:]] == [
        "classic", "classic+batchnorm=frozen", "classic+head_epochs=1", "modern"]
    assert "-2.0 [" in table[4]


def test_one_run_a_side_gives_no_verdict():
    recs = [r for r in _records() if r["config"]["repeat"] == 0]
    text = ablation.attribution(ablation.find(recs)[1])
    assert "+8.0 (n=1) points (one run a side: no interval, not a verdict)" in text


def test_the_largest_mover_and_the_most_helpful_component_are_told_apart():
    recs = _records() + [_record("unfrozen", "classic+finetune_lr=0.1", r, (0.10, 0.1, 0.10)) for r in (0, 1)]
    text = ablation.attribution(ablation.find(recs)[1])
    assert "of the 3 components switched on alone, **finetune_lr=0.1**, -30.0 [" in text
    assert "moves the accuracy most; the most helpful is **batchnorm=frozen**, +8.0 [" in text


def test_report_writes_the_recipe_section_table_csv_and_figure(tmp_path):
    folder = tmp_path / "res"
    (folder / "runs").mkdir(parents=True)
    for rec in _records():
        (folder / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    paths = report.write(folder)
    names = {p.name for p in paths}
    assert {"recipes.md", "recipes.csv", "recipes_ablation.png", "recipes_ablation.svg"} <= names
    md = (folder / "report.md").read_text()
    assert "## Recipes: the classic recipe of the Udacity lab against a modern one" in md
    assert "### Ablation: mobilenet_v2 · fashion_mnist · 96 px" in md and "![Recipe components" in md
    csv = pd.read_csv(folder / "recipes.csv")
    row = csv[(csv.recipe == "classic+batchnorm=frozen")].iloc[0]
    assert row.vs_classic_1_points == pytest.approx(8.0) and row.val_acc_1_n == 2
    # the comparison table keeps one row per recipe: nothing pools
    table = (folder / "report.md").read_text().split("## Measured")[1].split("## Cost")[0]
    assert "| Unfrozen weights · modern |" in table and "| Unfrozen weights |" in table
