"""Damaged results folders (issue 15): every reading command names what is wrong and goes on without it.

A corrupt record (the wrong shape, not JSON, under another run's name, a directory or a dangling link
named *.json) is left out by file and reason: table, plot, report and compare print their output with
a note and exit 2, never a traceback, and change nothing on disk; `run` moves it to damaged/ and
measures that run again. The commands run in-process (their exit code is cli.main's), except one run
through the real command line.
"""
import builtins
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import cli, schema, suite
from conftest import ROOT, tlbench

PUBLISHED = ROOT / "results" / "published" / "offline-default"
RUN_IDS = ["mobilenet_v2-fashion_mnist-frozen-r0-fea622cf7a", "mobilenet_v2-fashion_mnist-scratch-r0-46b1cfe1a2",
           "mobilenet_v2-fashion_mnist-unfrozen-r0-7c7dd57328"]
VICTIM = RUN_IDS[2]


def _copy(dest: Path) -> Path:
    """Three published records and their suite file: a real, small results folder."""
    (dest / "runs").mkdir(parents=True)
    for run_id in RUN_IDS:
        shutil.copy2(PUBLISHED / "runs" / f"{run_id}.json", dest / "runs")
    shutil.copy2(PUBLISHED / "suite.yaml", dest)
    return dest


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """(baseline, current): two copies of the same records, named as `tlbench run` names a folder."""
    return _copy(tmp_path / "base" / "offline-default"), _copy(tmp_path / "offline-default")


def _snapshot(folder: Path) -> dict:
    """Every entry under the folder as it is on disk: bytes, link targets, directories."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = (os.readlink(p) if p.is_symlink() else "dir" if p.is_dir()
                                           else p.read_bytes())
    return out


def _main(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _command(name: str, base: Path, current: Path, out: Path) -> list:
    return {"table": ["table", current], "plot": ["plot", current, "--out", out / "figures"],
            "report": ["report", current, "--out", out], "compare": ["compare", base, current, "--out", out]}[name]


def _edit(folder: Path, change) -> Path:
    path = folder / "runs" / f"{VICTIM}.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    return path


def _new(folder: Path, name: str, make) -> Path:
    path = folder / "runs" / name
    make(path)
    return path


# (name, damage the current folder -> the damaged path, what the message says is wrong)
DAMAGE = [
    ("string for a mapping", lambda f: _edit(f, lambda r: r.update(config="frozen")),
     "config is a string 'frozen', expected a mapping"),
    ("epochs null", lambda f: _edit(f, lambda r: r.update(epochs=None)), "epochs is null, expected a list"),
    ("epoch without phase", lambda f: _edit(f, lambda r: r["epochs"][2].pop("phase")), "epochs[2].phase missing"),
    ("minimal record", lambda f: _new(f, f"{VICTIM}.json", lambda p: p.write_text(json.dumps({"run_id": VICTIM}))),
     "status missing"),
    ("not JSON", lambda f: _new(f, f"{VICTIM}.json", lambda p: p.write_text('{"half": ')), "not valid JSON"),
    ("not UTF-8", lambda f: _new(f, f"{VICTIM}.json", lambda p: p.write_bytes(b'{"run_id": "\xff"}')),
     "not UTF-8 text (byte 12)"),
    ("unpaired surrogate", lambda f: _edit(f, lambda r: r.update(error="\udc80")),
     "holds text that is not valid Unicode"),
    ("directory", lambda f: _new(f, "stray.json", Path.mkdir), "a directory, not a record file"),
    ("dangling symlink", lambda f: _new(f, "gone.json", lambda p: p.symlink_to(f / "nowhere.json")),
     "a symbolic link to nothing"),
    ("copy under a second name",
     lambda f: _new(f, "copy.json", lambda p: shutil.copy2(f / "runs" / f"{VICTIM}.json", p)),
     f"its run_id is '{VICTIM}', not the file's name"),
]
COMMANDS = ["table", "plot", "report", "compare"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_record_is_named_left_out_and_changes_nothing(folders, tmp_path, capsys, command, damage):
    base, current = folders
    _, make, problem = damage
    bad = make(current)
    before = _snapshot(current)
    code, out, err = _main(capsys, *_command(command, base, current, tmp_path / "out"))
    assert code == 2, err
    assert f"warning: left out corrupt record '{bad}': {problem}" in err
    assert "Traceback" not in out + err
    if command != "plot":  # stated with the output too, not only on stderr
        shown = (tmp_path / "out" / "report.md").read_text() if command == "report" else out
        assert f"corrupt record '{bad}': {problem}" in shown
    after = _snapshot(current)  # table writes table.md and table.csv beside the records; nothing else changes
    assert {k: v for k, v in after.items() if not k.startswith("table.")} == before


def test_compare_names_the_damaged_record_not_the_hardware(folders, tmp_path, capsys):
    base, current = folders
    _edit(current, lambda r: r.update(environment="CPU"))
    code, out, err = _main(capsys, "compare", base, current, "--out", tmp_path)
    assert code == 2 and "different hardware" not in err
    assert "environment is a string 'CPU', expected a mapping" in err
    assert "| mobilenet_v2 · fashion_mnist · frozen |" in out  # the readable records are still compared


def test_a_clean_copy_reads_without_notes(folders, tmp_path, capsys):
    base, current = folders
    for command in COMMANDS:
        code, _, err = _main(capsys, *_command(command, base, current, tmp_path / command))
        assert code == 0 and "warning" not in err, (command, err)


def test_a_baseline_is_saved_without_the_corrupt_records(folders, tmp_path, capsys):
    _, current = folders
    bad = _new(current, "copy.json", lambda p: shutil.copy2(current / "runs" / f"{VICTIM}.json", p))
    code, out, err = _main(capsys, "baseline", "save", current, "--root", tmp_path / "baselines")
    assert code == 2 and f"left out corrupt record '{bad}'" in err and "without the 1 corrupt record(s)" in out
    (saved,) = (tmp_path / "baselines").glob("*/offline-default/0001_*/runs")
    assert sorted(p.stem for p in saved.glob("*.json")) == RUN_IDS


def test_a_record_of_another_suite_is_noted(folders, tmp_path, capsys):
    base, current = folders
    _edit(current, lambda r: (r.update(suite="imported"), r["config"].update(suite="imported")))
    code, out, err = _main(capsys, "table", current)
    note = "1 record(s) of suite imported in a folder of suite 'offline-default' (e.g. " + VICTIM
    assert code == 0 and note in err and note in out


@pytest.mark.parametrize("content, problem", [
    (b"name: \xff\n", "not UTF-8 text: byte 0xff at offset 6"),
    (b"just a string\n", "a suite file must be a mapping with at least 'name' and 'matrix'")])
def test_an_unreadable_suite_file_is_named(folders, tmp_path, capsys, content, problem):
    """report goes on without it and says what is missing; compare stops, since its thresholds may be there."""
    base, current = folders
    (current / "suite.yaml").write_bytes(content)
    before = _snapshot(current)
    code, _, err = _main(capsys, "report", current, "--out", tmp_path / "out")
    assert code == 2 and f"warning: {current / 'suite.yaml'}: {problem}; read without it" in err
    assert problem in (tmp_path / "out" / "report.md").read_text()
    code, _, err = _main(capsys, "compare", base, current, "--out", tmp_path / "out")
    assert code == 2 and f"error: {current / 'suite.yaml'}: {problem}" in err and "regression thresholds" in err
    assert "Traceback" not in err and _snapshot(current) == before


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder unwritable: by its mode, or, for root (whom modes do not stop), by refusing writes there."""
    made = []

    def make(folder: Path) -> None:
        if os.geteuid() != 0:
            for p in [folder, *folder.rglob("*")]:
                made.append((p, p.stat().st_mode))
                p.chmod(p.stat().st_mode & 0o555)
            return
        inside = str(folder.resolve()) + os.sep

        def refuse(path, writing) -> None:
            if writing and isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(inside):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))

        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
        monkeypatch.setattr(builtins, "open", lambda file, mode="r", *a, **k: (
            refuse(file, any(c in mode for c in "wax+")), real_open(file, mode, *a, **k))[1])
        monkeypatch.setattr(os, "open", lambda path, flags, *a, **k: (
            refuse(path, flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)), real_os_open(path, flags, *a, **k))[1])
        monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: (refuse(path, True), real_mkdir(path, *a, **k))[1])

    yield make
    for p, mode in reversed(made):
        p.chmod(mode)


@pytest.mark.parametrize("command, file", [("table", "table.md"), ("plot", "figures/accuracy.png"),
                                           ("report", "figures/accuracy.png"), ("compare", "compare.md")])
def test_a_read_only_folder_is_read_and_the_unwritable_file_named(folders, tmp_path, capsys, read_only, command, file):
    base, current = folders
    before = _snapshot(current)
    read_only(current)
    argv = {"table": ["table", current], "plot": ["plot", current], "report": ["report", current],
            "compare": ["compare", base, current]}[command]
    code, out, err = _main(capsys, *argv)
    assert code == 2 and f"error: could not write '{current / file}'" in err and "Traceback" not in err
    if command == "table":
        assert "the table above is complete" in err and "| Frozen weights |" in out
    else:
        assert "with --out DIR" in err
    if command == "compare":
        assert "**No regressions.**" in out
    if command != "table":  # and with --out they write there instead
        code, _, err = _main(capsys, *_command(command, base, current, tmp_path / "elsewhere"))
        assert code == 0, err
    assert _snapshot(current) == before


def test_the_real_command_names_a_damaged_record_without_a_traceback(folders):
    _, current = folders
    bad = _edit(current, lambda r: r["epochs"][2].pop("phase"))
    p = tlbench("table", current)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"warning: left out corrupt record '{bad}': epochs[2].phase missing" in p.stderr
    assert "| Frozen weights |" in p.stdout


# --- fuzz: whatever JSON a record file holds, table and compare answer 0 or 2 -------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                  max_size=4),
                    max_leaves=16)
REAL = json.loads((PUBLISHED / "runs" / f"{VICTIM}.json").read_text())


def _places(value, at=()):
    """Every key path into a record: where a mutation can drop or replace a value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield at + (k,)
            yield from _places(v, at + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield at + (i,)
            yield from _places(v, at + (i,))


def _mutate(place, drop: bool, value) -> dict:
    record = json.loads(json.dumps(REAL))
    *parent, last = place
    target = record
    for k in parent:
        target = target[k]
    if drop:
        del target[last]
    else:
        target[last] = value
    return record


MUTATIONS = st.builds(_mutate, st.sampled_from(list(_places(REAL))), st.booleans(), JSON)
NUMBERS = st.builds(_mutate, st.sampled_from([p for p in _places(REAL) if isinstance(p[-1], int) or p[0] in
                                              ("epochs", "memory", "load", "params", "config")]),
                    st.just(False), st.integers(-3, 3) | st.floats(allow_nan=True, allow_infinity=True))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("fuzz")
    return _copy(tmp / "base" / "offline-default"), _copy(tmp / "offline-default")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=JSON | MUTATIONS | NUMBERS)
def test_any_record_file_leaves_table_and_compare_answering(fuzzed, capsys, record):
    """A record that reads is judged like any other: compare may then find it regressed (1) or unsure (3)."""
    base, current = fuzzed
    (current / "runs" / f"{VICTIM}.json").write_text(json.dumps(record))
    for argv, codes in ((["table", current], (0, 2)),
                        (["compare", base, current, "--out", current.parent / "compared"], (0, 1, 2, 3))):
        code, out, err = _main(capsys, *argv)
        assert code in codes, (argv[0], code, err[-2000:])
        assert "Traceback" not in out + err


# --- run: a corrupt record is moved aside and measured again; the schema is the writer's -------------

TINY = """\
name: tiny
defaults: {epochs: 2, batch_size: 16, input_size: 32, train_size: 32, val_size: 16, weights: none,
           head: {dense: [16]}}
datasets:
  patterns: {type: synthetic, image_size: 16, classes: 4, train: 32, test: 16}
matrix: {backbone: mobilenet_v2_035, dataset: patterns, mode: [frozen, scratch]}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    (tmp / "tiny.yaml").write_text(TINY)
    p = tlbench("run", tmp / "tiny.yaml", "--results", tmp / "results", "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp / "tiny.yaml", tmp / "results", tmp / "results" / "tiny"


def test_a_freshly_written_record_fits_the_schema(tiny):
    _, _, folder = tiny
    for path in (folder / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        assert schema.problems(record) == [] and record["schema"] == schema.VERSION


def test_run_moves_a_corrupt_record_aside_and_measures_it_again(tiny):
    path, results, folder = tiny
    frozen, scratch = (folder / "runs" / f"{r.run_id}.json" for r in suite.load(path).runs)
    kept = scratch.read_bytes()
    damaged = frozen.read_text().replace('"phase": "steady"', '"phase": null')
    frozen.write_text(damaged)
    (folder / "runs" / "stray.json").mkdir()
    p = tlbench("run", path, "--results", results, "--quiet")
    assert p.returncode == 0 and "Traceback" not in p.stdout + p.stderr, p.stderr[-3000:]
    assert f"corrupt record '{frozen}': epochs[1].phase is null, expected a string; moved to" in p.stdout
    assert "already recorded (ok)" in p.stdout and scratch.read_bytes() == kept, p.stdout[-3000:]
    (aside,) = (folder / "damaged").glob("*.json")
    assert aside.read_text() == damaged and "epochs[1].phase is null" in Path(f"{aside}.why.txt").read_text()
    assert schema.problems(json.loads(frozen.read_text())) == []  # measured again
    assert f"left out corrupt record '{folder / 'runs' / 'stray.json'}': a directory" in p.stderr
