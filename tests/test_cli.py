"""The commands say what they did and fail loudly: --version, ls, thresholds, baseline history, pipes, outputs.

All on the golden records or without data: nothing here trains.
"""
import json
import re
import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest

from bench import environment, store
from bench.backbones import BACKBONES
from bench.datasets import DATASETS
from bench.modes import MODES
from bench.weights import WEIGHTS
from conftest import ROOT, tlbench
from test_compare import slower, three_repeats

MACHINE = "cpu-test-cpu-2c_tensorflow_linux"  # the golden records' machine id


def test_version_names_the_package_and_the_commit_of_the_tree():
    p = tlbench("--version")
    git = environment.git_state()
    commit = f"commit {git['commit'][:12]}" + (", uncommitted changes" if git["dirty"] else "")
    assert p.returncode == 0 and p.stdout == f"tlbench {metadata.version('tlbench')} ({commit})\n", p.stderr


def test_ls_names_what_a_suite_can_name_without_importing_a_backend():
    script = textwrap.dedent("""
        import contextlib, io, json, sys
        from bench import cli
        out = {}
        for category in ("backbones", "datasets", "modes", "weights", "references"):
            with contextlib.redirect_stdout(io.StringIO()) as f:
                assert cli.main(["ls", category]) == 0
            out[category] = f.getvalue().splitlines()
        print(json.dumps([out, [m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules]]))
        """)
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    listed, backends = json.loads(p.stdout)
    assert backends == []
    names = {category: [line.split("  ")[0] for line in lines] for category, lines in listed.items()}
    assert names["backbones"] == BACKBONES.names() and names["modes"] == MODES.names()
    assert names["datasets"] == DATASETS.names() and names["references"] == ["udacity-lab"]
    assert names["weights"] == WEIGHTS.names() + ["PATH.h5, PATH.keras"]
    assert ("mobilenet_v2_035  keras.applications.MobileNetV2, alpha 0.35: 224 px by default, at least 32; "
            "inception preprocessing; cut: early, middle, late") in listed["backbones"]
    assert "fashion_mnist  60,000 train / 10,000 test images" in listed["datasets"]
    assert "image_folder   settings: path (required), image_size 32, val_fraction 0.2" in listed["datasets"]
    assert "scratch        No pre-trained weights: random weights, backbone trained" in listed["modes"]
    assert listed["weights"][2].endswith("(backbones: mobilenet_v2)")


def test_ls_of_an_unknown_category_lists_the_valid_ones():
    p = tlbench("ls", "backbone")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == ("error: tlbench ls: unknown category 'backbone' (did you mean 'backbones'?); valid: "
                        "backbones, datasets, modes, references, weights\n")


@pytest.mark.parametrize("flag, value, expected", [
    ("--time-threshold", "-10%", "a fraction such as 0.10 or a percentage such as 10%, got '-10%'"),
    ("--throughput-threshold", "-0.05", "a fraction such as 0.10 or a percentage such as 10%, got '-0.05'"),
    ("--accuracy-threshold", "-2", "accuracy points between 0 and 100 (2 = two points), got '-2'"),
])
def test_a_negative_threshold_says_what_the_value_must_be(golden, flag, value, expected):
    p = tlbench("compare", golden, golden, flag, value)
    assert p.returncode == 2 and p.stderr == f"error: {flag}: expected {expected}\n"


def test_weights_verify_explains_min_top1():
    p = tlbench("weights", "verify", "--help")
    assert p.returncode == 0
    assert "--min-top1 N pass when at least N of the photos (foolbox ships 20) get the right top-1 class" in \
        " ".join(p.stdout.split())


def _saves(root):
    return sorted(p.name for p in (root / MACHINE / "golden").iterdir())


def test_baseline_saves_are_kept_numbered_listed_and_replaced_only_with_force(golden, tmp_path):
    root = tmp_path / "baselines"
    assert tlbench("baseline", "list", "--root", root).stdout == (
        f"no baselines under '{root}'; save one with: tlbench baseline save RESULTS --root {root}\n")
    first = tlbench("baseline", "save", golden, "--root", root)
    assert first.returncode == 0 and first.stdout.endswith("(the first save)\n"), first.stderr
    second = tlbench("baseline", "save", golden, "--root", root)
    one, two = _saves(root)
    assert re.fullmatch(r"0001_\d{8}_\d{6}", one) and two.startswith("0002_")
    assert second.stdout == (f"saved baseline {root / MACHINE / 'golden' / two} (1 earlier save(s) kept: "
                             f"tlbench baseline list --root {root})\n")

    p = tlbench("compare", "--against-baseline", golden, "--root", root, "--out", tmp_path / "cmp")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"baseline: {root / MACHINE / 'golden' / two} (the latest of 2 saves: saved ")
    assert ", commit 0000000, 6 runs)" in p.stdout.splitlines()[0]

    (next((golden / "runs").glob("*-scratch-r1-*.json"))).unlink()  # the save that replaces has 5 runs
    p = tlbench("baseline", "save", golden, "--root", root, "--force")
    one_after, two_after = _saves(root)
    assert one_after == one and two_after.startswith("0002_")
    assert p.stdout == f"saved baseline {root / MACHINE / 'golden' / two_after} (--force: replaces {two})\n"
    lines = tlbench("baseline", "list", "--root", root).stdout.splitlines()
    assert lines[0].split() == ["machine", "suite", "save", "saved", "commit", "runs"]
    assert [line.split()[:3] + line.split()[-2:] for line in lines[1:3]] == [
        [MACHINE, "golden", one, "0000000", "6"], [MACHINE, "golden", two_after, "0000000", "5"]]
    assert lines[3] == "compare --against-baseline takes the latest save of the machine and suite"


@pytest.mark.parametrize("command", ["list", "compare"])
def test_a_reader_that_leaves_early_ends_the_command_quietly(golden, write_suite, tmp_path, command):
    """`tlbench list SUITE | head -1`: the reader is gone before the output is written; exit 141, as shell
    tools killed by SIGPIPE, with nothing on stderr."""
    suite = write_suite("""\
        name: tiny
        defaults: {weights: none}
        datasets: {patterns: {type: synthetic, image_size: 16, classes: 4, train: 32, test: 16}}
        matrix: {backbone: mobilenet_v2_035, dataset: patterns, mode: [frozen, scratch]}
        """)
    args = {"list": ["list", suite], "compare": ["compare", golden, golden, "--out", tmp_path]}[command]
    p = subprocess.Popen([sys.executable, "-m", "bench", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    assert (p.wait(timeout=120), p.stderr.read()) == (141, "")


def test_results_that_is_a_file_is_refused_before_anything_runs(write_suite, tmp_path):
    suite = write_suite("""\
        name: tiny
        defaults: {weights: none}
        matrix: {backbone: mobilenet_v2_035, dataset: synthetic, mode: frozen}
        """)
    (tmp_path / "afile").write_text("")
    p = tlbench("run", suite, "--results", tmp_path / "afile")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == (f"error: --results {tmp_path / 'afile'}: '{tmp_path / 'afile'}' is a file, not a folder; "
                        "give the folder the results go to (it is made if missing)\n")


def test_compare_prints_each_regression_once_table_first(golden, tmp_path):
    base = three_repeats(golden, tmp_path / "base")
    current = three_repeats(golden, tmp_path / "current")
    for path in (current / "runs").glob("*-frozen-*.json"):
        record = json.loads(path.read_text())
        slower(1.25)(record)
        path.write_text(json.dumps(record))
    p = tlbench("compare", base, current)
    assert p.returncode == 1 and p.stderr == ""
    regressed = [line for line in p.stdout.splitlines() if "REGRESSED" in line]
    assert [line.split(" | ")[:2] for line in regressed] == [["| mobilenet_v2 · fashion_mnist · frozen", m]
                                                              for m in ("steady s/epoch", "steady img/s")]
    assert p.stdout.index(regressed[-1]) < p.stdout.index("**Regressed: 2**")


def test_table_says_what_it_wrote_and_writes_nothing_for_epochs_no_run_has(golden):
    p = tlbench("table", golden, "--epochs", "7")
    assert p.returncode == 2 and p.stdout == "" and not (golden / "table.md").exists()
    assert p.stderr.startswith("error: --epochs: no run reached epoch 7"), p.stderr
    p = tlbench("table", golden)
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith(f"wrote {golden / 'table.md'}\nwrote {golden / 'table.csv'}\n")
    assert (golden / "table.md").read_text() in p.stdout


def test_atomic_write_takes_text_or_bytes_and_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    store.atomic_write(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    store.atomic_write(path, "text é")
    assert path.read_text() == "text é"
    with pytest.raises(ZeroDivisionError), store.atomic_file(path, "wb") as f:
        f.write(b"half")
        1 / 0
    assert path.read_text() == "text é" and [p.name for p in path.parent.iterdir()] == ["f.bin"]
    with store.atomic_file(tmp_path / "a.npz", "wb") as f:  # a streaming writer, as the features cache's
        np.savez(f, x=np.arange(3))
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]


def test_the_cache_is_the_platforms_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert environment.user_cache() == tmp_path / "tlbench"
    made = environment.machine_id()
    assert (tmp_path / "tlbench" / "machine-id").read_text() == made + "\n" and environment.machine_id() == made
