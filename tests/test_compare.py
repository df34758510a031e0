"""tlbench compare / baseline: regression checks on crafted records (golden copies with edited numbers).

`gated`: three repeats of frozen and unfrozen made from golden's repeat 0, 2 % apart.
Golden, per mode, 2 repeats of 3 epochs (epoch 1 'first', 2-3 'steady'):
  frozen    steady s/epoch per run 5.0 / 5.5   val acc @1 60/62 %, @3 70/72 %
  unfrozen  20.0 / 21.0                        @1 40/50 %, @3 75/77 %
  scratch   22.0 median of 20, 22; repeat 1 failed (both sides)
"""
import json
import random
import shutil

import pytest

from bench import suite
from bench.baseline import machine_id
from bench.errors import SuiteErrors
from conftest import tlbench

H100 = {"device": "NVIDIA H100 80GB HBM3", "accelerators": [{"kind": "GPU", "name": "NVIDIA H100 80GB HBM3"}],
        "accelerator_count": 1}
REGRESSION_SUITE = """\
name: golden
matrix: {{backbone: mobilenet_v2, dataset: fashion_mnist, mode: [frozen, unfrozen, scratch]}}
regression: {body}
"""


@pytest.fixture
def sides(golden, tmp_path):
    """(baseline, current): two identical results folders to edit."""
    return golden, shutil.copytree(golden, tmp_path / "current")


def edit(folder, change, mode=None, repeat=None):
    """Apply change(record) to the runs of a results folder, optionally one mode / repeat only."""
    for path in (folder / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        if mode in (None, rec["config"]["mode"]) and repeat in (None, rec["config"]["repeat"]):
            change(rec)
            path.write_text(json.dumps(rec))


def slower(factor):
    def change(rec):
        for e in rec["epochs"]:
            for k in ("epoch_seconds", "train_seconds", "val_seconds"):
                e[k] *= factor
            e["images_per_second"] /= factor
    return change


def accuracy_minus(points):
    def change(rec):
        for e in rec["epochs"]:
            e["val_accuracy"] -= points / 100
    return change


def verdict(p, mode, metric) -> tuple[str, str]:
    """(change, verdict) of one row of the table compare printed: where each verdict is said, once."""
    (row,) = [line.split(" | ") for line in p.stdout.splitlines()
              if line.startswith(f"| mobilenet_v2 · fashion_mnist · {mode} | {metric} |")]
    return row[4], row[7]


def three_repeats(golden, folder, spread=(1.0, 1.02, 0.98)):
    """A results folder of 3 repeats of frozen and unfrozen, made from golden's repeat 0 with a small
    run-to-run spread (each repeat's times scaled, its accuracies nudged): what a gated suite records."""
    (folder / "runs").mkdir(parents=True)
    for mode in ("frozen", "unfrozen"):
        (src,) = (golden / "runs").glob(f"*-{mode}-r0-*.json")
        for r, factor in enumerate(spread):
            rec = json.loads(src.read_text())
            rec["config"]["repeat"] = r
            rec["run_id"] = rec["run_id"].replace("-r0-", f"-r{r}-")
            slower(factor)(rec)
            for e in rec["epochs"]:
                e["val_accuracy"] += (factor - 1) / 10
            (folder / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    return folder


@pytest.fixture
def gated(golden, tmp_path):
    """(baseline, current): two identical folders of three repeats each."""
    base = three_repeats(golden, tmp_path / "base")
    return base, shutil.copytree(base, tmp_path / "current3")


def jitter(amount, seed=0):
    rng = random.Random(seed)

    def change(rec):
        for e in rec["epochs"]:
            f = 1 + rng.uniform(-amount, amount)
            for k in ("epoch_seconds", "train_seconds", "val_seconds"):
                e[k] *= f
            e["images_per_second"] /= f
    return change


def test_identical_results_pass_and_write_the_report(sides):
    base, cur = sides
    p = tlbench("compare", base, cur)
    assert p.returncode == 0, p.stderr
    assert "**No regressions.**" in p.stdout and "same on both sides" in p.stdout
    assert (cur / "compare.md").read_text() in p.stdout
    assert "steady s/epoch" in (cur / "compare.csv").read_text()
    # failed runs are listed, not dropped
    assert "### Failed runs" in p.stdout and "scratch-r1-165e8ff13a: failed: RuntimeError: injected failure" in p.stdout


def test_25_percent_slower_with_three_repeats_regresses_naming_run_and_metric(gated):
    base, cur = gated
    edit(cur, slower(1.25))
    p = tlbench("compare", base, cur, "--out", cur / "report")
    assert p.returncode == 1, p.stdout + p.stderr
    # each regression once, in the table; compare.csv names its runs
    frozen = [line for line in (cur / "report" / "compare.csv").read_text().splitlines()
              if line.startswith("mobilenet_v2 · fashion_mnist · frozen,steady s/epoch,")]
    assert frozen and "mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536" in frozen[0]
    assert "95% interval excludes no change" in frozen[0] and ",+25.0%," in frozen[0]
    assert "| mobilenet_v2 · fashion_mnist · unfrozen | steady img/s |" in p.stdout and p.stderr == ""
    row = next(line for line in p.stdout.splitlines() if "frozen | steady s/epoch" in line)
    assert "(3 runs)" in row and "| REGRESSED |" in row
    assert (cur / "report" / "compare.md").is_file() and not (cur / "compare.md").exists()


def test_five_percent_jitter_passes(gated):
    base, cur = gated
    edit(cur, jitter(0.05))
    p = tlbench("compare", base, cur)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "**No regressions.**" in p.stdout


def test_a_slowdown_within_the_run_to_run_spread_is_inconclusive_and_says_how_many_runs_would_decide(sides):
    base, cur = sides
    # Golden's two frozen repeats differ by 10 %: with two runs a side, a 20 % slowdown is not shown.
    edit(cur, slower(1.2), mode="frozen")
    p = tlbench("compare", base, cur)
    assert p.returncode == 3, p.stdout + p.stderr
    row = next(line for line in p.stdout.splitlines() if "frozen | steady s/epoch" in line)
    assert "+20.0%" in row and "| inconclusive |" in row
    assert "interval includes no change (about 3 runs per side would decide" in row
    assert "**Inconclusive:" in p.stdout and p.stderr == ""  # each verdict once, in the table


def test_one_run_per_side_cannot_show_a_regression(sides):
    base, cur = sides
    for folder in (base, cur):
        edit(folder, lambda rec: rec.update(status="failed", epochs=[]), repeat=1)
    edit(cur, slower(1.5), mode="frozen")
    p = tlbench("compare", base, cur)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "one run per side: run-to-run noise cannot be estimated; use repeats: 3 or more" in p.stdout


def test_different_machine_load_makes_a_slowdown_inconclusive(gated):
    base, cur = gated
    edit(base, lambda rec: rec.update(load={"others_fraction": 0.02, "steal_fraction": 0.0}))
    edit(cur, lambda rec: rec.update(load={"others_fraction": 0.45, "steal_fraction": 0.01}))
    edit(cur, slower(1.3))
    p = tlbench("compare", base, cur)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "baseline 2.0%, current 46.0% — **different**" in p.stdout
    row = next(line for line in p.stdout.splitlines() if "frozen | steady s/epoch" in line)
    assert "the sides ran under different load" in row
    # Accuracy does not depend on the neighbours: still judged.
    assert "frozen | val acc @ epoch 3" in p.stdout


def test_same_load_is_said_and_does_not_block_a_verdict(gated):
    base, cur = gated
    for folder in (base, cur):
        edit(folder, lambda rec: rec.update(load={"others_fraction": 0.03, "steal_fraction": 0.01}))
    edit(cur, slower(1.25))
    p = tlbench("compare", base, cur)
    assert p.returncode == 1 and "baseline 4.0%, current 4.0% — comparable" in p.stdout


def test_nothing_in_common_is_bad_input_not_a_pass(sides):
    base, cur = sides
    edit(cur, lambda rec: rec["config"].update(learning_rate=0.5))
    p = tlbench("compare", base, cur)
    assert p.returncode == 2
    assert "nothing compared" in p.stderr and "differs in learning_rate: baseline 0.001, current 0.5" in p.stderr
    assert "Traceback" not in p.stderr


def test_an_epoch_no_run_has_is_bad_input(sides):
    base, cur = sides
    p = tlbench("compare", base, cur, "--epochs", "9")
    assert p.returncode == 2 and "no run on both sides has epoch 9" in p.stderr and "epochs 1–3" in p.stderr


@pytest.mark.parametrize("points, code", [(3, 1), (1, 0)])
def test_accuracy_drop_regresses_beyond_two_points(gated, points, code):
    base, cur = gated
    edit(cur, accuracy_minus(points), mode="frozen")
    p = tlbench("compare", base, cur)
    assert p.returncode == code, p.stdout + p.stderr
    if code:
        assert verdict(p, "frozen", "val acc @ epoch 3") == verdict(p, "frozen", "val acc @ epoch 1") == (
            "-3.0 pt", "REGRESSED")


def test_epochs_flag_picks_the_accuracy_epochs(gated):
    base, cur = gated
    edit(cur, accuracy_minus(3), mode="frozen")
    p = tlbench("compare", base, cur, "--epochs", "2")
    assert p.returncode == 1 and verdict(p, "frozen", "val acc @ epoch 2")[1] == "REGRESSED"
    assert "epoch 3" not in p.stdout


def test_mismatched_configurations_are_listed_as_unmatched(sides):
    base, cur = sides
    edit(cur, lambda rec: rec["config"].update(learning_rate=1e-4), mode="unfrozen")
    p = tlbench("compare", base, cur)
    assert p.returncode == 0, p.stderr
    assert "### Unmatched configurations" in p.stdout
    # the two share a short name, so the label adds what tells them apart
    assert ("only in baseline: mobilenet_v2 · fashion_mnist · unfrozen · learning_rate=0.001 "
            "(mobilenet_v2-fashion_mnist-unfrozen-r0") in p.stdout
    assert "only in current: mobilenet_v2 · fashion_mnist · unfrozen · learning_rate=0.0001" in p.stdout
    assert "differs in learning_rate: baseline 0.001, current 0.0001" in p.stdout
    assert "unfrozen | steady" not in p.stdout  # not compared
    assert "unmatched: only in current" in p.stderr


def test_a_run_failing_now_but_not_before_regresses(sides):
    base, cur = sides
    edit(cur, lambda rec: rec.update(status="failed", error="RuntimeError: OOM", epochs=[]), mode="frozen", repeat=0)
    p = tlbench("compare", base, cur)
    assert p.returncode == 1
    assert verdict(p, "frozen", "status") == ("failed", "REGRESSED")
    assert "| failed now, ok in the baseline: RuntimeError: OOM |" in p.stdout
    assert "current: mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536: failed: RuntimeError: OOM" in p.stdout


def test_a_different_core_count_is_different_hardware(sides):
    base, cur = sides
    edit(cur, lambda rec: rec["environment"].update(cpu_count=64))
    p = tlbench("compare", base, cur)
    assert p.returncode == 2 and "CPU: Test CPU · 2 cores" in p.stderr and "CPU: Test CPU · 64 cores" in p.stderr


def test_different_accelerator_is_refused_unless_forced(sides):
    base, cur = sides
    edit(cur, lambda rec: rec["environment"].update(H100))
    p = tlbench("compare", base, cur)
    assert p.returncode == 2
    assert "different hardware" in p.stderr and "CPU: Test CPU" in p.stderr and "NVIDIA H100" in p.stderr
    assert "--force-different-hardware" in p.stderr and not (cur / "compare.md").exists()

    p = tlbench("compare", base, cur, "--force-different-hardware")
    assert p.returncode == 0, p.stderr
    assert "**⚠ DIFFERENT HARDWARE" in p.stdout and "DIFFERENT HARDWARE (forced)" in p.stderr


def test_software_changes_are_noted_not_refused(sides):
    base, cur = sides
    edit(cur, lambda rec: rec["environment"]["versions"].update(keras="3.16.0", tensorflow="2.22.0"))
    p = tlbench("compare", base, cur)
    assert p.returncode == 0, p.stderr
    assert "Software changed (what this comparison tests): Keras 3.15.1 → 3.16.0; TensorFlow 2.21.0 → 2.22.0" in p.stdout


def test_bad_threshold_flag_and_missing_folder_are_bad_input(sides, tmp_path):
    base, cur = sides
    p = tlbench("compare", base, cur, "--time-threshold", "10")
    assert p.returncode == 2 and "--time-threshold" in p.stderr and "10%" in p.stderr
    p = tlbench("compare", base, tmp_path / "nothing")
    assert p.returncode == 2 and "no results" in p.stderr


def test_baseline_save_and_compare_against_it(sides, tmp_path):
    base, cur = sides
    root = tmp_path / "baselines"
    p = tlbench("baseline", "save", base, "--root", root)
    assert p.returncode == 0, p.stderr
    (saved,) = (root / "cpu-test-cpu-2c_tensorflow_linux" / "golden").glob("0001_*")
    assert len(list((saved / "runs").glob("*.json"))) == 6
    assert json.loads((saved / "machine.json").read_text())["device"] == "CPU: Test CPU"

    p = tlbench("compare", "--against-baseline", cur, "--root", root)
    assert p.returncode == 0, p.stderr
    assert f"baseline: {saved}" in p.stdout
    edit(cur, slower(1.2))
    assert tlbench("compare", "--against-baseline", cur, "--root", root).returncode == 1

    edit(cur, lambda rec: rec["environment"].update(H100))  # no baseline for this machine yet
    p = tlbench("compare", "--against-baseline", cur, "--root", root)
    assert p.returncode == 2
    assert "no baseline for machine 'nvidia-h100-80gb-hbm3-2c_tensorflow_linux'" in p.stderr
    assert "cpu-test-cpu-2c_tensorflow_linux/golden" in p.stderr  # what there is


def test_machine_id_keeps_model_count_backend_os_and_arch():
    env = {**H100, "accelerator_count": 2, "keras_backend": "jax",
           "platform": "Linux-5.15.0-1057-aws-x86_64-with-glibc2.35"}
    assert machine_id(env) == "nvidia-h100-80gb-hbm3-x2_jax_linux-x86_64"
    cpu = {"device": "CPU: Intel(R) Xeon(R) CPU @ 2.20GHz", "keras_backend": "tensorflow", "platform": "Linux"}
    assert machine_id(cpu) == "cpu-intel-xeon-2.20ghz_tensorflow_linux"
    # the cores the process may use are part of the machine: a 2-core VM is not a 64-core server
    assert machine_id({**cpu, "cpu_info": {"cores": 2}}) == "cpu-intel-xeon-2.20ghz-2c_tensorflow_linux"
    assert machine_id({**cpu, "cpu_info": {"cores": 64}}) == "cpu-intel-xeon-2.20ghz-64c_tensorflow_linux"


def test_thresholds_from_the_suite_and_flags_win(gated):
    base, cur = gated
    edit(cur, accuracy_minus(3), mode="frozen")
    edit(cur, slower(1.2), mode="unfrozen")
    (cur / "suite.yaml").write_text(REGRESSION_SUITE.format(
        body="{time: 25%, throughput: 20%, overrides: [{match: {mode: frozen}, accuracy: 5.0}]}"))
    p = tlbench("compare", base, cur)
    assert p.returncode == 0, p.stderr
    row = next(line for line in p.stdout.splitlines() if "frozen | val acc @ epoch 3" in line)
    assert "| -5 pt | ok |" in row
    assert "unfrozen | steady s/epoch" in p.stdout and "| +25.0% | ok |" in p.stdout
    csv = (cur / "compare.csv").read_text()
    assert "suite override 0" in csv and ",suite," in csv

    p = tlbench("compare", base, cur, "--accuracy-threshold", "2", "--time-threshold", "0.1")  # throughput: suite
    assert p.returncode == 1
    assert verdict(p, "frozen", "val acc @ epoch 3") == ("-3.0 pt", "REGRESSED")
    assert verdict(p, "unfrozen", "steady s/epoch") == ("+20.0%", "REGRESSED")


def test_invalid_regression_key_is_a_located_error(sides):
    base, cur = sides
    (cur / "suite.yaml").write_text(REGRESSION_SUITE.format(body="""
  time: 10
  speed: 1
  overrides:
    - {match: {mode: frozn}, accuracy: -1}"""))
    p = tlbench("compare", base, cur)
    assert p.returncode == 2
    assert "suite.yaml:4: regression.time: expected a fraction such as 0.10 or a percentage such as 10%" in p.stderr
    assert "suite.yaml:5: regression.speed: unknown key 'speed'" in p.stderr
    assert "regression.overrides[0].match.mode: 'frozn' is not in matrix.mode" in p.stderr
    assert "regression.overrides[0].accuracy: expected accuracy points" in p.stderr


def test_suite_exposes_its_regression_thresholds(write_suite):
    path = write_suite("""\
        name: t
        defaults: {weights: none, input_size: 32}
        matrix: {backbone: mobilenet_v2_035, dataset: synthetic, mode: [frozen, scratch]}
        regression: {time: 0.15, accuracy: 3, overrides: [{match: {mode: scratch}, accuracy: 5.0}]}
        """)
    s = suite.load(path)
    assert s.regression == {"time": 0.15, "accuracy": 3.0,
                            "overrides": [{"match": {"mode": ["scratch"]}, "accuracy": 5.0}]}
    assert suite.load(write_suite(path.read_text().replace("regression", "# regression"), "b.yaml")).regression == {}
    with pytest.raises(SuiteErrors, match="regression.throughput"):
        suite.load(write_suite(path.read_text().replace("time: 0.15", "throughput: 100%"), "c.yaml"))


def test_flagged_evidence_is_noted_beside_the_verdict_it_concerns(gated):
    """Two of the baseline's three frozen runs have noisy steady epochs (26.5 / 41.7 / 26.5 / 28.5 s, scaled)."""
    def five_epochs(rec):
        rec["config"]["epochs"] = 5
        rec["epochs"] += [dict(rec["epochs"][-1], epoch=n) for n in (4, 5)]

    def noisy(rec):
        for e, seconds in zip(rec["epochs"][1:], (5.3, 8.34, 5.3, 5.7)):
            factor = seconds / e["epoch_seconds"]
            for k in ("epoch_seconds", "train_seconds", "val_seconds"):
                e[k] *= factor
            e["images_per_second"] /= factor

    base, cur = gated
    for folder in (base, cur):
        edit(folder, five_epochs)
    for repeat in (0, 1):
        edit(base, noisy, mode="frozen", repeat=repeat)
    p = tlbench("compare", base, cur)
    rows = {(cells[0].rsplit(" · ", 1)[1], cells[1]): cells for cells in (line.split(" | ") for line in
                                                                           p.stdout.splitlines())
            if cells[0].startswith("| mobilenet_v2")}
    flag = "⚠ baseline: noisy-timing in 2 of 3 runs: the verdict rests on those runs (tlbench diagnose)"
    for metric in ("steady s/epoch", "steady img/s"):
        assert rows[("frozen", metric)][-1].endswith(f"; {flag} |"), rows[("frozen", metric)]
    flagged = [key for key, cells in rows.items() if "⚠" in cells[-1]]
    assert flagged == [("frozen", "steady s/epoch"), ("frozen", "steady img/s")]  # not accuracy, not unfrozen
    assert p.returncode == 0 and "**No regressions.**" in p.stdout  # flagged evidence is a note, not a verdict
