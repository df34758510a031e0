"""The comparison table and the records CSVs, from golden records with hand-checkable numbers."""
import json

import pandas as pd
import pytest

from bench import store, tables
from conftest import tlbench

EXPECTED = """\
**mobilenet_v2 · fashion_mnist · 96 px · weights torchvision · tensorflow · float32**

_CPU: Test CPU · 2 cores_

| Training Mode | Val Acc @ 1 epoch | Val Acc @ 3 epoch | Time per epoch | First epoch |
|---|:---:|:---:|---:|---:|
| Frozen weights | 61.0% [60.5–61.5] n=2 | 71.0% [70.5–71.5] n=2 | 5.0 s [5.0–5.2] n=4 | 11.5 s [11.2–11.8] n=2 |
| Unfrozen weights | 45.0% [42.5–47.5] n=2 | 76.0% [75.5–76.5] n=2 | 20.5 s [20.0–21.0] n=4 | 30.5 s [30.2–30.8] n=2 |
| No pre-trained weights | 20.0% n=1 (1 failed) | 40.0% n=1 (1 failed) | 21.0 s [20.5–21.5] n=2 (1 failed) | 30.0 s n=1 (1 failed) |
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
    assert (golden / "table.md").read_text() == p.stdout


def _add_record(folder, source, change, suffix):
    """A copy of one golden record with another setting, as a stale or foreign run would leave it."""
    rec = json.loads((folder / "runs" / source).read_text())
    change(rec["config"])
    rec["run_id"] += suffix
    (folder / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))


def _rows(text: str) -> dict[str, str]:
    return {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}


def test_a_record_of_other_settings_is_a_row_of_its_own_and_changes_no_other_cell(golden):
    before = tables.write(golden, store.read_runs(golden))
    # A stale frozen run of 5 epochs with a larger batch, its numbers far from the others'.
    _add_record(golden, "mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536.json",
                lambda c: c.update(epochs=5, batch_size=64), "-stale")
    after = tables.write(golden, store.read_runs(golden), [1, 3])
    assert before.split("\n\n")[3] in after  # the original block's rows, cell for cell
    # The block splits by what differs within a mode, and says so in its title.
    assert "**mobilenet_v2 · fashion_mnist · 96 px · weights torchvision · tensorflow · float32 · " \
           "batch_size=32, epochs=3**" in after
    stale = after.split("batch_size=64, epochs=5**")[1]
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
    assert unfrozen.loc["CPU: Test CPU · 2 cores", "runs"] == 2 and unfrozen.loc["CPU: Test CPU · 64 cores", "runs"] == 1
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
    titles = [line for line in text.splitlines() if line.startswith("**")]
    assert [t.rsplit(" · ", 1)[1] for t in titles] == ["train_size=250**", "train_size=1000**"]
    at_1000 = _rows(text.split("train_size=1000**")[1])
    # the sweep pools nothing: each row of each block has the golden cells (the same runs, renamed)
    assert at_1000["Frozen weights"].split(" | ")[1:] == before["Frozen weights"].split(" | ")[1:]
    assert at_1000["cut-early (cut=early)"].startswith("| cut-early (cut=early) | 60.0% n=1 |")
    assert list(at_1000)[:2] == ["Training Mode", "Frozen weights"] and list(at_1000)[2] == "cut-early (cut=early)"
    t = tables.summarise(store.read_runs(golden))[0]
    assert sorted(t.runs) == [1, 2, 2, 2, 2, 2, 2] and set(t.kind) == {"frozen", "cut-early", "unfrozen", "scratch"}
