"""The publishable report: its numbers are the records', the documents' table sits beside them, HTML stands alone."""
import re
import shutil

import pytest
import yaml

from bench import report, store, suite, tables
from bench.errors import SuiteErrors, UserError
from conftest import ROOT, tlbench

# Reference README §1a, as printed.
DOCUMENTS = {"frozen": (0.655, 0.703, 50), "unfrozen": (0.506, 0.716, 142), "scratch": (0.192, 0.392, 142)}


def md_tables(md: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of cells, header first, alignment row dropped."""
    out = []
    for chunk in re.split(r"\n\s*\n", md):
        lines = [line for line in chunk.splitlines() if line.startswith("|")]
        if len(lines) > 2:
            out.append([[c.strip() for c in line.strip().strip("|").split("|")] for i, line in enumerate(lines)
                        if i != 1])
    return out


def section(md: str, heading: str) -> str:
    return md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def results(golden):
    """The golden records as `tlbench run` leaves them: with the suite file that names the reference."""
    shutil.copy(ROOT / "suites" / "offline-default.yaml", golden / "suite.yaml")
    return golden


@pytest.fixture
def md(results):
    report.write(results)
    return (results / "report.md").read_text()


def test_reference_is_kept_as_data_with_the_documents_numbers():
    ref = report.load_reference("udacity-lab")
    assert ref["epochs"] == [1, 5]
    for mode, (at1, at5, seconds) in DOCUMENTS.items():
        assert ref["rows"][mode] == {"val_acc": {1: at1, 5: at5}, "epoch_seconds": seconds}
    assert "unnamed" in ref["hardware"] and "InceptionV3" in ref["protocol"] and "14.6" in ref["source"]
    with pytest.raises(UserError, match="valid: udacity-lab"):
        report.load_reference("nope")


def test_measured_table_equals_the_records(results, md):
    table, epochs = tables.summarise(store.read_runs(results))
    assert epochs == [1, 3]
    (measured,) = md_tables(section(md, "Measured"))
    assert measured[0] == ["Training Mode", "Val Acc @ 1 epoch", "Val Acc @ 3 epoch", "Time per epoch", "First epoch"]
    for cells, (_, row) in zip(measured[1:], table.iterrows()):
        assert cells[0] == row["label"]
        assert [c.split(" (")[0].split(" [")[0].split(" n=")[0] for c in cells[1:]] == [
            tables.pct(row["val_acc_1_median"]), tables.pct(row["val_acc_3_median"]),
            tables.secs(row["steady_epoch_seconds_median"]), tables.secs(row["first_epoch_seconds_median"])]
    assert measured[1][1] == "61.0% [60.5–61.5] n=2" and "n=1 (1 failed)" in measured[3][1]


def test_documents_numbers_beside_ours_with_differences(results, md):
    table = tables.summarise(store.read_runs(results), [1, 3])[0].set_index("mode")
    beside, gaps = md_tables(section(md, "The documents' table beside ours"))
    assert beside[0][4] == "Val Acc @ 5 epoch (ours @ 3): documents"  # the golden runs stop at epoch 3
    for cells in beside[1:]:
        mode = {tables.mode_label(m): m for m in DOCUMENTS}[cells[0]]
        at1, at5, seconds = DOCUMENTS[mode]
        ours1, ours3 = table.loc[mode, "val_acc_1_median"], table.loc[mode, "val_acc_3_median"]
        steady = table.loc[mode, "steady_epoch_seconds_median"]
        assert cells[1:7] == [tables.pct(at1), tables.pct(ours1), f"{100 * (ours1 - at1):+.1f} pts",
                              tables.pct(at5), tables.pct(ours3), f"{100 * (ours3 - at5):+.1f} pts"]
        assert cells[7:9] == [tables.secs(seconds), tables.secs(steady)]
        assert float(cells[9].rstrip("×")) == pytest.approx(steady / seconds, rel=0.05)
    assert beside[1][3] == "-4.5 pts" and beside[1][9] == "0.10×"  # 61.0 - 65.5; 5.0 s / 50 s
    # the shape: unfrozen against frozen at epoch 1, documents 50.6 - 65.5, ours 45.0 - 61.0
    assert gaps[1][:3] == ["Unfrozen weights", "-14.9 pts", "-16.0 pts"]
    # 142 / 50; ours 20.5 / 5.0: medians of every steady epoch (frozen 5, 5, 5, 6 s)
    assert gaps[1][5:] == ["2.8×", "4.1×"]


def test_report_says_the_comparison_is_of_shape_only(md):
    assert "Read this comparison for its shape only." in md
    differs = re.search(r"Differs from the documents in: (.*)", md).group(1)
    for part in ["backbone (documents: inception_v3, ours: mobilenet_v2)", "dataset (documents: cifar10",
                 "hardware (documents: 2017–2019 hosted-notebook GPU, unnamed, ours: CPU: Test CPU)"]:
        assert part in differs


def test_report_holds_suite_environment_and_figures(results, md):
    assert md.startswith("# tlbench report: offline-default\n\nMobileNetV2 (torchvision ImageNet weights)")
    env = dict(row for row in md_tables(section(md, "Environment"))[0][1:])
    assert env == {"Hardware": "CPU: Test CPU · 2 cores", "TensorFlow": "2.21.0", "Keras": "3.15.1", "Keras backend": "tensorflow",
                   "Git commit": "000000000000 (clean)", "Date of the runs": "2026-11-25",
                   "Runs": "6 (1 did not finish)"}
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", md)
    assert images == ["figures/accuracy.png", "figures/epoch_time.png", "figures/tradeoff.png"]
    assert all((results / image).is_file() for image in images)


def test_html_is_one_self_contained_file(results, md):
    page = (results / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and 'src="figures/' not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<td style=\"text-align:center\">61.0% [60.5–61.5] n=2</td>" in page
    assert "<h2>Environment</h2>" in page and "<strong>Read this comparison for its shape only.</strong>" in page


def test_report_without_suite_file_or_reference(golden):
    paths = report.write(golden)
    md = (golden / "report.md").read_text()
    assert md.startswith(f"# tlbench report: {golden.name}") and "documents' table" not in md
    assert golden / "report.html" in paths


def test_report_elsewhere_with_out(results, tmp_path):
    report.write(results, tmp_path / "pub")
    assert (tmp_path / "pub" / "figures" / "accuracy.png").is_file()
    assert "](figures/accuracy.png)" in (tmp_path / "pub" / "report.md").read_text()
    assert not (results / "report.md").exists()


def test_same_protocol_says_only_hardware_differs(results):
    text = (results / "suite.yaml").read_text()
    (results / "suite.yaml").write_text(text.replace("name: offline-default", "name: same"))
    for path in (results / "runs").glob("*.json"):  # pretend the golden runs were the documents' protocol
        path.write_text(path.read_text().replace('"mobilenet_v2"', '"inception_v3"')
                        .replace('"fashion_mnist"', '"cifar10"').replace('"input_size": 96', '"input_size": 139')
                        .replace('"torchvision"', '"imagenet"'))
    report.write(results)
    md = (results / "report.md").read_text()
    assert "Differs from the documents in: hardware (" in md and "The protocol is the documents' own" in md


def test_suites_name_the_reference_and_unknown_names_are_located(write_suite):
    for name in ["offline-default", "udacity-inception-cifar10"]:
        assert suite.load(ROOT / "suites" / f"{name}.yaml").reference == "udacity-lab"
    assert suite.load(ROOT / "suites" / "smoke.yaml").reference is None
    path = write_suite("""\
        name: x
        reference: udacity
        matrix: {backbone: mobilenet_v2, dataset: synthetic, mode: frozen}
        """)
    with pytest.raises(SuiteErrors) as e:
        suite.load(path)
    assert [str(err) for err in e.value.errors] == [
        f"{path}:2: reference: unknown reference 'udacity' (did you mean 'udacity-lab'?); valid: udacity-lab"]


def test_every_reference_file_has_what_the_report_reads():
    for name in suite.reference_names():
        ref = yaml.safe_load((suite.REFERENCES / f"{name}.yaml").read_text())
        assert {"title", "source", "hardware", "protocol", "epochs", "rows"} <= set(ref)
        for mode, row in ref["rows"].items():
            assert set(row["val_acc"]) == set(ref["epochs"]) and row["epoch_seconds"] > 0, (name, mode)


def test_markdown_to_html_handles_what_the_report_uses(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    page = report.to_html("# T <1>\n\nsome **bold** `code`\ntext\n\n| a | b |\n|---|---:|\n| 1 | 2 |\n\n![cap](a.png)",
                          tmp_path)
    assert "<h1>T &lt;1&gt;</h1>" in page and "<p>some <strong>bold</strong> <code>code</code> text</p>" in page
    assert '<th style="text-align:left">a</th><th style="text-align:right">b</th>' in page
    assert '<td style="text-align:right">2</td>' in page
    assert 'src="data:image/png;base64,iVBORw==">' in page and "<figcaption>cap</figcaption>" in page


def test_cli_report(results, tmp_path):
    p = tlbench("report", results)
    assert p.returncode == 0, p.stderr
    assert f"wrote {results / 'report.html'}" in p.stdout and (results / "report.md").is_file()
    p = tlbench("report", results, "--out", tmp_path / "pub")
    assert p.returncode == 0 and (tmp_path / "pub" / "report.html").is_file()
    p = tlbench("report", tmp_path / "nothing")
    assert p.returncode == 2 and "holds no results" in p.stderr
