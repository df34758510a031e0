"""The README's published numbers are the committed records' and benchmark outputs', regenerated here."""
import json

from bench import store, tables
from conftest import ROOT

README = (ROOT / "README.md").read_text()


def _between(name: str) -> str:
    return README.split(f"<!-- {name} -->")[1].split(f"<!-- /{name} -->")[0]


def test_published_table_is_the_table_of_the_committed_records():
    records = store.read_runs(ROOT / "results" / "published" / "offline-default")
    text, table = tables.render(records)  # as table.md holds it: diagnostics marks and notes included
    assert text.strip() in _between("table:offline-default")
    # three repeats of each mode, every cell with its spread and n
    assert set(table.ok) == {3}
    rows = [line for line in _between("table:offline-default").splitlines() if line.startswith("| ") and "%" in line]
    assert len(rows) == 3 and all(cell.count("n=") == 1 for row in rows for cell in row.split(" | ")[1:])
    assert all(r["environment"]["git"]["dirty"] is False for r in records)
    commits = {r["environment"]["git"]["commit"][:7] for r in records}
    assert len(commits) == 1 and f"commit {commits.pop()}" in README


def test_gate_error_rates_in_the_readme_are_the_committed_benchmark_output():
    result = json.loads((ROOT / "benchmarks" / "results" / "gate_error_rates.json").read_text())
    text = _between("gate-error-rates")
    for config in result["configurations"]:
        n = config["recommended_runs_per_side"]
        row = next(r for r in config["rates"] if r["runs_per_side"] == (n or 3))
        assert f"{100 * row['false_alarm']:.1f} %" in text and f"{100 * row['detection']:.1f} %" in text


def test_published_four_cases_studies_are_the_committed_records():
    from bench import study

    text = _between("study:four-cases")
    for name, sizes, runs in (("four-cases", [250, 1000, 4000, 8000], 48),
                              ("four-cases-mnist", [125, 250, 1000, 4000], 36)):
        records = store.read_runs(ROOT / "results" / "published" / name)
        (found,) = study.find(records)
        assert found.sizes == sizes and len(found.lines) == 5
        assert all(r["status"] == "ok" and r["environment"]["git"]["dirty"] is False for r in records)
        assert len(records) == runs  # every run of the suite
        assert study.table(found) in text
        for x in study.crossovers(found):
            assert study.sentence(x) in text
        for f in ("study.md", "figures/study_accuracy_vs_size.png", "figures/study_accuracy_vs_time.png"):
            assert (ROOT / "results" / "published" / name / f).is_file()


def test_published_recipe_comparison_is_the_committed_records():
    from bench import ablation

    text = _between("recipes")
    records = store.read_runs(ROOT / "results" / "published" / "recipes")
    assert len(records) == 32 and all(r["status"] == "ok" and r["environment"]["git"]["dirty"] is False
                                      for r in records)
    families = ablation.find(records)
    assert [f.mode for f in families] == ["frozen", "unfrozen", "scratch"]
    unfrozen = families[1]
    assert len(unfrozen.arms) == 12 and all(len(a.runs) == 2 for a in unfrozen.arms.values())
    for part in (ablation.gaps(families), ablation.verdicts(families), ablation.ablation(unfrozen),
                 ablation.attribution(unfrozen)):
        assert part in text
    # every record says its recipe and each epoch its stage
    assert all(r["recipe"]["name"] and all("stage" in e for e in r["epochs"]) for r in records)
    for f in ("recipes.md", "recipes.csv", "table.md", "figures/recipes_ablation.png", "report.md"):
        assert (ROOT / "results" / "published" / "recipes" / f).is_file()
