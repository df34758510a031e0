"""`tlbench publish` without a browser: what the site's pages hold, on the golden records (a superseded
measurement, a second machine) and on the committed results; its refusals (exit 2) and its determinism."""
import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from bench import publish, store, tables
from conftest import DATA, ROOT, tlbench, unmarked

FROZEN = "mobilenet_v2-fashion_mnist-frozen-r{}-{}.json"
FROZEN_IDS = (("0", "5e9b4c7536"), ("1", "ae63b1da96"))


def _earlier_and_faster(record: dict) -> dict:
    """The same run measured before, at another commit, every epoch twice as fast: the later one regressed."""
    old = copy.deepcopy(record)
    old["environment"]["git"]["commit"] = "1" * 40
    old["started"], old["finished"] = "2026-11-20T10:00:00+00:00", "2026-11-20T11:00:00+00:00"
    for e in old["epochs"]:
        e.update(epoch_seconds=e["epoch_seconds"] / 2, train_seconds=e["train_seconds"] / 2)
    return old


def _other_machine(record: dict) -> dict:
    other = copy.deepcopy(record)
    other["environment"]["device"] = "CPU: Other CPU"
    return other


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """golden/ with the frozen runs' earlier measurement in superseded/, and other/: the frozen runs on a second
    machine."""
    root = tmp_path_factory.mktemp("results")
    golden = Path(shutil.copytree(DATA / "golden", root / "golden"))
    (golden / "superseded").mkdir()
    (root / "other" / "runs").mkdir(parents=True)
    for repeat, digest in FROZEN_IDS:
        record = json.loads((golden / "runs" / FROZEN.format(repeat, digest)).read_text())
        (golden / "superseded" / f"{record['run_id']}.20261120T110000+0000.json").write_text(
            json.dumps(_earlier_and_faster(record)))
        store.write_run(root / "other", _other_machine(record))
    return root


@pytest.fixture(scope="module")
def site(results) -> Path:
    out = results.parent / "site"
    p = tlbench("publish", results, "--out", out)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"wrote {out / 'index.html'}: 2 suite page(s), 3 configuration page(s), 10 record(s)")
    return out


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def _frozen_page(site: Path) -> str:
    return next(p.read_text() for p in site.glob("config-*.html") if "· frozen</h1>" in p.read_text())


def test_index_tables_hold_the_comparison_tables_numbers_and_link_them_to_their_records(site, results):
    index = (site / "index.html").read_text()
    table, _ = tables.summarise(store.scan(results / "golden").records)
    for _, row in table.iterrows():
        cell = tables.cell(row, "val_acc_3", tables.pct)
        assert re.search(rf'title="runs: {row["run_ids"]} · commit 0000000">{re.escape(cell)}', unmarked(index))
    for copy_ in re.findall(r'href="(records/[^"]+)"', "".join(p.read_text() for p in site.glob("*.html"))):
        assert json.loads((site / copy_).read_text())["run_id"] in copy_


def test_a_configuration_shows_its_history_and_marks_compares_regression(site):
    page = _frozen_page(site)
    history = page.split('<table class="history">')[1].split("</table>")[0]
    rows = [_text(r).strip() for r in history.split("<tr>")[2:]]
    assert [re.sub(r"results\d*/golden.*", "", r) for r in rows[:2]] == ["1superseded", "2current"]
    assert "1111111" in rows[0] and "0000000" in rows[1]
    assert "5.0 s [5.0–5.2] n=4" in rows[1] and "2.5 s [2.5–2.6] n=4" in rows[0]
    assert rows[0].endswith("—") and rows[1].endswith("time: REGRESSEDthroughput: REGRESSED")
    assert 'class="regressed"' in history
    assert re.search(r'<img src="figures/config-[0-9a-f]{12}-history.png"', page)


def test_machines_side_by_side_on_the_configuration_page(site):
    page = _frozen_page(site)
    assert "Machines side by side" in page and "cpu-other-cpu-2c_tensorflow_linux" in page
    assert len(re.findall(r'<img src="figures/config-[0-9a-f]{12}-machines-\w+.png"', page)) == 2


def test_publishing_again_gives_the_same_bytes_and_replaces_only_its_own_site(site, results, tmp_path):
    again = tmp_path / "again"
    publish.write(publish.gather([results]), again)
    files = sorted(p.relative_to(site) for p in site.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((site / f).read_bytes() == (again / f).read_bytes() for f in files)
    (again / "stale.html").write_text("from an earlier publish")
    publish.write(publish.gather([results / "other"]), again)  # one suite: fewer figures to draw
    assert not (again / "stale.html").exists() and (again / "index.html").is_file()


def test_refusals_exit_2_with_the_reason_and_touch_nothing(results, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    p = tlbench("publish", results, "--out", mine)
    assert p.returncode == 2 and "is not a site tlbench published" in p.stderr and "Traceback" not in p.stderr
    assert [f.name for f in mine.iterdir()] == ["notes.txt"]
    with pytest.raises(publish.UserError, match="no results beneath"):
        publish.gather([mine])
    with pytest.raises(publish.UserError, match="is not a folder"):
        publish.gather([tmp_path / "missing"])


def test_the_committed_results_give_a_two_point_history_for_the_default_suite():
    site = publish.gather([ROOT / "results" / "published"])
    assert [s.name for s in site.suites] == ["four-cases", "four-cases-mnist", "offline-default", "recipes"]
    default = next(s for s in site.suites if s.name == "offline-default")
    for e in default.entries:
        conf = site.config_of(e.run_id, default.folder)
        assert [(p.source, p.commit) for p in conf.points] == [("superseded", "977f244"), ("current", "22e1086")]
        assert set(conf.points[1].verdicts) == {"time", "throughput", "accuracy"}
