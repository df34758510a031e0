"""End to end: the real `tlbench run` command on tiny suites, asserting on the records it writes."""
import json

import pandas as pd
import pytest

from bench import tables
from conftest import ROOT, tlbench, unmarked

TINY = """\
name: tiny
defaults:
  epochs: 2
  batch_size: 16
  input_size: 32
  train_size: 64
  val_size: 32
  weights: none
  head: {dense: [32]}
datasets:
  patterns: {type: synthetic, image_size: 24, classes: 4, train: 96, test: 48}
matrix:
  backbone: mobilenet_v2_035
  dataset: patterns
  mode: [frozen, unfrozen, scratch]
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    (tmp / "tiny.yaml").write_text(TINY)
    p = tlbench("run", tmp / "tiny.yaml", "--results", tmp / "results")
    return p, tmp / "results" / "tiny"


def _records(folder):
    return {r["config"]["mode"]: r for r in map(json.loads, map(lambda f: f.read_text(),
                                                                sorted((folder / "runs").glob("*.json"))))}


def test_run_exits_0_and_shows_progress_with_eta(tiny_run):
    p, _ = tiny_run
    assert p.returncode == 0, p.stderr[-3000:]
    assert "run 1/3 mobilenet_v2_035 · patterns · frozen (ETA after the first run)" in p.stdout
    assert "run 3/3 mobilenet_v2_035 · patterns · scratch (ETA " in p.stdout
    assert "| Frozen weights · random init |" in p.stdout  # the table is printed at the end


def test_records_hold_epochs_timings_and_provenance(tiny_run):
    _, folder = tiny_run
    recs = _records(folder)
    assert set(recs) == {"frozen", "unfrozen", "scratch"}
    for mode, r in recs.items():
        assert r["status"] == "ok" and r["error"] is None
        assert r["config"]["mode"] == mode and r["config"]["train_size"] == 64
        assert r["data"]["train_images"] == 64 and r["data"]["val_images"] == 32 and r["data"]["classes"] == 4
        assert r["data"]["image_shape"] == [24, 24, 3]
        env = r["environment"]
        assert env["keras_backend"] == "tensorflow" and env["versions"]["keras"].startswith("3.")
        assert env["device"].startswith("CPU") and env["git"]["commit"] is None or len(env["git"]["commit"]) == 40
        assert r["xla"]["requested"] == "auto" and r["precision"] == "float32"
        assert [e["epoch"] for e in r["epochs"]] == [1, 2]
        assert [e["phase"] for e in r["epochs"]] == ["first", "steady"]
        for e in r["epochs"]:
            assert 0 <= e["val_accuracy"] <= 1 and e["train_images"] == 64
            assert e["epoch_seconds"] == pytest.approx(e["train_seconds"] + e["val_seconds"])
            assert e["images_per_second"] == pytest.approx(64 / e["train_seconds"])
    # the head alone trains when frozen: GAP(1280) -> Dense 32 -> Dense 4
    assert recs["frozen"]["params"]["trainable"] == 1280 * 32 + 32 + 32 * 4 + 4
    assert recs["unfrozen"]["params"]["trainable"] > 300_000
    # FLOPs per image (flops.py): everything trains unfrozen (3x the forward pass), only the head when frozen
    assert recs["unfrozen"]["flops"]["train"] == 3 * recs["unfrozen"]["flops"]["forward"] > 0
    assert recs["frozen"]["flops"]["forward"] == recs["unfrozen"]["flops"]["forward"]
    head = 2 * (1280 * 32 + 32 * 4)  # multiply-adds of the two Dense layers, 2 FLOPs each
    assert recs["frozen"]["flops"]["train"] == recs["frozen"]["flops"]["forward"] + 2 * head
    # the training loss goes down: the model learns something
    assert recs["scratch"]["epochs"][1]["loss"] < recs["scratch"]["epochs"][0]["loss"]


def test_epochs_csv_and_table_cells_equal_the_records(tiny_run):
    _, folder = tiny_run
    recs = _records(folder)
    ep = pd.read_csv(folder / "epochs.csv")
    assert len(ep) == 6
    row = ep[(ep["mode"] == "unfrozen") & (ep.epoch == 2)].iloc[0]
    assert row.val_accuracy == pytest.approx(recs["unfrozen"]["epochs"][1]["val_accuracy"])
    table = unmarked((folder / "table.md").read_text())
    frozen = recs["frozen"]["epochs"]
    assert (f"| Frozen weights · random init | {tables.pct(frozen[0]['val_accuracy'])} n=1 | {tables.pct(frozen[1]['val_accuracy'])} n=1 "
            f"| {tables.secs(frozen[1]['epoch_seconds'])} n=1 | {tables.secs(frozen[0]['epoch_seconds'])} n=1 |") in table
    assert (folder / "suite.yaml").read_text() == TINY


def test_second_run_skips_recorded_runs(tiny_run):
    p, folder = tiny_run
    before = {f.name: f.stat().st_mtime for f in (folder / "runs").glob("*.json")}
    p = tlbench("run", folder.parent.parent / "tiny.yaml", "--results", folder.parent, "--quiet")
    assert p.returncode == 0
    assert p.stdout.count("already recorded") == 3
    assert {f.name: f.stat().st_mtime for f in (folder / "runs").glob("*.json")} == before


@pytest.mark.slow
def test_documents_suite_runs_shrunk_on_synthetic_data(tmp_path):
    p = tlbench("run", ROOT / "suites" / "udacity-inception-cifar10.yaml", "--results", tmp_path, "--quiet",
                "--set", "dataset=synthetic", "--set", "weights=none", "--set", "train_size=32",
                "--set", "val_size=16", "--set", "epochs=1", "--set", "input_size=75")
    assert p.returncode == 0, p.stderr[-3000:]
    recs = _records(tmp_path / "udacity-inception-cifar10")
    assert {m: (r["config"]["backbone"], r["config"]["input_size"], r["weights"]["source"], r["status"])
            for m, r in recs.items()} == {m: ("inception_v3", 75, "none", "ok") for m in ("frozen", "unfrozen", "scratch")}
