"""The comparison table and the records CSVs, from golden records with hand-checkable numbers."""
import json

import pandas as pd
import pytest

from bench import store, tables
from conftest import tlbench

EXPECTED = """\
**mobilenet_v2 · fashion_mnist · 96 px · weights torchvision · tensorflow · float32**

| Training Mode | Val Acc @ 1 epoch | Val Acc @ 3 epoch | Time per epoch | First epoch |
|---|:---:|:---:|---:|---:|
| Frozen weights | 61.0% (60.0%–62.0%) | 71.0% (70.0%–72.0%) | 5.2 s (5.0 s–5.5 s) | 11.5 s (11.0 s–12.0 s) |
| Unfrozen weights | 45.0% (40.0%–50.0%) | 76.0% (75.0%–77.0%) | 20.5 s (20.0 s–21.0 s) | 30.5 s (30.0 s–31.0 s) |
| No pre-trained weights | 20.0% [1 failed] | 40.0% [1 failed] | 21.0 s [1 failed] | 30.0 s [1 failed] |
"""


def test_table_matches_golden(golden):
    text = tables.write(golden, store.read_runs(golden))
    assert text.startswith(EXPECTED)
    assert "Repeats: median (min–max)." in text
    assert (golden / "table.md").read_text() == text


def test_table_csv_holds_median_and_spread(golden):
    tables.write(golden, store.read_runs(golden))
    t = pd.read_csv(golden / "table.csv").set_index("mode")
    assert t.loc["frozen", "val_acc_3_median"] == pytest.approx(0.71)
    assert t.loc["frozen", "steady_epoch_seconds_min"] == pytest.approx(5.0)
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
