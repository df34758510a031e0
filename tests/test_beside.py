"""`tlbench beside`: your results beside published ones from another machine, on golden records."""
import shutil

from conftest import tlbench
from test_compare import edit, slower


def _rows(text: str) -> dict[tuple[str, str], list[str]]:
    """(configuration, metric) -> the other cells, from the printed table (its header row aside)."""
    rows = [line.strip("| ").split(" | ") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| Configuration")]
    return {(r[0], r[1]): r[2:] for r in rows}


def test_twice_as_slow_reads_as_slower_and_the_same_accuracy_as_within_noise(golden, tmp_path):
    yours = shutil.copytree(golden, tmp_path / "yours")
    edit(yours, slower(2.0))
    p = tlbench("beside", golden, yours)
    assert p.returncode == 0, p.stderr
    rows = _rows(p.stdout)
    frozen_time = rows[("Frozen weights", "steady s/epoch")]
    assert frozen_time[2] == "×2.00" and frozen_time[4] == "yours 2.00× slower"
    # the same accuracies: no change, inside an interval as wide as the repeats' spread
    assert rows[("Frozen weights", "val acc @ 1")][2:] == ["+0.0 pt", "-6.1 to +6.1 pt", "within noise"]
    assert f"- Published: `{golden}`: " in p.stdout and f"- Yours: `{yours}`: " in p.stdout
    assert (yours / "beside.md").read_text() == p.stdout.split("wrote ")[0]
    # scratch finished one run of two on each side: one run a side cannot tell noise
    assert rows[("No pre-trained weights", "steady s/epoch")][4] == "one run a side: noise unknown"


def test_folders_with_nothing_in_common_are_refused(golden, tmp_path):
    other = shutil.copytree(golden, tmp_path / "other")
    edit(other, lambda rec: rec["config"].update(batch_size=64))
    p = tlbench("beside", golden, other)
    assert p.returncode == 2 and "nothing to set beside" in p.stderr and "Traceback" not in p.stderr
