"""`tlbench diagnose RESULTS`: each configuration's diagnostics under its label and run ids, exit 0 (findings,
not errors); exit 2 on a folder without results or with a corrupt record, as the other reading commands."""
import json

from conftest import tlbench

BLOCK = "mobilenet_v2 · fashion_mnist · 96 px · weights torchvision · tensorflow · float32"
RUN = "mobilenet_v2-fashion_mnist-{}"


def test_golden_records_grouped_per_configuration(golden):
    p = tlbench("diagnose", golden)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    frozen, unfrozen, scratch = (RUN.format(m) for m in ("frozen-r{}", "unfrozen-r{}", "scratch-r{}"))
    assert p.stdout.splitlines() == [
        f"Frozen weights · {BLOCK}: runs {frozen.format('0-5e9b4c7536')}, {frozen.format('1-ae63b1da96')}",
        f"  run {frozen.format('0-5e9b4c7536')}",
        "    note compile-dominated: epoch 1 took 12 s against 5 s for a steady one: most of it is one-off tracing "
        "and compilation, not training",
        "      evidence: first / steady = 2.4",
        f"  run {frozen.format('1-ae63b1da96')}",
        "    note compile-dominated: epoch 1 took 11 s against 5.5 s for a steady one: most of it is one-off tracing "
        "and compilation, not training",
        "      evidence: first / steady = 2.0",
        f"Unfrozen weights · {BLOCK}: runs {unfrozen.format('0-43900ae459')}, {unfrozen.format('1-1f3597d8ea')}",
        "  no diagnostics",
        f"No pre-trained weights · {BLOCK}: runs {scratch.format('0-822221e331')}, {scratch.format('1-165e8ff13a')}",
        f"  configuration of {scratch.format('0-822221e331')}, {scratch.format('1-165e8ff13a')}",
        "    warning too-few-samples: one finished run: its accuracy and first epoch are a single sample, with no "
        "spread to tell a difference from run-to-run noise",
        "      evidence: 1 of 2 runs finished",
        "    warning too-few-samples: 2 steady epochs in all: too few for a time per epoch with a spread",
        "      evidence: 2 < 3",
        "6 runs, 3 configurations: 4 diagnostics (2 warnings, 2 notes)"]


def _edit(path, change):
    rec = json.loads(path.read_text())
    change(rec)
    path.write_text(json.dumps(rec))


def test_noisy_timing_and_validation_at_chance_are_listed_with_their_evidence_and_exit_0(golden):
    def noisy(rec):  # the disturbed run: steady epochs 26.5 / 41.7 / 26.5 / 28.5 s
        rec["config"]["epochs"] = 5
        rec["epochs"] += [dict(rec["epochs"][-1], epoch=n) for n in (4, 5)]
        for e, seconds in zip(rec["epochs"], (45.0, 26.5, 41.7, 26.5, 28.5)):
            e["epoch_seconds"] = seconds

    def at_chance(rec):  # validation at chance at the last epoch, training at 80 %
        rec["data"] = {"classes": 10, "train_images": 1000, "val_images": 500}
        rec["epochs"][-1]["val_accuracy"] = 0.1

    runs = golden / "runs"
    _edit(runs / f"{RUN.format('frozen-r0-5e9b4c7536')}.json", noisy)
    _edit(runs / f"{RUN.format('unfrozen-r1-1f3597d8ea')}.json", at_chance)
    p = tlbench("diagnose", golden)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    noisy_at = lines.index("  run mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536") + 1
    assert lines[noisy_at].startswith("    warning noisy-timing: steady epochs vary 26.5–41.7 s (coefficient of "
                                      "variation 23.8 %)")
    assert lines[noisy_at + 1] == "      evidence: no load recorded"
    chance_at = lines.index("  run mobilenet_v2-fashion_mnist-unfrozen-r1-1f3597d8ea") + 1
    assert lines[chance_at].startswith("    error did-not-learn: validation accuracy is at chance for 10 classes "
                                       "(10.0 % at epoch 3): training reached 82.0 %")
    assert lines[chance_at + 1] == ("      evidence: chance 10.0 % + 2.6 % binomial margin on 500 images (≤ 12.6 %); "
                                    "at chance at epochs 3")
    assert lines[-1] == "6 runs, 4 configurations: 9 diagnostics (1 error, 7 warnings, 1 note)"


def test_a_folder_without_results_or_with_a_corrupt_record_exits_2(golden, tmp_path):
    p = tlbench("diagnose", tmp_path / "nothing")
    assert p.returncode == 2 and "holds no results" in p.stderr and p.stdout == ""
    (golden / "runs" / "bad.json").write_text("{not json")
    p = tlbench("diagnose", golden)
    assert p.returncode == 2 and "corrupt record" in p.stderr and "bad.json" in p.stderr
    assert "Traceback" not in p.stderr
    assert p.stdout.splitlines()[-1] == "6 runs, 3 configurations: 4 diagnostics (2 warnings, 2 notes)"
