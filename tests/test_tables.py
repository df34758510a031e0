"""The comparison table and the records CSVs, from golden records with hand-checkable numbers."""
import json

import pandas as pd
import pytest

from bench import store, tables
from bench.errors import UserError
from bench.modes import MODES, Mode
from conftest import ROOT, tlbench, unmarked

EXPECTED = """\
**mobilenet_v2 · fashion_mnist · 96 px · weights torchvision · tensorflow · float32**

_CPU: Test CPU · 2 cores_

| Training Mode | Val Acc @ 1 epoch | Val Acc @ 3 epoch | Time per epoch | First epoch |
|---|:---:|:---:|---:|---:|
| Frozen weights | 61.0% [60.5–61.5] n=2 | 71.0% [70.5–71.5] n=2 | 5.0 s [5.0–5.2] n=4 | 11.5 s [11.2–11.8] n=2⁽¹⁾ |
| Unfrozen weights | 45.0% [42.5–47.5] n=2 | 76.0% [75.5–76.5] n=2 | 20.5 s [20.0–21.0] n=4 | 30.5 s [30.2–30.8] n=2 |
| No pre-trained weights | 20.0% n=1 (1 failed)⁽²⁾ | 40.0% n=1 (1 failed)⁽²⁾ | 21.0 s [20.5–21.5] n=2 (1 failed)⁽²⁾ \
| 30.0 s n=1 (1 failed)⁽²⁾ |

**Diagnostics**, numbered as the marks on the cells they concern:

1. compile-dominated (note): mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536: epoch 1 took 12 s against 5 s for a \
steady one: most of it is one-off tracing and compilation, not training (first / steady = 2.4); \
mobilenet_v2-fashion_mnist-frozen-r1-ae63b1da96: epoch 1 took 11 s against 5.5 s for a steady one: most of it is \
one-off tracing and compilation, not training (first / steady = 2.0)
2. too-few-samples (warning): over the row's runs: one finished run: its accuracy and first epoch are a single \
sample, with no spread to tell a difference from run-to-run noise (1 of 2 runs finished); over the row's runs: 2 \
steady epochs in all: too few for a time per epoch with a spread (2 < 3)
"""


def test_table_matches_golden(golden):
    text = tables.write(golden, store.read_runs(golden))
    assert text.startswith(EXPECTED)
    assert "Cells: median [interquartile range] n = number of samples." in text
    assert (golden / "table.md").read_text() == text


def test_table_csv_holds_median_and_spread(golden):
    tables.write(golden, store.read_runs(golden))
    t = pd.read_csv(golden / "table.csv").set_index("mode")
    assert t.loc["frozen", "val_acc_3_median"] == pytest.approx(0.71)
    assert t.loc["frozen", "steady_epoch_seconds_min"] == pytest.approx(5.0)
    # every steady epoch of every repeat is a sample: 5, 5 and 5, 6 seconds
    assert (t.loc["frozen", "steady_epoch_seconds_n"], t.loc["frozen", "steady_epoch_seconds_q3"]) == (4, 5.25)
    assert t.loc["frozen", "val_acc_1_n"] == 2 and t.loc["scratch", "val_acc_1_n"] == 1
    assert t.loc["unfrozen", "first_epoch_seconds_max"] == pytest.approx(31.0)
    assert (t.loc["scratch", "runs"], t.loc["scratch", "ok"], t.loc["scratch", "status"]) == (2, 1, "failed")
    # steady throughput = images / seconds of the training pass: 2 x 1000 / (0.8 x (5 + 5)) for repeat 0
    assert t.loc["frozen", "steady_images_per_second_max"] == pytest.approx(2000 / 8.0)


def test_epochs_to_show_is_an_option(golden):
    table, epochs = tables.summarise(store.read_runs(golden), [2])
    assert epochs == [2] and "| Val Acc @ 2 epoch |" in tables.markdown(table, epochs)
    assert table.set_index("mode").loc["unfrozen", "val_acc_2_median"] == pytest.approx(0.61)


def test_rebuild_writes_one_row_per_run_and_epoch(golden):
    store.rebuild(golden)
    ep = pd.read_csv(golden / "epochs.csv")
    assert list(ep.columns) == store.EPOCH_COLUMNS
    assert len(ep) == 5 * 3  # the failed run has no epochs
    assert set(ep.phase) == {"first", "steady"} and (ep[ep.epoch == 1].phase == "first").all()
    runs = pd.read_csv(golden / "runs.csv")
    assert len(runs) == 6 and (runs.status == "failed").sum() == 1
    assert runs.set_index("run_id").loc[runs.run_id[runs.status == "failed"].iloc[0], "error"] == (
        "RuntimeError: injected failure")


def test_corrupt_record_is_named(golden):
    (golden / "runs" / "bad.json").write_text("{not json")
    p = tlbench("table", golden)
    assert p.returncode == 2 and "corrupt record" in p.stderr and "bad.json" in p.stderr
    assert "Traceback" not in p.stderr


def test_table_of_a_folder_without_results(tmp_path):
    p = tlbench("table", tmp_path)
    assert p.returncode == 2 and "holds no results" in p.stderr


def test_cli_table_prints_what_it_writes(golden):
    p = tlbench("table", golden, "--epochs", "1,2")
    assert p.returncode == 0, p.stderr
    assert "| Val Acc @ 1 epoch | Val Acc @ 2 epoch |" in p.stdout
    assert p.stdout.startswith((golden / "table.md").read_text())


def test_epochs_no_run_reached_are_refused_and_nothing_is_rewritten(golden):
    records = store.read_runs(golden)
    for asked, missing in (([1, 7], "7"), ([0], "0"), ([0, 2, 9], "0, 9")):
        with pytest.raises(UserError) as e:
            tables.render(records, asked)
        assert str(e.value) == f"--epochs: no run reached epoch {missing}; the runs have epochs 1–3"
    (golden / "table.md").write_text("kept")
    p = tlbench("table", golden, "--epochs", "7")
    assert p.returncode == 2 and "no run reached epoch 7; the runs have epochs 1–3" in p.stderr
    assert "Traceback" not in p.stderr and (golden / "table.md").read_text() == "kept"
    assert not (golden / "table.csv").exists()


def test_by_default_each_block_shows_epoch_1_and_its_own_last_epoch(golden):
    """A 5-epoch block beside the 3-epoch one, and a run of the 3-epoch block that crashed after epoch 2:
    no block gets another's last epoch, nor the crashed run's."""
    path = golden / "runs" / "mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536.json"
    rec = json.loads(path.read_text())
    rec["config"].update(epochs=5, input_size=128)
    rec["epochs"] += [dict(rec["epochs"][-1], epoch=n, val_accuracy=0.8) for n in (4, 5)]
    rec["run_id"] += "-128"
    (golden / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    crashed = golden / "runs" / "mobilenet_v2-fashion_mnist-scratch-r1-165e8ff13a.json"
    rec = json.loads(crashed.read_text())
    rec["epochs"] = json.loads((golden / "runs" / "mobilenet_v2-fashion_mnist-scratch-r0-822221e331.json")
                               .read_text())["epochs"][:2]
    crashed.write_text(json.dumps(rec))
    text = tables.write(golden, store.read_runs(golden))
    headers = [line for line in text.splitlines() if line.startswith("| Training Mode")]
    assert headers == ["| Training Mode | Val Acc @ 1 epoch | Val Acc @ 3 epoch | Time per epoch | First epoch |",
                       "| Training Mode | Val Acc @ 1 epoch | Val Acc @ 5 epoch | Time per epoch | First epoch |"]
    assert "| Frozen weights | 60.0% n=1⁽³⁾ | 80.0% n=1⁽³⁾ |" in text.split("128 px")[1]  # one run: too few samples
    t = pd.read_csv(golden / "table.csv")
    assert sorted(c for c in t.columns if c.endswith("_median") and c.startswith("val_acc")) == [
        "val_acc_1_median", "val_acc_3_median", "val_acc_5_median"]
    assert sorted(t.last_epoch) == [3, 3, 3, 5]


def test_rows_follow_the_mode_registry_least_trained_first(monkeypatch):
    # a mode registered later sorts by what it does (pretrained, trains), not last as an unknown one does
    monkeypatch.setitem(MODES._items, "partial", Mode("partial", "Partly unfrozen", pretrained=True, trainable=True))
    assert sorted(["scratch", "frozen-cached", "unfrozen", "brand-new", "partial", "frozen"],
                  key=lambda m: tables.mode_order({"mode": m})) == [
        "frozen", "frozen-cached", "partial", "unfrozen", "scratch", "brand-new"]
    rows = [{"mode": "frozen", "strategy": "cut-early"}, {"mode": "frozen", "recipe": "modern"}, {"mode": "frozen"}]
    assert sorted(rows, key=tables.mode_order) == [rows[2], rows[1], rows[0]]


def test_one_markdown_table_writer_escapes_and_aligns():
    frame = pd.DataFrame([["a|b", 1.5, None], ["two\nlines", float("nan"), "x"]], columns=["Name", "Value", "|"])
    assert tables.markdown_table(frame, "lrc") == (
        "| Name | Value | \\| |\n|---|---:|:---:|\n| a\\|b | 1.5 |  |\n| two lines |  | x |")
    with pytest.raises(ValueError):
        tables.markdown_table(frame, "lr")


def test_csvs_hold_parameters_flops_and_peak_memory(golden):
    path = golden / "runs" / "mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536.json"
    rec = json.loads(path.read_text())
    rec.update(flops={"forward": 300_000_000, "train": 310_000_000, "uncounted": []},
               memory={"host_peak_rss_bytes": 2**31, "accelerator_peak_bytes": 2**30})
    path.write_text(json.dumps(rec))
    store.rebuild(golden)
    tables.write(golden, store.read_runs(golden))
    runs = pd.read_csv(golden / "runs.csv").set_index("run_id").loc[rec["run_id"]]
    assert (runs.trainable_params, runs.non_trainable_params) == (2_000_000, 34112)
    assert (runs.forward_gflops_per_image, runs.train_gflops_per_image) == (0.3, 0.31)
    assert (runs.host_peak_rss_gib, runs.accelerator_peak_gib) == (2.0, 1.0)
    t = pd.read_csv(golden / "table.csv").set_index("mode")
    assert t.loc["frozen", "forward_gflops_per_image"] == 0.3 and t.loc["frozen", "train_gflops_per_image"] == 0.31
    assert t.loc["frozen", "trainable_params"] == 2_000_000 and t.loc["frozen", "non_trainable_params"] == 34112
    assert t.loc["frozen", "host_peak_rss_gib_median"] == 2.0 and t.loc["frozen", "accelerator_peak_gib_max"] == 1.0
    assert pd.isna(t.loc["unfrozen", "forward_gflops_per_image"])  # a record made before FLOPs were counted


def _add_record(folder, source, change, suffix):
    """A copy of one golden record with another setting, as a stale or foreign run would leave it."""
    rec = json.loads((folder / "runs" / source).read_text())
    change(rec["config"])
    rec["run_id"] += suffix
    (folder / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))


def _rows(text: str) -> dict[str, str]:
    """Each row's line, without the diagnostics' footnote marks."""
    return {line.split(" | ")[0].strip("| "): line for line in unmarked(text).splitlines() if line.startswith("| ")}


def test_a_record_of_other_settings_is_a_row_of_its_own_and_changes_no_other_cell(golden):
    before = tables.write(golden, store.read_runs(golden))
    # A stale frozen run of 5 epochs with a larger batch, its numbers far from the others'.
    _add_record(golden, "mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536.json",
                lambda c: c.update(epochs=5, batch_size=64), "-stale")
    after = tables.write(golden, store.read_runs(golden), [1, 3])
    # the original block's rows, cell for cell (footnotes renumber: the stale row's come first)
    assert unmarked(before.split("\n\n")[3]) in unmarked(after)
    # The block splits by what differs within a mode, and says so in its title.
    assert "**mobilenet_v2 · fashion_mnist · 96 px · weights torchvision · tensorflow · float32 · " \
           "batch_size=32, epochs=3**" in after
    stale = unmarked(after.split("batch_size=64, epochs=5**")[1])
    assert "| Frozen weights | 60.0% n=1 | 70.0% n=1 | 5.0 s [5.0–5.0] n=2 | 12.0 s n=1 |" in stale
    assert "Unfrozen" not in stale
    t = tables.summarise(store.read_runs(golden), [1, 3])[0]
    assert len(t) == 4 and sorted(t[t["mode"] == "frozen"].runs) == [1, 2]


def test_a_setting_that_differs_only_between_modes_is_noted_not_split(golden):
    for path in (golden / "runs").glob("*unfrozen*.json"):
        rec = json.loads(path.read_text())
        rec["config"]["learning_rate"] = 1e-4  # a suite override for unfrozen runs
        path.write_text(json.dumps(rec))
    text = tables.write(golden, store.read_runs(golden))
    assert text.count("**mobilenet_v2") == 1
    rows = _rows(text)
    assert "Unfrozen weights (learning_rate=0.0001)" in rows and "Frozen weights (learning_rate=0.001)" in rows


def test_runs_of_another_machine_are_not_pooled(golden):
    _add_record(golden, "mobilenet_v2-fashion_mnist-unfrozen-r0-43900ae459.json", lambda c: None, "-elsewhere")
    path = golden / "runs" / "mobilenet_v2-fashion_mnist-unfrozen-r0-43900ae459-elsewhere.json"
    rec = json.loads(path.read_text())
    rec["environment"]["cpu_count"] = 64
    path.write_text(json.dumps(rec))
    t = tables.summarise(store.read_runs(golden), [1, 3])[0]
    unfrozen = t[t["mode"] == "unfrozen"].set_index("hardware")
    assert unfrozen.loc["CPU: Test CPU · 2 cores", "runs"] == 2
    assert unfrozen.loc["CPU: Test CPU · 64 cores", "runs"] == 1
    assert set(t.variant) == {"hardware=CPU: Test CPU · 2 cores", "hardware=CPU: Test CPU · 64 cores"}


def test_a_swept_setting_gives_a_block_per_value_in_natural_order_and_strategies_are_rows(golden):
    """A matrix sweep of train_size (all modes at 250 and at 1000) and a strategy of the frozen mode."""
    before = _rows(tables.write(golden, store.read_runs(golden)))
    for path in list((golden / "runs").glob("*.json")):
        _add_record(golden, path.name, lambda c: c.update(train_size=250), "-n250")
        rec = json.loads(path.read_text())
        rec["config"]["train_size"] = 1000
        path.write_text(json.dumps(rec))
    _add_record(golden, "mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536.json",
                lambda c: c.update(train_size=1000, strategy="cut-early", cut="early"), "-cut")
    text = tables.write(golden, store.read_runs(golden))
    titles = [line for line in text.splitlines() if line.startswith("**mobilenet_v2")]
    assert [t.rsplit(" · ", 1)[1] for t in titles] == ["train_size=250**", "train_size=1000**"]
    at_1000 = _rows(text.split("train_size=1000**")[1])
    # the sweep pools nothing: each row of each block has the golden cells (the same runs, renamed)
    assert at_1000["Frozen weights"].split(" | ")[1:] == before["Frozen weights"].split(" | ")[1:]
    assert at_1000["cut-early (cut=early)"].startswith("| cut-early (cut=early) | 60.0% n=1 |")
    assert list(at_1000)[:2] == ["Training Mode", "Frozen weights"] and list(at_1000)[2] == "cut-early (cut=early)"
    t = tables.summarise(store.read_runs(golden))[0]
    assert sorted(t.runs) == [1, 2, 2, 2, 2, 2, 2] and set(t.kind) == {"frozen", "cut-early", "unfrozen", "scratch"}


def test_a_diagnostic_marks_exactly_the_cells_it_concerns_and_is_explained_under_the_table(golden):
    """Unfrozen at chance at epoch 3 with training at 80 %: its @3 cell alone gets did-not-learn and BatchNorm."""
    for path in (golden / "runs").glob("*unfrozen*.json"):
        rec = json.loads(path.read_text())
        rec["data"] = {"classes": 10, "train_images": 1000, "val_images": 500}
        rec["epochs"][2]["val_accuracy"] = 0.1
        path.write_text(json.dumps(rec))
    text = tables.write(golden, store.read_runs(golden))
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["Unfrozen weights"] == ("| Unfrozen weights | 45.0% [42.5–47.5] n=2 | 10.0% [10.0–10.0] n=2⁽²⁾⁽³⁾ "
                                        "| 20.5 s [20.0–21.0] n=4 | 30.5 s [30.2–30.8] n=2 |")
    notes = text.split("**Diagnostics**, numbered as the marks on the cells they concern:\n\n")[1].split("\n\n")[0]
    lines = notes.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["1. compile-dominated", "2. did-not-learn",
                                                       "3. batchnorm-statistics", "4. too-few-samples"]
    assert ("mobilenet_v2-fashion_mnist-unfrozen-r1-1f3597d8ea: validation accuracy is at chance for 10 classes "
            "(10.0 % at epoch 3): training reached 82.0 %") in lines[1]
    assert "(chance 10.0 % + 2.6 % binomial margin on 500 images (≤ 12.6 %); at chance at epochs 3)" in lines[1]
    t = pd.read_csv(golden / "table.csv").set_index("mode")
    assert t.loc["unfrozen", "diagnostics"] == "did-not-learn batchnorm-statistics"
    assert (t.loc["frozen", "diagnostics"], t.loc["scratch", "diagnostics"]) == ("compile-dominated", "too-few-samples")


def test_clean_records_table_has_no_mark_nor_footnote():
    """The published records this session's replaced (in superseded/): no diagnostic, so no mark."""
    folder = ROOT / "results" / "published" / "offline-default" / "superseded"
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    text, table = tables.render(records)
    assert text == tables.markdown(table) and "⁽" not in text and "Diagnostics" not in text
    assert set(table.diagnostics) == {""}


def test_the_published_table_marks_its_one_noisy_cell():
    text, table = tables.render(store.read_runs(ROOT / "results" / "published" / "offline-default"))
    assert text.count("⁽¹⁾") == 1 and "⁽²⁾" not in text  # on the one cell; the note below is "1."
    assert "| 44.9 s [42.4–45.7] n=12⁽¹⁾ |" in text and "\n1. noisy-timing (warning): " in text
    assert list(table.diagnostics) == ["", "", "noisy-timing"]
