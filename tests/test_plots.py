"""Figures from the golden records: what each figure shows, read back from the matplotlib objects."""
import json
import shutil
import subprocess
import sys

import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle

from bench import diagnostics, plots, store, tables
from bench.errors import UserError
from conftest import ROOT, tlbench

LABELS = ["Frozen weights (n=2)", "Unfrozen weights (n=2)", "No pre-trained weights (n=1; 1 of 2 runs failed)"]
FAILED = "mobilenet_v2-fashion_mnist-scratch-r1-165e8ff13a"


def other_set(golden, tmp_path, change=None):
    """A second result set: the golden runs measured again, twice as fast and 5 points better, on a GPU."""
    other = tmp_path / "other"
    shutil.copytree(golden, other)
    for path in (other / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        rec["suite"] = rec["config"]["suite"] = "elsewhere"  # a suite name alone must not stop matching
        rec["environment"]["device"] = "GPU: Test GPU"
        for e in rec["epochs"]:
            e["epoch_seconds"] /= 2
            e["val_accuracy"] += 0.05
        if change:
            change(rec)
        path.write_text(json.dumps(rec))
    return other


def footnote(fig) -> str:
    (text,) = [t for t in fig.texts if t.get_gid() == "footnote"]
    return text.get_text().replace("\n  ", " ")  # undo the wrapping


def axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


@pytest.fixture
def records(golden):
    return store.read_runs(golden)


@pytest.fixture
def summary(records):
    return tables.summarise(records, [1, 2, 3])[0].set_index("mode")


def test_accuracy_lines_are_the_medians_with_a_band_where_repeats_exist(records, summary):
    fig = plots.figures([(None, records)])["accuracy"]
    (ax,) = axes(fig)
    lines = ax.get_lines()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == LABELS
    assert [line.get_label() for line in lines] == LABELS
    for line, mode in zip(lines, ["frozen", "unfrozen", "scratch"]):
        assert list(line.get_xdata()) == [1, 2, 3]
        assert list(line.get_ydata()) == pytest.approx([summary.loc[mode, f"val_acc_{n}_median"] for n in (1, 2, 3)])
    assert list(lines[0].get_ydata()) == pytest.approx([0.61, 0.655, 0.71])  # by hand from the records
    # interquartile bands for the two modes with two finished repeats; the failed repeat leaves scratch without one
    assert len(ax.collections) == 2
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert (band.min(), band.max()) == pytest.approx((0.605, 0.715))
    assert "band: interquartile range over those runs" in footnote(fig)
    assert ax.get_xlabel() == "Epoch" and "%" in ax.get_ylabel()
    assert "mobilenet_v2 · fashion_mnist · 96 px" in ax.get_title()
    assert fig.get_suptitle() == "Validation accuracy per epoch"


def test_modes_differ_in_colour_and_marker_from_the_colour_blind_safe_palette(records):
    lines = axes(plots.figures([(None, records)])["accuracy"])[0].get_lines()
    assert len({line.get_color() for line in lines}) == len({line.get_marker() for line in lines}) == 3
    assert {line.get_color() for line in lines} <= set(plots.COLOURS)


def test_footnote_names_environment_and_failed_runs(records):
    for fig in plots.figures([(None, records)]).values():
        note = footnote(fig)
        for part in ["CPU: Test CPU", "TensorFlow 2.21.0", "Keras 3.15.1", "backend tensorflow", "2026-11-25",
                     FAILED, "RuntimeError: injected failure"]:
            assert part in note


def test_epoch_time_bars_show_first_and_steady_epochs_apart_with_spread(records, summary):
    fig = plots.figures([(None, records)])["epoch_time"]
    first, steady = axes(fig)
    assert "First epoch" in first.get_title() and "Steady-state" in steady.get_title()
    for ax, metric in ((first, "first_epoch_seconds"), (steady, "steady_epoch_seconds")):
        assert [b.get_height() for b in bars(ax)] == pytest.approx(
            [summary.loc[m, f"{metric}_median"] for m in ("frozen", "unfrozen", "scratch")])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["Frozen\nweights", "Unfrozen\nweights",
                                                                "No\npre-trained weights"]
        assert ax.get_ylabel() == ("Time per epoch (s), training + validation" if ax is first else "")  # shared
        errs = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        # scratch has one finished repeat: one first epoch, no spread; but two steady epochs
        assert len(errs) == (2 if metric == "first_epoch_seconds" else 3)
        seg = errs[0].lines[2][0].get_segments()[0]
        assert sorted(seg[:, 1]) == pytest.approx([summary.loc["frozen", f"{metric}_q1"],
                                                    summary.loc["frozen", f"{metric}_q3"]])
        labels = [t.get_text() for t in ax.texts]
        n = [int(summary.loc[m, f"{metric}_n"]) for m in ("frozen", "unfrozen", "scratch")]
        assert [lab.split("n=")[1] for lab in labels] == [str(k) for k in n]
    assert [b.get_height() for b in bars(first)] == pytest.approx([11.5, 30.5, 30.0])


def test_tradeoff_x_is_cumulative_wall_seconds(records, summary):
    (ax,) = axes(plots.figures([(None, records)])["tradeoff"])
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == LABELS
    # frozen: repeats 12+5+5 and 11+5+6 seconds -> medians 11.5, 16.5, 22
    assert list(lines[0].get_xdata()) == pytest.approx([11.5, 16.5, 22.0])
    assert list(lines[2].get_xdata()) == pytest.approx([30.0, 50.0, 72.0])
    assert list(lines[1].get_ydata()) == pytest.approx([summary.loc["unfrozen", f"val_acc_{n}_median"]
                                                         for n in (1, 2, 3)])
    assert "s" in ax.get_xlabel() and ax.get_xlim()[0] == 0


def test_several_result_sets_share_panels_with_their_own_line_style_and_hatch(golden, tmp_path, records):
    other = store.read_runs(other_set(golden, tmp_path))
    figs = plots.figures([("cpu", records), ("gpu", other)])
    (ax,) = axes(figs["accuracy"])
    lines = ax.get_lines()
    assert len(lines) == 6
    assert [line.get_label() for line in lines[:2]] == ["Frozen weights · cpu (n=2)", "Frozen weights · gpu (n=2)"]
    assert lines[0].get_color() == lines[1].get_color() and lines[0].get_linestyle() != lines[1].get_linestyle()
    assert list(lines[1].get_ydata()) == pytest.approx([0.66, 0.705, 0.76])
    for ax in axes(figs["epoch_time"]):
        assert len(bars(ax)) == 6
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cpu", "gpu"]
        assert len({b.get_hatch() for b in bars(ax)}) == 2
    note = footnote(figs["tradeoff"])
    assert "cpu: CPU: Test CPU" in note and "gpu: GPU: Test GPU" in note


def test_runs_without_a_counterpart_are_left_out_and_said(golden, tmp_path, records):
    def longer_scratch(rec):
        if rec["config"]["mode"] == "scratch":
            rec["config"]["train_size"] = 2000

    other = store.read_runs(other_set(golden, tmp_path, longer_scratch))
    fig = plots.figures([("a", records), ("b", other)])["accuracy"]
    assert [line.get_label() for line in axes(fig)[0].get_lines()] == [
        "Frozen weights · a (n=2)", "Frozen weights · b (n=2)",
        "Unfrozen weights · a (n=2)", "Unfrozen weights · b (n=2)"]
    assert "a: 2 run(s) with no counterpart" in footnote(fig)


def test_result_sets_with_nothing_in_common_are_refused(golden, tmp_path, records):
    other = store.read_runs(other_set(golden, tmp_path, lambda rec: rec["config"].update(epochs=9)))
    with pytest.raises(UserError, match="share no run configuration"):
        plots.figures([("a", records), ("b", other)])


def test_write_saves_png_and_svg_into_figures(golden, records):
    paths = plots.write(golden, records)
    assert sorted(p.name for p in paths) == sorted(f"{n}.{e}" for n in plots.NAMES for e in ("png", "svg"))
    for p in paths:
        assert p.parent == golden / "figures" and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" if p.suffix == ".png" else b"<svg" in p.read_bytes()
    assert plots.write(golden, []) == []


def test_plotting_never_imports_tensorflow_or_keras(golden):
    code = ("import sys; from bench import plots, report, store; "
            f"report.write({str(golden)!r}); "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_cli_plot_one_folder_and_several(golden, tmp_path):
    p = tlbench("plot", golden)
    assert p.returncode == 0, p.stderr
    assert (golden / "figures" / "accuracy.png").is_file() and "wrote" in p.stdout
    other = other_set(golden, tmp_path)
    p = tlbench("plot", golden, other, "--label", "cpu", "--label", "gpu", "--out", tmp_path / "cmp")
    assert p.returncode == 0, p.stderr
    assert {f.name for f in (tmp_path / "cmp").iterdir()} == {f"{n}.{e}" for n in plots.NAMES for e in ("png", "svg")}
    assert "gpu" in (tmp_path / "cmp" / "accuracy.svg").read_text()


@pytest.mark.parametrize("args, message", [
    (["--label", "only-one"], "one per results folder"),
    ([], "--out"),
    (["--label", "x", "--label", "x", "--out", "somewhere"], "distinct labels"),
])
def test_cli_plot_bad_arguments(golden, tmp_path, args, message):
    p = tlbench("plot", golden, other_set(golden, tmp_path), *args)
    assert p.returncode == 2 and message in p.stderr


def test_a_record_of_other_settings_gets_its_own_panel_and_leaves_the_others_alone(golden, records):
    before = plots.figures([(None, records)])["accuracy"]
    (ref,) = axes(before)
    rec = json.loads((golden / "runs" / "mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536.json").read_text())
    rec["config"]["epochs"], rec["run_id"] = 5, rec["run_id"] + "-stale"
    for e in rec["epochs"]:
        e["val_accuracy"] = 0.1
    after = plots.figures([(None, records + [rec])])["accuracy"]
    main, stale = axes(after)
    assert "epochs=3" in main.get_title() and "epochs=5" in stale.get_title()
    assert [list(line.get_ydata()) for line in main.get_lines()] == [list(line.get_ydata()) for line in ref.get_lines()]
    assert [line.get_label() for line in stale.get_lines()] == ["Frozen weights (n=1)"]
    assert list(stale.get_lines()[0].get_ydata()) == pytest.approx([0.1, 0.1, 0.1])


def subtitle(fig) -> str:
    (text,) = [t for t in fig.texts if t.get_gid() == "subtitle"]
    return text.get_text().replace("\n", " · ")


def test_each_panel_states_n_and_the_spread_it_draws(records):
    figs = plots.figures([(None, records)])
    (acc,) = axes(figs["accuracy"])
    first, steady = axes(figs["epoch_time"])
    # scratch: one finished run of two, so no band and one first epoch; its two steady epochs have a range
    mixed = "median and interquartile range of n = 1–2 runs (none drawn for n = 1)"
    assert acc.get_title().splitlines()[-1] == first.get_title().splitlines()[-1] == mixed
    assert steady.get_title().splitlines()[-1] == "median and interquartile range of n = 2–4 steady epochs"
    two_modes = plots.figures([(None, [r for r in records if r["config"]["mode"] != "scratch"])])
    assert axes(two_modes["accuracy"])[0].get_title().endswith("\nmedian and interquartile range of n = 2 runs")
    assert [ax.get_title().splitlines()[-1] for ax in axes(two_modes["epoch_time"])] == [
        "median and interquartile range of n = 2 runs", "median and interquartile range of n = 4 steady epochs"]
    single = plots.figures([(None, [r for r in records if r["config"]["repeat"] == 0])])
    assert axes(single["accuracy"])[0].get_title().endswith("\none run each: no spread drawn")


def test_panels_of_a_figure_share_one_y_scale(golden, records):
    rec = json.loads((golden / "runs" / "mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536.json").read_text())
    rec["config"]["epochs"], rec["run_id"] = 5, rec["run_id"] + "-stale"
    for e in rec["epochs"]:
        e["val_accuracy"], e["epoch_seconds"] = 0.1, 100.0
    figs = plots.figures([(None, records + [rec])])
    for name, count in (("accuracy", 2), ("epoch_time", 4), ("tradeoff", 2)):
        shown = axes(figs[name])
        assert len(shown) == count and len({ax.get_ylim() for ax in shown}) == 1, name
    acc, _ = axes(figs["accuracy"])
    assert acc.get_ylim()[0] < 0.1 and acc.get_ylim()[1] > 0.76  # the stale panel's 10% fits the main panel's scale
    assert max(ax.get_ylim()[1] for ax in axes(figs["epoch_time"])) > 100


def test_time_axes_say_validation_is_included_and_plot_it(records):
    figs = plots.figures([(None, records)])
    labels = [text for fig in figs.values() for ax in axes(fig) for text in (ax.get_xlabel(), ax.get_ylabel())]
    assert "Time per epoch (s), training + validation" in labels
    assert "Cumulative time (s, wall clock), training + validation" in labels
    assert not [text for text in labels if "(s" in text and "second" in text.lower()]  # the unit said twice
    # the tradeoff's x is the runs' own training plus validation seconds, summed per epoch (median of the repeats)
    frozen = [r for r in records if r["config"]["mode"] == "frozen"]
    sums = [[sum(e["train_seconds"] + e["val_seconds"] for e in r["epochs"][:n]) for r in frozen] for n in (1, 2, 3)]
    (line, *_) = axes(figs["tradeoff"])[0].get_lines()
    assert list(line.get_xdata()) == pytest.approx([sum(s) / 2 for s in sums])


def test_subtitle_names_images_batch_and_hardware(golden, tmp_path, records):
    figs = plots.figures([(None, records)])
    for fig in figs.values():
        assert subtitle(fig) == "1,000 training / 500 validation images · batch 32 · CPU: Test CPU, 2 cores"
    loaded = [{**r, "data": {"train_images": 960, "val_images": 480}} if r["config"]["mode"] == "frozen" else r
              for r in records]  # the images a run loaded, where its record has them, over its configuration
    assert subtitle(plots.figures([(None, loaded)])["accuracy"]).startswith(
        "960, 1,000 training / 480, 500 validation images · batch 32")
    other = store.read_runs(other_set(golden, tmp_path))
    assert subtitle(plots.figures([("cpu", records), ("gpu", other)])["epoch_time"]).endswith(
        "batch 32 · cpu: CPU: Test CPU, 2 cores · gpu: GPU: Test GPU, 2 cores")


def test_modes_on_random_weights_are_not_labelled_pretrained(records):
    random = [{**r, "config": {**r["config"], "weights": "none"}} for r in records]
    figs = plots.figures([(None, random)])
    (acc,) = axes(figs["accuracy"])
    assert [line.get_label() for line in acc.get_lines()] == [
        "Frozen weights · random init (n=2)", "Unfrozen weights · random init (n=2)",
        "No pre-trained weights (n=1; 1 of 2 runs failed)"]
    assert [t.get_text() for t in axes(figs["epoch_time"])[0].get_xticklabels()] == [
        "Frozen weights\nrandom init", "Unfrozen weights\nrandom init", "No\npre-trained weights"]


def test_re_plotting_the_same_records_gives_identical_files(golden, tmp_path):
    first = plots.write_sets(tmp_path / "a", [(None, store.read_runs(golden))])
    second = plots.write_sets(tmp_path / "b", [(None, store.read_runs(golden))])
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    svg = (tmp_path / "a" / "accuracy.svg").read_text()
    assert "<dc:date>" not in svg and "Matplotlib v" not in svg and "<dc:title>tlbench</dc:title>" in svg
    assert b"Software" not in (tmp_path / "a" / "accuracy.png").read_bytes()


# --- diagnostics (bench.diagnostics): the comparison table's footnote marks on the lines and bars ---------------

def texts(fig) -> list[str]:
    """Every legend entry and text drawn in the panels (bar labels, notes)."""
    return [t.get_text() for ax in axes(fig) for t in [*(ax.get_legend().get_texts() if ax.get_legend() else []),
                                                       *ax.texts]]


def legend(fig) -> list[str]:
    return [t.get_text() for t in axes(fig)[0].get_legend().get_texts()]


def diagnose(records) -> list[dict]:
    """The golden records with scratch r0 at chance on validation while training reaches 85 %, and a steady
    epoch of unfrozen r1 (41.7 s) slower than its first (31 s)."""
    for rec in records:
        if rec["run_id"].startswith("mobilenet_v2-fashion_mnist-scratch-r0"):
            rec["data"] = {"classes": 10}
            for e, train in zip(rec["epochs"], (0.6, 0.75, 0.85)):
                e["val_accuracy"], e["accuracy"] = 0.109, train
        if rec["run_id"].startswith("mobilenet_v2-fashion_mnist-unfrozen-r1"):
            rec["epochs"][2]["epoch_seconds"] = 41.7
    return records


def test_figures_of_clean_records_carry_no_diagnostics_mark(records):
    # the golden records' own diagnostics are what every figure states anyway: frozen's first epoch is mostly
    # compilation (the panel's title says so), scratch has one finished run (its n says so)
    assert {d.name for ds in diagnostics.for_records(records).values() for d in ds} == {"compile-dominated"}
    for fig in plots.figures([(None, records)]).values():
        assert not [t for t in texts(fig) if "⁽" in t]
        assert "Diagnostics" not in footnote(fig)


def test_a_diagnosed_line_or_bar_carries_the_tables_mark_explained_in_the_footnote(records):
    records = diagnose(records)
    group = {r["run_id"]: tables.group_key(r) for r in records}
    table = diagnostics.markers(records)
    # 1 compile-dominated (frozen), 5 too-few-samples (scratch): marked in the table, said by the figures anyway
    assert table.mark(group["mobilenet_v2-fashion_mnist-scratch-r0-822221e331"], "accuracy@3") == "⁽³⁾⁽⁴⁾⁽⁵⁾"
    assert table.mark(group["mobilenet_v2-fashion_mnist-unfrozen-r1-1f3597d8ea"], "seconds_per_epoch") == "⁽²⁾"
    figs = plots.figures([(None, records)])
    assert legend(figs["accuracy"]) == [*LABELS[:2], LABELS[2] + "⁽³⁾⁽⁴⁾"]  # unfrozen's is about time alone
    assert legend(figs["tradeoff"]) == [LABELS[0], LABELS[1] + "⁽²⁾", LABELS[2] + "⁽³⁾⁽⁴⁾"]
    assert texts(figs["epoch_time"]) == ["11.5 s\nn=2", "30.5 s⁽²⁾\nn=2", "30.0 s\nn=1",
                                         "5.0 s\nn=4", "20.5 s⁽²⁾\nn=4", "21.0 s\nn=2"]
    did_not_learn = ("3. No pre-trained weights: did-not-learn (error) in 1 of 2 runs: validation accuracy is at "
                     "chance for 10 classes (10.9 % at epoch 3): training reached 85.0 %, so what it learnt does not "
                     "carry over to validation")
    slower = ("2. Unfrozen weights: steady-slower-than-first (warning) in 1 of 2 runs: steady epoch 3 took 41.7 s, "
              "longer than epoch 1 (31 s)")
    notes = {name: footnote(fig).split("\nDiagnostics marked above, numbered as in the comparison table "
                                       "(evidence: tlbench diagnose):\n")[1].splitlines()
             for name, fig in figs.items()}
    assert [line[:3] for line in notes["accuracy"]] == ["3. ", "4. "] and notes["accuracy"][0] == did_not_learn
    assert notes["accuracy"][1].startswith("4. No pre-trained weights: batchnorm-statistics (warning) in 1 of 2 runs")
    assert len(notes["epoch_time"]) == 1 and notes["epoch_time"][0].startswith(slower)
    assert notes["tradeoff"] == [notes["epoch_time"][0], *notes["accuracy"]]


def test_each_result_set_is_marked_with_its_own_tables_numbers(golden, tmp_path, records):
    def slow(rec):  # after other_set halved the times: its first epoch took 15.5 s
        if rec["run_id"].startswith("mobilenet_v2-fashion_mnist-unfrozen-r1"):
            rec["epochs"][2]["epoch_seconds"] = 40.0

    figs = plots.figures([("cpu", records), ("gpu", store.read_runs(other_set(golden, tmp_path, slow)))])
    assert [label for label in legend(figs["tradeoff"]) if "⁽" in label] == ["Unfrozen weights · gpu (n=2)⁽²⁾"]
    assert footnote(figs["tradeoff"]).endswith("\n2. Unfrozen weights · gpu: steady-slower-than-first (warning) in 1 "
                                               "of 2 runs: steady epoch 3 took 40 s, longer than epoch 1 (15.5 s) "
                                               "which carries compilation: something outside the model slowed it")
